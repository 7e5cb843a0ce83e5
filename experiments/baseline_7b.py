"""The 7B baseline: the Llama-7B-like global transformer of experiments/lst_7b.py
(32 x 4096, 32 heads; our choice of shape) over tokens.

Compute-controlled pairing: the same steps and global positions per step
(256 rows x 4096 tokens, the LST's 4096 patches).
Every block rematerialized (remat="full"), as in the LST preset.

Run (on 64+ GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/baseline_7b.py --workdir=runs/baseline_7b \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/baseline_7b.py --devices=64 --fsdp=64
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("baseline", "7b", "compute_matched")
