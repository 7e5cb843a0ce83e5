"""A build's records against each other and against the dataset they join, after conversion.

  - record ids are unique within a dataset (a second record with an id is refused);
  - an input whose records are all already in the split (the same file under another
    path, or a copy) is refused as a whole;
  - a record whose id or content (words and units: shard_job.record_digest) is also in
    another split (train / held-out overlap) is refused, or with --allow_overlap kept
    and counted in the manifest (the build's and the split's "overlap").
Each refused record is an InputError naming its file, line and id: --on_error=fail stops
at the first (in input order), --on_error=skip drops exactly those records from their
shards (rewritten, journaled) and lists them in the errors file.

The checks run as an Apache Beam pipeline on the build's runner (data_prep/build/beam_local.py):
records are read from the shards' journal entries (or, for shards no entry covers, from
the shards) by the workers, grouped by id, then by content digest, in hash buckets; only
the refused records, the overlap counts and per-build match counts come back, so the
launching process holds nothing per record however large the corpus.
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
import json
import os

from data_prep import shards
from data_prep.build import beam_local, beam_options, convert, finish, journal, shard_job
from data_prep.formats.items import InputError
from lst_jax import storage
from lst_jax.data import records as records_lib
from lst_jax.data.manifest import DataError

with beam_options.quiet():
  import apache_beam as beam

ALLOW = "--allow_overlap keeps it and counts it in the manifest"
RECORDS_PER_BUCKET = 100_000  # records grouped together in one worker's memory
FIRST_AT = "\0first\0"       # where a duplicate's first record is: filled in by the launcher
DIGEST_BYTES = 12             # of a record's content digest (shard_job.record_digest: 24 hex digits)


@dataclasses.dataclass(frozen=True)
class Known:
  """One earlier build of the dataset: where its records are read from."""
  order: int       # its position among the dataset's builds (the first match is named)
  split: str
  input: str
  same_split: bool
  sources: tuple   # (path, True: a journal entry | False: a shard to read)


def check(args, plan, results: list[shard_job.Result], scratch: str) -> dict[str, int]:
  """Refuses (fail) or drops (skip) the build's bad records, in place; returns the overlap counts
  per other split (--allow_overlap)."""
  known = dataset_builds(args.output, plan.existing or {}, plan.tag, args.split)
  entries = [journal.entry_path(args.output, r.name, plan.kind, plan.tag) for r in results]
  mine = [(i, entries[i]) for i, r in enumerate(results) if r.records]
  total = sum(r.records for r in results)
  records = total + sum(b.get("records", 0) for b in finish.earlier_builds(plan.existing or {}))
  buckets = max(1, -(-records // RECORDS_PER_BUCKET))
  found = _run(args, mine, known, buckets, storage.join(scratch, "checks"))
  for k in known:
    if k.same_split and total and found["matches"].get(str(k.order), 0) == total:
      raise DataError(f"{args.input}: already in the dataset: all its {total} records are in split "
                      f"{args.split!r}, added from {k.input}; a dataset holds each input once (to rebuild "
                      f"that input, build it by its own path; to keep both, build into another --output)")
  problems = sorted(found["problems"], key=lambda p: (p["shard"], p["index"]))
  if not problems:
    return found["overlap"]
  places = _Places(entries, args.input)
  errors = []
  for p in problems:
    file, line = places.at(p["shard"], p["index"])
    what = p["error"].replace(FIRST_AT, places.where(p["first"])) if p["first"] else p["error"]
    errors.append(InputError(file, what, line, p["record"]))
  if args.on_error == shard_job.FAIL:
    raise errors[0]
  by_shard: dict[int, list] = {}
  for p, e in zip(problems, errors):
    by_shard.setdefault(p["shard"], []).append((p["index"], e))
  for i, dropped in by_shard.items():
    r = results[i]
    r.errors = r.errors + [e.to_json() for _, e in dropped]
    _drop(args.output, r, {index for index, _ in dropped}, entries[i])
  return found["overlap"]


class _Places:
  """(file, line) of a record of this build, read from its shard's journal entry when asked (only
  for refused records: the pipeline carries shard and index, not places)."""

  def __init__(self, entries: list[str], default_file: str):
    self.entries, self.default, self.cache = entries, default_file, {}

  def at(self, shard: int, index: int) -> tuple[str, int | None]:
    if shard not in self.cache:
      self.cache[shard] = _read((self.entries[shard], True))[2]
    file, line = self.cache[shard][index]
    return (file, line) if file is not None else (self.default, None)

  def where(self, first) -> str:
    if first is None:
      return ""
    file, line = self.at(*first)
    return f"{file}:{line}" if line is not None else file


def dataset_builds(output: str, manifest: dict, tag: str, split: str) -> list[Known]:
  """Every build in the manifest but this one (this input, this split), with where to read it."""
  out = []
  for order, b in enumerate(finish.earlier_builds(manifest)):
    if (b.get("tag"), b.get("split")) == (tag, split):
      continue
    if b["tag"] != "earlier":
      journal.migrate(output, b["split"], b["kind"], b["tag"])
    sources = []
    for name in b.get("shards", []):
      entry = journal.entry_path(output, name, b["kind"], b["tag"]) if b["tag"] != "earlier" else None
      sources.append((entry, True) if entry and storage.exists(entry) else (storage.join(output, name), False))
    out.append(Known(order, b["split"], b.get("input") or b["tag"], b["split"] == split, tuple(sources)))
  return out


# -- the pipeline ------------------------------------------------------------------------------

def _bucket(key: str, buckets: int) -> int:
  return int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % buckets


def _read(source: tuple) -> tuple[list, list, list]:
  """(ids, digests, places) of one shard, from its journal entry or the shard itself."""
  path, is_entry = source
  entry = journal.read_entry(path) if is_entry else None
  if entry is not None and entry.get("ids") is not None and entry.get("digests") is not None:
    places = shard_job.unpack_places(entry.get("places")) or [[None, None]] * len(entry["ids"])
    return entry["ids"], entry["digests"], places
  ids, digests = shard_job.index_records(shard_job.read_shard(path if not is_entry else entry_shard(path)))
  return ids, digests, [[None, None]] * len(ids)


def entry_shard(entry_path: str) -> str:
  """The shard a journal entry describes (its entry is <split>/.<kind>-<tag>.journal/<shard>.json)."""
  folder = os.path.dirname(entry_path)
  return os.path.join(os.path.dirname(folder), os.path.basename(entry_path)[:-len(journal.SUFFIX)])


def _mine_by_id(spec, buckets):
  """This build's shard -> per id bucket: ("m", shard, [id, ...], [index, ...], digests as 12-byte
  strings joined): columns, so a record costs a few dozen bytes in the runner's buffers."""
  shard, path = spec
  ids, digests, _ = _read((path, True))
  out: dict[int, tuple] = {}
  for i, (rid, digest) in enumerate(zip(ids, digests)):
    cols = out.setdefault(_bucket(rid, buckets), ([], array.array("I"), bytearray()))
    cols[0].append(rid)
    cols[1].append(i)
    cols[2].extend(bytes.fromhex(digest)[:DIGEST_BYTES])
  for b, (rids, indexes, packed) in out.items():
    yield ("id", b), ("m", shard, rids, indexes.tobytes(), bytes(packed))


def _known(k: Known, buckets):
  """An earlier build -> its ids by id bucket and (digest, id, position) by digest bucket."""
  by_id: dict[int, list] = {}
  by_digest: dict[int, tuple] = {}
  position = 0
  for source in k.sources:
    ids, digests, _ = _read(source)
    for rid, digest in zip(ids, digests):
      by_id.setdefault(_bucket(rid, buckets), []).append(rid)
      cols = by_digest.setdefault(_bucket(digest, buckets), (bytearray(), [], array.array("I")))
      cols[0].extend(bytes.fromhex(digest)[:DIGEST_BYTES])
      cols[1].append(rid)
      cols[2].append(position)
      position += 1
  meta = (k.order, k.split, k.input, k.same_split)
  for b, rows in by_id.items():
    yield ("id", b), ("k", meta, rows)
  for b, (packed, rids, positions) in by_digest.items():
    yield ("digest", b), ("k", meta, bytes(packed), rids if not k.same_split else [], positions.tobytes())


def _digests(packed: bytes) -> list[bytes]:
  return [packed[i:i + DIGEST_BYTES] for i in range(0, len(packed), DIGEST_BYTES)]


def _by_id(item, buckets):
  """One id bucket: duplicates within the build, ids the split already has; every record of the
  build goes on to its digest bucket, with the first other split that has its id."""
  _, values = item
  same, other, occurrences = {}, {}, {}
  for v in values:
    if v[0] == "k":
      (order, split, input_, same_split), ids = v[1], v[2]
      table = same if same_split else other
      for rid in ids:
        if rid not in table or table[rid][0] > order:
          table[rid] = (order, split, input_)
    else:
      _, shard, rids, indexes, packed = v
      for rid, index, digest in zip(rids, array.array("I", indexes), _digests(packed)):
        occurrences.setdefault(rid, []).append((shard, index, digest))
  onward: dict[int, list] = {}
  for rid, rows in occurrences.items():
    rows.sort(key=lambda r: (r[0], r[1]))
    for n, (shard, index, digest) in enumerate(rows):
      problem = None
      if n:
        problem = _problem(shard, index, rid, f"duplicate record id {rid!r} (first at {FIRST_AT}); record ids "
                           f"are unique within a dataset", first=rows[0][:2])
      elif rid in same:
        _, split, input_ = same[rid]
        problem = _problem(shard, index, rid, f"duplicate record id {rid!r}: the dataset already has it (split "
                           f"{split!r}, from {input_}); record ids are unique within a dataset")
      if problem:
        yield problem
      onward.setdefault(_bucket(digest.hex(), buckets), []).append(
          (shard, index, rid, digest, problem is None, other.get(rid)))
  for b, rows in onward.items():
    yield ("digest", b), ("m", rows)


def _by_digest(item, allow: bool):
  """One digest bucket: content another split has (or its id, found before), and how many of the
  build's records each same-split build holds (an input added twice)."""
  _, values = item
  other, same_orders, rows = {}, {}, []
  for v in values:
    if v[0] == "k":
      (order, split, input_, same_split), packed, rids, positions = v[1], v[2], v[3], array.array("I", v[4])
      for i, digest in enumerate(_digests(packed)):
        if same_split:
          same_orders.setdefault(digest, set()).add(order)
        elif digest not in other or (other[digest][0], -other[digest][4]) > (order, -positions[i]):
          other[digest] = (order, split, input_, rids[i], positions[i])  # the first build; its last such record
    else:
      rows += v[1]
  matches: dict[int, int] = {}
  for shard, index, rid, digest, open_, by_id in rows:
    for order in same_orders.get(digest, ()):
      matches[order] = matches.get(order, 0) + 1
    if not open_:
      continue
    by_content = other.get(digest)
    if by_id is None and by_content is None:
      continue
    if by_content is None or (by_id is not None and by_id[0] <= by_content[0]):
      order, split, input_ = by_id
      hit = "same id"
    else:
      order, split, input_, known_id, _ = by_content
      hit = f"same content as record {known_id!r}"
    if allow:
      yield {"kind": "overlap", "split": split}
    else:
      yield _problem(shard, index, rid, f"record {rid!r} is also in split {split!r} ({hit}, from {input_}): "
                     f"splits overlap; drop it from one split ({ALLOW})")
  for order, n in matches.items():
    yield {"kind": "matches", "order": order, "count": n}


def _problem(shard, index, rid, message, first=None) -> dict:
  """A refused record, by position; the launcher fills in its file and line (and FIRST_AT)."""
  return {"kind": "problem", "shard": shard, "index": index, "record": rid, "error": message,
          "first": list(first) if first else None}


def _run(args, mine, known, buckets, out: str) -> dict:
  """The pipeline (on the build's runner; in this process for the local one: its groups are shuffled
  here, not between worker processes); its findings come back as JSON lines in `out`."""
  allow = args.allow_overlap

  def graph(p):
    mine_rows = p | "shards" >> beam.Create(mine) | "read" >> beam.FlatMap(_mine_by_id, buckets)
    known_rows = p | "builds" >> beam.Create(list(known)) | "read known" >> beam.FlatMap(_known, buckets)
    by_key = (mine_rows, known_rows) | "together" >> beam.Flatten()
    ids = (by_key | "ids only" >> beam.Filter(lambda kv: kv[0][0] == "id") | "by id" >> beam.GroupByKey()
           | "check ids" >> beam.FlatMap(_by_id, buckets))
    id_problems = ids | "problems" >> beam.Filter(lambda x: isinstance(x, dict))
    onward = ids | "onward" >> beam.Filter(lambda x: not isinstance(x, dict))
    digests = ((onward, by_key | "digests only" >> beam.Filter(lambda kv: kv[0][0] == "digest"))
               | "digest rows" >> beam.Flatten() | "by digest" >> beam.GroupByKey()
               | "check digests" >> beam.FlatMap(_by_digest, allow))
    ((id_problems, digests) | "all" >> beam.Flatten() | "json" >> beam.Map(json.dumps)
     | "write" >> beam.ParDo(beam_local.WriteLines(out)))

  beam_local.run(args, graph, workers=1)
  found = {"problems": [], "overlap": {}, "matches": {}}
  for line in beam_local.read_lines(out):
    x = json.loads(line)
    if x["kind"] == "problem":
      found["problems"].append(x)
    elif x["kind"] == "overlap":
      found["overlap"][x["split"]] = found["overlap"].get(x["split"], 0) + 1
    else:
      found["matches"][str(x["order"])] = found["matches"].get(str(x["order"]), 0) + x["count"]
  return found


# -- skipping ----------------------------------------------------------------------------------

def _drop(output: str, r: shard_job.Result, drop: set[int], entry_path: str) -> None:
  """Rewrites r's shard without the records at `drop`, and r's stats and journal entry, under a
  fingerprint no rerun matches, so a rerun converts it again and checks it afresh (perhaps with
  --allow_overlap, or --on_error=fail, or after the other record is gone)."""
  path = storage.join(output, r.name)
  ids, digests, places = _read((entry_path, True))
  r.fingerprint += "-filtered"
  kept = [p for i, p in enumerate(shard_job.read_shard(path)) if i not in drop]
  keep = [i for i in range(len(ids)) if i not in drop]
  r.ids, r.digests, r.places = ([x[i] for i in keep] for x in (ids, digests, places))
  recs = [records_lib.decode(p) for p in kept]
  r.stats = shard_job.shard_stats([convert.Converted(x, len(x.units) / x.unit_rate if len(x.units) else 0.0)
                                   for x in recs])
  if kept:
    r.shard = shards.publish_shard(path, kept)
  else:
    storage.remove(path)
    r.shard = None
  journal.write_entry(entry_path, r.journal())
  r.records, r.ids, r.digests, r.places = len(kept), [], [], []
