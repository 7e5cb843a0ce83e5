"""Turns one stored record into one token sequence, re-drawn every epoch.

Recipe (paper.md section 4): random first modality, then alternate; a text span
is 5-30 words (at most 60% of the utterance's words); the next speech span is
half the previous text span's word count (at least 2 words); silence at a span
boundary is split in half. Every span opens with its mode token; the sequence
is BOS ... EOS. Text-only records become BOS <t> text EOS.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lst_jax import vocab as vocab_lib
from lst_jax.data import records


@dataclasses.dataclass(frozen=True)
class InterleaveConfig:
  text_span_words: tuple[int, int] = (5, 30)  # inclusive range of a text span's words
  max_text_fraction: float = 0.6               # of the utterance's words, per text span
  speech_to_text_ratio: float = 0.5            # speech span words / previous text span words
  min_speech_words: int = 2


@dataclasses.dataclass(frozen=True)
class Sequence:
  """One document as tokens, with what patching needs to know.

  tokens         int32 [n]  shared-vocabulary ids
  is_speech      bool  [n]  speech-unit tokens (mode tokens are not speech)
  segment_start  bool  [n]  aligned segments with silence separate: where each word and
                            each silence (units between words) begins, inside speech
  word_start     bool  [n]  aligned segments with silence merged: where each word begins,
                            except the first word of a speech span, so that a span's
                            leading silence joins its first word and every other silence
                            joins the word before it
  """
  tokens: np.ndarray
  is_speech: np.ndarray
  segment_start: np.ndarray
  word_start: np.ndarray


def draw_spans(num_words: int, rng: np.random.Generator, cfg: InterleaveConfig) -> list[tuple[str, int, int]]:
  """Splits words [0, num_words) into alternating (modality, start, end) spans."""
  text_cap = max(1, min(cfg.text_span_words[1], int(cfg.max_text_fraction * num_words)))
  text_low = min(cfg.text_span_words[0], text_cap)
  modality = "text" if rng.random() < 0.5 else "speech"
  spans, start = [], 0
  last_text = int(rng.integers(text_low, text_cap + 1))
  while start < num_words:
    if modality == "text":
      last_text = int(rng.integers(text_low, text_cap + 1))
      n = last_text
    else:
      n = max(cfg.min_speech_words, int(round(cfg.speech_to_text_ratio * last_text)))
    end = min(num_words, start + n)
    spans.append((modality, start, end))
    start = end
    modality = "speech" if modality == "text" else "text"
  return spans


def speech_span_units(spans_WK: np.ndarray, num_units: int, a: int, b: int) -> tuple[int, int]:
  """Unit range [start, end) of words [a, b): boundary silences are split in half.

  The first word takes all leading silence and the last word all trailing silence.
  """
  start = 0 if a == 0 else (int(spans_WK[a - 1, 1]) + int(spans_WK[a, 0])) // 2
  end = num_units if b == len(spans_WK) else (int(spans_WK[b - 1, 1]) + int(spans_WK[b, 0])) // 2
  return start, end


def boundary_marks(record: records.Record) -> tuple[np.ndarray, np.ndarray]:
  """Bool [U] each: units where a word starts, and units where a silence starts."""
  u, spans = len(record.units), record.word_spans
  word = np.zeros(u + 1, bool)
  word[spans[:, 0]] = True
  silence = np.zeros(u + 1, bool)
  silence[spans[:, 1]] = True
  silence[0] = spans[0, 0] > 0
  silence &= ~word
  return word[:u], silence[:u]


def interleave(record: records.Record, vocab: vocab_lib.Vocab, rng: np.random.Generator,
               cfg: InterleaveConfig = InterleaveConfig(), speech_only: bool = False) -> Sequence:
  """Draws one interleaving of a record: BOS, spans each opened by its mode token, EOS.

  Text-only records are one text span; with `speech_only` an utterance is one speech span.
  """
  w = record.num_words
  if record.kind == records.TEXT:
    spans = [("text", 0, w)]
  elif speech_only:
    spans = [("speech", 0, w)]
  else:
    spans = draw_spans(w, rng, cfg)
  offsets, word_spans = record.word_offsets, record.word_spans
  ranges, n = [], 2
  for modality, a, b in spans:
    lo, hi = ((offsets[a], offsets[b]) if modality == "text"
              else speech_span_units(word_spans, len(record.units), a, b))
    ranges.append((modality, a, int(lo), int(hi)))
    n += 1 + int(hi) - int(lo)
  tokens = np.empty(n, np.int32)
  is_speech, segment_start, word_start = (np.zeros(n, bool) for _ in range(3))
  tokens[0], tokens[-1] = vocab_lib.BOS, vocab_lib.EOS
  if record.kind == records.SPEECH:
    word_marks, silence_marks = boundary_marks(record)
  o = 1
  for modality, a, lo, hi in ranges:
    body = slice(o + 1, o + 1 + hi - lo)
    if modality == "text":
      tokens[o] = vocab.text_mode
      tokens[body] = record.text_ids[lo:hi] + vocab_lib.NUM_SPECIAL
    else:
      tokens[o] = vocab.speech_mode
      tokens[body] = record.units[lo:hi] + vocab.unit_offset
      is_speech[body] = True
      segment_start[body] = word_marks[lo:hi] | silence_marks[lo:hi]
      word_start[body] = word_marks[lo:hi]
      first_word = word_spans[a, 0]
      if first_word > lo:  # leading silence merges into the span's first word
        word_start[o + 1 + first_word - lo] = False
    o = body.stop
  return Sequence(tokens, is_speech, segment_start, word_start)
