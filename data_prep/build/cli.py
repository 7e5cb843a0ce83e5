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
--runner and Beam's other options pass through (data_prep/build/beam_local.py), and a remote
runner needs --output=gs://... . Checked before the manifest is written (data_prep/build/dataset_checks.py):
record ids are unique within the dataset, an input already in the split is refused,
and a record also in another split (by id or content) is refused unless --allow_overlap.
The manifest's "shards" holds every shard's records, bytes and sha256
(`python -m data_prep.maintenance.verify DIR` checks them). --output=gs://bucket/path: each shard is
written locally where it is converted, then uploaded; the manifest last. Exit 2: bad input (FILE:LINE named);
exit 1: a worker process died (the shard it held named; a rerun reuses the rest).
"""

from __future__ import annotations

import argparse
import sys

from data_prep.build import beam_options, finish, pipeline, vocab, worker_status
from data_prep.build.plan import DEFAULT_NUM_UNITS, HUBERT, UNIT_KINDS
from data_prep.formats import READERS, lst_jsonl
from lst_jax import storage
from lst_jax.data.manifest import DataError


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m data_prep.build", description=__doc__.split("\n\n", 2)[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--format", required=True, choices=sorted(READERS), help="input format (above)")
  p.add_argument("--input", required=True, help="input file or folder")
  p.add_argument("--output", required=True, help="dataset directory (created, or added to)")
  p.add_argument("--split", default="train", help="split to write, e.g. train or heldout (default: %(default)s)")
  p.add_argument("--on_error", choices=("fail", "skip"), default="fail",
                 help="bad entries: stop at the first (exit 2), or skip them and list them in "
                      f"<output>/<split>{finish.ERRORS_SUFFIX} (default: %(default)s)")
  tok = p.add_mutually_exclusive_group()
  tok.add_argument("--tokenizer", help="your SentencePiece .model (default: train one, or reuse the output's)")
  tok.add_argument("--vocab_size", type=int,
                   help=f"pieces of a trained tokenizer (default {vocab.DEFAULT_VOCAB_SIZE})")
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
                                  "other Beam pipeline option is passed on as it is (data_prep/build/beam_local.py)")
  args, extra = p.parse_known_args(argv)
  args.beam_args, unknown = beam_options.beam_flags(extra)
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  if (args.shard_size < 1 or (args.workers is not None and args.workers < 0)
      or (args.num_units is not None and args.num_units < 1)):
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
    print(pipeline.build(args))
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


if __name__ == "__main__":
  sys.exit(main())
