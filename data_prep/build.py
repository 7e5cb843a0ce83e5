"""Converts your data into a dataset lst-jax trains on: tokenizer, units, ArrayRecord shards, manifest.

  python -m data_prep.build --format=FORMAT --input=PATH --output=DIR [--split=train]

Formats (data_prep/formats/): lst_jsonl (the official LST JSONL), manifest (an
aligned JSONL with units or audio), audio (NAME.wav/.flac + NAME.txt, or
LibriSpeech), text (plain UTF-8 text, one document per paragraph).

Steps: list the input's entries -> tokenizer (yours, the directory's, or trained
on the transcripts, of a seeded sample of shards past 200k entries) -> units (given, or a k-means codebook: yours, the
directory's, or fit on the audio; or your HuBERT checkpoint's layer N and your
k-means: --units=hubert --hubert=DIR --layer=N --kmeans=FILE) -> shards of --shard_size entries each,
converted by an Apache Beam pipeline (local runner: --workers processes) -> dataset checks
-> <split>.errors.jsonl -> manifest.json, written last. A second build into the same directory (another split, or text
documents added to one) reuses its tokenizer and codebook and adds to the
manifest; a different tokenizer or unit provenance is refused. A rerun with
the same input reuses every shard whose journal fingerprint (settings + the
entries' bytes) still matches, without touching it.

Every stage runs on Beam's local runner by default (nothing to install or download);
--runner and Beam's other options pass through (data_prep/beam_local.py), and a remote
runner needs --output=gs://... . Checked before the manifest is written (data_prep/dataset_checks.py):
record ids are unique within the dataset, an input already in the split is refused,
and a record also in another split (by id or content) is refused unless --allow_overlap.
The manifest's "shards" holds every shard's records, bytes and sha256
(`python -m data_prep.verify DIR` checks them). --output=gs://bucket/path: each shard is
written locally where it is converted, then uploaded; the manifest last. Exit 2: bad input (FILE:LINE named);
exit 1: a worker process died (the shard it held named; a rerun reuses the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from typing import Callable, Iterator

from data_prep import beam_local, beam_options, build_manifest, build_vocab, dataset_checks, journal, shard_job
from data_prep import shard_plan, worker_status
from data_prep.formats import READERS, lst_jsonl, manifest_jsonl
from data_prep.formats.items import TEXT, InputError, Options
from lst_jax import storage
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import provenance as prov
from lst_jax.data import quantizers, tokenizer
from lst_jax.data.manifest import MANIFEST, DataError

with beam_options.quiet():
  import apache_beam as beam

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
  p.add_argument("--workers", type=int, help="processes of the local runner; 0 or 1: all in this one "
                                            "(default: the machine's cores, at most one per shard)")
  p.add_argument("--seed", type=int, default=0, help="seed of the codebook fit (default: %(default)s)")
  p.add_argument("--allow_overlap", action="store_true",
                 help="keep records whose id or content is also in another split (e.g. train and heldout) "
                      "and count them in the manifest, instead of refusing them")
  p.add_argument("--runner", help="Apache Beam runner (default: the local one, with --workers processes); any "
                                  "other Beam pipeline option is passed on as it is (data_prep/beam_local.py)")
  args, extra = p.parse_known_args(argv)
  args.beam_args, unknown = beam_options.beam_flags(extra)
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  if args.shard_size < 1 or (args.workers is not None and args.workers < 0) or (args.num_units is not None and args.num_units < 1):
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
    print(build(args))
  except worker_status.WorkerDied as e:  # a fault, not bad input
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
  chunks: list = dataclasses.field(default_factory=list)  # shard_plan.Chunk per shard: its saved entries


def _log(line: str) -> None:
  print(line, flush=True)


def build(args: argparse.Namespace, log: Callable[[str], None] = _log) -> str:
  """Runs one build; returns the summary line. Raises DataError (InputError for bad entries).

  Phases, in order: list the entries; plan (the directory's manifest, the input's
  options); vocabularies (tokenizer and codebook: build_vocab); convert the shards
  (a Beam pipeline of shard_job.ConvertShards); the dataset checks (dataset_checks);
  errors file and manifest (build_manifest). A local directory is locked throughout,
  and the shard journal lets a rerun reuse shards (journal).
  """
  start = time.time()
  if storage.is_url(args.output):
    storage.check_reachable(args.output, "--output")
  beam_local.check_runner(args)
  reader = READERS[args.format]
  sources = reader.list_sources(args.input)
  log(f"{args.input}: {len(sources)} entries ({args.format}, {reader.KIND} records)")
  with journal.lock(args.output), beam_local.scratch(args) as scratch:
    plan = make_plan(args, reader, sources)
    plan.chunks = shard_plan.save(sources, args.shard_size, storage.join(scratch, "chunks"))
    new, settings = vocabularies(args, plan, log, scratch)
    results = convert_all(args, plan, settings, log, scratch)
    overlap = dataset_checks.check(args, plan, results, scratch)
  return build_manifest.finish(args, plan, new, results, start, overlap)


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

def vocabularies(args, plan: Plan, log, scratch: str) -> tuple[dict, shard_job.Settings]:
  """The manifest's "tokenizer" and "units" entries (checked against the directory's), and the
  settings every shard job gets."""
  existing = plan.existing
  model = existing["tokenizer"]["path"] if existing else tokenizer.MODEL
  with vocabulary_folder(args.output, existing) as folder:
    here = argparse.Namespace(**{**vars(args), "output": folder})
    settings = shard_job.Settings(args.format, folder, os.path.join(folder, model), None, plan.options,
                                  args.on_error, salt="", run_id=uuid.uuid4().hex)
    tok = build_vocab.resolve_tokenizer(here, plan, settings, log, scratch)
    units, codebook_dir = build_vocab.resolve_units(here, plan, settings, log, scratch)
  new = {"tokenizer": tok, "units": units}
  if existing:
    prov.check_compatible(existing, new, storage.join(args.output, MANIFEST), "this build")
  return new, dataclasses.replace(settings, output=args.output, tokenizer=storage.join(args.output, model),
                                  codebook_dir=args.output if codebook_dir else None,
                                  salt=salt(args.format, new, plan.options), units=units if codebook_dir else None)


@contextlib.contextmanager
def vocabulary_folder(output: str, existing: dict | None) -> Iterator[str]:
  """Where the tokenizer and quantizer files are read and made: the output itself, or for gs:// a local
  folder holding the dataset's ones, uploaded to the output afterwards (before any shard is converted:
  the workers read them from there)."""
  if not storage.is_url(output):
    yield output
    return
  with tempfile.TemporaryDirectory(prefix="lst_jax_vocab_") as folder:
    for name in vocabulary_files(existing or {}):
      if storage.exists(storage.join(output, name)):
        storage.copy_file(storage.join(output, name), os.path.join(folder, name))
    yield folder
    storage.upload_tree(folder, output)


def vocabulary_files(manifest: dict) -> list[str]:
  """The tokenizer and quantizer files a manifest names (relative paths)."""
  units = manifest.get("units", {})
  names = [manifest.get("tokenizer", {}).get("path"), units.get("codebook"), units.get("feature_stats"),
           units.get("kmeans_joblib"), units.get("kmeans")]
  if units.get("codebook"):
    names += [codebook_lib.CODEBOOK, codebook_lib.FEATURE_STATS]
  if units.get("quantizer") == quantizers.HUBERT_KMEANS:
    names.append(quantizers.KMEANS_FILE)
  return sorted({n for n in names if isinstance(n, str) and n and not storage.is_url(n)})


def salt(format: str, new: dict, options: Options) -> str:
  """Everything a shard's bytes depend on besides its entries."""
  return json.dumps({"version": BUILD_VERSION, "format": format, "provenance": prov.provenance(new),
                     "unit_rate": options.unit_rate, "mode": options.mode}, sort_keys=True)


# -- shards ------------------------------------------------------------------------------------

def convert_all(args, plan: Plan, settings, log, scratch: str) -> list[shard_job.Result]:
  """Converts every chunk into its shard (or reuses it) in a Beam pipeline, one element per shard; in
  fail mode the first bad entry (of the earliest shard that met one) stops the build."""
  chunks = plan.chunks
  names = [shard_name(args.split, plan.kind, plan.tag, i, len(chunks)) for i in range(len(chunks))]
  journal.migrate(args.output, args.split, plan.kind, plan.tag)
  journal.clear_failures(args.output, args.split, plan.kind, plan.tag)
  jobs = [shard_job.Job(n, c, journal.entry_path(args.output, n, plan.kind, plan.tag)) for n, c in zip(names, chunks)]
  status = beam_local.status_dir(args, scratch)
  settings = dataclasses.replace(settings, status_dir=status)
  workers = beam_local.workers_for(args, len(jobs))
  log(f"{args.split}: converting {len(plan.sources)} entries into {len(jobs)} shard(s) "
      f"{beam_local.where(args, workers)}")
  progress = Progress(log, args.split, len(plan.sources), len(jobs))
  beam_local.run(args, lambda p: (p | "shards" >> beam.Create(jobs) | "spread" >> beam.Reshuffle()
                                  | "convert" >> beam.ParDo(shard_job.ConvertShards(settings))),
                 status, progress.poll, workers)
  failed = journal.failures(args.output, args.split, plan.kind, plan.tag)
  if failed:
    e = failed[min(failed, key=names_order(names))]
    journal.clear_failures(args.output, args.split, plan.kind, plan.tag)
    raise InputError(e["file"], e["error"], e["line"], e.get("record"))
  results = []
  for job in jobs:
    entry = journal.read_entry(job.journal)
    if entry is None:
      raise DataError(f"{job.name}: the pipeline ended without converting this shard; rerun the build")
    results.append(shard_job.from_journal(entry, job.chunk.entries, settings.run_id))
  progress.done(results)
  return results


def names_order(names: list[str]):
  """Sort key of shard file names by their place in the build."""
  order = {n.rsplit("/", 1)[-1]: i for i, n in enumerate(names)}
  return lambda name: order.get(name, len(order))


class Progress:
  """The convert stage's progress lines, from the workers' status files: about every 5% of the
  shards, and every PROGRESS_S while a long shard is converted."""

  def __init__(self, log, split: str, entries: int, shards: int):
    self.log, self.split, self.entries, self.shards = log, split, entries, shards
    self.start = self.last = time.time()
    self.reported = 0

  def poll(self, states: list[dict]) -> None:
    entries = sum(s.get("entries", 0) for s in states)
    shards = sum(s.get("shards", 0) for s in states)
    step = max(1, self.shards // 20)
    if shards // step > self.reported // step or time.time() - self.last >= PROGRESS_S:
      elapsed = max(time.time() - self.start, 1e-9)
      self.log(f"{self.split}: {entries}/{self.entries} entries converted, {shards}/{self.shards} shards done, "
               f"{entries / elapsed:.0f} entries/s, {elapsed:.1f} s elapsed")
      self.reported, self.last = shards, time.time()

  def done(self, results: list[shard_job.Result]) -> None:
    elapsed = max(time.time() - self.start, 1e-9)
    reused = sum(r.reused for r in results)
    self.log(f"{self.split}: shards {len(results)}/{self.shards}: {self.entries} entries, "
             f"{self.entries / elapsed:.0f} entries/s, {elapsed:.1f} s elapsed"
             + (f", {reused} reused" if reused else ""))


def shard_name(split: str, kind: str, tag: str, index: int, count: int) -> str:
  """e.g. "train/speech-1a2b3c4d-00000-of-00003.array_record" (tag: the input's build_tag)."""
  from data_prep import shards  # array_record: imported only once there is work
  return shards.shard_name(split, f"{kind}-{tag}", index, count)


if __name__ == "__main__":
  sys.exit(main())
