"""The LST, one token per row per step: the global model steps once per patch (paper.md sec. 3).

Static patching at inference: inside a speech span a patch closes every
`patch_size` units; every other token (text, mode, BOS/EOS) is a patch of one,
and it first closes a speech patch left open before it. When a patch closes,
its tokens' encoder states (kept per layer in a small buffer) are pooled into
the patch vector exactly as in training (max-pool after the first layer, then
per layer cross-attention to the patch's tokens), the global transformer takes
one step from its cache, and the patch's k decoder vectors become the context
of the tokens that follow. A token reads the vectors of the latest closed
patch: its own when it closed one, else the one before its open patch, which
is training's rule (lst_jax.model.decoder.context_patch) whenever the next
token does not close a speech patch early. When it does (a mode or text token
after a partial speech patch), the patch's last token was predicted-from with
the older context, as decoding must commit before it sees the next token; its
decoder states are then recomputed with its own patch's vectors, so that every
later token reads exactly what training's forward gives. Encoder and decoder
self-attention run from their own caches over their window of tokens.

Cross-attention windows other than 1 patch are not decoded yet (a ConfigError).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lst_jax import vocab as vocab_lib
from lst_jax.config import ConfigError
from lst_jax.decode import cache as cache_lib
from lst_jax.model.cross_attention import attend_patch
from lst_jax.model.lst import LST
from lst_jax.model.patcher import max_pool


class LSTState(NamedTuple):
  encoder: tuple[cache_lib.LayerCache, ...]
  decoder: tuple[cache_lib.LayerCache, ...]
  latent: tuple[cache_lib.LayerCache, ...]
  tokens: jax.Array        # int32 [B]: tokens consumed
  patches: jax.Array       # int32 [B]: patches closed (global steps taken)
  open_states: jax.Array   # [B, encoder layers, patch_size, d_local]: the open patch's token states
  open_len: jax.Array      # int32 [B]: tokens in the open (speech) patch; 0 = none open
  context: jax.Array       # [B, k, d_local]: decoder vectors of the latest closed patch


def check_supported(model: LST) -> None:
  cfg = model.encoder.cfg
  if cfg.encoder_window != 1 or cfg.decoder_window != 1:
    raise ConfigError(f"decoding supports cross-attention windows of 1 patch; this model has "
                      f"encoder_window={cfg.encoder_window}, decoder_window={cfg.decoder_window}")


def init_state(model: LST, batch: int, token_slots: int, patch_slots: int, patch_size: int) -> LSTState:
  check_supported(model)
  cfg, dtype = model.encoder.cfg, model.encoder.embed.dtype
  empty = lambda blocks, slots: tuple(cache_lib.empty_layer(batch, slots, b.attn, dtype) for b in blocks)
  return LSTState(
      encoder=empty(model.encoder.layers, token_slots), decoder=empty(model.decoder.layers, token_slots),
      latent=empty(cache_lib.blocks_of(model.latent), patch_slots),
      tokens=jnp.zeros((batch,), jnp.int32), patches=jnp.zeros((batch,), jnp.int32),
      open_states=jnp.zeros((batch, cfg.encoder_layers, patch_size, cfg.d_local), dtype),
      open_len=jnp.zeros((batch,), jnp.int32),
      context=jnp.zeros((batch, cfg.cross_attn_k, cfg.d_local), dtype))


def _close_patch(model: LST, s: LSTState, close_B, early: bool) -> LSTState:
  """Pools the open patch of the rows in `close_B`, steps the global model once, updates their
  context; `early`: the patch closes before it is full (the next token is not a unit)."""
  enc, width = model.encoder, s.open_states.shape[2]
  valid_BL = jnp.arange(width)[None, :] < s.open_len[:, None]
  pooled_BD = max_pool(s.open_states[:, None, 0], valid_BL[:, None])[:, 0]   # after the first layer
  keys_values = [cross.keys_values(s.open_states[:, i]) for i, cross in enumerate(enc.cross)]
  latent = cache_lib.CachedLayers(s.latent, s.patches)
  global_BG = model.latent.over_blocks(enc.patch_vectors(pooled_BD, keys_values, valid_BL), latent)
  context = model.decoder.context_vectors(global_BG)
  keep = lambda new, old: jnp.where(close_B.reshape((close_B.shape[0],) + (1,) * (new.ndim - 1)), new, old)
  s = s._replace(latent=tuple(latent.updated), patches=s.patches + close_B.astype(jnp.int32),
                 context=keep(context, s.context))
  if early:
    s = s._replace(decoder=jax.tree.map(keep, _redecode_last(model, s), s.decoder))
  return s._replace(open_len=jnp.where(close_B, 0, s.open_len))


def _redecode_last(model: LST, s: LSTState) -> tuple[cache_lib.LayerCache, ...]:
  """Decoder caches with the open patch's last token decoded anew against the patch's own vectors
  (now closed early, by the token after it): training's context for that token. Its logits were
  already used; what changes is what later tokens' decoder self-attention reads."""
  last = jnp.maximum(s.open_len - 1, 0)
  h_BD = jnp.take_along_axis(s.open_states[:, -1], last[:, None, None], axis=1)[:, 0]
  return _decode_token(model, s, h_BD, s.tokens - 1)[1]


def _decode_token(model: LST, s: LSTState, h_BD, position_B) -> tuple[jax.Array, tuple[cache_lib.LayerCache, ...]]:
  """One token's pass through the local decoder (its own run_layers): cross-attention to the
  latest closed patch's vectors, then self-attention from the cache at `position_B`; returns the
  last hidden state and the updated caches."""
  layers = cache_lib.CachedLayers(s.decoder, position_B, model.encoder.cfg.window)
  read_context = lambda cross, h: attend_patch(cross, h, *cross.keys_values(s.context))
  return model.decoder.run_layers(h_BD, read_context, layers), tuple(layers.updated)


def _maybe_close(model: LST, s: LSTState, close_B, early: bool = False) -> LSTState:
  """The global step only when some row closes a patch (batch 1: exactly once per patch)."""
  return jax.lax.cond(close_B.any(), lambda st: _close_patch(model, st, close_B, early), lambda st: st, s)


def step(model: LST, vocab: vocab_lib.Vocab, patch_size: int, s: LSTState, token_B,
         active_B) -> tuple[jax.Array, LSTState]:
  """Consumes one token per active row; returns fp32 logits [B, V] for the next token."""
  cfg, enc = model.encoder.cfg, model.encoder
  is_unit = vocab.is_speech(token_B)
  # A non-unit token is a patch of its own: an open speech patch before it closes first.
  s = _maybe_close(model, s, active_B & ~is_unit & (s.open_len > 0), early=True)
  encoder = cache_lib.CachedLayers(s.encoder, s.tokens, cfg.window)
  states = enc.layer_states(enc.embed(token_B), encoder)
  slot = jnp.minimum(s.open_len, patch_size - 1)
  open_states = cache_lib.write_row_slots(jnp.swapaxes(s.open_states, 1, 2), jnp.stack(states, axis=1), slot)
  open_len = s.open_len + active_B.astype(jnp.int32)
  s = s._replace(encoder=tuple(encoder.updated), open_states=jnp.swapaxes(open_states, 1, 2),
                 open_len=jnp.where(active_B, open_len, s.open_len))
  s = _maybe_close(model, s, active_B & (~is_unit | (s.open_len >= patch_size)))
  h_BD, decoder = _decode_token(model, s, states[-1], s.tokens)
  return model.decoder.logits(h_BD), s._replace(decoder=decoder, tokens=s.tokens + active_B.astype(jnp.int32))
