"""Checks every shard of a prepared dataset against its manifest: python -m data_prep.maintenance.verify DIR

For each shard the splits list, the manifest's "shards" entry (written at build
time) gives its size, sha256 and record count; verify checks that the file
exists, has that size and checksum, holds that many records, and that every
record decodes (lst_jax.data.records.decode). One line per bad shard, naming
the file (and the index of the first record that fails to decode); a progress
line about every PROGRESS_S seconds on long runs. Exit 0: all good; 1: a bad
shard; 2: usage error (no such directory, no manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

from data_prep import shards as shards_lib
from data_prep.maintenance import stats
from lst_jax.data import records as records_lib
from lst_jax.data.manifest import MANIFEST, DataError

PROGRESS_S = 10.0


def check_shard(path: str, expected: dict | None, limits: tuple[int | None, int | None] = (None, None)
                ) -> str | None:
  """Why the shard at `path` is bad (None if good). `limits`: the manifest's (units.num_units,
  tokenizer.vocab_size): every record's ids must fall below them."""
  if not os.path.isfile(path):
    return "missing"
  if expected is None:
    return "not in the manifest's \"shards\" (no checksum to check it against; rebuild the dataset)"
  size = os.path.getsize(path)
  if size != expected.get("bytes"):
    return f"{size} bytes, the manifest says {expected.get('bytes')}"
  _, sha = shards_lib.file_digest(path)
  if sha != expected.get("sha256"):
    return f"sha256 {sha[:16]}... differs from the manifest's {str(expected.get('sha256'))[:16]}... (damaged)"
  from array_record.python.array_record_module import ArrayRecordReader
  try:
    reader = ArrayRecordReader(path)
  except Exception as e:  # noqa: BLE001 - array_record raises RuntimeError/ValueError variously
    return f"unreadable ({stats.first_line(e)})"
  try:
    count = reader.num_records()
    if count != expected.get("records"):
      return f"{count} records, the manifest says {expected.get('records')}"
    for i in range(count):
      try:
        record = records_lib.decode(reader.read([i])[0])
      except Exception as e:  # noqa: BLE001 - a damaged record fails in many ways
        return f"record {i}: does not decode ({stats.first_line(e)})"
      try:
        record.validate(*limits)
      except records_lib.RecordError as e:
        return f"record {i}: {e} (the manifest's units.num_units={limits[0]}, tokenizer.vocab_size={limits[1]})"
  finally:
    reader.close()
  return None


def verify(directory: str, log: Callable[[str], None] = print) -> int:
  """Checks every listed shard; returns the number of bad ones. Raises DataError (no dataset)."""
  raw = _manifest(directory)
  expected = raw.get("shards", {})
  listed = sorted({s for split in raw["splits"].values() for k in ("speech", "text") for s in split.get(k, [])})
  limits = (_count(raw, "units", "num_units"), _count(raw, "tokenizer", "vocab_size"))
  bad, start, last = 0, time.time(), time.time()
  for n, shard in enumerate(listed, 1):
    path = os.path.join(directory, shard)
    why = check_shard(path, expected.get(shard), limits)
    if why:
      bad += 1
      log(f"{path}: {why}")
    if time.time() - last >= PROGRESS_S:
      log(f"verify: {n}/{len(listed)} shards checked, {bad} bad, {time.time() - start:.0f} s elapsed")
      last = time.time()
  log(f"verify: {len(listed)} shard(s) in {directory}: " + (f"{bad} bad" if bad else "all good"))
  return bad


def _count(raw: dict, entry: str, key: str) -> int | None:
  value = raw.get(entry, {}).get(key) if isinstance(raw.get(entry), dict) else None
  return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _manifest(directory: str) -> dict:
  """The manifest as written (load_manifest would stop at the first missing or resized shard)."""
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    raise DataError(f"{directory}: no {MANIFEST}: not a prepared dataset (or its build did not finish)")
  try:
    with open(path) as f:
      raw = json.load(f)
  except (ValueError, OSError) as e:
    raise DataError(f"{path}: not readable JSON ({e})") from None
  if not isinstance(raw, dict) or not isinstance(raw.get("splits"), dict):
    raise DataError(f"{path}: no \"splits\": not a dataset manifest")
  return raw


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m data_prep.maintenance.verify", description=__doc__.split("\n")[0])
  p.add_argument("dir", help=f"dataset directory (with {MANIFEST})")
  args = p.parse_args(argv)
  try:
    bad = verify(args.dir, lambda line: print(line, flush=True))
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
