"""Converts your data into a dataset lst-jax trains on: tokenizer, units, ArrayRecord shards, manifest.

  python -m data_prep.build --format=FORMAT --input=PATH --output=DIR [--split=train]

Formats (data_prep/formats/): lst_jsonl (the official LST JSONL), manifest (an
aligned JSONL with units or audio), audio (NAME.wav/.flac + NAME.txt, or
LibriSpeech), text (plain UTF-8 text, one document per paragraph).

Steps: list the input's entries -> tokenizer (yours, the directory's, or trained
on the transcripts, of a seeded sample of shards past 200k entries) -> units (given, or a k-means codebook: yours, the
directory's, or fit on the audio; or your HuBERT checkpoint's layer N and your
k-means: --units=hubert --hubert=DIR --layer=N --kmeans=FILE) -> shards of --shard_size entries each,
converted in --workers processes -> <split>.errors.jsonl -> manifest.json,
written last. A second build into the same directory (another split, or text
documents added to one) reuses its tokenizer and codebook and adds to the
manifest; a different tokenizer or unit provenance is refused. A rerun with
the same input reuses every shard whose journal fingerprint (settings + the
entries' bytes) still matches, without touching it.

Checked before the manifest is written (data_prep/dataset_checks.py, an Apache Beam
pipeline: --runner and Beam's other options pass through, data_prep/beam_options.py):
record ids are unique within the dataset, an input already in the split is refused,
and a record also in another split (by id or content) is refused unless --allow_overlap.
The manifest's "shards" holds every shard's records, bytes and sha256
(`python -m data_prep.verify DIR` checks them). --output=gs://bucket/path builds in a
local staging folder (under $TMPDIR; a dataset already there is downloaded first),
then uploads the shards and, last, the manifest. Exit 2: bad input (FILE:LINE named);
exit 1: a worker process died (the shard it held named; a rerun reuses the rest).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Callable

from data_prep import beam_options, build_manifest, build_vocab, dataset_checks, journal, shard_job, workers
from data_prep.formats import READERS, lst_jsonl, manifest_jsonl
from data_prep.formats.items import TEXT, Options
from lst_jax import storage
from lst_jax.data import provenance as prov
from lst_jax.data import tokenizer
from lst_jax.data.manifest import MANIFEST, DataError

BUILD_VERSION = 1
LOGMEL, HUBERT = "logmel", "hubert"
UNIT_KINDS = (LOGMEL, HUBERT)
DEFAULT_NUM_UNITS = 500
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
                      f"<output>/<split>{build_manifest.ERRORS_SUFFIX} (default: %(default)s)")
  tok = p.add_mutually_exclusive_group()
  tok.add_argument("--tokenizer", help="your SentencePiece .model (default: train one, or reuse the output's)")
  tok.add_argument("--vocab_size", type=int,
                   help=f"pieces of a trained tokenizer (default {build_vocab.DEFAULT_VOCAB_SIZE})")
  units = p.add_mutually_exclusive_group()
  units.add_argument("--num_units", type=int,
                     help=f"codebook size: unit ids must be below it (default {lst_jsonl.DEFAULT_NUM_UNITS} "
                          f"for lst_jsonl, else {DEFAULT_NUM_UNITS}); for audio, the k-means units to fit")
  units.add_argument("--codebook", help="a saved codebook.npy (feature_stats.npy beside it) for audio input")
  p.add_argument("--units", choices=UNIT_KINDS,
                 help="audio -> units: the built-in log-mel k-means, or your HuBERT (default: the directory's, "
                      "else logmel)")
  p.add_argument("--hubert", help="--units=hubert: a Hugging Face-format HuBERT folder (config.json + "
                                  "model.safetensors), e.g. slprl/mhubert-base-25hz; never downloaded")
  p.add_argument("--layer", type=int, help="--units=hubert: the layer whose hidden states are quantized "
                                           "(hidden_states[N]; 11 for the 25 Hz mHuBERT's k-means)")
  p.add_argument("--kmeans", help="a k-means model: a joblib (MiniBatch)KMeans as fairseq/textlesslib save it, or "
                                  "a .npy [K, D] centroid array; for --units=logmel, one of ours (kmeans.joblib, "
                                  "feature_stats.npy beside it)")
  p.add_argument("--shard_size", type=int, default=10_000, help="input entries per shard (default: %(default)s)")
  p.add_argument("--workers", type=int, default=2, help="worker processes, 0: all in this one (default: %(default)s)")
  p.add_argument("--seed", type=int, default=0, help="seed of the codebook fit (default: %(default)s)")
  p.add_argument("--allow_overlap", action="store_true",
                 help="keep records whose id or content is also in another split (e.g. train and heldout) "
                      "and count them in the manifest, instead of refusing them")
  p.add_argument("--runner", help="Apache Beam runner of the dataset checks (default: in this process); any other "
                                  "Beam pipeline option is passed on as it is (data_prep/beam_options.py)")
  args, extra = p.parse_known_args(argv)
  args.beam_args, unknown = beam_options.beam_flags(extra)
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  if args.shard_size < 1 or args.workers < 0 or (args.num_units is not None and args.num_units < 1):
    p.error("--shard_size and --num_units must be >= 1, --workers >= 0")
  if args.units is None and args.hubert:
    args.units = HUBERT
  if args.units != HUBERT and (args.hubert or args.layer is not None):
    p.error("--hubert and --layer go with --units=hubert")
  if args.units == HUBERT and args.codebook:
    p.error("--codebook is the built-in quantizer's; with --units=hubert give --kmeans")
  if args.kmeans and args.codebook:
    p.error("give --codebook or --kmeans, not both")
  if args.layer is not None and args.layer < 0:
    p.error("--layer must be >= 0")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    print(build_to_object_storage(args) if storage.is_url(args.output) else build(args))
  except workers.WorkerDied as e:  # a fault, not bad input
    print(f"error: {e}", file=sys.stderr)
    return 1
  except (DataError, storage.StorageError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # e.g. --output is a file, or not writable
    print(f"error: {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
    return 2
  return 0


@dataclasses.dataclass
class Plan:
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
  """Runs one build; returns the summary line. Raises DataError (InputError for bad entries).

  Phases, in order: list the entries; plan (the directory's manifest, the input's
  options); vocabularies (tokenizer and codebook: build_vocab); convert the shards
  (shard_job, in the workers); errors file and manifest (build_manifest). The
  directory is locked throughout, and the shard journal lets a rerun reuse shards
  (journal); workers.py holds the process pool.
  """
  start = time.time()
  reader = READERS[args.format]
  sources = reader.list_sources(args.input)
  log(f"{args.input}: {len(sources)} entries ({args.format}, {reader.KIND} records)")
  with journal.lock(args.output), workers.pool(args.workers) as pool:
    plan = make_plan(args, reader, sources)
    new, settings = vocabularies(args, plan, pool, log)
    results = convert_all(args, plan, settings, pool, log, start)
    overlap = dataset_checks.check(args, plan, results)
  return build_manifest.finish(args, plan, new, results, start, overlap)


def build_to_object_storage(args: argparse.Namespace, log: Callable[[str], None] = _log) -> str:
  """`build` into a local staging folder, then uploaded to the gs:// --output: shards and
  vocabularies first, manifest.json last (a reader never sees a manifest naming missing shards).
  A dataset already at --output is downloaded first, so the build adds to it as locally."""
  target = args.output
  storage.check_reachable(target, "--output")
  with tempfile.TemporaryDirectory(prefix="lst_jax_build_") as tmp:
    stage = os.path.join(tmp, target.rstrip("/").rsplit("/", 1)[-1])  # the dataset's name, as locally
    os.makedirs(stage)
    if storage.exists(storage.join(target, MANIFEST)):
      log(f"{target}: downloading the dataset there to add to it")
      storage.download_tree(target, stage)
    summary = build(argparse.Namespace(**{**vars(args), "output": stage}), log)
    manifest = storage.read_bytes(os.path.join(stage, MANIFEST))
    os.remove(os.path.join(stage, MANIFEST))
    log(f"uploading to {target}")
    storage.upload_tree(stage, target)
    storage.write_bytes(storage.join(target, MANIFEST), manifest)
  return summary.replace(stage, target)


# -- plan --------------------------------------------------------------------------------------

def make_plan(args, reader, sources: list) -> Plan:
  """The directory's manifest (if any) and the input's options; refuses a --codebook that cannot apply."""
  existing = build_manifest.read(args.output)
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


# -- tokenizer and units -----------------------------------------------------------------------

def vocabularies(args, plan: Plan, pool, log) -> tuple[dict, shard_job.Settings]:
  """The manifest's "tokenizer" and "units" entries (checked against the directory's), and the
  settings every shard job gets."""
  existing = plan.existing
  tok_path = os.path.join(args.output, existing["tokenizer"]["path"] if existing else tokenizer.MODEL)
  settings = shard_job.Settings(args.format, args.output, tok_path, None, plan.options, args.on_error, salt="")
  tok = build_vocab.resolve_tokenizer(args, plan, settings, pool, log)
  units, codebook_dir = build_vocab.resolve_units(args, plan, settings, pool, log)
  new = {"tokenizer": tok, "units": units}
  if existing:
    prov.check_compatible(existing, new, os.path.join(args.output, MANIFEST), "this build")
  return new, dataclasses.replace(settings, codebook_dir=codebook_dir, salt=salt(args.format, new, plan.options),
                                  units=units if codebook_dir else None)


def salt(format: str, new: dict, options: Options) -> str:
  """Everything a shard's bytes depend on besides its entries."""
  return json.dumps({"version": BUILD_VERSION, "format": format, "provenance": prov.provenance(new),
                     "unit_rate": options.unit_rate, "mode": options.mode}, sort_keys=True)


# -- shards ------------------------------------------------------------------------------------

def convert_all(args, plan: Plan, settings, pool, log, start) -> list[shard_job.Result]:
  """Converts every chunk into its shard (or reuses it); fails at the first bad entry in fail mode."""
  chunks = workers.chunks(plan.sources, args.shard_size)
  names = [shard_name(args.split, plan.kind, plan.tag, i, len(chunks)) for i in range(len(chunks))]
  journal.migrate(args.output, args.split, plan.kind, plan.tag)
  jobs = [shard_job.Job(n, tuple(c), journal.entry_path(args.output, n, plan.kind, plan.tag), i)
          for i, (n, c) in enumerate(zip(names, chunks))]
  results, t0 = {}, time.time()
  log(f"{args.split}: converting {len(plan.sources)} entries into {len(jobs)} shard(s) "
      f"in {max(args.workers, 1)} process(es)")
  pool.progress.value = 0

  def waiting():  # a long shard: say how far its entries got
    n, elapsed = pool.progress.value, max(time.time() - t0, 1e-9)
    log(f"{args.split}: {n}/{len(plan.sources)} entries converted, {len(results)}/{len(jobs)} shards done, "
        f"{n / elapsed:.0f} entries/s, {elapsed:.1f} s elapsed")

  # Unordered: each worker journals its shard as soon as it is done, so a rerun after a crash reuses it.
  pending = pool.imap_unordered(functools.partial(shard_job.run, settings=settings), jobs)
  for r in workers.watch(pool, pending, waiting, PROGRESS_S, names):
    if r.failure is not None:
      raise r.failure
    results[r.name] = r
    reused = sum(x.reused for x in results.values())
    workers.progress(log, f"{args.split}: shards", len(results), len(jobs),
                     sum(x.entries for x in results.values()), t0, extra=f", {reused} reused" if reused else "")
  return [results[n] for n in names]


def shard_name(split: str, kind: str, tag: str, index: int, count: int) -> str:
  """e.g. "train/speech-1a2b3c4d-00000-of-00003.array_record" (tag: the input's build_tag)."""
  from data_prep import shards  # array_record: imported only once there is work
  return shards.shard_name(split, f"{kind}-{tag}", index, count)


if __name__ == "__main__":
  sys.exit(main())
