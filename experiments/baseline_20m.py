"""The CPU-sized baseline: the global transformer of experiments/lst_20m.py (12 x 384) over tokens.

Compute-controlled pairing: the same steps and global positions per step
(8 rows x 512 tokens, the LST's 512 patches) on the demo corpus.

Run: make data && python -m lst_jax.main --config=experiments/baseline_20m.py --workdir=runs/baseline_20m
     (or make train EXP=baseline_20m WORKDIR=runs/baseline_20m)
Inspect: python -m lst_jax.tools.inspect --config=experiments/baseline_20m.py
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="baseline", d_global=384, global_layers=12, global_heads=6,
                 dtype="bfloat16", attention="reference", remat="none")
  c.data = dict(dir="data/demo", batch_size=8, max_tokens=512, max_patches=512,
                interleaved_weight=0.33, text_weight=0.67, packing_bins=8, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=200, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=2000, log_every=10, checkpoint_every=200, keep_checkpoints=3,
                 eval_every=500, eval_batches=0, seed=0)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  return c
