"""The built-in lexical benchmark (data_prep.benchmarks.lexical): non-words are pronounceable, not words, as long
as their word, and drawn deterministically; items are valid benchmark items with no prompt."""

import random

import numpy as np
import pytest

from data_prep.benchmarks import lexical
from data_prep.corpus import tts
from lst_jax.eval import benchmark_files as bench_lib

# A toy lexicon in espeak-ng's phoneme names (stress marks ride on the phone after them).
LEXICON = {
    "brick": ("b", "r", "'I", "k"), "trick": ("t", "r", "'I", "k"), "brim": ("b", "r", "'I", "m"),
    "slit": ("s", "l", "'I", "t"), "bread": ("b", "r", "'E", "d"), "sled": ("s", "l", "'E", "d"),
    "track": ("t", "r", "'a", "k"), "drip": ("d", "r", "'I", "p"), "spat": ("s", "p", "'a", "t"),
    "ten": ("t", "'E", "n"), "pit": ("p", "'I", "t"), "kid": ("k", "'I", "d"),
    "melody": ("m", "'E", "l", "@", "d", "i"),
}


def _lexicon(monkeypatch):
  monkeypatch.setattr(lexical, "MIN_PHONE_COUNT", 1)   # the toy lexicon is small
  return lexical.Lexicon(list(LEXICON.values()))


def test_non_words_are_pronounceable_not_words_and_as_long(monkeypatch):
  lex = _lexicon(monkeypatch)
  assert lexical.split_token("'eI") == ("'", "eI") and lexical.split_token(";") == (";", "")
  assert lexical.bare(("k", "r", "i:", ";", "'eI")) == ("k", "r", "i:", "eI")
  assert lex.is_word(("b", "r", "I", "k")) and not lex.pronounceable(("r", "b", "I", "k"))   # #r, rb unseen
  seen = set()
  for word, phones in LEXICON.items():
    for seed in range(5):
      non = lexical.make_non_word(phones, lex, random.Random(f"{seed}:{word}"))
      if non is None:
        continue
      seen.add(non)
      assert not lex.is_word(non) and lex.pronounceable(non)
      assert len(lexical.bare(non)) == len(lexical.bare(phones))                   # same length
      assert [lexical.is_vowel(p) for p in lexical.bare(non)] == [lexical.is_vowel(p) for p in lexical.bare(phones)]
      assert [lexical.split_token(t)[0] for t in non] == [lexical.split_token(t)[0] for t in phones]   # stress kept
      changed = sum(a != b for a, b in zip(non, phones))
      assert changed == (2 if len(lexical.bare(phones)) >= lexical.PHONES_FOR_TWO else 1)
  assert len(seen) >= 5
  assert lexical.make_non_word(("a", "b"), lex, random.Random(0)) is None            # too short


def test_pairs_and_items_are_deterministic_and_valid(monkeypatch):
  lex = _lexicon(monkeypatch)
  words = sorted(LEXICON)
  pairs = lexical.choose_pairs(words, LEXICON, lex, count=6, seed=3)
  assert pairs == lexical.choose_pairs(list(reversed(words)), LEXICON, lex, count=6, seed=3)
  assert len(pairs) == 6 and [p.word for p in pairs] == sorted(p.word for p in pairs)
  other = lexical.choose_pairs(words, LEXICON, lex, count=len(words), seed=3)
  for p in pairs:   # a word's non-word does not depend on which other words were drawn
    assert p == next(q for q in other if q.word == p.word)
  units = {(p.word, k): np.arange(3 + k + i) for i, p in enumerate(pairs) for k in (0, 1)}
  items = lexical.make_items(pairs, units, seed=3, counts={p.word: 4 for p in pairs})
  assert items == lexical.make_items(pairs, units, seed=3, counts={p.word: 4 for p in pairs})
  assert items[0]["frequency"] == 4
  assert lexical.vocabulary(["The bread, the Bread", "of it"]) == {"bread": 1, "the": 2}   # "bread," is no word
  assert {it["label"] for it in items} == {0, 1}                                      # the word's place varies
  for p, it in zip(pairs, items):
    item = bench_lib.parse_item(it, "lexical.jsonl:2", "/")
    assert item.prompt == bench_lib.NO_PROMPT and it["prompt"] == {}
    assert item.candidates[item.label].units == tuple(units[(p.word, 0)])
    assert item.to_json()["prompt"] == {}                                             # round trip
  bench = bench_lib.Benchmark("lexical", "x", {"directions": ["S->S"]}, tuple(
      bench_lib.parse_item(it, "x", "/") for it in items))
  assert bench.directions() == ["S->S"] and bench.uses("units") and not bench.uses("text")


def test_espeak_phonemes_round_trip_and_a_spoken_non_word(monkeypatch):
  """Real espeak-ng: a word's phonemes speak as the word does; a non-word is spoken from its phonemes."""
  voice = tts.HELDOUT_VOICES[0]
  words = ["brick", "garden", "light", "the", "beginning"]
  prons = dict(zip(words, tts.phonemes(words, voice)))
  assert prons == dict(zip(words, tts.phonemes(words, voice)))                         # deterministic
  assert all(len(lexical.bare(p)) >= 2 for p in prons.values())
  said = tts.synthesize(["garden"], voice)
  via = tts.synthesize(["garden"], voice, [tts.phoneme_input(prons["garden"])], read_phonemes=True)
  assert said.duration == pytest.approx(via.duration, abs=0.02)
  monkeypatch.setattr(lexical, "MIN_PHONE_COUNT", 1)
  lex = lexical.Lexicon(list(prons.values()))
  non = lexical.make_non_word(prons["beginning"], lex, random.Random("0:beginning"))
  if non is not None:   # the five-word lexicon may allow none; the logic is tested above
    spoken = tts.synthesize(["x"], voice, [tts.phoneme_input(non)], read_phonemes=True)
    assert 0.2 < spoken.duration < 2.0
