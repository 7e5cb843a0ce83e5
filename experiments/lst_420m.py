"""The 420M LST (paper.md sec. 2, our reading of the reference code's config):
global 18 x 1280 (10 heads), encoder and decoder 7 x 768 (12 heads), cross_attn_k 2.

Batch: 64 rows x 4096 global positions (0.25M per step, half the 1B's; our
scaling), tokens capped at 12288 per row; the paper's AdamW recipe; every
block rematerialized (remat="full").
Paired with experiments/baseline_420m.py.

Run (on 8+ GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/lst_420m.py --workdir=runs/lst_420m \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/lst_420m.py --devices=8 --fsdp=8
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="lst", d_global=1280, global_layers=18, global_heads=10,
                 d_local=768, local_heads=12, encoder_layers=7, decoder_layers=7,
                 cross_attn_k=2, window=512, dtype="bfloat16", attention="xla", remat="full")
  c.data = dict(dir="data/lst", batch_size=64, max_tokens=12288, max_patches=4096,
                patching="curriculum", patch_size=4, max_patch_len=16,
                interleaved_weight=0.33, text_weight=0.67, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=2000, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=200_000, log_every=100, checkpoint_every=1000, keep_checkpoints=3,
                 eval_every=5000, eval_batches=100, seed=0)
  c.mesh = dict(data=-1, fsdp=8, tensor=1)
  return c
