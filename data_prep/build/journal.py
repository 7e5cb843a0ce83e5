"""A build's state on disk between runs: one journal entry per finished shard, and the directory lock.

Each shard's entry (<output>/<split>/.<kind>-<tag>.journal/<shard file>.json) is
written by the worker that converted the shard, right after the shard: its
fingerprint, stats, skipped entries, each record's id, content digest and input
line, the shard's size and sha256. A rerun, after a crash or with the same input,
reuses every shard whose fingerprint still matches; the dataset checks read the
ids and digests from the entries, so the launching process never holds them. The
finished build removes entries of shards it did not keep. (Journals of earlier
versions, one <kind>-<tag>.journal.jsonl file per input, are split into entries
when a build next touches them.) Each entry names the build run that wrote it, so
the launcher tells converted shards from reused ones. In fail mode a shard that
meets a bad entry leaves <shard file>.failed beside the entries instead: the other
workers then start no new shard, and the launcher reports the earliest one. Paths
may be local or gs:// (lst_jax.storage). The lock lets one builder (a build, or the
demo's) write a local directory at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

from lst_jax import storage

SUFFIX = ".json"
FAILED = ".failed"


def directory(output: str, split: str, kind: str, tag: str) -> str:
  return os.path.join(output, split, f".{kind}-{tag}.journal")


def entry_path(output: str, shard: str, kind: str, tag: str) -> str:
  """The journal entry of shard `shard` (its path relative to the output, e.g. train/speech-...)."""
  split, name = shard.split("/", 1)
  return os.path.join(directory(output, split, kind, tag), name + SUFFIX)


def read_entry(path: str) -> dict | None:
  """A shard's entry, or None (missing, or cut short by a crash)."""
  with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
    entry = json.loads(storage.read_text(path))
    entry["shard"]  # noqa: B018 - every entry names its shard
    return entry
  return None


def write_entry(path: str, entry: dict) -> None:
  """Writes one shard's entry whole or not at all."""
  storage.write_json(path, entry, indent=None)


def keep_only(output: str, split: str, kind: str, tag: str, shards: set[str]) -> None:
  """Removes the entries of this input's shards that are not in `shards` (after a build)."""
  for path in storage.glob(os.path.join(directory(output, split, kind, tag), "*" + SUFFIX)):
    if f"{split}/{os.path.basename(path)[:-len(SUFFIX)]}" not in shards:
      storage.remove(path)


def failure_path(entry: str) -> str:
  """Where a worker puts the bad entry that stopped its shard (--on_error=fail), beside the entry."""
  return entry[:-len(SUFFIX)] + FAILED


def write_failure(entry: str, error: dict) -> None:
  storage.write_json(failure_path(entry), error, indent=None)


def failures(output: str, split: str, kind: str, tag: str) -> dict[str, dict]:
  """{shard file name: its bad entry} of the shards of this input that stopped at one."""
  found = {}
  for path in storage.glob(os.path.join(directory(output, split, kind, tag), "*" + FAILED)):
    with contextlib.suppress(FileNotFoundError, ValueError):
      found[os.path.basename(path)[:-len(FAILED)]] = json.loads(storage.read_text(path))
  return found


def clear_failures(output: str, split: str, kind: str, tag: str) -> None:
  for path in storage.glob(os.path.join(directory(output, split, kind, tag), "*" + FAILED)):
    storage.remove(path)


def migrate(output: str, split: str, kind: str, tag: str) -> None:
  """Splits an earlier version's journal file (one line per shard, latest last) into entries."""
  legacy = os.path.join(output, split, f".{kind}-{tag}.journal.jsonl")
  if storage.is_url(legacy) or not os.path.exists(legacy):
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
  """One builder per directory at a time (a second one waits); creates the directory. On object
  storage there is no lock: one build at a time per dataset is up to you."""
  if storage.is_url(output):
    yield
    return
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, ".build.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
