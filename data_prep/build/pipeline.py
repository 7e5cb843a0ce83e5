"""One build, start to end: plan, vocabularies, shards, checks, manifest (`python -m data_prep.build`,
data_prep/build/cli.py, says what a user sees).

Each stage that touches the input runs as an Apache Beam pipeline on the build's
runner (beam_local): the tokenizer's transcripts and the codebook's features
(vocab), one element per shard converted and written (shard_job.ConvertShards),
and the dataset checks (dataset_checks); the manifest is written last (finish).
The launching process holds the input's listing, never its records.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import tempfile
import time
import uuid
from typing import Callable, Iterator

from data_prep import shards
from data_prep.build import beam_local, beam_options, dataset_checks, finish, journal, shard_job, shard_plan, vocab
from data_prep.build import plan as plan_lib
from data_prep.build.plan import Plan
from data_prep.formats import READERS
from data_prep.formats.items import InputError, Options
from lst_jax import storage
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import provenance as prov
from lst_jax.data import quantizers, tokenizer
from lst_jax.data.manifest import MANIFEST, DataError

with beam_options.quiet():
  import apache_beam as beam

PROGRESS_S = 15.0         # a progress line at least this often while a shard is being converted


def _log(line: str) -> None:
  print(line, flush=True)


def build(args: argparse.Namespace, log: Callable[[str], None] = _log) -> str:
  """Runs one build; returns the summary line. Raises DataError (InputError for bad entries).

  Phases, in order: list the entries; plan (the directory's manifest, the input's
  options: plan); vocabularies (tokenizer and codebook: vocab); convert the shards
  (a Beam pipeline of shard_job.ConvertShards); the dataset checks (dataset_checks);
  errors file and manifest (finish). A local directory is locked throughout,
  and the shard journal lets a rerun reuse shards (journal).
  """
  start = time.time()
  if storage.is_url(args.output):
    storage.check_reachable(args.output, "--output")
  beam_local.check_runner(args)
  check_output_outside_input(args.input, args.output)
  reader = READERS[args.format]
  sources = reader.list_sources(args.input)
  log(f"{args.input}: {len(sources)} entries ({args.format}, {reader.KIND} records)")
  with journal.lock(args.output), beam_local.scratch(args) as scratch:
    plan = plan_lib.make_plan(args, reader, sources)
    plan.chunks = shard_plan.save(sources, args.shard_size, storage.join(scratch, "chunks"))
    new, settings = resolve_vocabularies(args, plan, log, scratch)
    results = convert_all(args, plan, settings, log, scratch)
    overlap = dataset_checks.check(args, plan, results, scratch)
  return finish.finish(args, plan, new, results, start, overlap)


# -- plan --------------------------------------------------------------------------------------

# -- tokenizer and units -----------------------------------------------------------------------

def check_output_outside_input(input: str, output: str) -> None:
  """A dataset written inside its input folder would be read back as input by the next build."""
  if storage.is_url(input) or storage.is_url(output) or not os.path.isdir(input):
    return
  inside, folder = storage.absolute(output), storage.absolute(input).rstrip("/")
  if inside == folder or inside.startswith(folder + "/"):
    raise DataError(f"--output={output} is inside --input={input}: the next build would read the dataset's "
                    f"own files as input; write it elsewhere")


def resolve_vocabularies(args, plan: Plan, log, scratch: str) -> tuple[dict, shard_job.Settings]:
  """The manifest's "tokenizer" and "units" entries (checked against the directory's), and the
  settings every shard job gets."""
  existing = plan.existing
  model = existing["tokenizer"]["path"] if existing else tokenizer.MODEL
  with vocabulary_folder(args.output, existing) as folder:
    here = argparse.Namespace(**{**vars(args), "output": folder})
    settings = shard_job.Settings(args.format, folder, os.path.join(folder, model), None, plan.options,
                                  args.on_error, salt="", run_id=uuid.uuid4().hex)
    tok = vocab.resolve_tokenizer(here, plan, settings, log, scratch)
    units, codebook_dir = vocab.resolve_units(here, plan, settings, log, scratch)
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
  return json.dumps({"version": plan_lib.BUILD_VERSION, "format": format, "provenance": prov.provenance(new),
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
  return shards.shard_name(split, f"{kind}-{tag}", index, count)
