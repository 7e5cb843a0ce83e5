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


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="lst", d_global=2048, global_layers=25, global_heads=16,
                 d_local=1024, local_heads=16, encoder_layers=1, decoder_layers=9,
                 cross_attn_k=2, window=512, dtype="bfloat16", attention="xla", remat="full")
  c.data = dict(dir="data/lst", batch_size=128, max_tokens=12288, max_patches=4096,
                patching="curriculum", patch_size=4, max_patch_len=16,
                interleaved_weight=0.33, text_weight=0.67, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=2000, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=200_000, log_every=100, checkpoint_every=1000, keep_checkpoints=3,
                 eval_every=5000, eval_batches=100, seed=0)
  c.mesh = dict(data=-1, fsdp=8, tensor=1)
  return c
