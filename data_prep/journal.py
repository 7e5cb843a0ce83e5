"""A build's state on disk between runs: the shard journal of each input, and the directory lock.

The journal (<output>/<split>/.<kind>-<tag>.journal.jsonl) gets one line per
shard as the shard is finished (fingerprint, stats, skipped entries, each
record's id, content digest and input line, the shard's size and sha256), so a
rerun, after a crash or with the same input, reuses every shard whose
fingerprint still matches; the finished build rewrites it with only the
shards it kept. The lock lets one builder (a build, or the demo's) write a
directory at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from typing import Iterable


def path(output: str, split: str, kind: str, tag: str) -> str:
  return os.path.join(output, split, f".{kind}-{tag}.journal.jsonl")


def read(path: str) -> dict[str, dict]:
  """Shard name -> its latest entry; unreadable lines (a crash mid-write) are skipped."""
  out = {}
  with contextlib.suppress(FileNotFoundError):
    with open(path) as f:
      for line in f:
        with contextlib.suppress(ValueError, KeyError, TypeError):
          entry = json.loads(line)
          out[entry["shard"]] = entry
  return out


def append(f, entry: dict) -> None:
  """Adds one shard's entry to an open journal, on disk at once."""
  f.write(json.dumps(entry) + "\n")
  f.flush()


def rewrite(path: str, entries: Iterable[dict]) -> None:
  """Replaces the journal with `entries` (atomically): compacts it after a build."""
  with open(path + ".tmp", "w") as f:
    f.writelines(json.dumps(e) + "\n" for e in entries)
  os.replace(path + ".tmp", path)


@contextlib.contextmanager
def lock(output: str):
  """One builder per directory at a time (a second one waits); creates the directory."""
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, ".build.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
