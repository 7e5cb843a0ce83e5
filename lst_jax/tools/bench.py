"""`make bench`: model throughput figures, each measured in this run on this machine.

  python -m lst_jax.tools.bench [--out=runs/bench.json] [--steps=3]

1. Matmul peak (fp32 2048^3) and the train-step FLOP/s of the ~20M LST config
   (experiments/lst_compute_matched.py:20m) as a fraction of it (XLA's count of the executed step).
2. Speech seconds per second, LST vs the baseline with the same global model
   (the 20M pair), on speech-only rows (LST: T units in T/4 patches; baseline: T units).
3. Per the FLOP model at the 1B shapes: LST FLOPs per second of speech / baseline's.
4. The reference comparison config (global 4 x 256, encoder 1 x 128, decoder 2 x 128,
   k=2, 256 patches / 768 tokens per row, batch 4, vocabulary 2508, static p=4,
   fp32) on reference-fill batches (official-format utterances through our pipeline and
   packer, ~1.9k real tokens per batch; data_prep.corpus.reference_fill): s/step and real tokens/s,
   beside the reference implementation's step time recorded on this machine (not measured here).
5. Peak memory of a step (XLA's buffer assignment) and LST step time from 1k to 8k
   tokens per row.
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags, logging

from lst_jax import cli


def define_flags():
  """Flags of the command line only (importing this module, as make accel-check does, defines none)."""
  flags.DEFINE_string("out", "runs/bench.json", "Where the figures are written (JSON).")
  flags.DEFINE_integer("steps", 3, "Timed steps per measurement (after one compile step).")


# The reference implementation's train step on the same config and the same kind of batches,
# recorded earlier on this machine (10 timed steps, alternating with ours); not measured by this tool.
REFERENCE_RECORDED = {"s_per_step": (0.59, 0.61), "real_tokens_per_batch": 1850,
                      "where": "reference PyTorch implementation (neillu23/lst), CPU, this 2-core machine, "
                               "fp32, 4 x 768 tokens / 256 patches, ~1,850 real tokens per batch"}
UNIT_RATE = 25.0


def matmul_peak(n: int = 2048) -> float:
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(10):
    r = f(a)
  r.block_until_ready()
  return 2 * n ** 3 / ((time.perf_counter() - start) / 10)


def speech_batch(rows: int, tokens: int, patches: int, vocab_size: int, num_units: int, seed: int = 0) -> dict:
  """Speech-only rows: BOS <s> units ..., static patches of 4 (one document per row)."""
  import grain
  from lst_jax.data import packing, patching
  rng = np.random.default_rng(seed)
  docs = []
  unit_offset = vocab_size - num_units
  for _ in range(rows):
    n = min(tokens, 2 + 4 * (patches - 2))
    ids = np.concatenate([[1, unit_offset - 1], rng.integers(unit_offset, vocab_size, n - 2)]).astype(np.int32)
    speech = np.arange(n) >= 2
    docs.append(packing.document_features(ids, patching.static_patch_starts(speech, 4), tokens, patches)[0])
  one_per_row = packing.pack_rows(grain.MapDataset.source(docs).to_iter_dataset(), tokens, patches, bins=1,
                                  seed=0, shuffle_bins=False)
  return packing.stack(list(one_per_row))


def reference_fill_batches(count: int = 4) -> list[dict]:
  """`count` reference-fill batches (4 x 768 tokens / 256 patches), made by data_prep.corpus.reference_fill
  in a child process (lst_jax never imports data_prep) into a temp dir."""
  import os
  import subprocess
  import sys
  import tempfile
  from lst_jax.data import packing
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "batches.npz")
    subprocess.run([sys.executable, "-m", "data_prep.corpus.reference_fill", f"--out={path}", f"--count={count}"],
                   check=True, capture_output=True, text=True)
    return packing.load_batches(path)


def time_step(config, batch: dict | list[dict], vocab_size: int, steps: int) -> dict:
  """Seconds per train step, XLA's executed FLOPs and the step's buffer memory; with a list of
  batches the timed steps cycle through them (figures per batch are their means)."""
  import jax
  from lst_jax import config as config_lib
  from lst_jax import sharding, vocab as vocab_lib
  from lst_jax.train import step as step_lib
  exp = config_lib.parse(config, vocab_size)
  num_units = 501
  vocab = vocab_lib.Vocab(text_size=vocab_size - 5 - num_units, num_units=num_units)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  run = step_lib.setup(exp.model, exp.optim, vocab, mesh)
  state, train_step = run.init(), run.train_step
  batches = batch if isinstance(batch, list) else [batch]
  gbatches = [sharding.global_batch(b, mesh) for b in batches]
  gbatch = gbatches[0]
  compiled = train_step.lower(state, gbatch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  mem = compiled.memory_analysis()
  state, m = train_step(state, gbatch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for i in range(steps):
    state, m = train_step(state, gbatches[i % len(gbatches)])
  jax.block_until_ready(m)
  seconds = (time.perf_counter() - start) / steps
  peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes) if mem is not None else 0
  return {"step_s": seconds, "xla_flops": float(cost.get("flops", 0.0)), "peak_bytes": int(peak),
          "real_tokens": float(np.mean([(b["token_segment"] > 0).sum() for b in batches])),
          "speech_units": float(np.mean([(b["tokens"] >= vocab.unit_offset).sum() for b in batches]))}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from lst_jax import flops as flops_lib
  from lst_jax import config as config_lib
  steps = flags.FLAGS.steps
  out = {}
  peak = matmul_peak()
  out["matmul_peak_flops"] = peak
  print(f"matmul peak (fp32 2048^3): {peak / 1e9:.1f} GFLOP/s")

  vocab_size = 1000 + 5 + 501  # the demo's tokenizer + specials/mode tokens + 501 units
  lst20 = cli.load_experiment("lst_compute_matched:20m")
  base20 = cli.load_experiment("baseline_compute_matched:20m")
  t, p, rows = 768, 192, 8
  lst_r = time_step(lst20, speech_batch(rows, t, p, vocab_size, 501), vocab_size, steps)
  frac = lst_r["xla_flops"] / lst_r["step_s"] / peak
  print(f"20M LST train step: {lst_r['step_s']:.2f} s, {lst_r['xla_flops'] / 1e9:.1f} GFLOP executed, "
        f"{lst_r['xla_flops'] / lst_r['step_s'] / 1e9:.1f} GFLOP/s = {frac:.2f} of matmul peak (target >= 0.45)")
  base20.data.max_tokens, base20.data.max_patches = t, t
  base_r = time_step(base20, speech_batch(rows, t, t, vocab_size, 501), vocab_size, steps)
  sps = lambda r: r["speech_units"] / UNIT_RATE / r["step_s"]
  print(f"speech seconds per second, speech-only rows of {t} units: LST {sps(lst_r):.1f}, "
        f"baseline {sps(base_r):.1f}: {sps(lst_r) / sps(base_r):.2f}x (target >= 2x)")
  out["lst_20m"], out["baseline_20m"] = lst_r, base_r
  out["flop_fraction_20m"], out["speech_speedup_20m"] = frac, sps(lst_r) / sps(base_r)

  lst1b = config_lib.parse(cli.load_experiment("lst_compute_matched:1b"), 32000 + 5 + 501).model
  base1b = config_lib.parse(cli.load_experiment("baseline_compute_matched:1b"), 32000 + 5 + 501).model
  per_second = lambda cfg: flops_lib.speech_flops_per_second(cfg, 12288)["forward"]
  ratio = per_second(lst1b) / per_second(base1b)
  out["flop_ratio_per_speech_second_1b"] = ratio
  print(f"FLOP model, 1B shapes: LST spends {ratio:.2f} of the baseline's FLOPs per second of speech "
        f"(target <= 0.40)")

  import ml_collections
  ref = ml_collections.ConfigDict({
      "model": dict(kind="lst", d_global=256, global_layers=4, global_heads=4, d_local=128, local_heads=4,
                    encoder_layers=1, decoder_layers=2, cross_attn_k=2, window=512, dtype="float32"),
      "data": dict(batch_size=4, max_tokens=768, max_patches=256), "optim": {}, "train": {}, "mesh": {}})
  ref_r = time_step(ref, reference_fill_batches(), 2508, max(steps, 4))
  tps = ref_r["real_tokens"] / ref_r["step_s"]
  lo, hi = REFERENCE_RECORDED["s_per_step"]
  print(f"reference config, reference-fill batches ({ref_r['real_tokens']:,.0f} real tokens each): "
        f"{ref_r['step_s']:.2f} s/step, {tps:,.0f} real tokens/s; the reference implementation, "
        f"recorded (not measured in this run): {lo:.2f}-{hi:.2f} s/step, so ours is "
        f"{lo / ref_r['step_s']:.2f}-{hi / ref_r['step_s']:.2f}x its speed")
  out["reference_config"] = ref_r
  out["reference_recorded"] = {**REFERENCE_RECORDED, "speed_vs_recorded": (lo / ref_r["step_s"],
                                                                          hi / ref_r["step_s"])}
  print(f"peak step memory: 20M LST {lst_r['peak_bytes'] / 2**20:.0f} MiB, 20M baseline "
        f"{base_r['peak_bytes'] / 2**20:.0f} MiB, reference config {ref_r['peak_bytes'] / 2**20:.0f} MiB")

  scaling = {}
  for t in (1024, 2048, 4096, 8192):
    ref.data.max_tokens, ref.data.max_patches = t, t // 4 + 2
    r = time_step(ref, speech_batch(1, t, t // 4 + 2, 2508, 501), 2508, max(1, steps - 1))
    scaling[t] = r
    print(f"  {t:>5} tokens/row: {r['step_s']:.2f} s/step, {r['peak_bytes'] / 2**20:.0f} MiB")
  out["scaling"] = {str(k): v for k, v in scaling.items()}
  cli.write_results(flags.FLAGS.out, out)


if __name__ == "__main__":
  define_flags()
  app.run(main)
