"""A CPU-sized LST with the 1B's proportions: global 12 x 384 (6 heads; ~21M parameters
without embeddings), d_local = d_global / 2 = 192 (3 heads of 64, as the 1B's heads),
encoder 1 layer, decoder 4 (the 1B's 9/25 of the global depth).

Trains on the demo corpus on 2 CPU cores: 8 rows x 512 positions / 768 tokens,
the paper's mixture and AdamW recipe, warmup scaled to 200 of 2000 steps.
Paired with experiments/baseline_20m.py.

Run: make data && python -m lst_jax.main --config=experiments/lst_20m.py --workdir=runs/lst_20m
     (or make train EXP=lst_20m WORKDIR=runs/lst_20m)
Inspect: python -m lst_jax.tools.inspect --config=experiments/lst_20m.py
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="lst", d_global=384, global_layers=12, global_heads=6,
                 d_local=192, local_heads=3, encoder_layers=1, decoder_layers=4,
                 cross_attn_k=2, window=512, dtype="bfloat16", attention="reference", remat="none")
  c.data = dict(dir="data/demo", batch_size=8, max_tokens=768, max_patches=512,
                patching="curriculum", patch_size=4, max_patch_len=16,
                interleaved_weight=0.33, text_weight=0.67, packing_bins=8, seed=0)
  c.optim = dict(learning_rate=4e-4, warmup_steps=200, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=2000, log_every=10, checkpoint_every=200, keep_checkpoints=3,
                 eval_every=500, eval_batches=0, seed=0)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  return c
