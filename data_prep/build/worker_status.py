"""What each local worker process is doing, told to the launching process through small files.

Beam's local runner says nothing about its workers while a pipeline runs, and
waits forever on one that was killed (out of memory, a signal). So each worker
keeps one file, <status dir>/<pid>.json: the shard it holds, the entries it
has finished, the shards it has done. The launcher reads them every second
for its progress lines, and stops the build, naming the shard, when a worker
whose file says it holds one is gone. Remote runners (Dataflow, Flink, Spark)
watch their own workers: there the status directory is None and these calls
do nothing.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time

from lst_jax import process, storage
from lst_jax.data.manifest import DataError

WRITE_S = 1.0   # a worker rewrites its file at most this often while converting


class WorkerDied(DataError):
  """A worker process ended without finishing its task (killed, e.g. for lack of memory)."""


class Reporter:
  """A worker's side: `holding(shard)`, `tick(n)` per finished entry, `release()` when the shard is done."""

  def __init__(self, directory: str | None):
    self.path = os.path.join(directory, f"{os.getpid()}.json") if directory else None
    self.state = {"pid": os.getpid(), "shard": None, "entries": 0, "shards": 0}
    self.written = 0.0
    self._write()  # the launcher knows every worker, busy or not

  def holding(self, shard: str | None) -> None:
    self.state["shard"] = shard
    self._write()

  def tick(self, n: int = 1) -> None:
    self.state["entries"] += n
    if time.time() - self.written >= WRITE_S:
      self._write()

  def release(self) -> None:
    self.state["shard"] = None
    self.state["shards"] += 1
    self._write()

  def _write(self) -> None:
    if self.path is None:
      return
    storage.write_json(self.path, self.state, indent=None)
    self.written = time.time()


def read_all(directory: str) -> list[dict]:
  """Every worker's last state (a file being replaced is skipped until the next read)."""
  out = []
  for path in glob.glob(os.path.join(directory, "*.json")):
    with contextlib.suppress(OSError, ValueError):
      with open(path) as f:
        out.append(json.load(f))
  return out


def check_alive(states: list[dict]) -> None:
  """WorkerDied if a worker that holds a shard is gone."""
  for s in states:
    if s.get("shard") and not process.alive(int(s["pid"])):
      raise WorkerDied(f"worker process {s['pid']} died while converting shard {s['shard']} (killed: out of "
                       f"memory, or a signal); the build stopped. Rerun it: finished shards are reused")


def stop_all(states: list[dict]) -> None:
  """Ends the workers still alive (the local runner would wait on the dead one forever)."""
  for s in states:
    with contextlib.suppress(OSError, ValueError):
      os.kill(int(s["pid"]), 9)
