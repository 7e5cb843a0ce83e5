"""The CPU-sized baseline: the global transformer of experiments/lst_20m.py (12 x 384) over tokens.

Compute-controlled pairing: the same steps and global positions per step
(8 rows x 512 tokens, the LST's 512 patches) on the demo corpus.

Run: make data && python -m lst_jax.main --config=experiments/baseline_20m.py --workdir=runs/baseline_20m
     (or make train EXP=baseline_20m WORKDIR=runs/baseline_20m)
Inspect: python -m lst_jax.tools.inspect --config=experiments/baseline_20m.py
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("baseline", "20m", "compute_matched")
