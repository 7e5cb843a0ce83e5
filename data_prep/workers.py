"""The build's worker processes, how it cuts work for them, and its progress lines.

Workers are spawned, not forked: the parent may hold threads (jax under pytest,
sentencepiece). They count the entries they finish in a shared counter, so the
parent can say how far a long shard got. --workers=0 runs every task in this
process (debugging, profiling, small inputs).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from typing import Callable, Iterator, Sequence

from data_prep import shard_job
from lst_jax import process
from lst_jax.data.manifest import DataError

WATCH_S = 1.0  # how often the parent checks that its workers are alive


class _Inline:
  """Runs tasks in this process (--workers=0): debugging, profiling, small inputs."""

  def imap(self, fn, items):
    return _InlineResults(map(fn, items))

  imap_unordered = imap


class _InlineResults:

  def __init__(self, results):
    self.results = results

  def __iter__(self):
    return self.results

  def next(self, timeout=None):
    del timeout
    return next(self.results)


class WorkerDied(DataError):
  """A worker process ended without finishing its task (killed, e.g. for lack of memory)."""


@contextlib.contextmanager
def pool(workers: int):
  """A process pool whose workers count the entries they finish in `pool.progress` (shared) and say
  which shard each holds in `pool.held` (pid, job index per slot), so a dead one is noticed."""
  ctx = multiprocessing.get_context("spawn")
  counter = ctx.Value("q", 0)
  if workers <= 0:
    shard_job.init_worker(counter)
    inline = _Inline()
    inline.progress, inline.held = counter, None
    try:
      yield inline
    finally:
      shard_job.init_worker(None)
    return
  held = ctx.Array("q", [0, -1] * (2 * workers + 8))
  with ctx.Pool(workers, initializer=shard_job.init_worker, initargs=(counter, held)) as processes:
    processes.progress, processes.held = counter, held
    yield processes


def watch(pool, pending, on_wait: Callable[[], None] | None = None, wait_s: float = 15.0,
          names: Sequence[str] = ()) -> Iterator:
  """The results of `pending` (an imap iterator) as they come. Between them, every WATCH_S seconds,
  checks that no worker died (WorkerDied names the shard it held: names[job index]) and every
  `wait_s` seconds calls `on_wait` (a progress line)."""
  last = time.time()
  while True:
    try:
      yield pending.next(timeout=WATCH_S)
      last = time.time()
      continue
    except StopIteration:
      return
    except multiprocessing.TimeoutError:
      pass
    for pid, job in dead_workers(pool):
      held = f" while converting shard {names[job]}" if 0 <= job < len(names) else ""
      raise WorkerDied(f"worker process {pid} died{held} (killed: out of memory, or a signal); "
                       f"the build stopped. Rerun it: finished shards are reused")
    if on_wait is not None and time.time() - last >= wait_s:
      on_wait()
      last = time.time()


def dead_workers(pool) -> list[tuple[int, int]]:
  """(pid, job index or -1) of each worker of `pool` that is gone."""
  held = getattr(pool, "held", None)
  if held is None:
    return []
  with held.get_lock():
    slots = [(held[i], held[i + 1]) for i in range(0, len(held), 2)]
  return [(pid, job) for pid, job in slots if pid and not process.alive(pid)]




def chunks(items: list, size: int) -> list[list]:
  return [items[lo:lo + size] for lo in range(0, len(items), size)]


def progress(log, what: str, done: int, total: int, entries: int, start: float, unit: str = "entries",
             extra: str = "") -> None:
  """One line per step when there are few, else about every 5%."""
  step = max(1, total // 20)
  if done == total or done % step == 0:
    elapsed = max(time.time() - start, 1e-9)
    log(f"{what} {done}/{total}: {entries} {unit}, {entries / elapsed:.0f} {unit}/s, "
        f"{elapsed:.1f} s elapsed{extra}")
