"""The baseline, one token per row per step, from a key/value cache per layer."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lst_jax.decode import cache as cache_lib
from lst_jax.model.baseline import Baseline


class BaselineState(NamedTuple):
  layers: tuple[cache_lib.LayerCache, ...]
  length: jax.Array   # int32 [B]: tokens consumed per row


def init_state(model: Baseline, batch: int, slots: int) -> BaselineState:
  blocks = cache_lib.blocks_of(model.body)
  dtype = model.embed.dtype
  return BaselineState(tuple(cache_lib.empty_layer(batch, slots, b.attn, dtype) for b in blocks),
                       jnp.zeros((batch,), jnp.int32))


def step(model: Baseline, state: BaselineState, token_B, active_B) -> tuple[jax.Array, BaselineState]:
  """Consumes one token per active row; returns fp32 logits [B, V] for the next token (rows that are
  not active keep their state; their logits are meaningless)."""
  layers = cache_lib.CachedLayers(state.layers, state.length)
  logits = model.head(model.body.over_blocks(model.embed(token_B), layers)).astype(jnp.float32)
  return logits, BaselineState(tuple(layers.updated), state.length + active_B.astype(jnp.int32))
