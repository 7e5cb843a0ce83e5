"""A built-in lexical benchmark for the demo corpus in sWUGGY's form: a word vs a made-up non-word.

Written by data_prep.benchmarks.builtin beside the cloze benchmarks, as <data dir>/benchmarks/lexical.jsonl,
so `make eval` reports it. Each item is a pair with no prompt: a word of the training vocabulary
and a pronounceable non-word made from it, both spoken alone by the unseen held-out voice; the
model should find the word more likely (ZeroSpeech 2021's lexical score, as for sWUGGY).

Non-words. The word's espeak-ng phonemes (data_prep.corpus.tts.phonemes) with one phone replaced (two
in words of PHONES_FOR_TWO or more phones) by another of its class (vowel by vowel, consonant by
consonant; stress kept), drawn from a generator seeded by the build seed and the word. A candidate
is kept when it is
  not a real word     no word of the whole KJV (the lexicon) is pronounced with these phones;
  pronounceable       every pair of adjacent phones, and the first and last phone at the word's
                      edges, occurs in some lexicon word (English phonotactics, as the lexicon has it);
  the same length     as many phones as the word (sWUGGY matches lengths).
Both members are spoken through espeak-ng's phoneme input ([[...]]), so the word and the non-word
take the same path through the synthesizer and differ only in their phones.

Words: lower-case alphabetic words of 3+ letters seen at least MIN_COUNT times in the training text
(speech verses and text documents: words a model could have learnt), drawn at random (seeded);
those of fewer than MIN_PHONES phones, or with no non-word within MAX_TRIES draws, are skipped.
Each item records the word's training count ("frequency", as in sWUGGY's gold.csv).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import random
import re
import time
from typing import Callable, Sequence

import numpy as np

from data_prep.corpus import tts
from lst_jax import storage

BUILD_VERSION = 1
NAME = "lexical"
DEFAULT_WORDS = 200
MIN_PHONES = 3
MIN_COUNT = 3             # training occurrences of a benchmark word
PHONES_FOR_TWO = 6        # words this long get two substitutions
MAX_TRIES = 200
MIN_PHONE_COUNT = 20      # a replacement phone must occur this often in the lexicon (no rare sounds)
STRESS = "',%="           # espeak-ng stress marks, written before the phone they mark
VOWEL_START = "@3aAeEiIoOuUV0"
WORD = re.compile(r"^[a-z]{3,}$")


@dataclasses.dataclass(frozen=True)
class Pair:
  word: str
  phones: tuple[str, ...]        # espeak-ng tokens, stress marks attached (e.g. "'I")
  non_word: tuple[str, ...]      # the same form


def split_token(token: str) -> tuple[str, str]:
  """"'eI" -> ("'", "eI"); a token of marks only (e.g. ";") -> (";", "")."""
  i = 0
  while i < len(token) and not token[i].isalnum() and token[i] not in "@":
    i += 1
  return token[:i], token[i:]


def bare(phones: Sequence[str]) -> tuple[str, ...]:
  """The phones without stress and other marks: what makes two pronunciations the same word."""
  return tuple(p for p in (split_token(t)[1] for t in phones) if p)


def is_vowel(phone: str) -> bool:
  return bool(phone) and phone[0] in VOWEL_START


class Lexicon:
  """The real words' pronunciations: which phone strings are words, which phone pairs occur."""

  def __init__(self, pronunciations: Sequence[Sequence[str]]):
    self.words = {bare(p) for p in pronunciations}
    self.bigrams = set()
    counts = collections.Counter()
    for p in self.words:
      seq = ("#",) + p + ("#",)
      self.bigrams.update(zip(seq, seq[1:]))
      counts.update(p)
    self.counts = counts
    common = sorted(p for p, c in counts.items() if c >= MIN_PHONE_COUNT)
    self.vowels = [p for p in common if is_vowel(p)]
    self.consonants = [p for p in common if not is_vowel(p)]

  def is_word(self, phones: Sequence[str]) -> bool:
    return bare(phones) in self.words

  def pronounceable(self, phones: Sequence[str]) -> bool:
    seq = ("#",) + bare(phones) + ("#",)
    return all(b in self.bigrams for b in zip(seq, seq[1:]))


def make_non_word(phones: Sequence[str], lexicon: Lexicon, rng: random.Random) -> tuple[str, ...] | None:
  """`phones` with one or two phones replaced by others of their class, pronounceable and not a word
  of `lexicon`, same length; None when MAX_TRIES draws find none."""
  tokens = list(phones)
  slots = [i for i, t in enumerate(tokens) if split_token(t)[1]]
  if len(slots) < MIN_PHONES:
    return None
  n = 2 if len(slots) >= PHONES_FOR_TWO else 1
  for _ in range(MAX_TRIES):
    out = list(tokens)
    for i in rng.sample(slots, n):
      stress, phone = split_token(tokens[i])
      pool = [p for p in (lexicon.vowels if is_vowel(phone) else lexicon.consonants) if p != phone]
      if not pool:
        break
      out[i] = stress + rng.choice(pool)
    else:
      if len(bare(out)) == len(bare(tokens)) and not lexicon.is_word(out) and lexicon.pronounceable(out):
        return tuple(out)
  return None


def vocabulary(lines: Sequence[str]) -> dict[str, int]:
  """Lower-case alphabetic words of 3+ letters of the training text -> their counts, sorted by word."""
  counts = collections.Counter(w.lower() for line in lines for w in line.split() if WORD.match(w.lower()))
  return dict(sorted(counts.items()))


def choose_pairs(words: Sequence[str], pronunciations: dict[str, Sequence[str]], lexicon: Lexicon,
                 count: int, seed: int) -> list[Pair]:
  """Up to `count` (word, non-word) pairs: words drawn in a seeded order, each non-word from a
  generator seeded by (seed, word), so a word's non-word does not depend on the other words."""
  order = sorted(words)
  random.Random(seed).shuffle(order)
  out = []
  for w in order:
    if len(out) == count:
      break
    phones = tuple(pronunciations[w])
    if len(bare(phones)) < MIN_PHONES:
      continue
    non_word = make_non_word(phones, lexicon, random.Random(f"{seed}:{w}"))
    if non_word is not None:
      out.append(Pair(w, phones, non_word))
  return sorted(out, key=lambda p: p.word)


def make_items(pairs: Sequence[Pair], units: dict[tuple[str, int], np.ndarray], seed: int,
               counts: dict[str, int] | None = None) -> list[dict]:
  """Benchmark items (JSON objects): no prompt, the word and its non-word in a seeded order."""
  rng = random.Random(seed)
  items = []
  for p in pairs:
    label = rng.randrange(2)
    cands = [units[(p.word, 1)], units[(p.word, 0)]] if label else [units[(p.word, 0)], units[(p.word, 1)]]
    extra = {"frequency": counts[p.word]} if counts else {}
    items.append({"id": p.word, "phones": " ".join(p.phones), "non_word": " ".join(p.non_word), **extra,
                  "prompt": {}, "candidates": [{"units": [int(u) for u in c]} for c in cands], "label": label})
  return items


def _features(job: tuple[str, int, tuple[str, ...], tts.Voice]) -> np.ndarray:
  """One member spoken through espeak-ng's phoneme input -> 25 Hz log-mel features (a pool worker)."""
  from lst_jax.data import features
  word, _, phones, voice = job
  speech = tts.synthesize([word], voice, [tts.phoneme_input(phones)], read_phonemes=True)
  return features.logmel(speech.wave, speech.sample_rate)


def settings_of(manifest: dict, count: int, seed: int, voice: tts.Voice) -> dict:
  return {"version": BUILD_VERSION, "words": count, "seed": seed, "data_build": manifest.get("build"),
          "codebook_sha256": manifest["units"].get("codebook_sha256"), "voice": dataclasses.asdict(voice),
          "min_phones": MIN_PHONES, "min_count": MIN_COUNT, "phones_for_two": PHONES_FOR_TWO}


def is_ready(path: str, settings: dict) -> bool:
  try:
    with open(path) as f:
      header = json.loads(f.readline()).get("header", {})
  except (OSError, ValueError, AttributeError):
    return False
  return json.loads(json.dumps(settings)) == header.get("build")


def build(data_dir: str, output: str, raw: dict, training_lines: Callable[[], Sequence[str]],
          lexicon_words: Callable[[], Sequence[str]], count: int = DEFAULT_WORDS, seed: int = 0, workers: int = 2,
          voice: tts.Voice = tts.HELDOUT_VOICES[0], log: Callable[[str], None] = print) -> str:
  """Builds (or reuses) <output>/lexical.jsonl for the demo data in `data_dir` (`raw`: its manifest);
  `training_lines` and `lexicon_words` are called only when the file is (re)built."""
  from lst_jax.data import codebook as codebook_lib
  from lst_jax.eval import community
  start = time.time()
  path = os.path.join(output, f"{NAME}.jsonl")
  settings = settings_of(raw, count, seed, voice)
  if is_ready(path, settings):
    log(f"{path} ready (reused: same settings)")
    return path
  counts = vocabulary(training_lines())
  words = [w for w, c in counts.items() if c >= MIN_COUNT]
  lex_words = sorted({w.lower() for w in lexicon_words() if WORD.match(w.lower())} | set(counts))
  prons = dict(zip(lex_words, tts.phonemes(lex_words, voice)))
  lexicon = Lexicon(list(prons.values()))
  pairs = choose_pairs(words, prons, lexicon, count, seed)
  jobs = [(p.word, k, ph, voice) for p in pairs for k, ph in ((0, p.phones), (1, p.non_word))]
  log(f"lexical: {len(pairs)} of the {len(words)} words seen {MIN_COUNT}+ times in training, and their non-words "
      f"(lexicon {len(lex_words)} words), spoken by {voice.name}")
  if workers > 0:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      feats = list(pool.imap(_features, jobs, chunksize=8))
  else:
    feats = [_features(j) for j in jobs]
  from data_prep.corpus.demo_build import quantize_all
  unit_lists = quantize_all(feats, codebook_lib.load(data_dir))
  units = {(w, k): u for (w, k, _, _), u in zip(jobs, unit_lists)}
  tok = raw["tokenizer"]
  protocol = community.Protocol("built-in lexical (sWUGGY form)", "sum", "pair over voices", (),
                                "ZeroSpeech 2021 lexical score; data_prep.benchmarks.lexical")
  header = {"name": NAME, "ways": 2, "directions": ["S->S"], "protocol": protocol.to_json(),
            "description": (f"a training-vocabulary word vs a pronounceable non-word of the same length (one or "
                            f"two phones replaced), each spoken alone through espeak-ng's phoneme input by the "
                            f"unseen voice {voice.name}"),
            "units": raw["units"], "tokenizer": {"sha256": tok["sha256"], "vocab_size": tok["vocab_size"]},
            "build": settings}
  os.makedirs(output, exist_ok=True)
  storage.write_text(path, json.dumps({"header": header}, sort_keys=True) + "\n"
                     + "".join(json.dumps(item, separators=(",", ":")) + "\n"
                               for item in make_items(pairs, units, seed, counts)))
  log(f"wrote {path}: {len(pairs)} pairs ({time.time() - start:.1f} s)")
  return path
