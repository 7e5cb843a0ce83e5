"""A 7B LST. Our choice, not the paper's published shape: a Llama-7B-like global
transformer, 32 x 4096 (32 heads), with local modules scaled like the 1B's
(d_local = d_global / 2 = 2048 with 16 heads of 128, encoder 1 layer, decoder 9).

Batch: 256 rows x 4096 global positions (1M per step, twice the 1B's; our
choice), tokens capped at 12288 per row; the paper's AdamW recipe with FSDP
over 64 devices; every block rematerialized (remat="full").
Paired with experiments/baseline_7b.py.

Run (on 64+ GPUs; set config.data.dir to your prepared dataset):
  python -m lst_jax.main --config=experiments/lst_7b.py --workdir=runs/lst_7b \
      --config.data.dir=data/lst --config.model.attention=cudnn
Inspect: python -m lst_jax.tools.inspect --config=experiments/lst_7b.py --devices=64 --fsdp=64
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="lst", d_global=4096, global_layers=32, global_heads=32,
                 d_local=2048, local_heads=16, encoder_layers=1, decoder_layers=9,
                 cross_attn_k=2, window=512, dtype="bfloat16", attention="xla", remat="full")
  c.data = dict(dir="data/lst", batch_size=256, max_tokens=12288, max_patches=4096,
                patching="curriculum", patch_size=4, max_patch_len=16,
                interleaved_weight=0.33, text_weight=0.67, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=2000, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=200_000, log_every=100, checkpoint_every=1000, keep_checkpoints=3,
                 eval_every=5000, eval_batches=100, seed=0)
  c.mesh = dict(data=-1, fsdp=64, tensor=1)
  return c
