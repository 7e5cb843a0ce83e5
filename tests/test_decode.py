"""Cached decoding equals the full forward, for the LST and the baseline (fp32, CPU)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lst_jax import vocab as vocab_lib
from lst_jax.config import ModelConfig
from lst_jax.data import packing
from lst_jax.decode import generate as gen
from lst_jax.decode.sampling import Sampling, filter_logits
from lst_jax.model.factory import build_model

VOCAB = vocab_lib.Vocab(text_size=20, num_units=12)
P = 4   # static patch size at inference
DIMS = dict(d_global=32, global_layers=2, global_heads=2, d_local=16, local_heads=2, encoder_layers=2,
            decoder_layers=2, cross_attn_k=2, window=6, patch_gather_width=P, dtype="float32")


def _seq(*parts) -> list[int]:
  """("s", n): speech mode + n units; ("t", n): text mode + n text pieces; BOS first."""
  rng = np.random.default_rng(len(parts))
  out = [vocab_lib.BOS]
  for kind, n in parts:
    if kind == "s":
      out += [VOCAB.speech_mode] + (VOCAB.unit_offset + rng.integers(0, VOCAB.num_units, n)).tolist()
    else:
      out += [VOCAB.text_mode] + (vocab_lib.NUM_SPECIAL + rng.integers(0, VOCAB.text_size, n)).tolist()
  return out


# Prompts of different lengths in both modalities: patch boundaries (a full patch, a partial one
# closed by a mode switch), text after speech and speech after text.
SEQUENCES = [_seq(("s", 9), ("t", 3), ("s", 5)), _seq(("t", 4), ("s", 6)), _seq(("s", 4), ("t", 2))]
MAX_TOKENS, MAX_PATCHES = 24, 24


@functools.lru_cache(maxsize=None)
def _model_and_decoder(kind: str, seed: int = 0, scan_layers: bool = False):
  """One model and one Decoder (its jitted step compiles once) per kind, shared by the tests."""
  model = build_model(ModelConfig(kind=kind, vocab_size=VOCAB.size, scan_layers=scan_layers, **DIMS), seed=seed)
  return model, gen.Decoder(model, VOCAB, P)


def _cached_logits(decoder, sequences, slots=MAX_TOKENS):
  b, n = len(sequences), max(map(len, sequences))
  tokens = np.zeros((b, n), np.int32)
  for i, s in enumerate(sequences):
    tokens[i, :len(s)] = s
  lengths = np.array([len(s) for s in sequences])
  state, out = decoder.init(b, slots), []
  for i in range(n):
    logits, state = decoder.step(state, tokens[:, i], i < lengths)
    out.append(np.asarray(logits))
  return np.stack(out, axis=1), state   # [B, n, V]


def _continuation(token: int) -> int:
  """A next token that does not close the current patch early (decoding's assumption)."""
  return VOCAB.unit_offset if token >= VOCAB.unit_offset else vocab_lib.NUM_SPECIAL


@pytest.mark.parametrize("kind,scan_layers", [("lst", False), ("lst", True), ("baseline", False), ("baseline", True)])
def test_cached_logits_equal_the_full_forward_of_every_prefix(kind, scan_layers):
  _, decoder = _model_and_decoder(kind, scan_layers=scan_layers)   # scanned: stacked parameters
  cached, _ = _cached_logits(decoder, SEQUENCES)
  # The reference: a fresh model with the same parameters, as built (scanned stays scanned).
  model = build_model(ModelConfig(kind=kind, vocab_size=VOCAB.size, scan_layers=scan_layers, **DIMS), seed=0)
  prefixes, where = [], []
  for i, s in enumerate(SEQUENCES):
    for t in range(len(s)):
      prefixes.append(packing.inference_row(s[:t + 1] + [_continuation(s[t])], VOCAB, P, MAX_TOKENS, MAX_PATCHES))
      where.append((i, t))
  graphdef, params = nnx.split(model)
  full = np.asarray(jax.jit(lambda p, b: nnx.merge(graphdef, p)(b))(params, packing.stack(prefixes)))
  for (i, t), logits in zip(where, full):
    np.testing.assert_allclose(cached[i, t], logits[t], atol=1e-4, rtol=1e-4, err_msg=f"row {i} position {t}")


def test_the_global_model_steps_once_per_static_patch():
  _, decoder = _model_and_decoder("lst")
  _, state = _cached_logits(decoder, SEQUENCES)
  for i, s in enumerate(SEQUENCES):
    row = packing.inference_row(s, VOCAB, P, MAX_TOKENS, MAX_PATCHES)
    closed = int((row["patch_segment"] > 0).sum()) - int(state.open_len[i] > 0)
    assert int(state.patches[i]) == closed, s
  chex.assert_trees_all_equal(state.tokens, jnp.array([len(s) for s in SEQUENCES]))


def _requests(modality_of_prompt, **kw):
  return [gen.Request(tuple(s), modality=modality_of_prompt(s), **kw) for s in SEQUENCES]


def _last_modality(s):
  return "speech" if max(i for i, t in enumerate(s) if t in (VOCAB.text_mode, VOCAB.speech_mode)) == \
      max(i for i, t in enumerate(s) if t == VOCAB.speech_mode) else "text"


@pytest.mark.parametrize("kind", ["lst", "baseline"])
def test_greedy_generation_is_the_same_with_and_without_the_cache(kind):
  model, decoder = _model_and_decoder(kind, seed=1)   # (seed 0's LST draws EOS at once)
  requests = _requests(_last_modality, max_new_tokens=7, on_switch="allow")
  cached = gen.generate(decoder, requests, Sampling(temperature=0.0))
  # Without a cache: a from-scratch forward of each sequence so far, the same choice rules.
  seqs = [list(r.prompt) for r in requests]
  speech = [r.modality == "speech" for r in requests]
  out, done = [[] for _ in requests], [False] * len(requests)
  for _ in range(7):
    logits = gen.uncached_logits(model, VOCAB, P, seqs, MAX_TOKENS + 8)
    allowed = np.asarray(gen.allowed_tokens(VOCAB, jnp.asarray(speech), jnp.zeros(len(seqs), int)))
    for i in range(len(seqs)):
      if done[i]:
        continue
      tok = int(np.argmax(np.where(allowed[i], logits[i], -np.inf)))
      if tok == vocab_lib.EOS:
        done[i] = True
        continue
      out[i].append(tok)
      seqs[i].append(tok)
      if tok in (VOCAB.text_mode, VOCAB.speech_mode):
        speech[i] = tok == VOCAB.speech_mode
  assert [list(g.tokens) for g in cached] == out
  assert sum(map(len, out)) >= 6, out       # the comparison covers generated tokens, not only stops


def test_a_seed_fixes_sampling_and_rules_hold():
  _, decoder = _model_and_decoder("lst")
  requests = _requests(_last_modality, max_new_tokens=12, on_switch="forbid")
  draw = lambda seed: [g.tokens for g in gen.generate(decoder, requests, Sampling(1.0, top_k=8), seed)]
  first = draw(3)
  assert draw(3) == first and draw(4) != first
  for r, tokens in zip(requests, first):
    speech = r.modality == "speech"
    assert all((t >= VOCAB.unit_offset) == speech for t in tokens)    # no switch: one modality
    assert vocab_lib.EOS not in tokens and vocab_lib.BOS not in tokens
  # The patches the LST's global model stepped over are static patching's, switches included.
  switching = gen.generate(decoder, _requests(_last_modality, max_new_tokens=12, on_switch="allow"),
                           Sampling(1.0), seed=5)
  # on_switch="stop": the same draws up to the first mode token, where the row ends ("switch").
  stopping = gen.generate(decoder, _requests(_last_modality, max_new_tokens=12, on_switch="stop"),
                          Sampling(1.0), seed=5)
  modes = (VOCAB.text_mode, VOCAB.speech_mode)
  for allowed, stopped in zip(switching, stopping):
    first = next((i for i, t in enumerate(allowed.tokens) if t in modes), None)
    if first is None:
      assert stopped == allowed
    else:
      assert stopped.tokens == allowed.tokens[:first] and stopped.stop == "switch"
  generated = [list(r.prompt) + list(g.tokens) for r, g in zip(requests, switching)]
  assert any(t in (VOCAB.text_mode, VOCAB.speech_mode) for g in switching for t in g.tokens)  # a switch
  _, state = _cached_logits(decoder, generated, MAX_TOKENS + 12)
  for i, s in enumerate(generated):
    row = packing.inference_row(s, VOCAB, P, MAX_TOKENS + 12, MAX_TOKENS + 12)
    assert int(state.patches[i]) == int((row["patch_segment"] > 0).sum()) - int(state.open_len[i] > 0)
    first_of_patch = row["patch_first"][:int((row["patch_segment"] > 0).sum())]
    is_unit = np.asarray(s) >= VOCAB.unit_offset
    for a, length in zip(first_of_patch, row["patch_len"]):
      assert length == 1 or is_unit[a:a + length].all()          # no patch crosses a modality boundary


def test_sampling_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  allowed = jnp.array([[True, True, True, False]])
  kept = lambda s: np.isfinite(np.asarray(filter_logits(logits, allowed, s))) & \
      (np.asarray(filter_logits(logits, allowed, s)) > -1e29)
  assert kept(Sampling()).tolist() == [[True, True, True, False]]
  assert kept(Sampling(top_k=2)).tolist() == [[True, True, False, False]]
  assert kept(Sampling(top_p=0.7)).tolist() == [[True, True, False, False]]    # 0.5 + 0.3 >= 0.7
  assert kept(Sampling(top_p=0.5)).tolist() == [[True, False, False, False]]
  with pytest.raises(ValueError):
    Sampling(top_p=0.0)


def test_rows_without_eos_generate_exactly_their_length():
  _, decoder = _model_and_decoder("lst")
  requests = [gen.Request(tuple(s), _last_modality(s), max_new_tokens=5, on_switch="forbid", eos=False)
              for s in SEQUENCES]
  out = gen.generate(decoder, requests, Sampling(1.0), seed=0)
  assert [len(g.tokens) for g in out] == [5, 5, 5] and {g.stop for g in out} == {"length"}
