"""The embedded demo: a small LST trained on the demo corpus (KJV verses, synthetic voices).

Run: make train            (= python -m lst_jax.main --config=experiments/demo.py --workdir=runs/demo)
Baseline over tokens on the same data: --config.model.kind=baseline
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = dict(kind="lst", d_global=256, global_layers=4, global_heads=4,
                 d_local=128, local_heads=4, encoder_layers=1, decoder_layers=2,
                 cross_attn_k=2, window=512, dtype="bfloat16", attention="reference")
  # Speech-heavy mixture, and a patch cap that fills together with the token cap.
  c.data = dict(dir="data/demo", batch_size=8, max_tokens=384, max_patches=256,
                patching="static", patch_size=4,
                interleaved_weight=0.67, text_weight=0.33, packing_bins=8, seed=0)
  c.optim = dict(learning_rate=2e-3, warmup_steps=50, final_lr_fraction=0.1,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=300, log_every=10, checkpoint_every=100, keep_checkpoints=3,
                 eval_every=100, eval_batches=0, seed=0)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  return c
