"""ArrayRecord shards of encoded records; a shard file appears only once it is complete.

Each shard is written under a temporary name and renamed into place, so a
crashed build never leaves a plausible-looking partial shard. group_size:1
keeps random access cheap for Grain's per-record reads.
"""

from __future__ import annotations

import os
from typing import Sequence

from array_record.python.array_record_module import ArrayRecordWriter

from lst_jax.data import records as records_lib

SUFFIX = ".array_record"


def shard_name(split: str, kind: str, index: int, count: int) -> str:
  """Relative path of one shard, e.g. "train/speech-00000-of-00002.array_record"."""
  return f"{split}/{kind}-{index:05d}-of-{count:05d}{SUFFIX}"


def write_shard(path: str, payloads: Sequence[bytes]) -> str:
  """Writes serialized records to `path` via a temp file and an atomic rename."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  try:
    for payload in payloads:
      writer.write(payload)
  finally:
    writer.close()
  os.replace(tmp, path)
  return path


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
