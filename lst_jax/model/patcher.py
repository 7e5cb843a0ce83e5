"""The encoder-patcher: token embeddings, windowed causal layers, patch pooling.

After the first layer each patch's queries start as the max-pool of its own
token states, projected into `cross_attn_k` vectors; after every layer those
queries cross-attend to the tokens of their patch (residual add). The k
vectors are concatenated and projected to the global width (paper.md sec. 2).
Each patch gathers its at most `patch_gather_width` tokens, so no [P x T] mask
is ever built.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lst_jax.model import attention as attn
from lst_jax.config import ModelConfig
from lst_jax.model.layers import Embed, Linear, RMSNorm
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


class CrossAttention(nnx.Module):
  """Pre-norm multi-head cross-attention from queries to a small gathered key set."""

  def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               implementation: str = "reference"):
    self.heads, self.head_dim = heads, dim // heads
    self.q_norm, self.kv_norm = RMSNorm(dim, rngs=rngs), RMSNorm(dim, rngs=rngs)
    self.q = Linear(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.k = Linear(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.v = Linear(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.o = Linear(dim, dim, ("heads", "embed"), rngs=rngs, dtype=dtype)
    self.implementation = implementation

  def _split(self, y):
    return y.reshape(y.shape[:-1] + (self.heads, self.head_dim))

  def keys_values(self, kv_XD):
    """Keys and values [..., N, H] of source states, projected once before they are gathered
    (each token or patch vector is read by several queries)."""
    kv = self.kv_norm(kv_XD)
    return self._split(self.k(kv)), self._split(self.v(kv))

  def attend(self, x_XQD, k_XKNH, v_XKNH, mask_XQK):
    """x [..., Q, D] queries over gathered keys/values [..., K, N, H] -> [..., Q, D]."""
    q = self._split(self.q(self.q_norm(x_XQD)))
    out = attn.attention(q, k_XKNH, v_XKNH, mask_XQK, self.implementation)
    return self.o(out.reshape(x_XQD.shape))

  def __call__(self, x_XQD, kv_XKD, mask_XQK):
    """x [..., Q, D] queries, kv [..., K, D] keys/values, mask [..., Q, K] -> [..., Q, D]."""
    return self.attend(x_XQD, *self.keys_values(kv_XKD), mask_XQK)


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
    h_BTD = self.embed(batch["tokens"])
    b, p = batch["patch_len"].shape
    queries_BPKD = None
    for layer, cross in zip(self.layers, self.cross):
      h_BTD = run_block(layer, h_BTD, batch["token_pos"], batch["token_segment"], cfg.window, cfg.remat)
      gather = lambda x: gather_patch_tokens(x, batch["patch_first"], batch["patch_len"], cfg.patch_gather_width)
      if queries_BPKD is None:
        pooled_BPD = max_pool(*gather(h_BTD))
        queries_BPKD = self.pool_to_queries(pooled_BPD).reshape(b, p, cfg.cross_attn_k, cfg.d_local)
      k_BTNH, v_BTNH = cross.keys_values(h_BTD)
      (k_BPLNH, valid_BPL), (v_BPLNH, _) = gather(k_BTNH), gather(v_BTNH)
      mask_BPKL = jnp.broadcast_to(valid_BPL[:, :, None, :], (b, p, cfg.cross_attn_k, cfg.patch_gather_width))
      queries_BPKD = queries_BPKD + cross.attend(queries_BPKD, k_BPLNH, v_BPLNH, mask_BPKL)
    return h_BTD, self.to_global(queries_BPKD.reshape(b, p, cfg.cross_attn_k * cfg.d_local))
