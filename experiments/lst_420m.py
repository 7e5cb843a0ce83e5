"""The 420M LST (paper.md sec. 2, our reading of the reference code's config):
global 18 x 1280 (10 heads), encoder and decoder 7 x 768 (12 heads), cross_attn_k 2.

Batch: 64 rows x 4096 global positions (0.25M per step, half the 1B's; our
scaling), tokens capped at 12288 per row; the paper's AdamW recipe; every
block rematerialized (remat="full").
Paired with experiments/baseline_420m.py.

Run (on 8+ GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/lst_420m.py --workdir=runs/lst_420m \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/lst_420m.py --devices=8 --fsdp=8
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("lst", "420m", "compute_matched")
