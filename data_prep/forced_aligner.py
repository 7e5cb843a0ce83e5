"""Forced alignment of a known transcript to 16 kHz speech (pocketsphinx): word -> (start_s, end_s).

pocketsphinx (PyPI `pocketsphinx`) ships the CMU US English acoustic model and
the CMU pronouncing dictionary, so alignment needs no download. We use its
word-level forced alignment (`set_align_text`: a linear grammar of the words
with optional silence/noise between them, decoded by Viterbi at 100 frames/s);
the silences it finds between words stay uncovered by any word span.

Choices, and why:
- Words are normalized for the dictionary (Unicode folded to ASCII, lowercased,
  punctuation dropped; "well-known" is read as its parts). A word that is still
  not in the dictionary gets a pronunciation from its parts (numbers read as
  English cardinals) or, failing that, from `letter_phones`, a small documented
  letter-to-phone rule set: pocketsphinx 5 has no g2p, and forced alignment
  only needs a roughly right phone string because the words are known.
- Exact digital silence (runs of zero samples, common in synthetic or padded
  audio) makes the MFCC log-energy degenerate and the search loses the
  transcript; a fixed-seed dither at -53 dB of the peak (about a quiet room's
  noise floor) fixes that and keeps the result a deterministic function of
  the input.
- Cepstral mean normalization is per utterance ("batch"), not pocketsphinx's
  default running estimate, so a result does not depend on what was aligned
  before it in the same process.
- Pocketsphinx's default beams lose the path to the transcript's end on ~10% of
  utterances; those are re-decoded with wider beams (`_STAGES`), and only if
  the widest fails too is AlignmentError raised.
- The decoders (about 0.15 s and 27 MB each) are created lazily once per
  process and reused; the pid is checked so forked or spawned pool workers
  each build their own, and a lock serializes threads (a decoder is not
  thread-safe).
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from typing import Sequence

import numpy as np

from lst_jax.data.audio import TARGET_RATE

FRAME_S = 0.01            # pocketsphinx's frame shift (-frate 100)
MIN_AUDIO_S = 0.1         # shorter audio cannot hold even one word's HMM states
_DITHER = 2e-3            # noise std, with the peak at _PEAK: -53 dB, ~65 int16 steps
_PEAK = 0.9               # audio is scaled to this peak before 16-bit conversion
_SEED = 0
_SILPROB = 0.1            # pocketsphinx's -silprob, see _Aligner.decoder
_NON_WORDS = ("<", "[")   # <s>, </s>, <sil>, [NOISE] ... in pocketsphinx segmentations


class AlignmentError(ValueError):
  """The transcript cannot be aligned to the audio; the message says why."""


# ---------------------------------------------------------------- pronunciations

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def number_words(digits: str) -> list[str]:
  """"1611" -> ["one", "thousand", "six", "hundred", "eleven"]; over 12 digits: digit by digit."""
  if len(digits) > 12:
    return [_DIGITS[int(d)] for d in digits]
  n = int(digits)
  if n < 10:
    return [_DIGITS[n]]
  if n < 20:
    return [_TEENS[n - 10]]
  if n < 100:
    return [_TENS[n // 10]] + (number_words(str(n % 10)) if n % 10 else [])
  for scale, name in _SCALES:
    if n >= scale:
      rest = n % scale
      return number_words(str(n // scale)) + [name] + (number_words(str(rest)) if rest else [])
  raise AssertionError(n)  # unreachable


# Letter-to-phone fallback for words the dictionary lacks: longest match first, in
# CMU ARPAbet without stress. Crude English spelling rules, enough for an aligner.
_GRAPHEMES = {
  "tch": "CH", "sch": "S K", "igh": "AY", "eau": "OW", "ough": "AO",
  "ch": "CH", "sh": "SH", "th": "TH", "ph": "F", "wh": "W", "ck": "K", "ng": "NG", "qu": "K W",
  "gh": "G", "dg": "JH", "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ow": "OW", "ai": "EY",
  "ay": "EY", "oi": "OY", "oy": "OY", "au": "AO", "aw": "AO", "ie": "IY", "ei": "EY", "ey": "EY",
  "er": "ER", "ir": "ER", "ur": "ER", "ar": "AA R", "or": "AO R", "oa": "OW", "ue": "UW",
  "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH",
  "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R",
  "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "IY", "z": "Z",
}
_VOWELS = set("aeiouy")


def letter_phones(letters: str) -> list[str]:
  """Rule-based ARPAbet for a lowercase a-z word: digraphs, soft c/g, silent final e, y."""
  w = letters
  if len(w) > 3 and w.endswith("e") and w[-2] not in _VOWELS and any(c in _VOWELS for c in w[:-2]):
    w = w[:-1]  # silent final e ("made")
  if w.startswith(("kn", "wr", "gn")):
    w = w[1:]
  phones: list[str] = []
  i = 0
  while i < len(w):
    if i and w[i] == w[i - 1] and w[i] not in _VOWELS:
      i += 1  # doubled consonant: one phone
      continue
    nxt = w[i + 1] if i + 1 < len(w) else ""
    if w[i] in "cg" and nxt in ("e", "i", "y") and w[i:i + 2] not in _GRAPHEMES:
      phones.append("S" if w[i] == "c" else "JH")
      i += 1
      continue
    if w[i] == "y" and i == 0 and nxt in _VOWELS:
      phones.append("Y")
      i += 1
      continue
    for n in (4, 3, 2, 1):
      if w[i:i + n] in _GRAPHEMES:
        phones.extend(_GRAPHEMES[w[i:i + n]].split())
        i += n
        break
    else:
      i += 1  # not a-z: no sound
  return phones


def dictionary_parts(word: str) -> list[str]:
  """A word as the dictionary spells it: ASCII-folded lowercase [a-z0-9'] runs ("Well-known," -> 2)."""
  folded = re.sub(r"(?<=[0-9]),(?=[0-9]{3})", "", word)  # "1,000" is one number
  folded = unicodedata.normalize("NFKD", folded.replace("\u2019", "'").replace("\u2018", "'"))
  folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
  return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", folded)


# ---------------------------------------------------------------- the decoder

# Beam settings tried in order. The first (pocketsphinx's defaults) aligns ~90% of
# utterances; in the rest pruning drops every path that reaches the transcript's
# end, so they are re-run with wider beams (slower, hence not the default).
_STAGES = ({}, {"beam": 1e-100, "pbeam": 1e-100, "wbeam": 1e-80},
           {"beam": 1e-200, "pbeam": 1e-200, "wbeam": 1e-160})


class _Aligner:
  """The process's pocketsphinx decoders (one per beam stage) and the words added to them."""

  def __init__(self):
    self.pid = os.getpid()
    self.lock = threading.Lock()
    self.added: dict[str, str] = {}  # dictionary name -> phones, for words the dictionary lacked
    self._decoders = [None] * len(_STAGES)
    self.decoder(0)

  def decoder(self, stage: int):
    if self._decoders[stage] is None:
      import pocketsphinx  # a C extension; only processes that align pay for it
      # bestpath=False: the answer is the Viterbi path that ends the transcript; the lattice
      # best path may stop early and drop words. cmn="batch": see the module docstring.
      # silprob 0.1 (default 0.005): inserting a silence between words costs less, so more
      # pauses stay uncovered (measured on espeak speech: 87% of pauses >= 100 ms found,
      # up from 74%, with the same boundary error).
      d = pocketsphinx.Decoder(lm=None, loglevel="FATAL", cmn="batch", bestpath=False,
                               silprob=_SILPROB, samprate=TARGET_RATE, **_STAGES[stage])
      for name, phones in self.added.items():
        d.add_word(name, phones, False)
      self._decoders[stage] = d
    return self._decoders[stage]

  def _phones(self, name: str) -> str | None:
    return self.decoder(0).lookup_word(name)

  def dictionary_word(self, word: str) -> str:
    """The dictionary entry for `word`, adding one built from its parts if there is none."""
    parts = dictionary_parts(word)
    if not parts:
      raise AlignmentError(f"word {word!r} has no letters or digits to pronounce")
    name = "-".join(parts)
    if self._phones(name) is not None:
      return name
    if len(parts) > 1 and self._phones("".join(parts)) is not None:
      return "".join(parts)
    phones: list[str] = []
    for part in parts:
      known = self._phones(part)
      if known is not None:
        phones += known.split()
        continue
      for piece in re.findall(r"[0-9]+|[a-z']+", part):  # "2nd" -> "2", "nd"
        if piece[0].isdigit():
          phones += [p for w in number_words(piece) for p in self._phones(w).split()]
        else:
          known = self._phones(piece) or self._phones(piece.replace("'", ""))
          phones += known.split() if known else letter_phones(piece.replace("'", ""))
    if not phones:
      raise AlignmentError(f"word {word!r}: no pronunciation could be made")
    self.added[name] = " ".join(phones)
    for d in self._decoders:
      if d is not None:
        d.add_word(name, self.added[name], False)
    return name

  def align(self, audio: np.ndarray, words: Sequence[str]) -> list[tuple[float, float]]:
    names = []
    for i, word in enumerate(words):
      try:
        names.append(self.dictionary_word(word))
      except AlignmentError as e:
        raise AlignmentError(f"word {i}: {e}") from None
    pcm = _to_pcm16(audio)
    for stage in range(len(_STAGES)):
      found = self._decode(stage, pcm, names)
      if [name for name, _, _ in found] == names:
        break
    else:
      raise AlignmentError(
          f"no alignment reaches the end of the transcript: the {len(audio) / TARGET_RATE:.2f} s "
          f"of audio do not hold the {len(words)} words {_preview(words)} (too short, or "
          f"different speech)")
    duration = len(audio) / TARGET_RATE
    return [(min(sf * FRAME_S, duration), min((ef + 1) * FRAME_S, duration)) for _, sf, ef in found]

  def _decode(self, stage: int, pcm: bytes, names: list[str]) -> list[tuple[str, int, int]]:
    """[(dictionary name, first frame, last frame)] of the words found; [] if none."""
    d = self.decoder(stage)
    try:
      d.set_align_text(" ".join(names))
      d.start_utt()
      d.process_raw(pcm, no_search=False, full_utt=True)
      d.end_utt()
    except RuntimeError as e:
      raise AlignmentError(f"pocketsphinx failed on {len(names)} words: {e}") from None
    segments = d.seg()
    return [] if segments is None else [
        (re.sub(r"\(\d+\)$", "", s.word), s.start_frame, s.end_frame)
        for s in segments if not s.word.startswith(_NON_WORDS)]


def _preview(words: Sequence[str]) -> str:
  text = " ".join(words)
  return repr(text if len(text) <= 60 else text[:57] + "...")


def _to_pcm16(audio: np.ndarray) -> bytes:
  """Peak-normalized, dithered (see the module docstring) 16-bit little-endian PCM."""
  x = np.asarray(audio, np.float64)
  x = x * (_PEAK / np.max(np.abs(x)))
  x = x + _DITHER * np.random.default_rng(_SEED).standard_normal(len(x))
  return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


_ALIGNER: _Aligner | None = None
_CREATE_LOCK = threading.Lock()


def _aligner() -> _Aligner:
  global _ALIGNER
  with _CREATE_LOCK:
    if _ALIGNER is None or _ALIGNER.pid != os.getpid():
      _ALIGNER = _Aligner()
    return _ALIGNER


def align_words(audio_16k: np.ndarray, words: Sequence[str]) -> list[tuple[float, float]]:
  """One (start_s, end_s) per word of `words`, in order, non-overlapping, within the audio.

  `audio_16k` is float32 mono at 16 kHz (see lst_jax.data.audio.load_audio).
  Raises AlignmentError if the input is unusable or the words cannot be found.
  """
  if isinstance(words, str):
    raise AlignmentError("words must be a sequence of words, not one string")
  words = list(words)
  if not words:
    raise AlignmentError("no words to align")
  audio = np.asarray(audio_16k)
  if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
    raise AlignmentError(f"audio must be a 1-D float array at {TARGET_RATE} Hz, got "
                         f"{audio.dtype} {list(audio.shape)}")
  if len(audio) < MIN_AUDIO_S * TARGET_RATE:
    raise AlignmentError(f"audio too short: {len(audio) / TARGET_RATE:.3f} s "
                         f"(need >= {MIN_AUDIO_S} s) for {len(words)} words")
  if not np.all(np.isfinite(audio)):
    raise AlignmentError("audio has non-finite (NaN/inf) samples")
  if np.max(np.abs(audio)) < 1e-4:
    raise AlignmentError(f"audio is silent (peak {np.max(np.abs(audio)):.1e}); nothing to align")
  aligner = _aligner()
  with aligner.lock:
    return aligner.align(audio, words)


def pronunciation(word: str) -> tuple[str, bool]:
  """(ARPAbet phones the aligner uses for `word`, whether they came from the dictionary)."""
  aligner = _aligner()
  with aligner.lock:
    name = aligner.dictionary_word(word)
    return aligner.decoder(0).lookup_word(name), name not in aligner.added
