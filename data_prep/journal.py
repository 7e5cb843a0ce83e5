"""A build's state on disk between runs: one journal entry per finished shard, and the directory lock.

Each shard's entry (<output>/<split>/.<kind>-<tag>.journal/<shard file>.json) is
written by the worker that converted the shard, right after the shard: its
fingerprint, stats, skipped entries, each record's id, content digest and input
line, the shard's size and sha256. A rerun, after a crash or with the same input,
reuses every shard whose fingerprint still matches; the dataset checks read the
ids and digests from the entries, so the launching process never holds them. The
finished build removes entries of shards it did not keep. (Journals of earlier
versions, one <kind>-<tag>.journal.jsonl file per input, are split into entries
when a build next touches them.) The lock lets one builder (a build, or the
demo's) write a directory at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os

from lst_jax import storage

SUFFIX = ".json"


def directory(output: str, split: str, kind: str, tag: str) -> str:
  return os.path.join(output, split, f".{kind}-{tag}.journal")


def entry_path(output: str, shard: str, kind: str, tag: str) -> str:
  """The journal entry of shard `shard` (its path relative to the output, e.g. train/speech-...)."""
  split, name = shard.split("/", 1)
  return os.path.join(directory(output, split, kind, tag), name + SUFFIX)


def read_entry(path: str) -> dict | None:
  """A shard's entry, or None (missing, or cut short by a crash)."""
  with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
    with open(path) as f:
      entry = json.load(f)
    entry["shard"]  # noqa: B018 - every entry names its shard
    return entry
  return None


def write_entry(path: str, entry: dict) -> None:
  """Writes one shard's entry whole or not at all."""
  storage.write_text(path, json.dumps(entry))


def keep_only(output: str, split: str, kind: str, tag: str, shards: set[str]) -> None:
  """Removes the entries of this input's shards that are not in `shards` (after a build)."""
  for path in glob.glob(os.path.join(directory(output, split, kind, tag), "*" + SUFFIX)):
    if f"{split}/{os.path.basename(path)[:-len(SUFFIX)]}" not in shards:
      os.remove(path)


def migrate(output: str, split: str, kind: str, tag: str) -> None:
  """Splits an earlier version's journal file (one line per shard, latest last) into entries."""
  legacy = os.path.join(output, split, f".{kind}-{tag}.journal.jsonl")
  if not os.path.exists(legacy):
    return
  latest = {}
  with open(legacy) as f:
    for line in f:
      with contextlib.suppress(ValueError, KeyError, TypeError):
        entry = json.loads(line)
        latest[entry["shard"]] = entry
  for shard, entry in latest.items():
    write_entry(entry_path(output, shard, kind, tag), entry)
  os.remove(legacy)


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
