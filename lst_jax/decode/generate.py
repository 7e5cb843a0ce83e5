"""Batched generation: prompts of different lengths, one jitted step per token, per-row stopping.

A request names its prompt (token ids, BOS first, the span's mode token last),
the modality to generate, a length limit and what a switch to the other
modality does: "allow" (the row goes on in the other modality), "forbid" (the
other mode token is never drawn) or "stop" (the row ends there). EOS always
ends a row. Tasks (speech or text continuation, text-to-speech, speech-to-text)
are requests whose prompts end with the mode token of what comes next.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lst_jax import vocab as vocab_lib
from lst_jax.decode import baseline_step, cache as cache_lib, lst_step, sampling as sampling_lib

SWITCH = ("allow", "forbid", "stop")
MODALITIES = ("speech", "text")


@dataclasses.dataclass(frozen=True)
class Request:
  prompt: tuple[int, ...]
  modality: str = "speech"       # what the row generates first
  max_new_tokens: int = 250      # e.g. 10 s of speech at 25 units/s
  on_switch: str = "stop"
  eos: bool = True               # may the row draw EOS (benchmarks need exact lengths)

  def __post_init__(self):
    if self.modality not in MODALITIES or self.on_switch not in SWITCH or not self.prompt:
      raise ValueError(f"bad request: modality {self.modality!r} (of {MODALITIES}), on_switch "
                       f"{self.on_switch!r} (of {SWITCH}), prompt of {len(self.prompt)} tokens")


@dataclasses.dataclass(frozen=True)
class Generated:
  tokens: tuple[int, ...]        # generated ids (the stopping token left out)
  stop: str                      # "eos", "length" or "switch"


def allowed_tokens(vocab: vocab_lib.Vocab, speech_B, on_switch_B) -> jax.Array:
  """bool [B, V]: what each row may draw next: its modality's tokens and EOS, plus the other
  modality's mode token unless switching is forbidden."""
  ids = jnp.arange(vocab.size)
  units = ids >= vocab.unit_offset
  text = (ids >= vocab_lib.NUM_SPECIAL) & (ids < vocab.text_mode)
  same = jnp.where(speech_B[:, None], units[None], text[None])
  switch = jnp.where(speech_B[:, None], (ids == vocab.text_mode)[None], (ids == vocab.speech_mode)[None])
  return same | (ids == vocab_lib.EOS)[None] | (switch & (on_switch_B != SWITCH.index("forbid"))[:, None])


class Decoder:
  """Jitted one-token steps of a model (LST or baseline) for batches of requests."""

  def __init__(self, model, vocab: vocab_lib.Vocab, patch_size: int = 4):
    self.kind = "lst" if hasattr(model, "latent") else "baseline"
    self.vocab, self.patch_size = vocab, patch_size
    self.graphdef, self.params = nnx.split(cache_lib.unstack_layers(model))
    if self.kind == "lst":
      lst_step.check_supported(model)
      fn = lambda m, st, tok, act: lst_step.step(m, vocab, patch_size, st, tok, act)
    else:
      fn = lambda m, st, tok, act: baseline_step.step(m, st, tok, act)
    self._step = jax.jit(lambda params, st, tok, act: fn(nnx.merge(self.graphdef, params), st, tok, act))

  def init(self, batch: int, slots: int):
    model = nnx.merge(self.graphdef, self.params)
    if self.kind == "lst":
      return lst_step.init_state(model, batch, slots, slots, self.patch_size)
    return baseline_step.init_state(model, batch, slots)

  def step(self, state, token_B, active_B):
    return self._step(self.params, state, jnp.asarray(token_B, jnp.int32), jnp.asarray(active_B))

  def prefill(self, prompts: list[tuple[int, ...]], slots: int):
    """State after every prompt, and each row's logits for its first new token."""
    b, n = len(prompts), max(map(len, prompts))
    tokens = np.zeros((b, n), np.int32)
    for i, p in enumerate(prompts):
      tokens[i, :len(p)] = p
    lengths = np.array([len(p) for p in prompts])
    state, last = self.init(b, slots), None
    for i in range(n):
      logits, state = self.step(state, tokens[:, i], i < lengths)
      last = logits if last is None else jnp.where(jnp.asarray(i == lengths - 1)[:, None], logits, last)
    return state, last


def uncached_logits(model, vocab: vocab_lib.Vocab, patch_size: int, sequences: list[list[int]],
                    slots: int) -> np.ndarray:
  """fp32 [B, V]: each sequence's next-token logits from a from-scratch forward (no cache), with
  the same patch rule as the cached step (a continuation token that does not close a patch
  early is appended; causality keeps it from being read)."""
  from lst_jax.data import packing
  from lst_jax.decode import rows
  cont = lambda t: vocab.unit_offset if t >= vocab.unit_offset else vocab_lib.NUM_SPECIAL
  batch = packing.stack([rows.document_row(list(s) + [cont(s[-1])], vocab, patch_size, slots, slots)
                         for s in sequences])
  logits = _forward(model)(batch)
  return np.asarray(logits)[np.arange(len(sequences)), [len(s) - 1 for s in sequences]]


_FORWARDS = {}  # graphdef -> jitted forward (one compile per model structure)


def _forward(model):
  graphdef, params = nnx.split(model)
  if graphdef not in _FORWARDS:
    _FORWARDS[graphdef] = jax.jit(lambda params, batch: nnx.merge(graphdef, params)(batch))
  return lambda batch: _FORWARDS[graphdef](params, batch)


def generate(decoder: Decoder, requests: list[Request], sampling: sampling_lib.Sampling, seed: int = 0,
             on_step: Callable[[int], None] | None = None, slots: int = 0) -> list[Generated]:
  """Generates for every request at once; rows stop on their own (EOS, length, switch). `slots`:
  cache length, at least what the requests need (one size for several calls: one compile)."""
  vocab, b = decoder.vocab, len(requests)
  slots = max(slots, max(len(r.prompt) + r.max_new_tokens for r in requests) + 1)
  state, logits = decoder.prefill([r.prompt for r in requests], slots)
  speech = np.array([r.modality == "speech" for r in requests])
  on_switch = np.array([SWITCH.index(r.on_switch) for r in requests])
  no_eos = jnp.asarray([not r.eos for r in requests])[:, None] & (jnp.arange(vocab.size) == vocab_lib.EOS)[None]
  limit = np.array([r.max_new_tokens for r in requests])
  done, out, stop = np.zeros(b, bool), [[] for _ in range(b)], [""] * b
  key = jax.random.PRNGKey(seed)
  for t in range(int(limit.max())):
    allowed = allowed_tokens(vocab, jnp.asarray(speech), jnp.asarray(on_switch)) & ~no_eos
    token = np.asarray(sampling_lib.choose(logits, allowed, sampling, jax.random.fold_in(key, t)))
    for i in np.flatnonzero(~done):
      tok = int(token[i])
      if tok == vocab_lib.EOS:
        done[i], stop[i] = True, "eos"
      elif tok in (vocab.text_mode, vocab.speech_mode) and on_switch[i] == SWITCH.index("stop"):
        done[i], stop[i] = True, "switch"
      else:
        out[i].append(tok)
        if tok in (vocab.text_mode, vocab.speech_mode):
          speech[i] = tok == vocab.speech_mode
        if len(out[i]) >= limit[i]:
          done[i], stop[i] = True, "length"
    if done.all():
      break
    logits, state = decoder.step(state, np.where(done, vocab_lib.PAD, token), ~done)
    if on_step is not None:
      on_step(t)
  return [Generated(tuple(o), s) for o, s in zip(out, stop)]

