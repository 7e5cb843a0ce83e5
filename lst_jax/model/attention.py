"""The one attention entry point of the model, and the masks it takes.

`attention(q, k, v, mask)` computes softmax(q k^T / sqrt(h)) v over the key axis
for any leading batch shape; every attention in the model (document-causal
self-attention, windowed local self-attention, patch and decoder
cross-attention) calls it. Backends:
  "reference": an einsum softmax in fp32 (the fastest on CPU).
  "xla" / "cudnn": jax.nn.dot_product_attention (cuDNN's fused kernel on GPU).
A query whose mask row is empty (padding) returns zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("reference", "xla", "cudnn")


def attention(q_BQNH, k_BKNH, v_BKNH, mask_BQK, implementation: str = "reference"):
  """q [..., Q, N, H], k/v [..., K, N, H], mask bool [..., Q, K] -> [..., Q, N, H]."""
  if implementation == "reference":
    return _reference(q_BQNH, k_BKNH, v_BKNH, mask_BQK)
  if implementation in ("xla", "cudnn"):
    lead = q_BQNH.shape[:-3]
    flat = lambda x: x.reshape((-1,) + x.shape[len(lead):])
    out = jax.nn.dot_product_attention(
        flat(q_BQNH), flat(k_BKNH), flat(v_BKNH), mask=flat(mask_BQK)[:, None],
        implementation=implementation)
    out = jnp.where(flat(mask_BQK).any(-1)[..., None, None], out, 0)
    return out.reshape(q_BQNH.shape)
  raise ValueError(f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}")


def _reference(q, k, v, mask):
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("...qnh,...knh->...nqk", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(mask[..., None, :, :], logits, -1e30)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = jnp.where(mask[..., None, :, :].any(-1, keepdims=True), probs, 0.0)
  return jnp.einsum("...nqk,...knh->...qnh", probs.astype(v.dtype), v)


def document_causal_mask(segment_BT, window: int | None = None):
  """bool [B, T, T]: same document (segment > 0), key not after query, within `window`."""
  t = segment_BT.shape[-1]
  idx = jnp.arange(t)
  causal = idx[None, :] <= idx[:, None]
  if window is not None:
    causal &= idx[:, None] - idx[None, :] < window
  same = (segment_BT[:, :, None] == segment_BT[:, None, :]) & (segment_BT[:, :, None] > 0)
  return same & causal[None]
