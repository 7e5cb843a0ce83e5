"""Choosing the next token from logits: greedy, temperature, top-k, top-p, and which tokens may come.

Pure functions of (logits, allowed mask, key); a row's seed fixes its draws.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG = -1e30


@dataclasses.dataclass(frozen=True)
class Sampling:
  temperature: float = 1.0   # 0: greedy
  top_k: int = 0             # 0: all tokens
  top_p: float = 1.0         # nucleus mass; 1: all tokens

  def __post_init__(self):
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"bad sampling settings {self}: temperature >= 0, top_k >= 0, 0 < top_p <= 1")


def filter_logits(logits_BV, allowed_BV, s: Sampling):
  """Logits with disallowed tokens, those beyond the top k, and those outside the top-p mass at -inf."""
  logits = jnp.where(allowed_BV, logits_BV.astype(jnp.float32), NEG)
  if s.top_k:
    kth = jax.lax.top_k(logits, s.top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, NEG)
  if s.top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits / max(s.temperature, 1e-6), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs         # mass of the tokens ranked above
    keep_sorted = before < s.top_p                         # the top token always stays
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    logits = jnp.where(keep, logits, NEG)
  return logits


def choose(logits_BV, allowed_BV, s: Sampling, key):
  """int32 [B]: argmax when temperature is 0, else a draw from the filtered, tempered distribution."""
  logits = filter_logits(logits_BV, allowed_BV, s)
  if s.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, logits / s.temperature, axis=-1).astype(jnp.int32)
