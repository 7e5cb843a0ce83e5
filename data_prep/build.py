"""Converts your data into a dataset lst-jax trains on: tokenizer, units, ArrayRecord shards, manifest.

  python -m data_prep.build --format=FORMAT --input=PATH --output=DIR [--split=train]

Formats (data_prep/formats/): lst_jsonl (the official LST JSONL), manifest (an
aligned JSONL with units or audio), audio (NAME.wav/.flac + NAME.txt, or
LibriSpeech), text (plain UTF-8 text, one document per paragraph).

Steps: list the input's entries -> tokenizer (yours, the directory's, or trained
on all transcripts) -> units (given, or a k-means codebook: yours, the
directory's, or fit on the audio) -> shards of --shard_size entries each,
converted in --workers processes -> <split>.errors.jsonl -> manifest.json,
written last. A second build into the same directory (another split, or text
documents added to one) reuses its tokenizer and codebook and adds to the
manifest; a different tokenizer or unit provenance is refused. A rerun with
the same input reuses every shard whose journal fingerprint (settings + the
entries' bytes) still matches, without touching it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import glob
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import Callable

import numpy as np

from data_prep import quantizer, shard_job, tokenizer
from lst_jax.data import provenance as prov
from data_prep.features import FEATURES
from data_prep.formats import READERS, lst_jsonl, manifest_jsonl
from data_prep.formats.items import SPEECH, TEXT, Options
from lst_jax.data.manifest import MANIFEST, DataError, sha256_file, write_manifest

BUILD_VERSION = 1
DEFAULT_NUM_UNITS = 500
DEFAULT_VOCAB_SIZE = 1000
FIT_FRAMES = 60_000       # frames of audio sampled to fit the codebook (40 minutes at 25 Hz)
FIT_BATCH = 8             # audio entries per fitting task
ERRORS_SUFFIX = ".errors.jsonl"
PROGRESS_S = 15.0         # a progress line at least this often while a shard is being converted


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m data_prep.build", description=__doc__.split("\n\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--format", required=True, choices=sorted(READERS), help="input format (above)")
  p.add_argument("--input", required=True, help="input file or folder")
  p.add_argument("--output", required=True, help="dataset directory (created, or added to)")
  p.add_argument("--split", default="train", help="split to write, e.g. train or heldout (default: %(default)s)")
  p.add_argument("--on_error", choices=("fail", "skip"), default="fail",
                 help="bad entries: stop at the first (exit 2), or skip them and list them in "
                      f"<output>/<split>{ERRORS_SUFFIX} (default: %(default)s)")
  tok = p.add_mutually_exclusive_group()
  tok.add_argument("--tokenizer", help="your SentencePiece .model (default: train one, or reuse the output's)")
  tok.add_argument("--vocab_size", type=int, help=f"pieces of a trained tokenizer (default {DEFAULT_VOCAB_SIZE})")
  units = p.add_mutually_exclusive_group()
  units.add_argument("--num_units", type=int,
                     help=f"codebook size: unit ids must be below it (default {lst_jsonl.DEFAULT_NUM_UNITS} "
                          f"for lst_jsonl, else {DEFAULT_NUM_UNITS}); for audio, the k-means units to fit")
  units.add_argument("--codebook", help="a saved codebook.npy (feature_stats.npy beside it) for audio input")
  p.add_argument("--shard_size", type=int, default=10_000, help="input entries per shard (default: %(default)s)")
  p.add_argument("--workers", type=int, default=2, help="worker processes, 0: all in this one (default: %(default)s)")
  p.add_argument("--seed", type=int, default=0, help="seed of the codebook fit (default: %(default)s)")
  args = p.parse_args(argv)
  if args.shard_size < 1 or args.workers < 0 or (args.num_units is not None and args.num_units < 1):
    p.error("--shard_size and --num_units must be >= 1, --workers >= 0")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    print(build(args))
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # e.g. --output is a file, or not writable
    print(f"error: {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
    return 2
  return 0


@dataclasses.dataclass
class _Plan:
  """What this build writes, decided before any shard is converted."""
  reader: object
  kind: str
  tag: str
  sources: list
  options: Options
  existing: dict | None


def _log(line: str) -> None:
  print(line, flush=True)


def build(args: argparse.Namespace, log: Callable[[str], None] = _log) -> str:
  """Runs one build; returns the summary line. Raises DataError (InputError for bad entries)."""
  start = time.time()
  reader = READERS[args.format]
  sources = reader.list_sources(args.input)
  log(f"{args.input}: {len(sources)} entries ({args.format}, {reader.KIND} records)")
  os.makedirs(args.output, exist_ok=True)
  with _lock(args.output), _pool(args.workers) as pool:
    existing = _read_manifest(args.output)
    plan = _Plan(reader, reader.KIND, build_tag(args.format, args.input), sources,
                 _options(args, sources), existing)
    if args.codebook and (args.format in ("lst_jsonl", "text") or plan.options.mode == manifest_jsonl.UNITS):
      raise DataError(f"--codebook applies to audio input; {args.input} gives "
                      + ("text only" if plan.kind == TEXT else "its own units"))
    tok_path = os.path.join(args.output, existing["tokenizer"]["path"] if existing else tokenizer.MODEL)
    settings = shard_job.Settings(args.format, args.output, tok_path, None, plan.options, args.on_error, salt="")
    tok = resolve_tokenizer(args, plan, settings, pool, log)
    units, codebook_dir = resolve_units(args, plan, settings, pool, log)
    new = {"tokenizer": tok, "units": units}
    if existing:
      prov.check_compatible(existing, new, os.path.join(args.output, MANIFEST), "this build")
    settings = dataclasses.replace(settings, codebook_dir=codebook_dir, salt=salt(args.format, new, plan.options))
    results = convert_all(args, plan, settings, pool, log, start)
  return finish(args, plan, new, results, start)


def _options(args, sources) -> Options:
  if args.format == "lst_jsonl":
    return Options(num_units=args.num_units or lst_jsonl.DEFAULT_NUM_UNITS)
  if args.format == "manifest":
    mode, rate = manifest_jsonl.first_entry(sources) or (None, None)
    return Options(num_units=args.num_units or DEFAULT_NUM_UNITS, unit_rate=rate, mode=mode)
  return Options(num_units=args.num_units or DEFAULT_NUM_UNITS)


def build_tag(format: str, input: str) -> str:
  """Names this input's shards: the same input gives the same names, another input new ones."""
  return hashlib.sha256(f"{format}\0{os.path.abspath(input)}".encode()).hexdigest()[:8]


def salt(format: str, new: dict, options: Options) -> str:
  """Everything a shard's bytes depend on besides its entries."""
  return json.dumps({"version": BUILD_VERSION, "format": format, "provenance": prov.provenance(new),
                     "unit_rate": options.unit_rate, "mode": options.mode}, sort_keys=True)


# -- tokenizer ---------------------------------------------------------------------------------

def resolve_tokenizer(args, plan: _Plan, settings: shard_job.Settings, pool, log) -> dict:
  """The dataset's tokenizer entry: the directory's, the user's (copied in), or trained here."""
  path = settings.tokenizer
  if plan.existing:
    entry = plan.existing["tokenizer"]
    if not os.path.isfile(path):
      raise DataError(f"{os.path.join(args.output, MANIFEST)} names tokenizer {path}, which is missing")
    if args.tokenizer:
      user = _tokenizer_entry(args.tokenizer, "user")
      prov.check_compatible(plan.existing, {**plan.existing, "tokenizer": user},
                            os.path.join(args.output, MANIFEST), f"--tokenizer={args.tokenizer}")
    log(f"tokenizer: reusing {path} ({entry['vocab_size']} pieces)"
        + (f"; --vocab_size={args.vocab_size} ignored" if args.vocab_size else ""))
    return entry
  if args.tokenizer:
    entry = _tokenizer_entry(args.tokenizer, os.path.abspath(args.tokenizer))
    _copy_atomic(args.tokenizer, path)
    log(f"tokenizer: yours, {args.tokenizer} ({entry['vocab_size']} pieces)")
    return {**entry, "path": tokenizer.MODEL}
  vocab_size = args.vocab_size or DEFAULT_VOCAB_SIZE
  lines, start, entries = [], time.time(), 0
  job = functools.partial(shard_job.transcripts, settings=settings)
  chunks = _chunks(plan.sources, args.shard_size)
  for i, (chunk, (got, errors)) in enumerate(zip(chunks, pool.imap(job, chunks)), 1):
    if errors and args.on_error == shard_job.FAIL:
      raise errors[0]
    lines += got
    entries += len(chunk)
    _progress(log, "reading transcripts", i, len(chunks), entries, start)
  if not lines:
    raise DataError(f"{args.input}: no usable transcripts to train a tokenizer on")
  log(f"tokenizer: training a {vocab_size}-piece BPE model on {len(lines)} transcripts")
  tokenizer.save(tokenizer.train(lines, vocab_size), args.output)
  return {**_tokenizer_entry(path, "trained"), "path": tokenizer.MODEL}


def _tokenizer_entry(path: str, source: str) -> dict:
  try:
    sp = tokenizer.load(path)
  except (OSError, RuntimeError) as e:
    raise DataError(f"--tokenizer={path}: not a SentencePiece model ({e})") from None
  return {"path": path, "sha256": sha256_file(path), "vocab_size": sp.get_piece_size(), "source": source}


# -- units -------------------------------------------------------------------------------------

def resolve_units(args, plan: _Plan, settings, pool, log) -> tuple[dict, str | None]:
  """The dataset's unit provenance, and where the codebook lives (audio only)."""
  existing_units = plan.existing["units"] if plan.existing else prov.no_units()
  if plan.kind == TEXT:
    return existing_units, None
  if args.format == "lst_jsonl" or plan.options.mode == manifest_jsonl.UNITS:
    rate = lst_jsonl.FRAME_RATE if args.format == "lst_jsonl" else plan.options.unit_rate
    return prov.user_units(args.format, plan.options.num_units, rate), None
  if plan.options.mode is None and args.format == "manifest":
    raise DataError(f"{args.input}: no entry gives usable \"units\" or \"audio\"")
  # Audio: a quantizer codebook.
  if prov.units_source(existing_units) not in (prov.NO_UNITS, prov.QUANTIZER):
    raise DataError(f"{os.path.join(args.output, MANIFEST)} and this build differ in units.source: "
                    f"{json.dumps(prov.units_source(existing_units))} vs \"quantizer\"; audio gets units "
                    f"from a codebook, and this directory's units are not from one")
  if prov.units_source(existing_units) == prov.QUANTIZER:
    units = dict(existing_units)
    if args.codebook:
      units.update(_codebook_provenance(_load_codebook(args.codebook)))
    if args.num_units:
      units["num_units"] = args.num_units
    units["features"] = json.loads(json.dumps(FEATURES))  # what this code computes: must match
    log(f"units: reusing the directory's {existing_units['num_units']}-unit codebook")
    return units, args.output
  if args.codebook:
    codebook = _load_codebook(args.codebook)
    fit = {"from": os.path.abspath(args.codebook)}
    log(f"units: your {codebook.num_units}-unit codebook {args.codebook}")
  else:
    codebook, frames = fit_codebook(args, plan, settings, pool, log)
    fit = {"input": os.path.abspath(args.input), "frames": frames, "seed": args.seed}
  quantizer.save(codebook, args.output)
  return {**_codebook_provenance(codebook), "fit": fit}, args.output


def fit_codebook(args, plan: _Plan, settings, pool, log) -> tuple[quantizer.Codebook, int]:
  """k-means units on a seeded sample of the audio (about FIT_FRAMES frames; all of it if less)."""
  num_units = plan.options.num_units
  order = np.random.default_rng(args.seed).permutation(len(plan.sources))
  batches = [[plan.sources[i] for i in order[lo:lo + FIT_BATCH]] for lo in range(0, len(order), FIT_BATCH)]
  job = functools.partial(shard_job.fit_features, settings=settings)
  feats, total, start, done = [], 0, time.time(), 0
  per_round = max(1, args.workers) * 2
  while done < len(batches) and total < FIT_FRAMES:
    for got, errors in pool.imap(job, batches[done:done + per_round]):
      if errors and args.on_error == shard_job.FAIL:
        raise errors[0]
      for f in got:  # in sample order, so the sample does not depend on --workers
        if total < FIT_FRAMES:
          feats.append(f)
          total += len(f)
    done += per_round
    _progress(log, "features for the codebook", min(done, len(batches)), len(batches),
              min(done * FIT_BATCH, len(order)), start, unit="audio files")
  if total < num_units:
    raise DataError(f"{args.input}: fitting {num_units} units needs at least {num_units} frames of audio, "
                    f"but the audio gives {total} frames ({total / FEATURES['frame_rate']:.1f} s at "
                    f"{FEATURES['frame_rate']:g} Hz); use more audio or a smaller --num_units")
  log(f"units: fitting {num_units} k-means units on {total} frames")
  return quantizer.fit(feats, num_units, seed=args.seed), total


def _load_codebook(path: str) -> quantizer.Codebook:
  directory = path if os.path.isdir(path) else os.path.dirname(path) or "."
  if not os.path.isdir(path) and os.path.basename(path) != quantizer.CODEBOOK:
    raise DataError(f"--codebook={path}: expected {quantizer.CODEBOOK} (or its folder)")
  for name in (quantizer.CODEBOOK, quantizer.FEATURE_STATS):
    if not os.path.isfile(os.path.join(directory, name)):
      raise DataError(f"--codebook={path}: {os.path.join(directory, name)} is missing "
                      f"(quantizer.save writes {quantizer.CODEBOOK} and {quantizer.FEATURE_STATS} together)")
  try:
    codebook = quantizer.load(directory)
  except (OSError, ValueError) as e:
    raise DataError(f"--codebook={path}: unreadable ({e})") from None
  dim = 2 * FEATURES["n_mels"]
  if codebook.centroids.ndim != 2 or codebook.centroids.shape[1] != dim or codebook.mean.shape != (dim,):
    raise DataError(f"--codebook={path}: centroids of shape {codebook.centroids.shape} do not fit this "
                    f"build's {dim}-dimensional features")
  return codebook


def _codebook_provenance(codebook: quantizer.Codebook) -> dict:
  return {"source": prov.QUANTIZER, "quantizer": "logmel-kmeans", "num_units": codebook.num_units,
          "frame_rate": FEATURES["frame_rate"], "codebook": quantizer.CODEBOOK,
          "codebook_sha256": _npy_sha256(codebook.centroids), "feature_stats": quantizer.FEATURE_STATS,
          "feature_stats_sha256": _npy_sha256(np.stack([codebook.mean, codebook.std])),
          "features": json.loads(json.dumps(FEATURES))}


def _npy_sha256(array: np.ndarray) -> str:
  """sha256 of the file quantizer.save writes for `array`."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array, np.float32))
  return hashlib.sha256(buffer.getvalue()).hexdigest()


# -- shards ------------------------------------------------------------------------------------

def convert_all(args, plan: _Plan, settings, pool, log, start) -> list[shard_job.Result]:
  """Converts every chunk into its shard (or reuses it); fails at the first bad entry in fail mode."""
  chunks = _chunks(plan.sources, args.shard_size)
  names = [shard_name(args.split, plan.kind, plan.tag, i, len(chunks)) for i in range(len(chunks))]
  journal_path = _journal_path(args.output, args.split, plan.kind, plan.tag)
  done = _read_journal(journal_path)
  jobs = [shard_job.Job(n, tuple(c), done.get(n)) for n, c in zip(names, chunks)]
  results, t0 = [], time.time()
  log(f"{args.split}: converting {len(plan.sources)} entries into {len(jobs)} shard(s) "
      f"in {max(args.workers, 1)} process(es)")
  os.makedirs(os.path.dirname(journal_path), exist_ok=True)
  pool.progress.value = 0
  pending = pool.imap(functools.partial(shard_job.run, settings=settings), jobs)
  with open(journal_path, "a") as journal:
    while len(results) < len(jobs):
      try:
        r = pending.next(timeout=PROGRESS_S)
      except multiprocessing.TimeoutError:  # a long shard: say how far its entries got
        n, elapsed = pool.progress.value, max(time.time() - t0, 1e-9)
        log(f"{args.split}: {n}/{len(plan.sources)} entries converted, {len(results)}/{len(jobs)} shards done, "
            f"{n / elapsed:.0f} entries/s, {elapsed:.1f} s elapsed")
        continue
      if r.failure is not None:
        raise r.failure
      if not r.reused:
        journal.write(json.dumps(r.journal()) + "\n")
        journal.flush()
      results.append(r)
      reused = sum(x.reused for x in results)
      _progress(log, f"{args.split}: shards", len(results), len(jobs), sum(x.entries for x in results), t0,
                extra=f", {reused} reused" if reused else "")
  return results


def shard_name(split: str, kind: str, tag: str, index: int, count: int) -> str:
  """e.g. "train/speech-1a2b3c4d-00000-of-00003.array_record" (tag: the input's build_tag)."""
  from data_prep import shards  # array_record: imported only once there is work
  return shards.shard_name(split, f"{kind}-{tag}", index, count)


def _journal_path(output: str, split: str, kind: str, tag: str) -> str:
  return os.path.join(output, split, f".{kind}-{tag}.journal.jsonl")


def _read_journal(path: str) -> dict[str, dict]:
  out = {}
  with contextlib.suppress(FileNotFoundError):
    with open(path) as f:
      for line in f:
        with contextlib.suppress(ValueError, KeyError, TypeError):
          entry = json.loads(line)
          out[entry["shard"]] = entry
  return out


# -- manifest ----------------------------------------------------------------------------------

def finish(args, plan: _Plan, new: dict, results: list[shard_job.Result], start: float) -> str:
  """Errors file, manifest (last), then old files of this input that the manifest no longer lists."""
  errors = [{**e, "build": plan.tag, "format": args.format} for r in results for e in r.errors]
  errors_path = os.path.join(args.output, args.split + ERRORS_SUFFIX)
  _write_errors(errors_path, plan.tag, errors)
  totals = {k: sum(r.stats.get(k, 0) for r in results)
            for k in ("records", "words", "text_tokens", "units", "silence_units", "seconds")}
  shards = [r.name for r in results if r.stats.get("records", 0) > 0]
  entry = {"tag": plan.tag, "split": args.split, "format": args.format, "kind": plan.kind,
           "input": os.path.abspath(args.input), "entries": len(plan.sources), "skipped": len(errors),
           "shards": shards, **totals, "seconds": round(totals["seconds"], 3)}
  old = plan.existing or {}
  builds = [b for b in earlier_builds(old) if (b.get("tag"), b.get("split")) != (plan.tag, args.split)]
  builds.append(entry)
  units = prov.merged_units(old, new) if old else new["units"]
  write_manifest(args.output, {
      **{k: v for k, v in old.items() if k != "schema"},
      "name": old.get("name", os.path.basename(os.path.abspath(args.output))),
      "tokenizer": new["tokenizer"], "units": units, "builds": builds,
      "splits": {**old.get("splits", {}), **split_totals(builds, old.get("splits", {}))}})
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
  (a dataset made by data_prep.demo, or by a merge of such), so adding to it keeps them."""
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
    }
  return out


def _write_errors(path: str, tag: str, errors: list[dict]) -> None:
  """<output>/<split>.errors.jsonl: this build's skipped entries, beside other builds' ones."""
  kept = []
  with contextlib.suppress(FileNotFoundError):
    with open(path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get("build") != tag]
  lines = kept + [json.dumps(e) + "\n" for e in errors]
  if not lines:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
    return
  with open(path + ".tmp", "w") as f:
    f.writelines(lines)
  os.replace(path + ".tmp", path)


def _remove_stale(output, split, kind, tag, results) -> None:
  """Shards of this input from an earlier build with another shard count; compacts the journal."""
  keep = {r.name for r in results}
  for path in glob.glob(os.path.join(output, split, f"{kind}-{tag}-*")):
    if os.path.relpath(path, output) not in keep:
      os.remove(path)
  journal = _journal_path(output, split, kind, tag)
  with open(journal + ".tmp", "w") as f:
    f.writelines(json.dumps(r.journal()) + "\n" for r in results)
  os.replace(journal + ".tmp", journal)


def _read_manifest(output: str) -> dict | None:
  path = os.path.join(output, MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      raw = json.load(f)
  except ValueError as e:
    raise DataError(f"{path}: not valid JSON ({e}); remove it to rebuild") from None
  for key in ("tokenizer", "units", "splits"):
    if key not in raw:
      raise DataError(f"{path}: missing field {key!r}; not a dataset this build can add to")
  return raw


# -- plumbing ----------------------------------------------------------------------------------

def _chunks(items: list, size: int) -> list[list]:
  return [items[lo:lo + size] for lo in range(0, len(items), size)]


def _progress(log, what: str, done: int, total: int, entries: int, start: float, unit: str = "entries",
              extra: str = "") -> None:
  """One line per step when there are few, else about every 5%."""
  step = max(1, total // 20)
  if done == total or done % step == 0:
    elapsed = max(time.time() - start, 1e-9)
    log(f"{what} {done}/{total}: {entries} {unit}, {entries / elapsed:.0f} {unit}/s, "
        f"{elapsed:.1f} s elapsed{extra}")


def _copy_atomic(src: str, dst: str) -> None:
  if os.path.abspath(src) == os.path.abspath(dst):
    return
  shutil.copyfile(src, dst + ".tmp")
  os.replace(dst + ".tmp", dst)


@contextlib.contextmanager
def _lock(output: str):
  """One build per directory at a time (a second one waits)."""
  with open(os.path.join(output, ".build.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class _Inline:
  """Runs tasks in this process (--workers=0): debugging, profiling, small inputs."""

  def imap(self, fn, items):
    return _InlineResults(map(fn, items))


class _InlineResults:

  def __init__(self, results):
    self.results = results

  def __iter__(self):
    return self.results

  def next(self, timeout=None):
    del timeout
    return next(self.results)


@contextlib.contextmanager
def _pool(workers: int):
  """A process pool whose workers count the entries they finish in `pool.progress` (shared)."""
  # spawn, not fork: the parent may hold threads (jax under pytest, sentencepiece).
  ctx = multiprocessing.get_context("spawn")
  counter = ctx.Value("q", 0)
  if workers <= 0:
    shard_job.init_worker(counter)
    pool = _Inline()
    pool.progress = counter
    try:
      yield pool
    finally:
      shard_job.init_worker(None)
    return
  with ctx.Pool(workers, initializer=shard_job.init_worker, initargs=(counter,)) as pool:
    pool.progress = counter
    yield pool


if __name__ == "__main__":
  sys.exit(main())
