"""Evaluates a checkpoint on likelihood benchmarks (S->S, T->T, S->T, T->S) and held-out losses.

  python -m lst_jax.eval.main --config=experiments/demo.py --workdir=runs/demo [--step=N]
      [--benchmarks=FILE_OR_DIR|KIND:PATH,...] [--directions=S->S,T->T] [--listen=N] [--config.KEY=VALUE ...]

Restores the latest checkpoint of <workdir> (or --step), scores every benchmark
(default: <data dir>/benchmarks/*.jsonl; build the demo's with
`python -m data_prep.benchmarks.builtin --data_dir=data/demo`), or the community's published benchmarks as
KIND:PATH (KIND: swuggy, sblimp, ssc, tsc; their folders or Hugging Face parquet exports, scored by
their own protocols: lst_jax.eval.community), prints a table and writes
<workdir>/eval/<step>.json (and the per-item scores to <step>.scores.jsonl).
--listen=N adds automatic listening: on N held-out transcripts, the recognizer's WER on
the original audio, on ground-truth units through the vocoder (the ceiling) and on the
generated speech, with intervals (lst_jax.eval.listening); --vocoder=DIR voices HuBERT
units with a unit HiFi-GAN (lst_jax.data.unit_hifigan), --asr=DIR transcribes with a
Whisper model in CTranslate2 form instead of pocketsphinx (lst_jax.eval.asr).
"""

from __future__ import annotations

from absl import app, flags, logging

from lst_jax import cli
from lst_jax.eval import evaluate

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (checkpoints/, data_provenance.json): a "
                                "path or gs://bucket/path.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).", lower_bound=0)
_BENCHMARKS = flags.DEFINE_list("benchmarks", None, "Benchmark JSONL files or directories, or published "
                                "benchmarks as KIND:PATH with KIND swuggy, sblimp, ssc or tsc "
                                "(default: <data dir>/benchmarks/).")
_DIRECTIONS = flags.DEFINE_list("directions", None, "Only these directions (default: all a benchmark gives).")
_OUTPUT = flags.DEFINE_string("output", None, "Result file (default: <workdir>/eval/<step>.json).")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", None, "Row length in tokens (default: config.data.max_tokens).",
                                   lower_bound=1)
_MAX_PATCHES = flags.DEFINE_integer("max_patches", None, "Row length in patches (default: config.data.max_patches).",
                                    lower_bound=1)
_MAX_ITEMS = flags.DEFINE_integer("max_items", None, "Only the first N items of each benchmark (a quick look).",
                                  lower_bound=1)
_LISTEN = flags.DEFINE_integer("listen", 0, "Also generate speech for N held-out transcripts and report three "
                               "word error rates: original audio, vocoder ceiling, generated (make eval: 8).",
                               lower_bound=0)
_VOCODER = flags.DEFINE_string("vocoder", None, "A unit HiFi-GAN folder (fairseq/textlesslib CodeHiFiGAN layout) "
                               "for datasets with HuBERT units; default: the dataset's built-in vocoder.")
_ASR = flags.DEFINE_string("asr", None, "A Whisper model folder in CTranslate2 form (faster-whisper's layout, "
                           "e.g. faster-whisper-base); default: pocketsphinx.")
_NO_HELDOUT = flags.DEFINE_bool("no_heldout", False, "Skip the held-out losses.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)   # not the read-only checkpoint notes of orbax
  from lst_jax.eval.benchmark_files import DIRECTIONS
  directions = _DIRECTIONS.value
  if directions:
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
      cli.fail(f"unknown direction(s) {bad}; choose from {', '.join(DIRECTIONS)}")
  # A BenchmarkError is a DataError: cli.run prints it as one line.
  evaluate.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value, benchmarks=_BENCHMARKS.value,
                               directions=directions, output=_OUTPUT.value, heldout=not _NO_HELDOUT.value,
                               max_tokens=_MAX_TOKENS.value, max_patches=_MAX_PATCHES.value,
                               max_items=_MAX_ITEMS.value, listen=_LISTEN.value, vocoder_dir=_VOCODER.value,
                               asr_dir=_ASR.value)


if __name__ == "__main__":
  cli.run(main)
