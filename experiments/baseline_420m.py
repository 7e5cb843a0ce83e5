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


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="baseline", d_global=1280, global_layers=18, global_heads=10,
                 dtype="bfloat16", attention="xla", remat="full")
  c.data = dict(dir="data/lst", batch_size=64, max_tokens=4096, max_patches=4096,
                interleaved_weight=0.33, text_weight=0.67, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=2000, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=200_000, log_every=100, checkpoint_every=1000, keep_checkpoints=3,
                 eval_every=5000, eval_batches=100, seed=0)
  c.mesh = dict(data=-1, fsdp=8, tensor=1)
  return c
