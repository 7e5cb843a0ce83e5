"""The baseline (the LST's global transformer over tokens), data-matched against experiments/lst_data_matched.py (paper.md sec. 5):
same steps, rows and raw speech and text tokens per row (the LST's global row is the paper's 2.42/3.00 of the baseline's).

Size: the paper's 1B by default; pass another after a colon (demo, tiny, 20m, 420m, 1b, 7b;
see lst_jax/presets.py). The paper's AdamW recipe and mixture; sizes
from 420m up use remat, scanned layers and XLA/cuDNN attention.

Run on a pod or cluster (set config.data.dir to your prepared dataset):
  make train EXP=baseline_data_matched ARGS=--config.data.dir=gs://.../data
  python -m lst_jax.main --config=experiments/baseline_data_matched.py --workdir=runs/baseline_data_matched
Try it here, CPU-sized on the demo corpus:
  make train EXP=baseline_data_matched SIZE=tiny
  python -m lst_jax.main --config=experiments/baseline_data_matched.py:tiny --workdir=runs/baseline_data_matched_tiny
Both members side by side: make compare PAIR=data_matched
"""

from lst_jax import presets


def get_config(size: str = "1b"):
  return presets.experiment("baseline", size or "1b", "data_matched")
