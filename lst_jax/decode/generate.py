"""Batched generation: prompts of different lengths, on the device from prompt to stop, per-row stopping.

A request names its prompt (token ids, BOS first, the span's mode token last),
the modality to generate, a length limit and what a switch to the other
modality does: "allow" (the row goes on in the other modality), "forbid" (the
other mode token is never drawn) or "stop" (the row ends there). EOS always
ends a row. Tasks (speech or text continuation, text-to-speech, speech-to-text)
are requests whose prompts end with the mode token of what comes next.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lst_jax import vocab as vocab_lib
from lst_jax.data import packing
from lst_jax.decode import baseline_step, cache as cache_lib, lst_step, sampling as sampling_lib

SWITCH = ("allow", "forbid", "stop")
STOPS = ("", "eos", "switch", "length")   # why a row ended (device codes)
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
  same = jnp.where(speech_B[:, None], vocab.is_speech(ids)[None], vocab.is_text(ids)[None])
  switch = jnp.where(speech_B[:, None], (ids == vocab.text_mode)[None], (ids == vocab.speech_mode)[None])
  return same | (ids == vocab_lib.EOS)[None] | (switch & (on_switch_B != SWITCH.index("forbid"))[:, None])


class Decoder:
  """A model's one-token step (LST or baseline), and whole generations run on the device: the
  prompts and then every new token in one jitted program of two while-loops (no Python per token)."""

  def __init__(self, model, vocab: vocab_lib.Vocab, patch_size: int = 4):
    self.kind = model.kind
    self.vocab, self.patch_size = vocab, patch_size
    self.graphdef, self.params = nnx.split(cache_lib.unstack_layers(model))
    if self.kind == "lst":
      lst_step.check_supported(model)
    self._step = jax.jit(self._model_step)
    self._generate = jax.jit(self._generate_on_device, static_argnames=("sampling",))

  def _model_step(self, params, state, token_B, active_B):
    model = nnx.merge(self.graphdef, params)
    if self.kind == "lst":
      return lst_step.step(model, self.vocab, self.patch_size, state, token_B, active_B)
    return baseline_step.step(model, state, token_B, active_B)

  def _init(self, params, batch: int, slots: int):
    model = nnx.merge(self.graphdef, params)
    if self.kind == "lst":
      return lst_step.init_state(model, batch, slots, slots, self.patch_size)
    return baseline_step.init_state(model, batch, slots)

  def init(self, batch: int, slots: int):
    return self._init(self.params, batch, slots)

  def step(self, state, token_B, active_B):
    return self._step(self.params, state, jnp.asarray(token_B, jnp.int32), jnp.asarray(active_B))

  def _generate_on_device(self, params, prompt_BS, length_B, speech_B, on_switch_B, eos_B, limit_B, key,
                          sampling: sampling_lib.Sampling):
    """(tokens [B, S], count [B], stop code [B]): the prompts consumed (each row its own length),
    then one token per row per step until every row has stopped (STOPS)."""
    vocab, (b, slots) = self.vocab, prompt_BS.shape
    step = lambda st, tok, act: self._model_step(params, st, tok, act)
    rows = jnp.arange(b)

    def prefill(carry):
      i, state, last = carry
      logits, state = step(state, prompt_BS[:, i], i < length_B)
      return i + 1, state, jnp.where((i == length_B - 1)[:, None], logits, last)

    state = self._init(params, b, slots)
    last = jnp.zeros((b, vocab.size), jnp.float32)
    zero = jnp.zeros((), jnp.int32)
    _, state, logits = jax.lax.while_loop(lambda c: c[0] < length_B.max(), prefill, (zero, state, last))
    no_eos = ~eos_B[:, None] & (jnp.arange(vocab.size) == vocab_lib.EOS)[None]

    def generate_one(carry):
      t, state, logits, speech, done, count, out, stop = carry
      allowed = allowed_tokens(vocab, speech, on_switch_B) & ~no_eos
      token = sampling_lib.choose(logits, allowed, sampling, jax.random.fold_in(key, t))
      is_mode = vocab.is_mode(token)
      eos = ~done & (token == vocab_lib.EOS)
      switch = ~done & is_mode & (on_switch_B == SWITCH.index("stop"))
      keep = ~done & ~eos & ~switch
      col = jnp.minimum(count, slots - 1)
      out = out.at[rows, col].set(jnp.where(keep, token, out[rows, col]))
      count = count + keep.astype(jnp.int32)
      speech = jnp.where(keep & is_mode, token == vocab.speech_mode, speech)
      length = keep & (count >= limit_B)
      stop = jnp.where(eos, STOPS.index("eos"), jnp.where(switch, STOPS.index("switch"),
                                                          jnp.where(length, STOPS.index("length"), stop)))
      done = done | eos | switch | length
      logits, state = jax.lax.cond(done.all(), lambda: (logits, state),
                                   lambda: step(state, jnp.where(done, vocab_lib.PAD, token), ~done))
      return t + 1, state, logits, speech, done, count, out, stop

    zeros = jnp.zeros((b,), jnp.int32)
    carry = (zero, state, logits, speech_B, jnp.zeros((b,), bool), zeros, jnp.zeros((b, slots), jnp.int32), zeros)
    carry = jax.lax.while_loop(lambda c: (c[0] < limit_B.max()) & ~c[4].all(), generate_one, carry)
    return carry[6], carry[5], carry[7]


def uncached_logits(model, vocab: vocab_lib.Vocab, patch_size: int, sequences: list[list[int]],
                    slots: int) -> np.ndarray:
  """fp32 [B, V]: each sequence's next-token logits from a from-scratch forward (no cache), with
  the same patch rule as the cached step (a continuation token that does not close a patch
  early is appended; causality keeps it from being read)."""
  cont = lambda t: vocab.unit_offset if vocab.is_speech(t) else vocab_lib.NUM_SPECIAL
  batch = packing.stack([packing.inference_row(list(s) + [cont(s[-1])], vocab, patch_size, slots, slots)
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
             slots: int = 0) -> list[Generated]:
  """Generates for every request at once; rows stop on their own (EOS, length, switch). `slots`:
  cache length, at least what the requests need (one size for several calls: one compile)."""
  b = len(requests)
  slots = max(slots, max(len(r.prompt) + r.max_new_tokens for r in requests) + 1)
  prompt = np.zeros((b, slots), np.int32)
  for i, r in enumerate(requests):
    prompt[i, :len(r.prompt)] = r.prompt
  arrays = [np.array(a) for a in ([len(r.prompt) for r in requests], [r.modality == "speech" for r in requests],
                                  [SWITCH.index(r.on_switch) for r in requests], [r.eos for r in requests],
                                  [r.max_new_tokens for r in requests])]
  tokens, count, stop = jax.device_get(decoder._generate(decoder.params, prompt, *arrays, jax.random.PRNGKey(seed),
                                                         sampling=sampling))
  return [Generated(tuple(int(t) for t in tokens[i, :count[i]]), STOPS[stop[i]]) for i in range(b)]
