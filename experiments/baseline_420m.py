"""The 420M baseline: the global transformer of experiments/lst_420m.py (18 x 1280) over tokens.

Compute-controlled pairing: the same steps and global positions per step
(64 rows x 4096 tokens, the LST's 4096 patches).
Every block rematerialized (remat="full"), as in the LST preset.

Run (on 8+ GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/baseline_420m.py --workdir=runs/baseline_420m \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/baseline_420m.py --devices=8 --fsdp=8
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("baseline", "420m", "compute_matched")
