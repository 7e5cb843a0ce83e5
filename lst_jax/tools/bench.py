"""`make bench`: model throughput figures, each measured in this run on this machine.

  python -m data_prep.corpus.reference_fill --out=runs/reference_fill.npz      (make bench runs both)
  python -m lst_jax.tools.bench [--batches=runs/reference_fill.npz] [--out=runs/bench.json] [--steps=3]

1. Matmul peak (fp32 2048^3) and the train-step FLOP/s of the ~20M LST config
   (experiments/lst_compute_matched.py:20m) as a fraction of it (XLA's count of the executed step).
2. Speech seconds per second, LST vs the baseline with the same global model
   (the 20M pair), on speech-only rows (LST: T units in T/4 patches; baseline: T units).
3. Per the FLOP model at the 1B shapes: LST FLOPs per second of speech / baseline's.
4. The reference comparison config: the demo preset's model (experiments/demo.py: global 4 x 256,
   encoder 1 x 128, decoder 2 x 128, k=2, static p=4) in fp32, on the reference-fill batches of
   --batches (4 rows of 768 tokens / 256 patches, vocabulary 2508: official-format utterances
   through our pipeline and packer, ~1.9k real tokens per batch), which data_prep.corpus.reference_fill
   writes beforehand (lst_jax never imports or runs data_prep): s/step and real tokens/s, beside
   the reference implementation's step time recorded on this machine (not measured here).
5. Peak memory of a step (XLA's buffer assignment) and LST step time from 1k to 8k
   tokens per row.

The sizes (--matmul, --size, --rows, --tokens, --reference_size, --scaling) default to the
figures above; the tests run the tool at tiny ones (tests/test_bench_tools.py).
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags, logging

from lst_jax import cli
from lst_jax import vocab as vocab_lib

DEFAULT_BATCHES = "runs/reference_fill.npz"


def define_flags():
  """Flags of the command line only (importing this module, as make accel-check does, defines none)."""
  flags.DEFINE_string("out", "runs/bench.json", "Where the figures are written (JSON).")
  flags.DEFINE_integer("steps", 3, "Timed steps per measurement (after one compile step).", lower_bound=1)
  flags.DEFINE_string("batches", DEFAULT_BATCHES,
                      "Reference-fill batches for the reference comparison, written beforehand by "
                      "`python -m data_prep.corpus.reference_fill --out=FILE` (make bench does); empty: skip it.")
  flags.DEFINE_integer("matmul", 2048, "Side of the fp32 matmul that measures the peak.", lower_bound=1)
  flags.DEFINE_string("size", "20m", "Preset size of the LST-vs-baseline pair (experiments/"
                      "lst_compute_matched.py:SIZE and baseline_compute_matched.py:SIZE).")
  flags.DEFINE_integer("rows", 8, "Speech-only rows per batch for the pair.", lower_bound=1)
  flags.DEFINE_integer("tokens", 768, "Units per speech-only row for the pair (the LST's patches: a quarter).",
                       lower_bound=16)
  flags.DEFINE_string("reference_size", "demo", "Preset size of experiments/demo.py whose model is the "
                      "reference comparison config (the reference's recorded time is for demo's).")
  flags.DEFINE_list("scaling", ["1024", "2048", "4096", "8192"], "Tokens per row of the memory and step-time "
                    "scaling of the reference config (one row each; empty: none).")


# The reference implementation's train step on the same config and the same kind of batches,
# recorded earlier on this machine (10 timed steps, alternating with ours); not measured by this tool.
REFERENCE_RECORDED = {"s_per_step": (0.59, 0.61), "real_tokens_per_batch": 1850,
                      "where": "reference PyTorch implementation (neillu23/lst), CPU, this 2-core machine, "
                               "fp32, 4 x 768 tokens / 256 patches, ~1,850 real tokens per batch"}
REFERENCE_VOCAB = 2508   # data_prep.corpus.reference_fill's batches: 2,000 text ids + specials + 501 units
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
  from lst_jax.data import packing
  rng = np.random.default_rng(seed)
  docs = []
  unit_offset = vocab_size - num_units
  vocab = vocab_lib.Vocab(text_size=unit_offset - vocab_lib.NUM_SPECIAL - 2, num_units=num_units)
  for _ in range(rows):
    n = min(tokens, 2 + 4 * (patches - 2))
    ids = np.concatenate([[1, unit_offset - 1], rng.integers(unit_offset, vocab_size, n - 2)]).astype(np.int32)
    docs.append(packing.inference_document(ids, vocab, 4, tokens, patches)[0])
  one_per_row = packing.pack_rows(grain.MapDataset.source(docs).to_iter_dataset(), tokens, patches, bins=1,
                                  seed=0, shuffle_bins=False)
  return packing.stack(list(one_per_row))


def load_reference_batches(path: str) -> list[dict]:
  """The reference-fill batches data_prep.corpus.reference_fill wrote to `path` (a clear error if missing)."""
  from lst_jax import storage
  from lst_jax.data import packing
  if not os.path.isfile(path):
    raise storage.StorageError(
        f"--batches={path}: no such file; make it with `python -m data_prep.corpus.reference_fill "
        f"--out={path}` (make bench does), or pass --batches= to skip the reference comparison")
  batches = packing.load_batches(path)
  if not batches or any(b["tokens"].shape != batches[0]["tokens"].shape for b in batches):
    raise storage.StorageError(f"--batches={path}: not packed batches of one shape (packing.save_batches)")
  return batches


def row_shape(batch: dict) -> tuple[int, int, int]:
  """(rows, tokens per row, patches per row) of a packed batch."""
  rows, tokens = batch["tokens"].shape
  return rows, tokens, batch["patch_segment"].shape[1]


def time_step(config, batch: dict | list[dict], vocab_size: int, steps: int) -> dict:
  """Seconds per train step, XLA's executed FLOPs and the step's buffer memory; with a list of
  batches the timed steps cycle through them (figures per batch are their means)."""
  import jax
  from lst_jax import config as config_lib
  from lst_jax import sharding
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
          "loss": float(m["loss"]),
          "real_tokens": float(np.mean([(b["token_segment"] > 0).sum() for b in batches])),
          "speech_units": float(np.mean([(b["tokens"] >= vocab.unit_offset).sum() for b in batches]))}


def reference_config(size: str, rows: int, tokens: int, patches: int):
  """The demo preset's experiment (experiments/demo.py:SIZE) in fp32, with rows of the given shape."""
  c = cli.load_experiment(f"demo:{size}")
  c.model.dtype = "float32"
  c.data.update(batch_size=rows, max_tokens=tokens, max_patches=patches)
  return c


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from lst_jax import flops as flops_lib
  from lst_jax import config as config_lib
  FLAGS = flags.FLAGS
  steps, size = FLAGS.steps, FLAGS.size
  reference_batches = load_reference_batches(FLAGS.batches) if FLAGS.batches else None
  out = {"sizes": {"matmul": FLAGS.matmul, "pair": size, "rows": FLAGS.rows, "tokens": FLAGS.tokens,
                   "reference": FLAGS.reference_size}}
  peak = matmul_peak(FLAGS.matmul)
  out["matmul_peak_flops"] = peak
  print(f"matmul peak (fp32 {FLAGS.matmul}^3): {peak / 1e9:.1f} GFLOP/s")

  vocab_size = 1000 + 5 + 501  # the demo's tokenizer + specials/mode tokens + 501 units
  lst_pair = cli.load_experiment(f"lst_compute_matched:{size}")
  base_pair = cli.load_experiment(f"baseline_compute_matched:{size}")
  t, rows = FLAGS.tokens, FLAGS.rows
  p = t // 4
  lst_r = time_step(lst_pair, speech_batch(rows, t, p, vocab_size, 501), vocab_size, steps)
  frac = lst_r["xla_flops"] / lst_r["step_s"] / peak
  print(f"{size} LST train step: {lst_r['step_s']:.2f} s, {lst_r['xla_flops'] / 1e9:.1f} GFLOP executed, "
        f"{lst_r['xla_flops'] / lst_r['step_s'] / 1e9:.1f} GFLOP/s = {frac:.2f} of matmul peak (target >= 0.45)")
  base_pair.data.max_tokens, base_pair.data.max_patches = t, t
  base_r = time_step(base_pair, speech_batch(rows, t, t, vocab_size, 501), vocab_size, steps)
  sps = lambda r: r["speech_units"] / UNIT_RATE / r["step_s"]
  print(f"speech seconds per second, speech-only rows of {t} units: LST {sps(lst_r):.1f}, "
        f"baseline {sps(base_r):.1f}: {sps(lst_r) / sps(base_r):.2f}x (target >= 2x)")
  out[f"lst_{size}"], out[f"baseline_{size}"] = lst_r, base_r
  out[f"flop_fraction_{size}"], out[f"speech_speedup_{size}"] = frac, sps(lst_r) / sps(base_r)

  lst1b = config_lib.parse(cli.load_experiment("lst_compute_matched:1b"), vocab_lib.PAPER.size).model
  base1b = config_lib.parse(cli.load_experiment("baseline_compute_matched:1b"), vocab_lib.PAPER.size).model
  per_second = lambda cfg: flops_lib.speech_flops_per_second(cfg, 12288, unit_rate=UNIT_RATE)["forward"]
  ratio = per_second(lst1b) / per_second(base1b)
  out["flop_ratio_per_speech_second_1b"] = ratio
  print(f"FLOP model, 1B shapes: LST spends {ratio:.2f} of the baseline's FLOPs per second of speech "
        f"(target <= 0.40)")

  memory_line = (f"peak step memory: {size} LST {lst_r['peak_bytes'] / 2**20:.0f} MiB, {size} baseline "
                 f"{base_r['peak_bytes'] / 2**20:.0f} MiB")
  if reference_batches is not None:
    ref = reference_config(FLAGS.reference_size, *row_shape(reference_batches[0]))
    ref_r = time_step(ref, reference_batches, REFERENCE_VOCAB, max(steps, len(reference_batches)))
    ref_r.update(preset=f"demo:{FLAGS.reference_size}", batches=FLAGS.batches, rows=row_shape(reference_batches[0]))
    tps = ref_r["real_tokens"] / ref_r["step_s"]
    line = (f"reference config (demo:{FLAGS.reference_size}, fp32), reference-fill batches "
            f"({ref_r['real_tokens']:,.0f} real tokens each): {ref_r['step_s']:.2f} s/step, {tps:,.0f} real tokens/s")
    out["reference_config"] = ref_r
    if FLAGS.reference_size == "demo" and row_shape(reference_batches[0]) == (4, 768, 256):
      lo, hi = REFERENCE_RECORDED["s_per_step"]
      line += (f"; the reference implementation, recorded (not measured in this run): {lo:.2f}-{hi:.2f} s/step, "
               f"so ours is {lo / ref_r['step_s']:.2f}-{hi / ref_r['step_s']:.2f}x its speed")
      out["reference_recorded"] = {**REFERENCE_RECORDED, "speed_vs_recorded": (lo / ref_r["step_s"],
                                                                              hi / ref_r["step_s"])}
    else:
      line += " (not the reference's config: no comparison with its recorded time)"
    print(line)
    memory_line += f", reference config {ref_r['peak_bytes'] / 2**20:.0f} MiB"
  else:
    print("reference comparison skipped (--batches= empty)")
  print(memory_line)

  scaling = {}
  for t in map(int, FLAGS.scaling):
    ref = reference_config(FLAGS.reference_size, 1, t, t // 4 + 2)
    r = time_step(ref, speech_batch(1, t, t // 4 + 2, REFERENCE_VOCAB, 501), REFERENCE_VOCAB, max(1, steps - 1))
    scaling[t] = r
    print(f"  {t:>5} tokens/row: {r['step_s']:.2f} s/step, {r['peak_bytes'] / 2**20:.0f} MiB")
  out["scaling"] = {str(k): v for k, v in scaling.items()}
  cli.write_results(FLAGS.out, out)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
