"""Key/value caches for one new position per row, with each row at its own length.

A cache holds, per self-attention layer, keys and values [B, N, S, H] for S
slots (heads before slots: one query's scores are then a batched matrix-vector
product over contiguous keys, ~10x faster on CPU than the [B, S, N, H] layout of
training); row b's valid entries are slots [0, length[b]). A step writes the new
position's key and value at slot length[b] (per row) and attends over the
slots the training mask would allow: not after the query, within the window,
in the same document (a decoded row is one document). Training's RoPE
positions are positions in the document, which are the slots here.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lst_jax.model.transformer import Block, SelfAttention


class LayerCache(NamedTuple):
  k: jax.Array   # [B, N, S, H]
  v: jax.Array   # [B, N, S, H]


def empty_layer(batch: int, slots: int, attention: SelfAttention, dtype) -> LayerCache:
  shape = (batch, attention.heads, slots, attention.head_dim)
  return LayerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def write_row_slots(cache_B_, new_B_, index_B, axis: int = 0):
  """cache [B, ...] with new [B, ...] written at index[b] of each row's `axis` (its slot axis)."""
  return jax.vmap(lambda c, x, i: jax.lax.dynamic_update_index_in_dim(c, x, i, axis))(cache_B_, new_B_, index_B)


def attend_one(attention: SelfAttention, x_BD, cache: LayerCache, length_B, window: int | None):
  """Self-attention of one new position per row (at slot length[b]) over its cached prefix."""
  q, k, v = attention.queries_keys_values(x_BD[:, None], length_B[:, None])   # [B, 1, N, H]
  cache = LayerCache(write_row_slots(cache.k, k[:, 0], length_B, axis=1),
                     write_row_slots(cache.v, v[:, 0], length_B, axis=1))
  slot = jnp.arange(cache.k.shape[2])
  visible_BS = slot[None, :] <= length_B[:, None]
  if window is not None:
    visible_BS &= length_B[:, None] - slot[None, :] < window
  return attention.output(_one_query_attention(q[:, 0], cache.k, cache.v, visible_BS)), cache


def _one_query_attention(q_BNH, k_BNSH, v_BNSH, visible_BS):
  """Softmax attention of one query per row over its cached keys (fp32 scores). No backend
  choice matters for a single query, so training's `implementation` is not consulted."""
  scale = q_BNH.shape[-1] ** -0.5
  logits_BNS = jnp.einsum("bnh,bnsh->bns", q_BNH, k_BNSH, preferred_element_type=jnp.float32) * scale
  logits_BNS = jnp.where(visible_BS[:, None, :], logits_BNS, -1e30)
  probs_BNS = jax.nn.softmax(logits_BNS, axis=-1)
  return jnp.einsum("bns,bnsh->bnh", probs_BNS.astype(v_BNSH.dtype), v_BNSH)


def block_one(block: Block, x_BD, cache: LayerCache, length_B, window: int | None = None):
  """One pre-norm block on one new position per row: (output [B, D], updated cache)."""
  updated = []

  def attend(y_BD):
    out_BD, new = attend_one(block.attn, y_BD, cache, length_B, window)
    updated.append(new)
    return out_BD

  return block.around(x_BD, attend), updated[0]


class CachedLayers:
  """`run_layer(i, block, x)` for a module's layer loop (Transformer.over_blocks, the LST's encoder
  and decoder): layer i runs one position per row from caches[i]; `updated` collects the new caches."""

  def __init__(self, caches, length_B, window: int | None = None):
    self.caches, self.length_B, self.window, self.updated = caches, length_B, window, []

  def __call__(self, i: int, block: Block, x_BD):
    x_BD, cache = block_one(block, x_BD, self.caches[i], self.length_B, self.window)
    self.updated.append(cache)
    return x_BD


def blocks_of(stack) -> list[Block]:
  """The blocks of a Transformer stack, one module per layer (see unstack_layers)."""
  if stack.scan_layers:
    raise ValueError("decode a model with scanned layers after lst_jax.decode.cache.unstack_layers(model)")
  return list(stack.blocks)


def unstack_layers(model):
  """The model with its scanned stacks (parameters stacked on a leading layers axis) turned into
  per-layer blocks, in place and outside any jit: decoding steps layer by layer."""
  from flax import nnx
  for name in ("body", "latent"):
    stack = getattr(model, name, None)
    if stack is not None and stack.scan_layers:
      graphdef, state = nnx.split(stack.blocks)
      layers = jax.tree.leaves(state)[0].shape[0]
      stack.blocks = nnx.List([nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], state))
                               for i in range(layers)])
      stack.scan_layers = False
  return model
