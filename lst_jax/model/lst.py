"""The Latent Speech-Text Transformer: encoder-patcher -> global latent transformer -> local decoder."""

from __future__ import annotations

from flax import nnx

from lst_jax.config import ModelConfig
from lst_jax.sharding import constrain
from lst_jax.model.decoder import LocalDecoder
from lst_jax.model.patcher import EncoderPatcher
from lst_jax.model.transformer import Transformer


class LST(nnx.Module):
  kind = "lst"   # config.model.kind of this architecture (the model factory keys on it)


  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.encoder = EncoderPatcher(cfg, rngs=rngs)
    self.latent = Transformer(cfg.d_global, cfg.global_heads, cfg.global_layers, cfg.mlp_dim(cfg.d_global),
                              rngs=rngs, dtype=cfg.compute_dtype, rope_theta=cfg.rope_theta,
                              implementation=cfg.attention, remat=cfg.remat, scan_layers=cfg.scan_layers)
    self.decoder = LocalDecoder(cfg, rngs=rngs)

  def __call__(self, batch):
    """A packed batch (see lst_jax.data.packing.finalize_row) -> fp32 logits [B, T, V]."""
    h_BTD, patches_BPG = self.encoder(batch)
    h_BTD = constrain(h_BTD, ("act_batch", "act_length", "act_embed"))
    patches_BPG = constrain(patches_BPG, ("act_batch", "act_length", "act_embed"))
    global_BPG = self.latent(patches_BPG, batch["patch_pos"], batch["patch_segment"])
    global_BPG = constrain(global_BPG, ("act_batch", "act_length", "act_embed"))
    return constrain(self.decoder(h_BTD, global_BPG, batch), ("act_batch", "act_length", "act_vocab"))
