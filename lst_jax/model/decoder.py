"""The local speech decoder: token states cross-attend to global patch states.

Causality rule (paper.md sec. 2): a token whose target lies in patch j may use
the global states of patches < j, and local states of tokens up to itself.
The global state of patch j-1 has seen every patch before j, so each token
gathers the k vectors of exactly that patch (`context_patch`) and never builds
a [T x P] mask. With `decoder_window` W > 1 each token attends to the k vectors
of that patch and of the W-1 patches before it, in its document (the reference
code's `cross_attn_window_decoder`), in blocks of tokens over a contiguous span
of at most CROSS_BLOCK + W patches (cross_attention.windowed_cross_attend).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lst_jax.config import ModelConfig
from lst_jax.model.layers import Linear, RMSNorm
from lst_jax.model import cross_attention as xattn
from lst_jax.model.cross_attention import CrossAttention, at_queries, at_units, attend_patch, windowed_cross_attend
from lst_jax.model.transformer import Block, run_block


def context_patch(token_patch_BT, token_segment_BT):
  """int32 [B, T]: the patch whose global state token t may read: patch(t + 1) - 1.

  Where t has no next token in its document (EOS, padding, a row's end) it reads
  its own patch's predecessor; its prediction is never scored.
  """
  next_patch = jnp.concatenate([token_patch_BT[:, 1:], token_patch_BT[:, -1:]], axis=1)
  next_segment = jnp.concatenate([token_segment_BT[:, 1:], jnp.zeros_like(token_segment_BT[:, :1])], axis=1)
  has_next = next_segment == token_segment_BT
  return jnp.maximum(jnp.where(has_next, next_patch, token_patch_BT) - 1, 0)


class LocalDecoder(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, dt, k = cfg.d_local, cfg.compute_dtype, cfg.cross_attn_k
    self.cfg = cfg
    self.from_global = Linear(cfg.d_global, k * d, ("embed", "mlp"), rngs=rngs, dtype=dt)
    self.cross = nnx.List([
        CrossAttention(d, cfg.local_heads, rngs=rngs, dtype=dt, implementation=cfg.attention)
        for _ in range(cfg.decoder_layers)])
    self.layers = nnx.List([
        Block(d, cfg.local_heads, cfg.mlp_dim(d), rngs=rngs, dtype=dt, rope_theta=cfg.local_rope_theta,
              implementation=cfg.attention) for _ in range(cfg.decoder_layers)])
    self.norm = RMSNorm(d, rngs=rngs)
    self.head = Linear(d, cfg.vocab_size, ("embed", "vocab"), rngs=rngs, dtype=dt)

  def __call__(self, h_BTD, global_BPG, batch):
    """Token states [B, T, d_local] and global outputs [B, P, d_global] -> fp32 logits [B, T, V]."""
    cfg = self.cfg
    vectors_BPKD = self.context_vectors(global_BPG)
    ctx_BT = context_patch(batch["token_patch"], batch["token_segment"])
    gather = lambda x_BPKNH: jnp.take_along_axis(x_BPKNH, ctx_BT[:, :, None, None, None], axis=1)

    def read_context(cross, h_BTD):
      k_BPKNH, v_BPKNH = cross.keys_values(vectors_BPKD)
      if cfg.decoder_window == 1:
        return attend_patch(cross, h_BTD, gather(k_BPKNH), gather(v_BPKNH))
      return self._windowed(cross, h_BTD, k_BPKNH, v_BPKNH, ctx_BT, batch)

    run = lambda i, layer, h: run_block(layer, h, batch["token_pos"], batch["token_segment"], cfg.window, cfg.remat)
    return self.logits(self.run_layers(h_BTD, read_context, run))

  # The pieces below are shared by the training forward and cached decoding (lst_jax.decode.lst_step).

  def context_vectors(self, global_XG):
    """[..., K, d_local]: the K vectors a patch's global state gives the tokens that read it."""
    return self.from_global(global_XG).reshape(global_XG.shape[:-1] + (self.cfg.cross_attn_k, self.cfg.d_local))

  def run_layers(self, h_XD, read_context, run_layer):
    """The decoder's layers over token states h: per layer a residual read of the context patch's
    vectors (`read_context(cross, h)` -> [..., D]), then the self-attention block (`run_layer(i,
    block, h)`: over a whole row in training, one token from a cache in decoding)."""
    for i, (cross, layer) in enumerate(zip(self.cross, self.layers)):
      h_XD = h_XD + read_context(cross, h_XD)
      h_XD = run_layer(i, layer, h_XD)
    return h_XD

  def logits(self, h_XD):
    """fp32 [..., V] next-token logits from the last decoder states."""
    return self.head(self.norm(h_XD)).astype(jnp.float32)

  def _windowed(self, cross, h_BTD, k_BPKNH, v_BPKNH, ctx_BT, batch):
    """Each token over the k vectors of patches ctx-W+1 .. ctx of its document, in blocks of
    CROSS_BLOCK tokens (a block's context patches span at most CROSS_BLOCK + 1 patches)."""
    w, p = self.cfg.decoder_window, k_BPKNH.shape[1]
    segment, patch_segment = batch["token_segment"], batch["patch_segment"]
    first_BT = jnp.where(segment > 0, jnp.maximum(ctx_BT - w + 1, 0), p)

    def allowed(q_idx, u_idx):
      c, s = at_queries(ctx_BT, q_idx)[..., None], at_queries(segment, q_idx)[..., None]
      pu, ps = u_idx[:, :, None, :], at_units(patch_segment, u_idx)[:, :, None, :]
      return (pu <= c) & (c - pu < w) & (ps == s) & (s > 0)

    width = min(p, xattn.CROSS_BLOCK + w)
    out = windowed_cross_attend(cross, h_BTD[:, :, None, :], k_BPKNH, v_BPKNH, first_BT, width, allowed,
                                xattn.CROSS_BLOCK)
    return out[:, :, 0, :]
