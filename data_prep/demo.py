"""Builds the embedded demo corpus once: KJV verses spoken by espeak-ng voices, quantized to units.

  python -m data_prep.demo --output=data/demo

If <output>/manifest.json already records the same build settings, this prints
"demo data ready at ..." and exits at once (nothing heavy is imported before
that check). Otherwise it builds into <output> and writes the manifest last,
so a directory with a manifest is always complete. Steps:
  verses (kjv) -> split (corpus) -> tokenizer -> speech + features in worker
  processes (render) -> k-means units fit on train audio (codebook_training) ->
  records with word spans (frame_spans) -> ArrayRecord shards -> manifest;
see demo_build.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from data_prep import corpus as corpus_lib
from data_prep import journal, tts
from lst_jax.data import features as features_lib

BUILD_VERSION = 1  # bump when the build changes in a way the settings below do not capture
MANIFEST = "manifest.json"  # = lst_jax.data.manifest.MANIFEST, not imported to keep the check fast


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m data_prep.demo", description=__doc__.split("\n")[0])
  p.add_argument("--output", default="data/demo", help="dataset directory to build (or reuse)")
  p.add_argument("--num_train_verses", type=int, default=300,
                 help="training verses; each is spoken by every training voice")
  p.add_argument("--num_heldout_verses", type=int, default=50,
                 help="held-out verses, spoken by the unseen held-out voice")
  p.add_argument("--num_text_docs", type=int, default=2000,
                 help=f"text-only training documents of {corpus_lib.VERSES_PER_DOC} verses")
  p.add_argument("--num_units", type=int, default=500, help="k-means codebook size")
  p.add_argument("--vocab_size", type=int, default=1000, help="SentencePiece vocabulary (upper bound)")
  p.add_argument("--workers", type=int, default=2, help="synthesis processes (0: in this process)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def build_settings(args: argparse.Namespace) -> dict:
  """Everything that determines the output (not --workers): the manifest's "build" entry."""
  settings = {
      "version": BUILD_VERSION, "seed": args.seed,
      "num_train_verses": args.num_train_verses, "num_heldout_verses": args.num_heldout_verses,
      "num_text_docs": args.num_text_docs, "verses_per_doc": corpus_lib.VERSES_PER_DOC,
      "speech_books": corpus_lib.SPEECH_BOOKS,
      "words_per_verse": [corpus_lib.MIN_WORDS, corpus_lib.MAX_WORDS],
      "num_units": args.num_units, "vocab_size": args.vocab_size,
      "train_voices": [dataclasses.asdict(v) for v in tts.TRAIN_VOICES],
      "heldout_voices": [dataclasses.asdict(v) for v in tts.HELDOUT_VOICES],
      "features": features_lib.FEATURES,
  }
  return json.loads(json.dumps(settings))  # as it reads back from JSON (tuples -> lists)


def is_ready(output: str, settings: dict) -> bool:
  """True when <output> holds a finished build with exactly these settings."""
  try:
    with open(os.path.join(output, MANIFEST)) as f:
      raw = json.load(f)
  except (OSError, ValueError):
    return False
  if raw.get("build") != settings:
    return False
  files = [raw.get("tokenizer", {}).get("path"), raw.get("units", {}).get("codebook")]
  files += [p for s in raw.get("splits", {}).values() for k in ("speech", "text") for p in s.get(k, [])]
  return all(p and os.path.isfile(os.path.join(output, p)) for p in files)


def main(argv=None) -> int:
  args = parse_args(argv)
  settings = build_settings(args)
  if is_ready(args.output, settings):
    print(f"demo data ready at {args.output} (reused: same build settings)")
    return 0
  with journal.lock(args.output):  # e.g. parallel test workers: others wait, then reuse
    if is_ready(args.output, settings):  # another process built it while we waited
      print(f"demo data ready at {args.output} (reused: built by another process)")
      return 0
    print(f"building demo data into {args.output} (no finished build with these settings there)")
    from data_prep import demo_build as build  # heavy imports (numpy, scipy, sentencepiece, array_record)
    summary = build.build(args.output, settings, workers=args.workers)
  print(f"demo data ready at {args.output}: {summary}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
