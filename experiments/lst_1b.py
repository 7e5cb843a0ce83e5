"""The paper's 1B LST (paper.md sec. 2, 5): encoder 1 x 1024, global 25 x 2048, decoder 9 x 1024.

Batch as the paper's: 128 rows x 4096 global positions (0.5M positions per step),
raw tokens capped at 12288 per row; curriculum patching; AdamW recipe of sec. 5;
every block rematerialized (remat="full").
Paired with experiments/baseline_1b.py (compute-controlled: same steps and positions).

Run (on 32 GPUs, e.g. 4 hosts x 8; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/lst_1b.py --workdir=runs/lst_1b \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect parameters, FLOPs and per-device memory without a GPU:
  python -m lst_jax.tools.inspect --config=experiments/lst_1b.py --devices=32 --fsdp=32
"""

import ml_collections

from lst_jax import presets


def get_config() -> ml_collections.ConfigDict:
  return presets.experiment("lst", "1b", "compute_matched")
