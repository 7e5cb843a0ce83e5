"""`make bench-storage`: the input pipeline on a dataset in Cloud Storage (a local emulator) beside
the same dataset on local disk, measured in one run.

  python -m lst_jax.tools.bench_storage [--config=experiments/demo.py] [--out=runs/bench_storage.json]

Uploads the experiment's dataset to fake-gcs-server on 127.0.0.1, then times for both copies:
opening it (manifest, one listing, size checks), random single-record reads (array_record issues
one ranged GET per record on gs://) and the Grain loader's batches (16 reader threads by default).
The emulator answers in well under a millisecond; a real bucket takes tens of milliseconds to the
first byte of each GET, so `records_per_s_at_latency` estimates a real bucket's record rate from
the measured per-record cost plus an assumed latency per GET spread over the loader's threads
(labelled an estimate: nothing here reached a real bucket).
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags

from lst_jax import cli, storage

_CONFIG = cli.config_flag(default="experiments/demo.py")
_OUT = flags.DEFINE_string("out", "runs/bench_storage.json", "Where the figures are written (JSON).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Loader batches to time (after the first).")
_RECORDS = flags.DEFINE_integer("records", 2000, "Random single-record reads to time.")
_LATENCY_MS = flags.DEFINE_float("latency_ms", 30.0, "Assumed first-byte latency of one GET on a real "
                                 "bucket, for the estimate.")
READER_THREADS = 16  # grain.ReadOptions' default num_threads, which the pipeline keeps


def measure(data_dir: str, config) -> dict:
  """Open, random-record and loader timings of one copy of the dataset."""
  from lst_jax import config as config_lib
  from lst_jax.data import datasets, pipeline
  from lst_jax.data.shards import Shards

  start = time.perf_counter()
  manifest = datasets.open_datasets(data_dir)
  open_s = time.perf_counter() - start
  split = manifest.split("train")
  shards = Shards(split.speech + split.text, manifest.shard_records)
  order = np.random.default_rng(0).integers(0, len(shards), _RECORDS.value)
  start = time.perf_counter()
  for i in order:
    shards[int(i)]
  record_s = (time.perf_counter() - start) / len(order)

  exp = config_lib.parse(config, vocab_size=pipeline.vocab_of(manifest).size)
  it = iter(pipeline.train_dataset(manifest, exp.data, exp.data.batch_size))
  next(it)
  start = time.perf_counter()
  batches = [next(it) for _ in range(_BATCHES.value)]
  batch_s = (time.perf_counter() - start) / len(batches)
  tokens = float(np.mean([(b["token_segment"] > 0).sum() for b in batches]))
  return {"open_s": open_s, "record_ms": 1e3 * record_s, "records_per_s": 1 / record_s,
          "loader_batches_per_s": 1 / batch_s, "loader_tokens_per_s": tokens / batch_s}


def main(argv):
  del argv
  from lst_jax.tools.gcs_emulator import Emulator

  config = _CONFIG.value
  local_dir = config.data.dir
  if storage.is_url(local_dir) or not os.path.isdir(local_dir):
    cli.fail(f"--config.data.dir={local_dir}: name a local prepared dataset (make data builds the demo's)")
  emulator = Emulator()
  try:
    os.environ.update(emulator.start())
    url = emulator.bucket("lst-bench") + "/data"
    start = time.perf_counter()
    storage.upload_tree(local_dir, url)
    upload_s = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(local_dir) for f in fs)
    local = measure(local_dir, config)
    remote = measure(url, config)
  finally:
    emulator.stop()
  per_record_s = remote["record_ms"] / 1e3 + _LATENCY_MS.value / 1e3
  results = {
      "dataset": local_dir, "bytes": size, "upload_s": upload_s, "local": local, "emulator": remote,
      "emulator_over_local": {k: remote[k] / local[k] for k in ("record_ms", "loader_batches_per_s", "open_s")},
      "estimate": {"latency_ms_assumed": _LATENCY_MS.value, "reader_threads": READER_THREADS,
                   "records_per_s_at_latency": READER_THREADS / per_record_s},
  }
  print(f"{'':10} {'open s':>8} {'ms/record':>10} {'records/s':>10} {'batches/s':>10} {'tokens/s':>10}")
  for name, r in (("local", local), ("emulator", remote)):
    print(f"{name:10} {r['open_s']:8.3f} {r['record_ms']:10.3f} {r['records_per_s']:10.0f} "
          f"{r['loader_batches_per_s']:10.2f} {r['loader_tokens_per_s']:10.0f}")
  print(f"estimate for a real bucket at {_LATENCY_MS.value:g} ms per GET and {READER_THREADS} reader threads: "
        f"{results['estimate']['records_per_s_at_latency']:.0f} records/s per host")
  cli.write_results(_OUT.value, results)


if __name__ == "__main__":
  cli.run(main)
