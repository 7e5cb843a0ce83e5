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

from typing import Callable

import jax.numpy as jnp
from flax import nnx

from lst_jax.model import attention as attn
from lst_jax.config import ModelConfig
from lst_jax.model.layers import Embed, Linear, RMSNorm, fused_dot
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
    k, v = fused_dot(self.kv_norm(kv_XD), self.k, self.v)
    return self._split(k), self._split(v)

  def attend(self, x_XQD, k_XKNH, v_XKNH, mask_XQK):
    """x [..., Q, D] queries over gathered keys/values [..., K, N, H] -> [..., Q, D]."""
    q = self._split(self.q(self.q_norm(x_XQD)))
    out = attn.attention(q, k_XKNH, v_XKNH, mask_XQK, self.implementation)
    return self.o(out.reshape(x_XQD.shape))

  def __call__(self, x_XQD, kv_XKD, mask_XQK):
    """x [..., Q, D] queries, kv [..., K, D] keys/values, mask [..., Q, K] -> [..., Q, D]."""
    return self.attend(x_XQD, *self.keys_values(kv_XKD), mask_XQK)


CROSS_BLOCK = 128  # query block (patches for the encoder, tokens for the decoder) of windowed cross-attention


def windowed_cross_attend(cross: CrossAttention, x_BQRD, k_BUGNH, v_BUGNH, first_unit_BQ, width: int,
                          allowed: Callable, block: int):
  """Cross-attention of queries to a window of key units, in query blocks over contiguous key spans.

  x [B, Q, R, D]: Q query positions of R vectors each (the R share one mask); keys/values
  [B, U, G, N, H]: U key units (tokens, or patches) of G vectors each. `first_unit` [B, Q] is the
  earliest unit each query may see (>= U for a query that sees nothing). Each block of `block`
  queries reads the `width` units from the earliest one any of its queries may see (clipped to
  fit the row): the caller sizes `width` so that this span holds every unit a query in the block
  may see; once `width` >= U the whole row is one block. `allowed(q_idx [nb, bq], u_idx
  [B, nb, width])` -> bool [B, nb, bq, width] masks per query (padding queries beyond Q are
  masked here). Returns [B, Q, R, D]; a query that sees nothing gets zeros.
  """
  b, q, r, d = x_BQRD.shape
  u, g = k_BUGNH.shape[1:3]
  if width >= u:
    width, bq, nb = u, q, 1
    u_idx = jnp.broadcast_to(jnp.arange(u), (b, 1, u))
    k_blk, v_blk = k_BUGNH[:, None], v_BUGNH[:, None]
  else:
    bq = block
    nb = -(-q // bq)
    first = jnp.pad(first_unit_BQ, ((0, 0), (0, nb * bq - q)), constant_values=u)
    start_BN = jnp.clip(first.reshape(b, nb, bq).min(-1), 0, u - width)
    u_idx = start_BN[..., None] + jnp.arange(width)                       # [B, nb, width]
    take = lambda x: jnp.take_along_axis(x.reshape(b, u, -1), u_idx.reshape(b, -1, 1), axis=1).reshape(
        (b, nb, width) + x.shape[2:])
    k_blk, v_blk = take(k_BUGNH), take(v_BUGNH)
  q_idx = jnp.arange(nb * bq).reshape(nb, bq)
  mask = allowed(q_idx, u_idx) & (q_idx < q)[None, :, :, None]            # [B, nb, bq, width]
  mask = jnp.broadcast_to(mask[:, :, :, None, :, None], (b, nb, bq, r, width, g)).reshape(
      b, nb, bq * r, width * g)
  x = jnp.pad(x_BQRD, ((0, 0), (0, nb * bq - q), (0, 0), (0, 0))).reshape(b, nb, bq * r, d)
  flat = lambda y: y.reshape((b, nb, width * g) + y.shape[-2:])
  out = cross.attend(x, flat(k_blk), flat(v_blk), mask)
  return out.reshape(b, nb * bq, r, d)[:, :q]


def at_units(x_BU, idx_B_):
  """x [B, U] read at per-row indices [B, ...] -> [B, ...] (indices clipped into the row)."""
  b, u = x_BU.shape
  idx = jnp.clip(idx_B_, 0, u - 1).reshape(b, -1)
  return jnp.take_along_axis(jnp.asarray(x_BU), idx, axis=1).reshape(idx_B_.shape)


def at_queries(x_BQ, q_idx_NQ):
  """x [B, Q] read at query indices [nb, bq] shared by all rows -> [B, nb, bq] (clipped)."""
  return jnp.asarray(x_BQ)[:, jnp.clip(q_idx_NQ, 0, x_BQ.shape[1] - 1)]


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
      if cfg.encoder_window == 1:
        (k_BPLNH, valid_BPL), (v_BPLNH, _) = gather(k_BTNH), gather(v_BTNH)
        mask_BPKL = jnp.broadcast_to(valid_BPL[:, :, None, :], (b, p, cfg.cross_attn_k, cfg.patch_gather_width))
        queries_BPKD = queries_BPKD + cross.attend(queries_BPKD, k_BPLNH, v_BPLNH, mask_BPKL)
      else:
        queries_BPKD = queries_BPKD + self._windowed(cross, queries_BPKD, k_BTNH, v_BTNH, batch)
    return h_BTD, self.to_global(queries_BPKD.reshape(b, p, cfg.cross_attn_k * cfg.d_local))

  def _windowed(self, cross, queries_BPKD, k_BTNH, v_BTNH, batch):
    """Each patch's k queries over the tokens of its own and the W-1 previous patches of its
    document, in blocks of CROSS_BLOCK patches over a span of at most
    (CROSS_BLOCK + W - 1) * patch_gather_width tokens."""
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

    width = min(t, (CROSS_BLOCK + w - 1) * cfg.patch_gather_width)
    return windowed_cross_attend(cross, queries_BPKD, k_BTNH[:, :, None], v_BTNH[:, :, None], first_BP,
                                 width, allowed, CROSS_BLOCK)
