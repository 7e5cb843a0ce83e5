"""`make bench-generate`: decoding speed, measured in one run (ratios, not timed tests).

  python -m lst_jax.tools.bench_generate [--sizes=demo,20m] [--batch_sizes=1,16] [--seconds=10]
      [--uncached_seconds=30] [--uncached_size=demo]

Randomly initialized preset-shaped models (demo: global 4 x 256, the LST's local
1 + 2 layers x 128; 20m: global 12 x 384, local 1 + 4 layers x 192), fp32, greedy,
speech only (EOS and mode switches forbidden, so every row generates exactly its
length). Prints and writes runs/bench_generate.json:
  - speech seconds generated per second of wall time, LST vs the baseline with
    the same global model, at batch 1 and 16, per size (target: LST >= 2x). Per
    token the baseline runs its global model, the LST a quarter of it plus its
    local modules, so the ratio grows with the global model's share (FLOPs per
    token: ~2.1x at demo, ~2.7x at 20m, ~2.9x at the paper's 1B);
  - cached vs uncached decoding of `uncached_seconds` of speech at batch 1 (the
    uncached decoder runs a from-scratch forward of the whole sequence for every
    token; target >= 10x).
Compilation is excluded: every timed call is preceded by one with the same shapes. The tests
run it at tiny sizes (tests/test_bench_tools.py).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags

from lst_jax import presets, storage, vocab as vocab_lib

UNIT_RATE = 25.0


def define_flags():
  """Flags of the command line only (importing this module, as make accel-check does, defines none)."""
  flags.DEFINE_list("sizes", ["demo", "20m"], "Preset sizes to compare (lst_jax.presets).")
  flags.DEFINE_list("batch_sizes", ["1", "16"], "Rows per generate call for the throughput comparison.")
  flags.DEFINE_float("seconds", 10.0, "Speech per row for the throughput comparison.")
  flags.DEFINE_float("uncached_seconds", 30.0, "Speech for the cached-vs-uncached comparison.")
  flags.DEFINE_string("uncached_size", "demo", "Preset size of the LST in the cached-vs-uncached comparison.")
  flags.DEFINE_string("out", "runs/bench_generate.json", "Result file.")


def models(vocab: vocab_lib.Vocab, size: str = "demo"):
  from lst_jax import config as config_lib
  from lst_jax.model.factory import build_model
  out = {}
  for kind in ("lst", "baseline"):
    c = presets.experiment(kind, size, "same_rows")
    c.model.dtype = "float32"
    exp = config_lib.parse(c, vocab_size=vocab.size)
    out[kind] = (build_model(exp.model, seed=0), exp.data.patching.patch_size)
  return out


def speech_per_second(decoder, vocab, batch: int, units: int) -> float:
  from lst_jax.decode import generate as gen
  from lst_jax.decode.sampling import Sampling
  prompt = (vocab_lib.BOS, vocab.speech_mode) + tuple(int(u) for u in vocab.units(np.arange(25) % vocab.num_units))
  requests = [gen.Request(prompt, "speech", units, "forbid", eos=False)] * batch
  slots = len(prompt) + units + 1
  gen.generate(decoder, requests[:batch], Sampling(0.0), slots=slots)   # compile
  t0 = time.perf_counter()
  out = gen.generate(decoder, requests, Sampling(0.0), slots=slots)
  wall = time.perf_counter() - t0
  assert all(len(g.tokens) == units for g in out)
  return batch * units / UNIT_RATE / wall


def uncached_seconds(model, vocab, patch_size: int, units: int) -> float:
  """Wall time of greedy speech decoding with a from-scratch forward per token (batch 1)."""
  from lst_jax.decode import generate as gen
  seq = [vocab_lib.BOS, vocab.speech_mode] + vocab.units(np.arange(25) % vocab.num_units).tolist()
  slots = len(seq) + units + 2
  gen.uncached_logits(model, vocab, patch_size, [seq], slots)   # compile
  t0 = time.perf_counter()
  for _ in range(units):
    logits = gen.uncached_logits(model, vocab, patch_size, [seq], slots)[0]
    seq.append(vocab.unit_offset + int(np.argmax(logits[vocab.unit_offset:])))
  return time.perf_counter() - t0


def main(argv):
  del argv
  from lst_jax.decode import generate as gen
  FLAGS = flags.FLAGS
  vocab = vocab_lib.Vocab(text_size=1000, num_units=500)
  units = int(FLAGS.seconds * UNIT_RATE)
  if units < 1 or int(FLAGS.uncached_seconds * UNIT_RATE) < 1:
    raise app.UsageError(f"--seconds and --uncached_seconds must give at least one unit (1/{UNIT_RATE:g} s)")
  result = {"seconds": FLAGS.seconds, "throughput": {}}
  for size in FLAGS.sizes:
    built = models(vocab, size)
    decoders = {kind: gen.Decoder(m, vocab, p) for kind, (m, p) in built.items()}
    for batch in map(int, FLAGS.batch_sizes):
      row = {kind: speech_per_second(d, vocab, batch, units) for kind, d in decoders.items()}
      row["lst_over_baseline"] = row["lst"] / row["baseline"]
      result["throughput"][f"{size}_batch_{batch}"] = row
      print(f"{size} batch {batch:2d}: speech seconds per second: LST {row['lst']:.2f}, baseline "
            f"{row['baseline']:.2f} -> {row['lst_over_baseline']:.2f}x", flush=True)
  size = FLAGS.uncached_size
  model, p = models(vocab, size)["lst"]
  long_units = int(FLAGS.uncached_seconds * UNIT_RATE)
  cached = long_units / UNIT_RATE / speech_per_second(gen.Decoder(model, vocab, p), vocab, 1, long_units)
  uncached = uncached_seconds(model, vocab, p, long_units)
  result["cached_vs_uncached"] = {"size": size, "speech_seconds": FLAGS.uncached_seconds, "cached_s": cached,
                                  "uncached_s": uncached, "speedup": uncached / cached}
  print(f"{size} LST, {FLAGS.uncached_seconds:g} s of speech at batch 1: cached {cached:.1f} s, "
        f"uncached {uncached:.1f} s "
        f"-> {uncached / cached:.1f}x", flush=True)
  os.makedirs(os.path.dirname(storage.absolute(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
