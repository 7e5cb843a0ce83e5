"""A 7B LST. Our choice, not the paper's published shape: a Llama-7B-like global
transformer, 32 x 4096 (32 heads), with local modules scaled like the 1B's
(d_local = d_global / 2 = 2048 with 16 heads of 128, encoder 1 layer, decoder 9).

Batch: 256 rows x 4096 global positions (1M per step, twice the 1B's; our
choice), tokens capped at 12288 per row; the paper's AdamW recipe with FSDP
over 64 devices; every block rematerialized (remat="full").
Paired with experiments/baseline_7b.py.

Run (on 64+ GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/lst_7b.py --workdir=runs/lst_7b \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/lst_7b.py --devices=64 --fsdp=64
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("lst", "7b", "compute_matched")
