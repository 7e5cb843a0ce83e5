"""A build's last phase: its errors file, then the manifest (merged with the directory's), then cleanup.

The manifest is written after every shard is in place, so a directory with a
manifest is complete. A build into a directory that already holds a dataset
adds its entry to the manifest's "builds" (replacing an earlier build of the
same input and split) and the per-split lists and counts are summed over them.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from data_prep import shards as shards_lib
from data_prep.build import journal, shard_job
from data_prep.formats.items import SPEECH, TEXT
from lst_jax import storage
from lst_jax.data import provenance as prov
from lst_jax.data.manifest import write_manifest

if TYPE_CHECKING:
  from data_prep.build.plan import Plan

ERRORS_SUFFIX = ".errors.jsonl"


def finish(args, plan: Plan, new: dict, results: list[shard_job.Result], start: float,
           overlap: dict[str, int] | None = None) -> str:
  """Errors file, manifest (last), then old files of this input that the manifest no longer lists."""
  errors = [{**e, "build": plan.tag, "format": args.format} for r in results for e in r.errors]
  errors_path = storage.join(args.output, args.split + ERRORS_SUFFIX)
  _write_errors(errors_path, plan.tag, errors)
  totals = {k: sum(r.stats.get(k, 0) for r in results)
            for k in ("records", "words", "text_tokens", "units", "silence_units", "seconds")}
  shards = [r.name for r in results if r.stats.get("records", 0) > 0]
  entry = {"tag": plan.tag, "split": args.split, "format": args.format, "kind": plan.kind,
           "input": storage.absolute(args.input), "entries": len(plan.sources), "skipped": len(errors),
           "shards": shards, **totals, "seconds": round(totals["seconds"], 3),
           **({"overlap": overlap} if overlap else {})}
  old = plan.existing or {}
  builds = [b for b in earlier_builds(old) if (b.get("tag"), b.get("split")) != (plan.tag, args.split)]
  builds.append(entry)
  units = prov.merged_units(old, new) if old else new["units"]
  splits = {**old.get("splits", {}), **split_totals(builds, old.get("splits", {}))}
  files = {r.name: r.shard for r in results if r.shard}
  write_manifest(args.output, {
      **{k: v for k, v in old.items() if k != "schema"},
      "name": old.get("name", os.path.basename(storage.absolute(args.output))),
      "tokenizer": new["tokenizer"], "units": units, "builds": builds, "splits": splits,
      "shards": shards_lib.manifest_entries(args.output, splits, {**old.get("shards", {}), **files})})
  _remove_stale(args.output, args.split, plan.kind, plan.tag, results)
  reused = sum(r.reused for r in results)
  skipped = f", {len(errors)} skipped (listed in {errors_path})" if errors else ""
  speech = (f", {totals['seconds'] / 3600:.3f} h of speech, {totals['units']} units"
            if plan.kind == SPEECH else "")
  return (f"{args.split}: {totals['records']} {plan.kind} records from {len(plan.sources)} entries"
          f"{skipped}{speech}, {totals['words']} words, {totals['text_tokens']} text tokens; "
          f"{len(shards)} shard(s) ({reused} reused) in {time.time() - start:.1f} s -> {args.output}")


def earlier_builds(manifest: dict) -> list[dict]:
  """The manifest's builds, plus one entry per split and kind for shards no build lists
  (a dataset made by data_prep.corpus.demo, or by a merge of such), so adding to it keeps them."""
  builds = list(manifest.get("builds", []))
  listed = {s for b in builds for s in b.get("shards", [])}
  for name, split in manifest.get("splits", {}).items():
    for kind in (SPEECH, TEXT):
      shards = [s for s in split.get(kind, []) if s not in listed]
      if not shards:
        continue
      prefix = "speech_" if kind == SPEECH else "text_"
      builds.append({
          "tag": "earlier", "split": name, "kind": kind, "format": "earlier", "shards": shards,
          "records": split.get(f"num_{kind}", 0), "skipped": 0,
          "seconds": split.get("speech_hours", 0.0) * 3600 if kind == SPEECH else 0.0,
          "words": split.get(prefix + "words", 0),
          "text_tokens": split.get("speech_text_tokens" if kind == SPEECH else "text_tokens", 0),
          "units": split.get("speech_units", 0) if kind == SPEECH else 0,
          "silence_units": split.get("speech_silence_units", 0) if kind == SPEECH else 0})
  return builds


def split_totals(builds: list[dict], old_splits: dict) -> dict:
  """Per-split shard lists and counts, summed over the builds that wrote to each split."""
  out = {}
  for split in sorted({b["split"] for b in builds}):
    mine = [b for b in builds if b["split"] == split]
    speech = [b for b in mine if b["kind"] == SPEECH]
    text = [b for b in mine if b["kind"] == TEXT]
    out[split] = {
        **{k: v for k, v in old_splits.get(split, {}).items() if k not in ("speech", "text")},
        "speech": [s for b in speech for s in b["shards"]], "text": [s for b in text for s in b["shards"]],
        "num_speech": sum(b["records"] for b in speech), "num_text": sum(b["records"] for b in text),
        "speech_hours": round(sum(b["seconds"] for b in speech) / 3600, 4),
        "speech_units": sum(b["units"] for b in speech), "speech_words": sum(b["words"] for b in speech),
        "speech_silence_units": sum(b["silence_units"] for b in speech),
        "speech_text_tokens": sum(b["text_tokens"] for b in speech),
        "text_words": sum(b["words"] for b in text), "text_tokens": sum(b["text_tokens"] for b in text),
        "skipped": sum(b["skipped"] for b in mine),
        "overlap": sum(n for b in mine for n in b.get("overlap", {}).values()),
    }
  return out


def _write_errors(path: str, tag: str, errors: list[dict]) -> None:
  """<output>/<split>.errors.jsonl: this build's skipped entries, beside other builds' ones."""
  kept = []
  if storage.isfile(path):
    kept = [line + "\n" for line in storage.read_text(path).splitlines()
            if line.strip() and json.loads(line).get("build") != tag]
  lines = kept + [json.dumps(e) + "\n" for e in errors]
  if lines:
    storage.write_text(path, "".join(lines))
  else:
    storage.remove(path)


def _remove_stale(output, split, kind, tag, results) -> None:
  """Shards of this input from an earlier build with another shard count, and their journal entries."""
  keep = {r.name for r in results}
  for path in storage.glob(storage.join(output, split, f"{kind}-{tag}-*")):
    if f"{split}/{path.rsplit('/', 1)[-1]}" not in keep:
      storage.remove(path)
  journal.keep_only(output, split, kind, tag, keep)
