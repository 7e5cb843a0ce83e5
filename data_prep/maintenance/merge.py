"""Merges prepared datasets with identical provenance: python -m data_prep.maintenance.merge --inputs=A,B --output=C

Every input must have the same tokenizer and unit provenance (lst_jax.data.provenance;
text-only inputs fit any units); otherwise the merge is refused naming the first
field that differs. Shards are copied (each under a temporary name, renamed when
complete) with the input's index in front of their names, so equal names from two
inputs cannot collide; per-split lists and counts are summed; the manifest is
written last. The output must not already hold a dataset.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from data_prep import shards
from lst_jax import storage
from lst_jax.data import provenance as prov
from lst_jax.data.manifest import MANIFEST, DataError, load_manifest, write_manifest

SHARD_LISTS = ("speech", "text")


def renamed(shard: str, index: int) -> str:
  """"train/speech-x-00000-of-00001.array_record" of input 1 -> "train/01-speech-x-...": no collisions."""
  folder, name = os.path.split(shard)
  return os.path.join(folder, f"{index:02d}-{name}")


def merge_splits(inputs: list[dict]) -> dict:
  """Per-split shard lists (renamed) and summed counts of several manifests."""
  out: dict[str, dict] = {}
  for i, raw in enumerate(inputs):
    for name, split in raw["splits"].items():
      acc = out.setdefault(name, {})
      for key, value in split.items():
        if key in SHARD_LISTS:
          acc[key] = acc.get(key, []) + [renamed(s, i) for s in value]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
          acc[key] = round(acc.get(key, 0) + value, 6)
        elif isinstance(value, list):
          acc[key] = acc.get(key, []) + [v for v in value if v not in acc.get(key, [])]
        else:
          acc.setdefault(key, value)
  return out


def merge(inputs: list[str], output: str) -> str:
  """Checks, copies and writes; returns a summary line. Raises DataError."""
  if len(inputs) < 2:
    raise DataError("--inputs needs at least two dataset directories, comma-separated")
  if os.path.exists(os.path.join(output, MANIFEST)):
    raise DataError(f"{output} already holds a dataset ({MANIFEST}); merge into a new directory")
  manifests = [load_manifest(d) for d in inputs]
  raws = [m.raw for m in manifests]
  names = [os.path.join(d, MANIFEST) for d in inputs]
  units_from = next((i for i, r in enumerate(raws) if prov.has_units(r)), 0)
  for i in range(1, len(raws)):
    prov.check_compatible(raws[0], raws[i], names[0], names[i])
    if prov.has_units(raws[i]):
      prov.check_compatible(raws[units_from], raws[i], names[units_from], names[i])
  os.makedirs(output, exist_ok=True)
  first, units = raws[0], raws[units_from]["units"]
  _copy(os.path.join(inputs[0], first["tokenizer"]["path"]), os.path.join(output, first["tokenizer"]["path"]))
  for key in ("codebook", "feature_stats", "kmeans", "kmeans_joblib", "vocoder_bank"):  # the quantizer's files
    if units.get(key):
      _copy(os.path.join(inputs[units_from], units[key]), os.path.join(output, units[key]))
  copied = 0
  for i, (d, raw) in enumerate(zip(inputs, raws)):
    for split in raw["splits"].values():
      for shard in (s for k in SHARD_LISTS for s in split.get(k, [])):
        _copy(os.path.join(d, shard), os.path.join(output, renamed(shard, i)))
        copied += 1
  builds = [{**b, "from": i, "shards": [renamed(s, i) for s in b.get("shards", [])]}
            for i, raw in enumerate(raws) for b in raw.get("builds", [])]
  splits = merge_splits(raws)
  files = {renamed(s, i): info for i, raw in enumerate(raws) for s, info in raw.get("shards", {}).items()}
  write_manifest(output, {
      "name": os.path.basename(storage.absolute(output)), "tokenizer": first["tokenizer"], "units": units,
      "splits": splits, "builds": builds, "shards": shards.manifest_entries(output, splits, files),
      "merged_from": [{"dir": storage.absolute(d), "name": r.get("name")} for d, r in zip(inputs, raws)]})
  counts = ", ".join(f"{k}: {s.get('num_speech', 0)} utterances + {s.get('num_text', 0)} documents"
                     for k, s in sorted(splits.items()))
  return f"merged {len(inputs)} datasets into {output}: {copied} shards; {counts}"


def _copy(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
  shutil.copyfile(src, dst + ".tmp")
  os.replace(dst + ".tmp", dst)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m data_prep.maintenance.merge", description=__doc__.split("\n")[0])
  p.add_argument("--inputs", required=True, help="dataset directories, comma-separated")
  p.add_argument("--output", required=True, help="new dataset directory")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    print(merge([d for d in args.inputs.split(",") if d], args.output))
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
