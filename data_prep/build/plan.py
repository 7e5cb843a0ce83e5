"""What a build writes, decided before any shard is converted: the input's options, its tag, the
directory's manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from data_prep.formats import lst_jsonl, manifest_jsonl
from data_prep.formats.items import TEXT, Options
from lst_jax import storage
from lst_jax.data.manifest import MANIFEST, DataError

BUILD_VERSION = 1
LOGMEL, HUBERT = "logmel", "hubert"
UNIT_KINDS = (LOGMEL, HUBERT)
DEFAULT_NUM_UNITS = 500

@dataclasses.dataclass
class Plan:
  """What this build writes, decided before any shard is converted."""
  reader: object
  kind: str
  tag: str
  sources: list
  options: Options
  existing: dict | None
  chunks: list = dataclasses.field(default_factory=list)  # shard_plan.Chunk per shard: its saved entries


def make_plan(args, reader, sources: list) -> Plan:
  """The directory's manifest (if any) and the input's options; refuses a --codebook that cannot apply."""
  existing = read_manifest(args.output)
  plan = Plan(reader, reader.KIND, build_tag(args.format, args.input), sources, _options(args, sources), existing)
  flag = next((f for f in ("codebook", "kmeans", "hubert") if getattr(args, f, None)), None)
  if flag and (args.format in ("lst_jsonl", "text") or plan.options.mode == manifest_jsonl.UNITS):
    raise DataError(f"--{flag} applies to audio input; {args.input} gives "
                    + ("text only" if plan.kind == TEXT else "its own units"))
  return plan


def _options(args, sources) -> Options:
  if args.format == "lst_jsonl":
    return Options(num_units=args.num_units or lst_jsonl.DEFAULT_NUM_UNITS)
  if args.format == "manifest":
    mode, rate = manifest_jsonl.first_entry(sources) or (None, None)
    return Options(num_units=args.num_units or DEFAULT_NUM_UNITS, unit_rate=rate, mode=mode)
  return Options(num_units=args.num_units or DEFAULT_NUM_UNITS)


def build_tag(format: str, input: str) -> str:
  """Names this input's shards: the same input gives the same names, another input new ones."""
  return hashlib.sha256(f"{format}\0{storage.absolute(input)}".encode()).hexdigest()[:8]


def read_manifest(output: str) -> dict | None:
  """The directory's manifest, or None if it has none; DataError if it is not one to add to."""
  path = storage.join(output, MANIFEST)
  if not storage.isfile(path):
    return None
  try:
    raw = json.loads(storage.read_text(path))
  except ValueError as e:
    raise DataError(f"{path}: not valid JSON ({e}); remove it to rebuild") from None
  for key in ("tokenizer", "units", "splits"):
    if key not in raw:
      raise DataError(f"{path}: missing field {key!r}; not a dataset this build can add to")
  return raw
