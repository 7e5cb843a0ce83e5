"""A build's vocabularies: its text tokenizer and, for audio, its speech-unit quantizer.

Each is the output directory's (a second build into it), the user's
(--tokenizer, --codebook or --kmeans: copied in; --hubert: its path and hash
recorded), or made here from the input: a BPE model trained on all transcripts,
k-means units fit on a seeded sample of the audio. What is chosen becomes the
manifest's "tokenizer" and "units" entries; a second build whose choice differs
from the directory's is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from typing import TYPE_CHECKING

import numpy as np

from data_prep import codebook_training, tokenizer_training
from data_prep.build import beam_local, beam_options, shard_job, shard_plan
from data_prep.formats import lst_jsonl, manifest_jsonl
from data_prep.formats.items import TEXT, InputError
from lst_jax import storage
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import hubert as hubert_lib
from lst_jax.data import provenance as prov
from lst_jax.data import quantizers, tokenizer
from lst_jax.data.features import FEATURES
from lst_jax.data.manifest import MANIFEST, DataError, sha256_file

if TYPE_CHECKING:
  from data_prep.build.plan import Plan

with beam_options.quiet():
  import apache_beam as beam

DEFAULT_VOCAB_SIZE = 1000
FIT_FRAMES = 60_000       # frames of audio sampled to fit the codebook (40 minutes at 25 Hz)
FIT_BATCH = 8             # audio entries per fitting task
TOKENIZER_SAMPLE = 200_000  # at most about this many transcripts train a tokenizer (a seeded sample of shards)


# -- tokenizer ---------------------------------------------------------------------------------

def resolve_tokenizer(args, plan: Plan, settings: shard_job.Settings, log, scratch: str) -> dict:
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
    entry = _tokenizer_entry(args.tokenizer, storage.absolute(args.tokenizer))
    _copy_atomic(args.tokenizer, path)
    log(f"tokenizer: yours, {args.tokenizer} ({entry['vocab_size']} pieces)")
    return {**entry, "path": tokenizer.MODEL}
  vocab_size = args.vocab_size or DEFAULT_VOCAB_SIZE
  chunks = shard_plan.sample(plan.chunks, TOKENIZER_SAMPLE, args.seed)
  entries = sum(c.entries for c in chunks)
  workers = beam_local.workers_for(args, len(chunks))
  log(f"tokenizer: reading the transcripts of {entries} entries"
      + (f" (a seeded sample of {len(chunks)} shards of {len(plan.sources)} entries)"
         if entries < len(plan.sources) else "") + f" {beam_local.where(args, workers)}")
  out = storage.join(scratch, "transcripts")
  beam_local.run(args, lambda p: (p | "chunks" >> beam.Create(chunks) | "spread" >> beam.Reshuffle()
                                  | "read" >> beam.Map(_transcripts, settings) | "write" >> beam.ParDo(
                                      beam_local.WriteLines(out))), workers=workers)
  found = sorted(json.loads(line) for line in beam_local.read_lines(out))
  errors = [e for x in found for e in x[2]]
  if errors and args.on_error == shard_job.FAIL:
    raise InputError(errors[0]["file"], errors[0]["error"], errors[0]["line"], errors[0].get("record"))
  lines = [line for x in found for line in x[1]]
  if not lines:
    raise DataError(f"{args.input}: no usable transcripts to train a tokenizer on")
  log(f"tokenizer: training a {vocab_size}-piece BPE model on {len(lines)} transcripts")
  tokenizer_training.save(tokenizer_training.train(lines, vocab_size), args.output)
  return {**_tokenizer_entry(path, "trained"), "path": tokenizer.MODEL}


def _transcripts(chunk: shard_plan.Chunk, settings: shard_job.Settings) -> str:
  """[chunk index, its transcripts, its bad entries] (a JSON line)."""
  lines, errors = shard_job.transcripts(shard_plan.load(chunk), settings)
  return json.dumps([chunk.index, lines, [e.to_json() for e in errors]])


def _tokenizer_entry(path: str, source: str) -> dict:
  try:
    sp = tokenizer.load(path)
  except (OSError, RuntimeError) as e:
    raise DataError(f"--tokenizer={path}: not a SentencePiece model ({e})") from None
  return {"path": path, "sha256": sha256_file(path), "vocab_size": sp.get_piece_size(), "source": source}


def _copy_atomic(src: str, dst: str) -> None:
  if storage.absolute(src) == storage.absolute(dst):
    return
  shutil.copyfile(src, dst + ".tmp")
  os.replace(dst + ".tmp", dst)


# -- units -------------------------------------------------------------------------------------

def resolve_units(args, plan: Plan, settings, log, scratch: str) -> tuple[dict, str | None]:
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
  kind = args.units or ("hubert" if existing_units.get("quantizer") == quantizers.HUBERT_KMEANS else "logmel")
  if kind == "hubert":
    return hubert_units(args, plan, log), args.output
  if existing_units.get("quantizer") == quantizers.HUBERT_KMEANS:
    raise DataError(f"{os.path.join(args.output, MANIFEST)} and this build differ in units.quantizer: "
                    f"\"{quantizers.HUBERT_KMEANS}\" vs \"logmel-kmeans\"; their ids mean different things")
  if prov.units_source(existing_units) == prov.QUANTIZER:
    units = dict(existing_units)
    if args.codebook or args.kmeans:
      units.update(_codebook_provenance(_user_codebook(args)))
    if args.num_units:
      units["num_units"] = args.num_units
    units["features"] = json.loads(json.dumps(FEATURES))  # what this code computes: must match
    log(f"units: reusing the directory's {existing_units['num_units']}-unit codebook")
    return units, args.output
  if args.codebook or args.kmeans:
    codebook = _user_codebook(args)
    fit = {"from": storage.absolute(args.codebook or args.kmeans)}
    log(f"units: your {codebook.num_units}-unit codebook {args.codebook or args.kmeans}")
  else:
    codebook, frames = fit_codebook(args, plan, settings, log, scratch)
    fit = {"input": storage.absolute(args.input), "frames": frames, "seed": args.seed}
  codebook_training.save(codebook, args.output)
  return {**_codebook_provenance(codebook), "kmeans_joblib": codebook_training.KMEANS_JOBLIB, "fit": fit}, args.output


def hubert_units(args, plan: Plan, log) -> dict:
  """Provenance of HuBERT units (checkpoint hash, layer, frame rate, k-means hash); the centroids are
  copied into the output as a .npy, after the directory's provenance is checked against them."""
  existing = plan.existing["units"] if plan.existing else {}
  mine = existing.get("quantizer") == quantizers.HUBERT_KMEANS
  directory = args.hubert or (existing.get("hubert", {}).get("path") if mine else None)
  layer = args.layer if args.layer is not None else (existing.get("layer") if mine else None)
  if not directory or layer is None or not (args.kmeans or mine):
    raise DataError("--units=hubert needs --hubert=DIR (a Hugging Face HuBERT folder), --layer=N and "
                    "--kmeans=FILE (a joblib k-means or a .npy [K, D] centroid array)")
  config = hubert_lib.read_config(directory)
  hubert_lib.check_layer(config, int(layer), directory)
  if args.kmeans:
    try:
      centroids = codebook_training.read_centroids(args.kmeans)
    except codebook_lib.QuantizerError as e:
      raise DataError(str(e)) from None
    fit = {"from": storage.absolute(args.kmeans), "file_sha256": sha256_file(args.kmeans)}
  else:
    centroids = np.load(os.path.join(args.output, existing["kmeans"]))
    fit = existing.get("fit", {})
  where = args.kmeans or os.path.join(args.output, existing.get("kmeans", ""))
  if centroids.shape[1] != int(config["hidden_size"]):
    raise DataError(f"--kmeans={where}: {centroids.shape[1]}-dimensional centroids, but {directory}'s "
                    f"hidden states have {config['hidden_size']} dimensions")
  if args.num_units and args.num_units != len(centroids):
    raise DataError(f"--num_units={args.num_units}, but --kmeans={where} has {len(centroids)} units")
  hop, field = hubert_lib.geometry(config)
  if hubert_lib.SAMPLE_RATE % hop:
    raise DataError(f"--hubert={directory}: conv strides give a hop of {hop} samples, which does not divide "
                    f"{hubert_lib.SAMPLE_RATE} (a frame rate that is not a whole number of Hz)")
  log(f"units: hashing the HuBERT checkpoint {directory}")
  sha, files = hubert_lib.checkpoint_sha256(directory)
  units = {"source": prov.QUANTIZER, "quantizer": quantizers.HUBERT_KMEANS, "num_units": len(centroids),
           "frame_rate": hubert_lib.frame_rate(config), "hubert_sha256": sha, "layer": int(layer),
           "kmeans_sha256": _npy_sha256(centroids), "kmeans": quantizers.KMEANS_FILE,
           "hubert": {"path": storage.absolute(directory), "files": files, "hop": hop, "receptive_field": field,
                      "normalize": hubert_lib.normalizes(config), "hidden_size": int(config["hidden_size"])},
           "fit": fit}
  if plan.existing and prov.has_units(plan.existing):
    prov.check_compatible(plan.existing, {**plan.existing, "units": units}, os.path.join(args.output, MANIFEST),
                          "this build")
  _save_npy(centroids, os.path.join(args.output, quantizers.KMEANS_FILE))
  log(f"units: HuBERT {directory} layer {layer} ({units['frame_rate']:g} Hz), {len(centroids)}-unit k-means "
      f"{where}")
  return units


def _save_npy(array: np.ndarray, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    np.save(f, np.asarray(array, np.float32))
  os.replace(path + ".tmp", path)


def fit_codebook(args, plan: Plan, settings, log, scratch: str) -> tuple[codebook_lib.Codebook, int]:
  """k-means units on a seeded sample of the audio (about FIT_FRAMES frames; all of it if less). The
  features are computed by pipelines over growing runs of the sample (FIT_BATCH files per element)
  until they hold FIT_FRAMES frames; they are taken in sample order, so the fit does not depend on
  the number of workers."""
  num_units = plan.options.num_units
  order = np.random.default_rng(args.seed).permutation(len(plan.sources))
  batches = [[plan.sources[i] for i in order[lo:lo + FIT_BATCH]] for lo in range(0, len(order), FIT_BATCH)]
  feats, total, done, size = [], 0, 0, max(1, beam_local.workers_for(args, len(batches))) * 2
  while done < len(batches) and total < FIT_FRAMES:
    todo = list(enumerate(batches[done:done + size], done))
    out = storage.join(scratch, f"features-{done}")
    log(f"units: features of audio files {done * FIT_BATCH + 1}-{min((done + size) * FIT_BATCH, len(order))} of "
        f"the sample ({len(order)} files) {beam_local.where(args, beam_local.workers_for(args, len(todo)))}")
    beam_local.run(args, lambda p: (p | "batches" >> beam.Create(todo) | "spread" >> beam.Reshuffle()
                                    | "features" >> beam.Map(_save_features, settings, out)),
                   workers=beam_local.workers_for(args, len(todo)))
    for index, _ in todo:  # in sample order
      got, errors = _load_features(out, index)
      if errors and args.on_error == shard_job.FAIL:
        raise InputError(errors[0]["file"], errors[0]["error"], errors[0]["line"], errors[0].get("record"))
      for f in got:
        if total < FIT_FRAMES:
          feats.append(f)
          total += len(f)
    done, size = done + len(todo), size * 2
  if total < num_units:
    raise DataError(f"{args.input}: fitting {num_units} units needs at least {num_units} frames of audio, "
                    f"but the audio gives {total} frames ({total / FEATURES['frame_rate']:.1f} s at "
                    f"{FEATURES['frame_rate']:g} Hz); use more audio or a smaller --num_units")
  log(f"units: fitting {num_units} k-means units on {total} frames")
  return codebook_training.fit(feats, num_units, seed=args.seed), total


def _save_features(item: tuple, settings, folder: str) -> None:
  """One batch's features (an .npz of arrays in batch order) and bad entries (a .json), in `folder`."""
  index, sources = item
  feats, errors = shard_job.fit_features(sources, settings)
  buffer = io.BytesIO()
  np.savez(buffer, *feats)
  storage.write_bytes(storage.join(folder, f"{index}.npz"), buffer.getvalue())
  storage.write_json(storage.join(folder, f"{index}.json"), [e.to_json() for e in errors], indent=None)


def _load_features(folder: str, index: int) -> tuple[list[np.ndarray], list[dict]]:
  with np.load(io.BytesIO(storage.read_bytes(storage.join(folder, f"{index}.npz")))) as z:
    feats = [z[f"arr_{i}"] for i in range(len(z.files))]
  return feats, json.loads(storage.read_text(storage.join(folder, f"{index}.json")))


def _load_codebook(path: str, flag: str = "codebook") -> codebook_lib.Codebook:
  """--codebook=codebook.npy (or its folder), or --kmeans=FILE of the built-in quantizer (our kmeans.joblib,
  or any k-means file), each with feature_stats.npy beside it."""
  directory = path if os.path.isdir(path) else os.path.dirname(path) or "."
  if flag == "codebook" and not os.path.isdir(path) and os.path.basename(path) != codebook_lib.CODEBOOK:
    raise DataError(f"--codebook={path}: expected {codebook_lib.CODEBOOK} (or its folder)")
  names = (codebook_lib.CODEBOOK, codebook_lib.FEATURE_STATS) if flag == "codebook" else (codebook_lib.FEATURE_STATS,)
  for name in names:
    if not os.path.isfile(os.path.join(directory, name)):
      raise DataError(f"--{flag}={path}: {os.path.join(directory, name)} is missing (codebook_training.save "
                      f"writes {codebook_lib.CODEBOOK}, {codebook_lib.FEATURE_STATS} and "
                      f"{codebook_training.KMEANS_JOBLIB} together; for HuBERT units add --units=hubert)")
  try:
    if flag == "codebook":
      codebook = codebook_lib.load(directory)
    else:
      mean, std = np.load(os.path.join(directory, codebook_lib.FEATURE_STATS))
      codebook = codebook_lib.Codebook(centroids=codebook_training.read_centroids(path), mean=mean, std=std)
  except codebook_lib.QuantizerError as e:
    raise DataError(str(e)) from None
  except (OSError, ValueError) as e:
    raise DataError(f"--{flag}={path}: unreadable ({e})") from None
  dim = 2 * FEATURES["n_mels"]
  if codebook.centroids.ndim != 2 or codebook.centroids.shape[1] != dim or codebook.mean.shape != (dim,):
    raise DataError(f"--{flag}={path}: centroids of shape {codebook.centroids.shape} do not fit this "
                    f"build's {dim}-dimensional features" + (" (HuBERT k-means? add --units=hubert)"
                                                             if flag == "kmeans" else ""))
  return codebook


def _user_codebook(args) -> codebook_lib.Codebook:
  return _load_codebook(args.codebook) if args.codebook else _load_codebook(args.kmeans, "kmeans")


def _codebook_provenance(codebook: codebook_lib.Codebook) -> dict:
  return {"source": prov.QUANTIZER, "quantizer": "logmel-kmeans", "num_units": codebook.num_units,
          "frame_rate": FEATURES["frame_rate"], "codebook": codebook_lib.CODEBOOK,
          "codebook_sha256": _npy_sha256(codebook.centroids), "feature_stats": codebook_lib.FEATURE_STATS,
          "feature_stats_sha256": _npy_sha256(np.stack([codebook.mean, codebook.std])),
          "features": json.loads(json.dumps(FEATURES))}


def _npy_sha256(array: np.ndarray) -> str:
  """sha256 of the file codebook_training.save writes for `array`."""
  buffer = io.BytesIO()
  np.save(buffer, np.asarray(array, np.float32))
  return hashlib.sha256(buffer.getvalue()).hexdigest()
