"""A CPU-sized LST with the 1B's proportions: global 12 x 384 (6 heads; ~21M parameters
without embeddings), d_local = d_global / 2 = 192 (3 heads of 64, as the 1B's heads),
encoder 1 layer, decoder 4 (the 1B's 9/25 of the global depth).

Trains on the demo corpus on 2 CPU cores: 8 rows x 512 positions / 1536 tokens,
the paper's mixture and AdamW recipe, warmup scaled to 200 of 2000 steps.
Paired with experiments/baseline_20m.py.

Run: make data && python -m lst_jax.main --config=experiments/lst_20m.py --workdir=runs/lst_20m
     (or make train EXP=lst_20m WORKDIR=runs/lst_20m)
Inspect: python -m lst_jax.tools.inspect --config=experiments/lst_20m.py
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("lst", "20m", "compute_matched")
