"""`make bench-data`: input-pipeline throughput, measured beside what training consumes.

  python -m data_prep.maintenance.bench_loader [--config=experiments/demo.py] [--out=runs/bench_data.json]

1. Loader vs train step: batches/s of the Grain pipeline on the experiment's data
   (global positions = patches, and tokens), and the same for the experiment's
   train step, measured in this run; the loader must be >= 5x faster.
2. Per-document preparation on 5,000 official-format LST JSONL utterances of
   3-14 words, one process, every patching mode:
   - per epoch (what the loader does every time it reads a document): record
     bytes -> interleave -> patch -> packing features;
   - from the official string (parse, tokenize words, interleave, patch), the
     work the reference implementation does on the fly each epoch;
   - one-time conversion to records (data_prep, done once before training).
   Reference figure on this machine: ~9.3k utterances/s (130k patches/s) for the
   reference implementation's tokenize + static patching.
3. `python -m data_prep.build` end to end (tokenizer training, conversion, checks,
   manifest) on --build_utterances official-format utterances (default 100,000;
   1,000,000 for the scale target): wall time, utterances/s, and the peak RSS of its
   largest process (target: at most 1.5 GB). The build streams: the parent holds
   only byte offsets of the input's lines, workers read their own shard's lines.
The tests run it at tiny sizes (tests/test_bench_tools.py).
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import flags

from data_prep.corpus.random_dataset import official_lines
from lst_jax import cli

REFERENCE_UTT_PER_S = 9300.0

_CONFIG = cli.config_flag(default="experiments/demo.py")
_OUT = flags.DEFINE_string("out", "runs/bench_data.json", "Where the figures are written (JSON).")
_BATCHES = flags.DEFINE_integer("batches", 30, "Loader batches to time (the timed train steps cycle through "
                                "all but the first).", lower_bound=2)
_STEPS = flags.DEFINE_integer("steps", 5, "Train steps to time (after one compile step).", lower_bound=1)
_UTTERANCES = flags.DEFINE_integer("utterances", 5000, "Official-format utterances to generate.")
_BUILD_UTTERANCES = flags.DEFINE_integer("build_utterances", 100_000,
                                         "Utterances for the data_prep.build timing (0: skip it).")
_BUILD_WORKERS = flags.DEFINE_integer("build_workers", 2, "data_prep.build --workers for that timing.")


def time_documents(make, items, patching_cfg) -> tuple[float, float]:
  """(utterances/s, patches/s) of make(index, item) over all items."""
  start, patches = time.perf_counter(), 0
  for i, item in enumerate(items):
    patches += len(make(i, item)["patch_len"])
  elapsed = time.perf_counter() - start
  return len(items) / elapsed, patches / elapsed


def document_benchmarks(n: int, workdir: str) -> dict:
  import sentencepiece as spm
  from data_prep.build import convert
  from data_prep import tokenizer_training
  from data_prep.formats.lst_jsonl import parse_interleaved
  from lst_jax import vocab as vocab_lib
  from lst_jax.config import (ALIGNED, CURRICULUM, MIXED, SILENCE_MERGED, SILENCE_SEPARATE, STATIC, DataConfig,
                              PatchingConfig)
  from lst_jax.data import patching, pipeline, records

  lines = official_lines(n)
  strings = [json.loads(l)["interleaved"] for l in lines]
  words = [w for s in strings for w in parse_interleaved(s, 501)[0]]
  sentences = [" ".join(words[i:i + 20]) for i in range(0, len(words), 20)]
  sp_path = tokenizer_training.save(tokenizer_training.train(sentences, 200), workdir)
  encode = convert.WordTokenizer(spm.SentencePieceProcessor(model_file=sp_path))
  vocab = vocab_lib.Vocab(text_size=encode.sp.get_piece_size(), num_units=501)

  def to_record(i, s):
    w, units, spans = parse_interleaved(s, 501)
    return records.speech_record(f"u{i}", encode(w), units, spans)

  start = time.perf_counter()
  encoded = [records.encode(to_record(i, s)) for i, s in enumerate(strings)]
  conversion = n / (time.perf_counter() - start)

  out = {"utterances": n, "reference_utt_per_s": REFERENCE_UTT_PER_S,
         "conversion_once_utt_per_s": conversion, "modes": {}}
  modes = [PatchingConfig(strategy=STATIC), PatchingConfig(strategy=ALIGNED, silence=SILENCE_SEPARATE),
           PatchingConfig(strategy=ALIGNED, silence=SILENCE_MERGED), PatchingConfig(strategy=MIXED),
           PatchingConfig(strategy=CURRICULUM)]
  for pcfg in modes:
    name = patching.describe(pcfg)
    cfg = DataConfig(max_tokens=1 << 16, max_patches=1 << 16, patching=pcfg)
    make = pipeline.MakeDocument(vocab, cfg, pcfg, seed=0, total_docs=n)
    per_epoch = time_documents(
        lambda i, raw: make.map_with_index(i, (pipeline.INTERLEAVED, records.decode(raw))), encoded, pcfg)
    from_string = time_documents(
        lambda i, s: make.map_with_index(i, (pipeline.INTERLEAVED, records.decode(records.encode(to_record(i, s))))),
        strings, pcfg)
    out["modes"][name] = {"per_epoch_utt_per_s": per_epoch[0], "per_epoch_patches_per_s": per_epoch[1],
                          "from_string_utt_per_s": from_string[0],
                          "from_string_patches_per_s": from_string[1]}
  return out


def build_benchmark(n: int, workdir: str, workers: int) -> dict:
  """`python -m data_prep.build` on n official-format utterances (written in chunks, never all in
  memory here): wall time, utterances/s, and the peak RSS of its largest process (parent or worker,
  resource.getrusage of the waited-for children)."""
  import os
  import resource
  import subprocess
  import sys
  src, out = os.path.join(workdir, "official.jsonl"), os.path.join(workdir, "built")
  with open(src, "w") as f:
    for lo in range(0, n, 10_000):
      f.write("\n".join(official_lines(min(10_000, n - lo), seed=lo, first=lo)) + "\n")
  start = time.perf_counter()
  p = subprocess.run([sys.executable, "-m", "data_prep.build", "--format=lst_jsonl", f"--input={src}",
                      f"--output={out}", f"--workers={workers}", "--vocab_size=500"],
                     capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if p.returncode:
    raise RuntimeError(f"data_prep.build failed ({p.returncode}): {p.stderr[-2000:]}")
  peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return {"utterances": n, "workers": workers, "seconds": seconds, "utt_per_s": n / seconds,
          "utt_per_s_per_process": n / seconds / max(workers, 1), "peak_rss_mb": peak_kb / 1024,
          "input_mb": os.path.getsize(src) / 2**20}


def loader_vs_step(config) -> dict:
  import jax
  from lst_jax import config as config_lib
  from lst_jax import sharding
  from lst_jax.data import datasets, pipeline
  from lst_jax.train import step as step_lib

  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab.size)
  it = iter(pipeline.train_dataset(manifest, exp.data, exp.data.batch_size))
  next(it)
  start = time.perf_counter()
  batches = [next(it) for _ in range(_BATCHES.value)]
  loader_s = (time.perf_counter() - start) / len(batches)
  tokens = np.mean([(b["token_segment"] > 0).sum() for b in batches])
  patches = np.mean([(b["patch_segment"] > 0).sum() for b in batches])

  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  run = step_lib.setup(exp.model, exp.optim, vocab, mesh)
  state, train_step = run.init(), run.train_step
  state, m = train_step(state, sharding.global_batch(batches[0], mesh))
  jax.block_until_ready(m)
  start = time.perf_counter()
  for i in range(_STEPS.value):
    state, m = train_step(state, sharding.global_batch(batches[1 + i % (len(batches) - 1)], mesh))
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - start) / _STEPS.value
  return {"loader_s_per_batch": loader_s, "step_s": step_s,
          "loader_positions_per_s": patches / loader_s, "loader_tokens_per_s": tokens / loader_s,
          "step_positions_per_s": patches / step_s, "step_tokens_per_s": tokens / step_s,
          "loader_over_step": step_s / loader_s}


def main(argv):
  del argv
  import tempfile
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  results = {"loader_vs_step": loader_vs_step(config)}
  r = results["loader_vs_step"]
  print(f"loader: {r['loader_positions_per_s']:,.0f} positions/s, {r['loader_tokens_per_s']:,.0f} tokens/s "
        f"({r['loader_s_per_batch'] * 1e3:.0f} ms/batch, one process)")
  print(f"train step ({config.model.kind}): {r['step_positions_per_s']:,.0f} positions/s, "
        f"{r['step_tokens_per_s']:,.0f} tokens/s ({r['step_s']:.2f} s/step)")
  print(f"loader / step throughput: {r['loader_over_step']:.1f}x (target >= 5x)")
  with tempfile.TemporaryDirectory() as tmp:
    docs = document_benchmarks(_UTTERANCES.value, tmp)
  if _BUILD_UTTERANCES.value:
    with tempfile.TemporaryDirectory() as tmp:
      b = results["build"] = build_benchmark(_BUILD_UTTERANCES.value, tmp, _BUILD_WORKERS.value)
    print(f"data_prep.build of {b['utterances']:,} official-format utterances ({b['input_mb']:.0f} MB), "
          f"{b['workers']} worker(s): {b['seconds']:.1f} s, {b['utt_per_s']:,.0f} utt/s "
          f"({b['utt_per_s_per_process']:,.0f} per process), peak RSS {b['peak_rss_mb']:,.0f} MB "
          f"(largest process; target <= 1,500 MB)")
  results["documents"] = docs
  print(f"\n{docs['utterances']} official-format utterances (3-14 words), one process; "
        f"reference tokenize+static patch: {REFERENCE_UTT_PER_S:,.0f} utt/s")
  print(f"one-time conversion to records: {docs['conversion_once_utt_per_s']:,.0f} utt/s")
  print(f"{'patching':<44}{'per epoch utt/s':>16}{'patches/s':>12}{'x ref':>7}{'from string utt/s':>19}{'x ref':>7}")
  for name, m in docs["modes"].items():
    print(f"{name:<44}{m['per_epoch_utt_per_s']:>16,.0f}{m['per_epoch_patches_per_s']:>12,.0f}"
          f"{m['per_epoch_utt_per_s'] / REFERENCE_UTT_PER_S:>7.2f}{m['from_string_utt_per_s']:>19,.0f}"
          f"{m['from_string_utt_per_s'] / REFERENCE_UTT_PER_S:>7.2f}")
  cli.write_results(_OUT.value, results)


if __name__ == "__main__":
  cli.run(main)
