"""Builds the embedded demo corpus once: KJV verses spoken by espeak-ng voices, quantized to units.

  python -m data_prep.corpus.demo --output=data/demo
  python -m data_prep.corpus.demo --corpus=study --output=data/study

--corpus=study is the LST-vs-baseline study's corpus (make reproduce): ~20 h of
speech from six training voices (each verse spoken by three of them, in
rotation), two unseen held-out voices on unseen verses, and ~6k text-only
documents from verses never spoken; same pipeline and quantizer as the demo.

If <output>/manifest.json already records the same build settings, this prints
"demo data ready at ..." and exits at once (nothing heavy is imported before
that check). Otherwise it builds into <output> and writes the manifest last,
so a directory with a manifest is always complete. Steps:
  verses (kjv) -> split (corpus) -> tokenizer -> speech + features in worker
  processes (render) -> k-means units fit on train audio (codebook_training) ->
  records with word spans (frame_spans) -> ArrayRecord shards, the vocoder bank
  (vocoder_bank.npz: the first training utterances' audio and units, for
  lst_jax.data.vocoder's exemplar synthesis) and the held-out utterances'
  original audio (audio/heldout/, lst_jax.data.heldout_audio) -> manifest;
see demo_build.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys

from data_prep.build import journal
from data_prep.corpus import selection as corpus_lib
from data_prep.corpus import tts
from lst_jax.data import features as features_lib

# Bump when the build changes in a way the settings below do not capture (2: vocoder bank, held-out audio).
BUILD_VERSION = 2
MANIFEST = "manifest.json"  # = lst_jax.data.manifest.MANIFEST, not imported to keep the check fast


# Per corpus: (train verses, held-out verses, text documents, voices per training verse, voices).
CORPORA = {
    "demo": dict(num_train_verses=300, num_heldout_verses=50, num_text_docs=2000, voices_per_verse=3,
                 train_voices=tts.TRAIN_VOICES, heldout_voices=tts.HELDOUT_VOICES),
    "study": dict(num_train_verses=4200, num_heldout_verses=200, num_text_docs=6000, voices_per_verse=3,
                  train_voices=tts.STUDY_TRAIN_VOICES, heldout_voices=tts.STUDY_HELDOUT_VOICES),
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m data_prep.corpus.demo", description=__doc__.split("\n")[0])
  p.add_argument("--output", default="data/demo", help="dataset directory to build (or reuse)")
  p.add_argument("--corpus", default="demo", choices=sorted(CORPORA),
                 help="which corpus: sizes and voices (the flags below override its counts)")
  p.add_argument("--num_train_verses", type=int, default=None,
                 help="training verses; each is spoken by --voices_per_verse training voices")
  p.add_argument("--num_heldout_verses", type=int, default=None,
                 help="held-out verses, spoken by every unseen held-out voice")
  p.add_argument("--num_text_docs", type=int, default=None,
                 help=f"text-only training documents of {corpus_lib.VERSES_PER_DOC} verses")
  p.add_argument("--num_units", type=int, default=500, help="k-means codebook size")
  p.add_argument("--vocab_size", type=int, default=1000, help="SentencePiece vocabulary (upper bound)")
  p.add_argument("--vocoder_bank_utterances", type=int, default=100,
                 help="training utterances whose audio makes the vocoder bank (0: none, Griffin-Lim)")
  p.add_argument("--workers", type=int, default=2, help="synthesis processes (0: in this process)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  for key, value in CORPORA[args.corpus].items():
    if getattr(args, key, None) is None:
      setattr(args, key, value)
  return args


def build_settings(args: argparse.Namespace) -> dict:
  """Everything that determines the output (not --workers): the manifest's "build" entry."""
  settings = {
      "version": BUILD_VERSION, "seed": args.seed,
      "num_train_verses": args.num_train_verses, "num_heldout_verses": args.num_heldout_verses,
      "num_text_docs": args.num_text_docs, "verses_per_doc": corpus_lib.VERSES_PER_DOC,
      "voices_per_verse": args.voices_per_verse,
      "speech_books": corpus_lib.SPEECH_BOOKS,
      "words_per_verse": [corpus_lib.MIN_WORDS, corpus_lib.MAX_WORDS],
      "num_units": args.num_units, "vocab_size": args.vocab_size,
      "vocoder_bank_utterances": args.vocoder_bank_utterances,
      "train_voices": [dataclasses.asdict(v) for v in args.train_voices],
      "heldout_voices": [dataclasses.asdict(v) for v in args.heldout_voices],
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
  files += [raw.get("units", {}).get("vocoder_bank")] if settings.get("vocoder_bank_utterances") else []
  files += [p for s in raw.get("splits", {}).values() for k in ("speech", "text") for p in s.get(k, [])]
  return all(p and os.path.isfile(os.path.join(output, p)) for p in files)


# What the demo builder writes into its directory (and data_prep.benchmarks.builtin beside it); a rebuild
# clears its own shards and manifest, so it refuses a directory holding anything else.
OWN_FILES = {MANIFEST, "tokenizer.model", "codebook.npy", "feature_stats.npy", "kmeans.joblib", "train", "heldout",
             "benchmarks", ".build.lock", "vocoder_bank.npz", "audio"}
OWN_SHARD = re.compile(r"(speech|text)-\d{5}-of-\d{5}\.array_record(\.tmp)?")
OWN_AUDIO = re.compile(r"[A-Za-z0-9._%+-]+\.flac(\.tmp\d*)?")   # lst_jax.data.heldout_audio's names


def not_ours(output: str) -> str | None:
  """Why <output> holds something the demo builder did not write (a rebuild would delete it), or None."""
  if os.path.exists(output) and not os.path.isdir(output):
    return f"{output} is a file, not a directory"
  if not os.path.isdir(output):
    return None
  manifest = os.path.join(output, MANIFEST)
  if os.path.exists(manifest):
    try:
      with open(manifest) as f:
        raw = json.load(f)
    except (OSError, ValueError):
      return f"{manifest} is not a manifest this builder wrote (unreadable)"
    if not isinstance(raw, dict) or "build" not in raw:
      name = raw.get("name") if isinstance(raw, dict) else None
      return f"{manifest} describes a dataset the demo builder did not write" + (f" ({name!r})" if name else "")
  for name in sorted(os.listdir(output)):
    path = os.path.join(output, name)
    if name not in OWN_FILES and not name.endswith(".tmp"):
      return f"{path} is not the demo builder's"
    if name in ("train", "heldout") and os.path.isdir(path):
      strange = [n for n in sorted(os.listdir(path)) if not OWN_SHARD.fullmatch(n)]
      if strange:
        return f"{os.path.join(path, strange[0])} is not the demo builder's"
    if name == "audio" and os.path.isdir(path):
      strange = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n != "heldout"]
      held = os.path.join(path, "heldout")
      if os.path.isdir(held):
        strange += [os.path.join(held, n) for n in sorted(os.listdir(held)) if not OWN_AUDIO.fullmatch(n)]
      if strange:
        return f"{strange[0]} is not the demo builder's"
  return None


def main(argv=None) -> int:
  args = parse_args(argv)
  settings = build_settings(args)
  if is_ready(args.output, settings):
    print(f"demo data ready at {args.output} (reused: same build settings)")
    return 0
  why = not_ours(args.output)
  if why:
    print(f"error: {why}; building the demo there would delete it. Give another --output (DATA_DIR=...), "
          f"or remove it yourself", file=sys.stderr)
    return 2
  with journal.lock(args.output):  # e.g. parallel test workers: others wait, then reuse
    if is_ready(args.output, settings):  # another process built it while we waited
      print(f"demo data ready at {args.output} (reused: built by another process)")
      return 0
    print(f"building demo data into {args.output} (no finished build with these settings there)")
    from data_prep.corpus import demo_build as build  # heavy imports (numpy, scipy, sentencepiece, array_record)
    summary = build.build(args.output, settings, workers=args.workers)
  print(f"demo data ready at {args.output}: {summary}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
