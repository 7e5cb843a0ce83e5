"""The 1B baseline: the global transformer of experiments/lst_1b.py (25 x 2048) over tokens.

Compute-controlled pairing (paper.md sec. 5): the same steps and the same
global positions per step (128 rows x 4096 tokens, the LST's 4096 patches).
Every block rematerialized (remat="full"), as in the LST preset.

Run (on 32 GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/baseline_1b.py --workdir=runs/baseline_1b \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/baseline_1b.py --devices=32 --fsdp=32
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("baseline", "1b", "compute_matched")
