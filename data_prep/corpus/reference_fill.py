"""Batches filled like the reference implementation's, for `make bench`'s reference comparison.

  python -m data_prep.corpus.reference_fill --out=batches.npz [--count=4]

Official-format LST JSONL utterances of 3-14 words (random_dataset.official_lines)
are parsed, tokenized (a 200-piece BPE trained on their words, in a temp dir),
interleaved and statically patched (p=4) by our pipeline's MakeDocument, and
packed by our packer into rows of 768 tokens / 256 patches, one open row at a
time (in order, as the reference's iterator fills its rows): the 256-patch cap
binds first, ~1.9k real tokens per 4-row batch. Deterministic; no downloads.
(lst_jax never imports or runs data_prep: `make bench` runs this first and hands the file to
lst_jax.tools.bench --batches.)
"""

from __future__ import annotations

import argparse
import json
import tempfile

FILL_BINS = 1


def reference_batches(count: int, rows: int = 4, tokens: int = 768, patches: int = 256, vocab_size: int = 2508,
                      num_units: int = 501, seed: int = 0) -> list[dict]:
  """`count` batches of `rows` x `tokens` / `patches` rows (the row schema of lst_jax.data.packing)."""
  import grain
  import sentencepiece as spm
  from data_prep.build import convert
  from data_prep import tokenizer_training
  from data_prep.corpus.random_dataset import official_lines
  from data_prep.formats.lst_jsonl import parse_interleaved
  from lst_jax import vocab as vocab_lib
  from lst_jax.config import DataConfig, PatchingConfig
  from lst_jax.data import packing, pipeline, records
  utterances = [parse_interleaved(json.loads(line)["interleaved"], num_units)
                for line in official_lines(40 * rows * count, seed=seed, num_units=num_units)]
  words = [w for u in utterances for w in u[0]]
  with tempfile.TemporaryDirectory() as d:
    model = tokenizer_training.train([" ".join(words[i:i + 20]) for i in range(0, len(words), 20)], 200)
    encode = convert.WordTokenizer(spm.SentencePieceProcessor(model_file=tokenizer_training.save(model, d)))
  vocab = vocab_lib.Vocab(text_size=vocab_size - vocab_lib.NUM_SPECIAL - 2 - num_units, num_units=num_units)
  cfg = DataConfig(max_tokens=tokens, max_patches=patches, patching=PatchingConfig(strategy="static", patch_size=4))
  make = pipeline.MakeDocument(vocab, cfg, cfg.patching, seed=seed)
  docs = [make.map_with_index(i, (pipeline.INTERLEAVED, records.speech_record(f"u{i}", encode(w), units, spans)))
          for i, (w, units, spans) in enumerate(utterances)]
  packed = iter(packing.pack_rows(grain.MapDataset.source(docs).to_iter_dataset(), tokens, patches,
                                  bins=FILL_BINS, seed=seed, shuffle_bins=False))
  return [packing.stack([next(packed) for _ in range(rows)]) for _ in range(count)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="where the batches are written (.npz)")
  parser.add_argument("--count", type=int, default=4, help="batches of 4 rows")
  args = parser.parse_args(argv)
  from lst_jax.data import packing
  packing.save_batches(args.out, reference_batches(args.count))


if __name__ == "__main__":
  main()
