"""The one attention entry point of the model, and the masks it takes.

`attention(q, k, v, mask)` computes softmax(q k^T / sqrt(h)) v over the key axis
for any leading batch shape; every attention in the model (document-causal
self-attention, windowed local self-attention, patch and decoder
cross-attention) calls it. `self_attention(q, k, v, segment, window)` builds
the document-causal (optionally windowed) mask itself: densely for short
sequences, and in query blocks that each see only their window's key blocks
once the window covers less than half the sequence, so memory grows linearly
with length (no [T x T] mask).
Backends:
  "reference": an einsum softmax in fp32 (the fastest on CPU).
  "xla" / "cudnn": jax.nn.dot_product_attention (cuDNN's fused kernel on GPU).
  "pallas": self-attention through JAX's Pallas splash-attention kernel for TPU
    (block-sparse: skips fully masked blocks); off TPU it runs in Pallas interpret
    mode (slow; for tests). Cross-attentions use the reference path (their key
    sets are a few gathered vectors per query).
Every backend takes key sets of at most SMALL_KV (patch pooling, decoder cross-attention: a
handful of gathered vectors per query) as elementwise products: a fused kernel gains nothing
there, and cuDNN refuses them (one query over two keys).
A query whose mask row is empty (padding) returns zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lst_jax import sharding
from lst_jax.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS


def attention(q_BQNH, k_BSNH, v_BSNH, mask_BQS, implementation: str = "reference"):
  """q [..., Q, N, H], k/v [..., S, N, H], mask bool [..., Q, S] -> [..., Q, N, H]."""
  if implementation in ("reference", "pallas") or k_BSNH.shape[-3] <= SMALL_KV:
    return _reference(q_BQNH, k_BSNH, v_BSNH, mask_BQS)
  if implementation in ("xla", "cudnn"):
    lead = q_BQNH.shape[:-3]
    flat = lambda x: x.reshape((-1,) + x.shape[len(lead):])
    out = jax.nn.dot_product_attention(
        flat(q_BQNH), flat(k_BSNH), flat(v_BSNH), mask=flat(mask_BQS)[:, None],
        implementation=implementation)
    out = jnp.where(flat(mask_BQS).any(-1)[..., None, None], out, 0)
    return out.reshape(q_BQNH.shape)
  raise ValueError(f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}")


FLASH = ("cudnn", "pallas")   # fused kernels: no [queries x keys] scores kept for the backward pass
ONLY_ON = {"cudnn": "gpu"}     # backends that run on one platform only
PLATFORM_NAMES = {"gpu": "NVIDIA GPUs", "tpu": "TPUs"}


def platform_problem(implementation: str, platform: str) -> str | None:
  """Why `implementation` cannot run on `platform` ("cpu", "gpu", "tpu"), or None."""
  needed = ONLY_ON.get(implementation)
  if needed is None or needed == platform:
    return None
  return (f"config.model.attention={implementation} needs {PLATFORM_NAMES[needed]}, and this run's devices are "
          f"{platform}")


SMALL_KV = 16  # key sets this small (patch pooling, decoder cross-attention) skip the matmul path


def _reference(q, k, v, mask):
  if k.shape[-3] <= SMALL_KV:
    return _small_kv(q, k, v, mask)
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("...qnh,...knh->...nqk", q, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(mask[..., None, :, :], logits, -1e30)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = jnp.where(mask[..., None, :, :].any(-1, keepdims=True), probs, 0.0)
  return jnp.einsum("...nqk,...knh->...qnh", probs.astype(v.dtype), v)


def _small_kv(q, k, v, mask):
  """The same softmax attention as elementwise products: with a handful of keys per query
  the batched-matmul path is dominated by per-matmul overhead on CPU."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.sum(q[..., :, None, :, :].astype(jnp.float32) * k[..., None, :, :, :], axis=-1) * scale
  logits = jnp.where(mask[..., None], logits, -1e30)  # [..., Q, K, N]
  probs = jax.nn.softmax(logits, axis=-2)
  probs = jnp.where(mask.any(-1)[..., None, None], probs, 0.0)
  return jnp.sum(probs[..., None].astype(v.dtype) * v[..., None, :, :, :], axis=-3)


def self_attention(q_BTNH, k_BTNH, v_BTNH, segment_BT, window: int | None = None,
                   implementation: str = "reference", block: int = 128):
  """Document-causal self-attention, windowed to the last `window` tokens if given.

  Three layouts, all exact: one dense [T x T] product for a single block; query
  blocks over only the key blocks their window reaches once the window covers
  less than half the row (uniform, vectorized: memory linear in T); otherwise
  query blocks over the causal key prefix they can see (the upper triangle of
  blocks is never computed, about half the work of dense for long rows).
  """
  t = q_BTNH.shape[1]
  if implementation == "pallas":
    return _splash_self_attention(q_BTNH, k_BTNH, v_BTNH, segment_BT, window)
  if t <= block:
    return attention(q_BTNH, k_BTNH, v_BTNH, document_causal_mask(segment_BT, window), implementation)
  keys_per_block = (-(-(window - 1) // block) + 1) * block if window else t
  if window is not None and 2 * keys_per_block <= t:
    return _blocked_window_attention(q_BTNH, k_BTNH, v_BTNH, segment_BT, window, implementation, block)
  block = max(block, -(-t // MAX_CAUSAL_BLOCKS))
  return _causal_block_attention(q_BTNH, k_BTNH, v_BTNH, segment_BT, window, implementation, block)


MAX_CAUSAL_BLOCKS = 16  # beyond this the query blocks grow, to bound the number of ops


def causal_key_range(i: int, block: int, t: int, window: int | None) -> tuple[int, int]:
  """[lo, hi): the keys query block i (rows i*block ...) can see, lo rounded down to a block."""
  hi = min((i + 1) * block, t)
  lo = 0 if window is None else max(0, (i * block - window + 1) // block * block)
  return lo, hi


def _causal_block_attention(q, k, v, segment, window, implementation, block):
  """Each query block attends to the causal key range it can reach, as its own product."""
  t = q.shape[1]
  outs = []
  for i in range(-(-t // block)):
    lo, hi = causal_key_range(i, block, t, window)
    qs = slice(i * block, hi)
    q_idx, k_idx = jnp.arange(qs.start, qs.stop), jnp.arange(lo, hi)
    allowed = k_idx[None, :] <= q_idx[:, None]
    if window is not None:
      allowed &= q_idx[:, None] - k_idx[None, :] < window
    seg_q, seg_k = segment[:, qs], segment[:, lo:hi]
    mask = allowed[None] & (seg_q[:, :, None] == seg_k[:, None, :]) & (seg_q[:, :, None] > 0)
    outs.append(attention(q[:, qs], k[:, lo:hi], v[:, lo:hi], mask, implementation))
  return jnp.concatenate(outs, axis=1)


def _blocked_window_attention(q, k, v, segment, window, implementation, block):
  """Query blocks of `block` tokens attend to their own and the `ceil((window-1)/block)`
  previous key blocks, built from shifted slices (cheap to differentiate)."""
  b, t, n, h = q.shape
  pad = (-t) % block
  prev = -(-(window - 1) // block)
  nb = (t + pad) // block
  widen = lambda x, front: jnp.pad(x, [(0, 0), (front, pad)] + [(0, 0)] * (x.ndim - 2))
  kp, vp, segp = widen(k, prev * block), widen(v, prev * block), widen(segment, prev * block)
  blocks = lambda x: jnp.concatenate(
      [x[:, j * block:j * block + nb * block].reshape((b, nb, block) + x.shape[2:]) for j in range(prev + 1)],
      axis=2)
  k_blk, v_blk, seg_k = blocks(kp), blocks(vp), blocks(segp)               # [B, nb, L, ...]
  q_blk = widen(q, 0).reshape(b, nb, block, n, h)
  seg_q = widen(segment, 0).reshape(b, nb, block)
  q_idx = jnp.arange(nb * block).reshape(nb, block)
  k_idx = (jnp.arange(nb)[:, None] * block + jnp.arange((prev + 1) * block)[None, :]) - prev * block
  delta = q_idx[:, :, None] - k_idx[:, None, :]                            # [nb, block, L]
  allowed = (delta >= 0) & (delta < window) & (k_idx[:, None, :] >= 0)
  mask = allowed[None] & (seg_q[..., None] == seg_k[:, :, None, :]) & (seg_q[..., None] > 0)
  out = attention(q_blk, k_blk, v_blk, mask, implementation)
  return out.reshape(b, nb * block, n, h)[:, :t]


SPLASH_BLOCK = 128  # sequence padding unit of the splash kernel


@functools.lru_cache(maxsize=64)
def _splash_kernel(t: int, heads: int, window: int | None, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  one = (lambda: sm.CausalMask((t, t))) if window is None else (lambda: sm.LocalMask((t, t), (window - 1, 0), 0))
  block = next(b for b in (512, 256, 128) if t % b == 0)
  sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  return sk.make_splash_mha(sm.MultiHeadMask([one() for _ in range(heads)]), block_sizes=sizes,
                            head_shards=1, q_seq_shards=1, interpret=interpret), sk.SegmentIds


def _platform() -> str:
  """The platform the program is built for: the mesh's devices (compile-only TPU devices on a CPU
  host get Mosaic kernels, not interpret mode), else JAX's default backend."""
  ctx = sharding.active_mesh()
  return ctx[0].devices.flat[0].platform if ctx is not None else jax.default_backend()


def _splash_self_attention(q, k, v, segment, window):
  """Splash attention per row (segment ids keep packed documents apart), rows split over the
  batch mesh axes with shard_map inside a sharded program (a Pallas call is not auto-partitioned)."""
  b, t, n, h = q.shape
  pad = (-t) % SPLASH_BLOCK
  widen = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  kernel, segment_ids = _splash_kernel(t + pad, n, window, _platform() != "tpu")

  def rows(q, k, v, seg):
    heads_first = lambda x: jnp.swapaxes(widen(x), 1, 2)                 # [B, N, T, H]
    one = lambda q, k, v, s: kernel(q * h ** -0.5, k, v, segment_ids=segment_ids(q=s, kv=s))
    out = jax.vmap(one)(heads_first(q), heads_first(k), heads_first(v), widen(seg))
    out = jnp.swapaxes(out, 1, 2)[:, :t]
    return jnp.where((seg > 0)[..., None, None], out, 0).astype(q.dtype)

  ctx = sharding.active_mesh()
  if ctx is None or ctx[0].size == 1:
    return rows(q, k, v, segment)
  mesh = ctx[0]
  batch = tuple(a for a in sharding.BATCH_AXES if mesh.shape[a] > 1) or None
  spec = jax.sharding.PartitionSpec(batch)
  return jax.shard_map(rows, mesh=mesh, in_specs=(spec, spec, spec, spec), out_specs=spec,
                       check_vma=False)(q, k, v, segment)


def document_causal_mask(segment_BT, window: int | None = None):
  """bool [B, T, T]: same document (segment > 0), key not after query, within `window`."""
  t = segment_BT.shape[-1]
  idx = jnp.arange(t)
  causal = idx[None, :] <= idx[:, None]
  if window is not None:
    causal &= idx[:, None] - idx[None, :] < window
  same = (segment_BT[:, :, None] == segment_BT[:, None, :]) & (segment_BT[:, :, None] > 0)
  return same & causal[None]
