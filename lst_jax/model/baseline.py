"""The baseline: the global transformer run directly over all tokens (paper.md sec. 2)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lst_jax.config import ModelConfig
from lst_jax.sharding import constrain
from lst_jax.model.layers import Embed, Linear
from lst_jax.model.transformer import Transformer


class Baseline(nnx.Module):
  kind = "baseline"   # config.model.kind of this architecture (the model factory keys on it)


  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    dt = cfg.compute_dtype
    self.embed = Embed(cfg.vocab_size, cfg.d_global, rngs=rngs, dtype=dt)
    self.body = Transformer(cfg.d_global, cfg.global_heads, cfg.global_layers, cfg.mlp_dim(cfg.d_global),
                            rngs=rngs, dtype=dt, rope_theta=cfg.rope_theta, implementation=cfg.attention,
                            remat=cfg.remat, scan_layers=cfg.scan_layers)
    self.head = Linear(cfg.d_global, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dt)

  def __call__(self, batch):
    x_BTD = constrain(self.embed(batch["tokens"]), ("act_batch", "act_length", "act_embed"))
    h_BTD = constrain(self.body(x_BTD, batch["token_pos"], batch["token_segment"]),
                      ("act_batch", "act_length", "act_embed"))
    return constrain(self.head(h_BTD).astype(jnp.float32), ("act_batch", "act_length", "act_vocab"))
