"""The encoder-patcher: token embeddings, windowed causal layers, patch pooling.

After the first layer each patch's queries start as the max-pool of its own
token states, projected into `cross_attn_k` vectors; after every layer those
queries cross-attend to the tokens of their patch (residual add). The k
vectors are concatenated and projected to the global width (paper.md sec. 2).
With `encoder_window` W > 1 each patch's queries attend to the tokens of its own
patch and of the W-1 patches before it, in its document (the reference code's
`cross_attn_window_encoder`); `windowed_cross_attend` runs that in blocks of
patches over a contiguous span of tokens. With W = 1 each patch gathers its at
most `patch_gather_width` tokens. Either way no [P x T] mask is built at
production lengths.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lst_jax.config import ModelConfig
from lst_jax.model import cross_attention as xattn
from lst_jax.model.cross_attention import CrossAttention, at_queries, at_units, windowed_cross_attend
from lst_jax.model.layers import Embed, Linear
from lst_jax.model.transformer import Block, run_block


def gather_patch_tokens(h_BT_, patch_first_BP, patch_len_BP, max_len: int):
  """[B, P, L, ...] per-token values of each patch's tokens and bool [B, P, L] validity."""
  offsets = jnp.arange(max_len)
  idx_BPL = patch_first_BP[..., None] + offsets
  valid_BPL = offsets < patch_len_BP[..., None]
  idx_BPL = jnp.clip(jnp.where(valid_BPL, idx_BPL, 0), 0, h_BT_.shape[1] - 1)
  b, t = h_BT_.shape[:2]
  flat = h_BT_.reshape(b, t, -1)
  gathered = jnp.take_along_axis(flat, idx_BPL.reshape(b, -1, 1), axis=1)
  return gathered.reshape(idx_BPL.shape + h_BT_.shape[2:]), valid_BPL


def max_pool(tokens_BPLD, valid_BPL):
  """Max over each patch's tokens; empty (padding) patches pool to zero."""
  pooled = jnp.max(jnp.where(valid_BPL[..., None], tokens_BPLD, -jnp.inf), axis=2)
  return jnp.where(valid_BPL.any(-1)[..., None], pooled, 0).astype(tokens_BPLD.dtype)


class EncoderPatcher(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, dt, k = cfg.d_local, cfg.compute_dtype, cfg.cross_attn_k
    self.cfg = cfg
    self.embed = Embed(cfg.vocab_size, d, rngs=rngs, dtype=dt)
    self.layers = nnx.List([
        Block(d, cfg.local_heads, cfg.mlp_dim(d), rngs=rngs, dtype=dt, rope_theta=cfg.local_rope_theta,
              implementation=cfg.attention) for _ in range(cfg.encoder_layers)])
    self.cross = nnx.List([
        CrossAttention(d, cfg.local_heads, rngs=rngs, dtype=dt, implementation=cfg.attention)
        for _ in range(cfg.encoder_layers)])
    self.pool_to_queries = Linear(d, k * d, ("embed", "mlp"), rngs=rngs, dtype=dt)
    self.to_global = Linear(k * d, cfg.d_global, ("mlp", "embed"), rngs=rngs, dtype=dt)

  def __call__(self, batch):
    """Returns token states h [B, T, d_local] and patch vectors [B, P, d_global]."""
    cfg = self.cfg
    b, p = batch["patch_len"].shape
    run = lambda i, layer, h: run_block(layer, h, batch["token_pos"], batch["token_segment"], cfg.window, cfg.remat)
    states_BTD = self.layer_states(self.embed(batch["tokens"]), run)
    gather = lambda x: gather_patch_tokens(x, batch["patch_first"], batch["patch_len"], cfg.patch_gather_width)
    tokens_BPLD, valid_BPL = gather(states_BTD[0])
    pooled_BPD = max_pool(tokens_BPLD, valid_BPL)
    keys_values = [cross.keys_values(h_BTD) for cross, h_BTD in zip(self.cross, states_BTD)]
    if cfg.encoder_window == 1:
      gathered = [(gather(k_BTNH)[0], gather(v_BTNH)[0]) for k_BTNH, v_BTNH in keys_values]
      return states_BTD[-1], self.patch_vectors(pooled_BPD, gathered, valid_BPL)
    queries_BPKD = self.first_queries(pooled_BPD)
    for cross, (k_BTNH, v_BTNH) in zip(self.cross, keys_values):
      queries_BPKD = queries_BPKD + self._windowed(cross, queries_BPKD, k_BTNH, v_BTNH, batch)
    return states_BTD[-1], self.to_patch_vector(queries_BPKD)

  # The pieces below are shared by the training forward and cached decoding (lst_jax.decode.lst_step).

  def layer_states(self, h_XD, run_layer) -> list:
    """Token states after each encoder layer, from embeddings h; `run_layer(i, block, h)` runs one
    self-attention block (over a whole row in training, one token from a cache in decoding)."""
    states = []
    for i, layer in enumerate(self.layers):
      h_XD = run_layer(i, layer, h_XD)
      states.append(h_XD)
    return states

  def first_queries(self, pooled_XD):
    """[..., K, d_local]: a patch's K queries from the max-pool of its tokens' first-layer states."""
    return self.pool_to_queries(pooled_XD).reshape(pooled_XD.shape[:-1] + (self.cfg.cross_attn_k, self.cfg.d_local))

  def to_patch_vector(self, queries_XKD):
    """[..., d_global]: the patch vector the global transformer reads, from its K refined queries."""
    return self.to_global(queries_XKD.reshape(queries_XKD.shape[:-2] + (self.cfg.cross_attn_k * self.cfg.d_local,)))

  def patch_vectors(self, pooled_XD, keys_values, valid_XL):
    """[..., d_global]: patch vectors with a cross-attention window of one patch: the K queries from
    the pool, then per layer a residual cross-attention to the patch's own tokens, given per layer
    as keys/values [..., L, N, H] with validity [..., L]."""
    queries_XKD = self.first_queries(pooled_XD)
    mask_XKL = jnp.broadcast_to(valid_XL[..., None, :], valid_XL.shape[:-1] + (self.cfg.cross_attn_k,
                                                                               valid_XL.shape[-1]))
    for cross, (k_XLNH, v_XLNH) in zip(self.cross, keys_values):
      queries_XKD = queries_XKD + cross.attend(queries_XKD, k_XLNH, v_XLNH, mask_XKL)
    return self.to_patch_vector(queries_XKD)

  def _windowed(self, cross, queries_BPKD, k_BTNH, v_BTNH, batch):
    """Each patch's k queries over the tokens of its own and the W-1 previous patches of its
    document, in blocks of CROSS_BLOCK patches over a span of at most
    (CROSS_BLOCK + W - 1) * patch_gather_width tokens (cross_attention.CROSS_BLOCK)."""
    cfg, w = self.cfg, self.cfg.encoder_window
    t, p = k_BTNH.shape[1], queries_BPKD.shape[1]
    token_patch, token_segment = batch["token_patch"], batch["token_segment"]
    patch_segment = batch["patch_segment"]
    earliest_BP = at_units(batch["patch_first"], jnp.maximum(jnp.arange(p) - w + 1, 0)[None].repeat(
        patch_segment.shape[0], 0))
    first_BP = jnp.where(patch_segment > 0, earliest_BP, t)

    def allowed(q_idx, u_idx):
      tp, ts = at_units(token_patch, u_idx)[:, :, None, :], at_units(token_segment, u_idx)[:, :, None, :]
      qp, qs = q_idx[None, :, :, None], at_queries(patch_segment, q_idx)[..., None]
      return (tp <= qp) & (qp - tp < w) & (ts == qs) & (qs > 0)

    width = min(t, (xattn.CROSS_BLOCK + w - 1) * cfg.patch_gather_width)
    return windowed_cross_attend(cross, queries_BPKD, k_BTNH[:, :, None], v_BTNH[:, :, None], first_BP,
                                 width, allowed, xattn.CROSS_BLOCK)
