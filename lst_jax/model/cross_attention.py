"""Cross-attention from queries to a small set of gathered keys (the encoder-patcher's patch queries
over their tokens, the local decoder's tokens over patch vectors), and its windowed form.

With a window of one patch each query reads a gathered set of at most a few dozen
keys (`CrossAttention.attend`, `attend_patch`); with a window of W > 1 patches
`windowed_cross_attend` runs in blocks of queries over contiguous spans of keys.
Either way no [P x T] mask is built at production lengths.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import nnx

from lst_jax.model import attention as attn
from lst_jax.model.layers import Linear, RMSNorm, fused_dot


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


def windowed_cross_attend(cross: CrossAttention, x_BQRD, k_BUZNH, v_BUZNH, first_unit_BQ, width: int,
                          allowed: Callable, block: int):
  """Cross-attention of queries to a window of key units, in query blocks over contiguous key spans.

  x [B, Q, R, D]: Q query positions of R vectors each (the R share one mask); keys/values
  [B, U, Z, N, H]: U key units (tokens, or patches) of Z vectors each. `first_unit` [B, Q] is the
  earliest unit each query may see (>= U for a query that sees nothing). Each block of `block`
  queries reads the `width` units from the earliest one any of its queries may see (clipped to
  fit the row): the caller sizes `width` so that this span holds every unit a query in the block
  may see; once `width` >= U the whole row is one block. `allowed(q_idx [nb, bq], u_idx
  [B, nb, width])` -> bool [B, nb, bq, width] masks per query (padding queries beyond Q are
  masked here). Returns [B, Q, R, D]; a query that sees nothing gets zeros.
  """
  b, q, r, d = x_BQRD.shape
  u, z = k_BUZNH.shape[1:3]
  if width >= u:
    width, bq, nb = u, q, 1
    u_idx = jnp.broadcast_to(jnp.arange(u), (b, 1, u))
    k_blk, v_blk = k_BUZNH[:, None], v_BUZNH[:, None]
  else:
    bq = block
    nb = -(-q // bq)
    first = jnp.pad(first_unit_BQ, ((0, 0), (0, nb * bq - q)), constant_values=u)
    start_BJ = jnp.clip(first.reshape(b, nb, bq).min(-1), 0, u - width)
    u_idx = start_BJ[..., None] + jnp.arange(width)                       # [B, nb, width]
    take = lambda x: jnp.take_along_axis(x.reshape(b, u, -1), u_idx.reshape(b, -1, 1), axis=1).reshape(
        (b, nb, width) + x.shape[2:])
    k_blk, v_blk = take(k_BUZNH), take(v_BUZNH)
  q_idx = jnp.arange(nb * bq).reshape(nb, bq)
  mask = allowed(q_idx, u_idx) & (q_idx < q)[None, :, :, None]            # [B, nb, bq, width]
  mask = jnp.broadcast_to(mask[:, :, :, None, :, None], (b, nb, bq, r, width, z)).reshape(
      b, nb, bq * r, width * z)
  x = jnp.pad(x_BQRD, ((0, 0), (0, nb * bq - q), (0, 0), (0, 0))).reshape(b, nb, bq * r, d)
  flat = lambda y: y.reshape((b, nb, width * z) + y.shape[-2:])
  out = cross.attend(x, flat(k_blk), flat(v_blk), mask)
  return out.reshape(b, nb * bq, r, d)[:, :q]


def at_units(x_BU, idx_B_):
  """x [B, U] read at per-row indices [B, ...] -> [B, ...] (indices clipped into the row)."""
  b, u = x_BU.shape
  idx = jnp.clip(idx_B_, 0, u - 1).reshape(b, -1)
  return jnp.take_along_axis(jnp.asarray(x_BU), idx, axis=1).reshape(idx_B_.shape)


def at_queries(x_BQ, q_idx_JQ):
  """x [B, Q] read at query indices [nb, bq] shared by all rows -> [B, nb, bq] (clipped)."""
  return jnp.asarray(x_BQ)[:, jnp.clip(q_idx_JQ, 0, x_BQ.shape[1] - 1)]


def attend_patch(cross: CrossAttention, h_XD, k_XKNH, v_XKNH):
  """Each query vector h [..., D] over the K vectors of one patch (keys/values [..., K, N, H]): the
  local decoder's read of its context patch, in training and in decoding."""
  mask_X1K = jnp.ones(h_XD.shape[:-1] + (1, k_XKNH.shape[-3]), bool)
  return cross.attend(h_XD[..., None, :], k_XKNH, v_XKNH, mask_X1K)[..., 0, :]
