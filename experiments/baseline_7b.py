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


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="baseline", d_global=4096, global_layers=32, global_heads=32,
                 dtype="bfloat16", attention="xla", remat="full")
  c.data = dict(dir="data/lst", batch_size=256, max_tokens=4096, max_patches=4096,
                interleaved_weight=0.33, text_weight=0.67, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=2000, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=200_000, log_every=100, checkpoint_every=1000, keep_checkpoints=3,
                 eval_every=5000, eval_batches=100, seed=0)
  c.mesh = dict(data=-1, fsdp=64, tensor=1)
  return c
