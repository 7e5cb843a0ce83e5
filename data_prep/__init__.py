"""Raw corpora -> tokenizer, speech units, word alignments -> ArrayRecord shards + manifest.

  build/        python -m data_prep.build: your data (four input formats) as an Apache Beam pipeline
  formats/      the input formats' readers
  corpus/       the embedded corpora: python -m data_prep.corpus.demo (KJV text, espeak-ng voices;
                --corpus=study), random datasets for tests, reference-like batches for make bench
  benchmarks/   python -m data_prep.benchmarks.builtin: the built-in cloze and lexical benchmarks
  maintenance/  python -m data_prep.maintenance.verify / merge / stats, and the loader benchmark
  (top level)   what several of them share: shards, codebook and tokenizer training, frame spans,
                the forced aligner
Each layer imports only those below it (pyproject.toml's import-linter contracts).
"""
