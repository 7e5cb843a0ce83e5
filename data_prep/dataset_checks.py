"""A build's records against each other and against the dataset they join, after conversion.

  - record ids are unique within a dataset (a second record with an id is refused);
  - an input whose records are all already in the split (the same file under another
    path, or a copy) is refused as a whole;
  - a record whose id or content (words and units: shard_job.record_digest) is also in
    another split (train / held-out overlap) is refused, or with --allow_overlap kept
    and counted in the manifest (the build's and the split's "overlap").
Each refused record is an InputError naming its file, line and id: --on_error=fail stops
at the first, --on_error=skip drops exactly those records from their shards (rewritten,
journaled) and lists them in the errors file. The dataset's records are known from each
build's journal (ids and digests per shard), or read from the shards it does not cover.
"""

from __future__ import annotations

import dataclasses
import os

from data_prep import build_manifest, convert, journal, shard_job, shards
from data_prep.formats.items import InputError
from lst_jax.data import records as records_lib
from lst_jax.data.manifest import DataError

ALLOW = "--allow_overlap keeps it and counts it in the manifest"


@dataclasses.dataclass
class Known:
  """The records of one earlier build in the dataset."""
  split: str
  input: str
  ids: set
  digests: dict  # digest -> id


def check(args, plan, results: list[shard_job.Result]) -> dict[str, int]:
  """Refuses (fail) or drops (skip) the build's bad records, in place; returns the overlap counts
  per other split (--allow_overlap)."""
  known = dataset_records(args.output, plan.existing or {}, plan.tag, args.split)
  same = [k for k in known if k.split == args.split]
  other = [k for k in known if k.split != args.split]
  mine = [d for r in results for d in r.digests]
  for k in same:
    if mine and all(d in k.digests for d in mine):
      raise DataError(f"{args.input}: already in the dataset: all its {len(mine)} records are in split "
                      f"{args.split!r}, added from {k.input}; a dataset holds each input once (to rebuild "
                      f"that input, build it by its own path; to keep both, build into another --output)")
  seen: dict[str, str] = {}  # id -> where this build has it
  overlap: dict[str, int] = {}
  for r in results:
    drop = []
    for i, (rid, digest, place) in enumerate(zip(r.ids, r.digests, r.places)):
      file, line = place if place and place[0] is not None else (args.input, None)
      why = _why(rid, digest, seen, same, other, args.allow_overlap, overlap)
      seen.setdefault(rid, f"{file}:{line}" if line is not None else file)
      if why is None:
        continue
      err = InputError(file, why, line, rid)
      if args.on_error == shard_job.FAIL:
        raise err
      drop.append(i)
      r.errors = r.errors + [err.to_json()]
    if drop:
      _drop(args.output, r, set(drop), journal.path(args.output, args.split, plan.kind, plan.tag))
  return overlap


def _why(rid, digest, seen, same, other, allow, overlap) -> str | None:
  if rid in seen:
    return f"duplicate record id {rid!r} (first at {seen[rid]}); record ids are unique within a dataset"
  for k in same:
    if rid in k.ids:
      return (f"duplicate record id {rid!r}: the dataset already has it (split {k.split!r}, from {k.input}); "
              f"record ids are unique within a dataset")
  for k in other:
    hit = "same id" if rid in k.ids else f"same content as record {k.digests[digest]!r}" \
        if digest in k.digests else None
    if hit is None:
      continue
    if allow:
      overlap[k.split] = overlap.get(k.split, 0) + 1
      return None
    return (f"record {rid!r} is also in split {k.split!r} ({hit}, from {k.input}): splits overlap; "
            f"drop it from one split ({ALLOW})")
  return None


def dataset_records(output: str, manifest: dict, tag: str, split: str) -> list[Known]:
  """The records of every build in the manifest but this one (this input, this split)."""
  out = []
  for b in build_manifest.earlier_builds(manifest):
    if (b.get("tag"), b.get("split")) == (tag, split):
      continue
    entries = journal.read(journal.path(output, b["split"], b["kind"], b["tag"])) if b["tag"] != "earlier" else {}
    k = Known(b["split"], b.get("input") or b["tag"], set(), {})
    for name in b.get("shards", []):
      e = entries.get(name, {})
      if e.get("ids") is not None and e.get("digests") is not None:
        ids, digests = e["ids"], e["digests"]
      else:
        ids, digests = shard_job.index_records(shard_job.read_shard(os.path.join(output, name)))
      k.ids.update(ids)
      k.digests.update(zip(digests, ids))
    out.append(k)
  return out


def _drop(output: str, r: shard_job.Result, drop: set[int], journal_path: str) -> None:
  """Rewrites r's shard without the records at `drop`, and r's stats and index; journals it under a
  fingerprint no rerun matches, so a rerun converts it again and checks it afresh (perhaps with
  --allow_overlap, or --on_error=fail, or after the other record is gone)."""
  path = os.path.join(output, r.name)
  r.fingerprint += "-filtered"
  kept = [p for i, p in enumerate(shard_job.read_shard(path)) if i not in drop]
  keep = [i for i in range(len(r.ids)) if i not in drop]
  r.ids, r.digests, r.places = ([x[i] for i in keep] for x in (r.ids, r.digests, r.places))
  recs = [records_lib.decode(p) for p in kept]
  r.stats = shard_job.shard_stats([convert.Converted(x, len(x.units) / x.unit_rate if len(x.units) else 0.0)
                                   for x in recs])
  if kept:
    shards.write_shard(path, kept)
    r.shard = shards.shard_info(path, len(kept))
  else:
    os.remove(path)
    r.shard = None
  with open(journal_path, "a") as f:
    journal.append(f, r.journal())
