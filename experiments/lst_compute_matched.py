"""The LST, compute-matched against experiments/baseline_compute_matched.py (paper.md sec. 5):
same steps, rows and global positions per step (the baseline's tokens per row = the LST's patches).

Size: the paper's 1B by default; pass another after a colon (demo, tiny, 20m, 420m, 1b, 7b;
see lst_jax/presets.py). The paper's AdamW recipe and mixture; curriculum patching; sizes
from 420m up use remat, scanned layers and XLA/cuDNN attention.

Run on a pod or cluster (set config.data.dir to your prepared dataset):
  make train EXP=lst_compute_matched ARGS=--config.data.dir=gs://.../data
  python -m lst_jax.main --config=experiments/lst_compute_matched.py --workdir=runs/lst_compute_matched
Try it here, CPU-sized on the demo corpus:
  make train EXP=lst_compute_matched SIZE=tiny
  python -m lst_jax.main --config=experiments/lst_compute_matched.py:tiny --workdir=runs/lst_compute_matched_tiny
Both members side by side: make compare PAIR=compute_matched
"""

from lst_jax import presets


def get_config(size: str = "1b"):
  return presets.experiment("lst", size or "1b", "compute_matched")
