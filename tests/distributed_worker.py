"""One process of tests/test_distributed.py: trains the config in --config_json in --workdir.

  multi-process: --coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I
      (lst_jax.distributed.initialize, --multihost=manual), the loop unchanged: each
      process reads its own slice of the data and feeds its rows of the global batch.
  reference:     --emulate_processes=2 in one process: every batch is the rows the 2
      processes would feed, concatenated (process 0's first), so the global batches
      are the same as in the multi-process run.
The environment (XLA_FLAGS device count, JAX_PLATFORMS) is set by the test.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


class _ConcatIterator:
  """Batches of N per-process iterators concatenated by rows; checkpointable like Grain's."""

  def __init__(self, iterators):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self):
    return {"processes": [it.get_state() for it in self.iterators]}

  def set_state(self, state):
    for it, s in zip(self.iterators, state["processes"]):
      it.set_state(s)


def emulate_processes(n: int) -> None:
  """Makes the single-process loop read the data as n processes would, concatenated."""
  from lst_jax.data import packing, pipeline
  train_dataset, eval_batches = pipeline.train_dataset, pipeline.eval_batches

  def local(batch_size):
    assert batch_size % n == 0, (batch_size, n)
    return batch_size // n

  class Emulated:
    def __init__(self, manifest, cfg, batch_size, split, total_docs):
      self.args = manifest, cfg, local(batch_size), split, total_docs

    def __iter__(self):
      manifest, cfg, batch_size, split, total_docs = self.args
      return _ConcatIterator([iter(train_dataset(manifest, cfg, batch_size, split, i, n, total_docs))
                              for i in range(n)])

  def emulated_eval(manifest, cfg, batch_size, split="heldout", process_index=0, process_count=1,
                    max_batches=None):
    per_process = [list(eval_batches(manifest, cfg, local(batch_size), split, i, n, max_batches))
                   for i in range(n)]
    # Processes with fewer batches run all-padding ones (no loss) so that all run the same steps.
    count = max(len(b) for b in per_process)
    empty = packing.empty_row(cfg.max_tokens, cfg.max_patches)
    empty = {k: np.stack([v] * local(batch_size)) for k, v in empty.items()}
    per_process = [b + [empty] * (count - len(b)) for b in per_process]
    for parts in zip(*per_process):
      yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  pipeline.train_dataset = lambda manifest, cfg, batch_size, split="train", process_index=0, process_count=1, \
      total_docs=0: Emulated(manifest, cfg, batch_size, split, total_docs)
  pipeline.eval_batches = emulated_eval


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config_json", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--coordinator")
  parser.add_argument("--num_processes", type=int)
  parser.add_argument("--process_id", type=int)
  parser.add_argument("--emulate_processes", type=int, default=0)
  args = parser.parse_args()

  from lst_jax import distributed
  if args.coordinator:
    topology = distributed.initialize(distributed.Options(
        mode="manual", coordinator_address=args.coordinator, num_processes=args.num_processes,
        process_id=args.process_id, timeout_s=60))
  else:
    topology = distributed.initialize(distributed.Options(mode="off"))
  print(topology.summary(), flush=True)

  import ml_collections
  from lst_jax.train.loop import train

  if args.emulate_processes:
    emulate_processes(args.emulate_processes)
  with open(args.config_json) as f:
    config = ml_collections.ConfigDict(json.load(f))
  result = train(config, args.workdir)
  print(f"done: step {result.step}, held-out {result.heldout_end['heldout_interleaved_loss']:.6f}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
