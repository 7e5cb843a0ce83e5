"""ArrayRecord shards of encoded records; a shard file appears only once it is complete.

Each shard is written under a temporary name and renamed into place, so a
crashed build never leaves a plausible-looking partial shard. group_size:1
keeps random access cheap for Grain's per-record reads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Sequence

from array_record.python.array_record_module import ArrayRecordWriter

from lst_jax import storage
from lst_jax.data import records as records_lib

SUFFIX = ".array_record"


def shard_name(split: str, kind: str, index: int, count: int) -> str:
  """Relative path of one shard, e.g. "train/speech-00000-of-00002.array_record"."""
  return f"{split}/{kind}-{index:05d}-of-{count:05d}{SUFFIX}"


def write_shard(path: str, payloads: Sequence[bytes]) -> str:
  """Writes serialized records to `path` via a temp file and an atomic rename."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  try:
    writer = ArrayRecordWriter(tmp, "group_size:1")
    try:
      for payload in payloads:
        writer.write(payload)
    finally:
      writer.close()
    os.replace(tmp, path)
  except BaseException as e:  # a full disk, Ctrl-C: no partial file left behind
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, (RuntimeError, ValueError)) and not isinstance(e, OSError):  # array_record's write errors
      raise OSError(f"{path}: could not be written ({str(e).splitlines()[0][:200]})") from None
    raise
  return path


def publish_shard(path: str, payloads: Sequence[bytes]) -> dict:
  """Writes a shard to `path` (local, or gs://: written in a local temporary folder, then uploaded,
  as array_record's own GCS writer does) and returns its manifest entry."""
  if not storage.is_url(path):
    write_shard(path, payloads)
    return shard_info(path, len(payloads))
  with tempfile.TemporaryDirectory(prefix="lst_jax_shard_") as tmp:
    local = write_shard(os.path.join(tmp, os.path.basename(path)), payloads)
    info = shard_info(local, len(payloads))
    storage.copy_file(local, path)
  return info


def file_digest(path: str) -> tuple[int, str]:
  """(bytes, sha256 hex) of a file, read in 1 MiB blocks."""
  h, size = hashlib.sha256(), 0
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
      size += len(block)
  return size, h.hexdigest()


def shard_info(path: str, records: int | None = None) -> dict:
  """A shard's entry in the manifest's "shards": {"records", "bytes", "sha256"} (records counted
  from the file when not given)."""
  if records is None:
    from array_record.python.array_record_module import ArrayRecordReader
    reader = ArrayRecordReader(path)
    try:
      records = reader.num_records()
    finally:
      reader.close()
  size, sha = file_digest(path)
  return {"records": int(records), "bytes": size, "sha256": sha}


def manifest_entries(output: str, splits: dict, known: dict | None = None) -> dict:
  """The manifest's "shards": {relative path: {"records", "bytes", "sha256"}} for every shard the splits
  list (data_prep.maintenance.verify checks them; training reads them); a shard `known` lacks is read now."""
  known = known or {}
  listed = sorted({s for split in splits.values() for k in ("speech", "text") for s in split.get(k, [])})
  return {s: known.get(s) or shard_info(os.path.join(output, s)) for s in listed}


def write_records(directory: str, split: str, kind: str, records: Sequence[records_lib.Record],
                  num_shards: int) -> list[str]:
  """Encodes `records` into up to `num_shards` contiguous shards; returns relative shard paths."""
  if not records:
    return []
  count = max(1, min(num_shards, len(records)))
  bounds = [len(records) * i // count for i in range(count + 1)]
  names = []
  for i in range(count):
    name = shard_name(split, kind, i, count)
    write_shard(os.path.join(directory, name),
                [records_lib.encode(r) for r in records[bounds[i]:bounds[i + 1]]])
    names.append(name)
  return names
