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
from lst_jax.config import InterleaveConfig
from lst_jax.data import records


@dataclasses.dataclass(frozen=True)
class Document:
  """One document as tokens, with what patching needs to know.

  tokens         int32 [n]  shared-vocabulary ids
  is_speech      bool  [n]  speech-unit tokens (mode tokens are not speech)
  speech_ranges  per speech span: (token index of its first unit, unit start, unit end,
                 index of its first word) in the source record
  word_spans     the record's word unit spans [W, 2] (empty for text)
  """
  tokens: np.ndarray
  is_speech: np.ndarray
  speech_ranges: tuple[tuple[int, int, int, int], ...]
  word_spans: np.ndarray


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


def speech_span_units(spans_W2: np.ndarray, num_units: int, a: int, b: int) -> tuple[int, int]:
  """Unit range [start, end) of words [a, b): boundary silences are split in half.

  The first word takes all leading silence and the last word all trailing silence.
  """
  start = 0 if a == 0 else (int(spans_W2[a - 1, 1]) + int(spans_W2[a, 0])) // 2
  end = num_units if b == len(spans_W2) else (int(spans_W2[b - 1, 1]) + int(spans_W2[b, 0])) // 2
  return start, end


def interleave(record: records.Record, vocab: vocab_lib.Vocab, rng,
               cfg: InterleaveConfig = InterleaveConfig(), speech_only: bool = False) -> Document:
  """Draws one interleaving of a record: BOS, spans each opened by its mode token, EOS.

  Text-only records are one text span; with `speech_only` an utterance is one speech span.
  `rng` offers random() and integers(low, high) (lst_jax.data.rng.DocRng, or numpy's).
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
    if modality == "text":
      lo, hi = int(offsets[a]), int(offsets[b])
    else:
      lo, hi = speech_span_units(word_spans, len(record.units), a, b)
    ranges.append((modality, a, lo, hi))
    n += 1 + hi - lo
  tokens = np.empty(n, np.int32)
  is_speech = np.zeros(n, bool)
  tokens[0], tokens[-1] = vocab_lib.BOS, vocab_lib.EOS
  speech_ranges = []
  o = 1
  for modality, a, lo, hi in ranges:
    end = o + 1 + hi - lo
    if modality == "text":
      tokens[o] = vocab.text_mode
      np.add(record.text_ids[lo:hi], vocab_lib.NUM_SPECIAL, out=tokens[o + 1:end])
    else:
      tokens[o] = vocab.speech_mode
      np.add(record.units[lo:hi], vocab.unit_offset, out=tokens[o + 1:end])
      is_speech[o + 1:end] = True
      speech_ranges.append((o + 1, lo, hi, a))
    o = end
  return Document(tokens, is_speech, tuple(speech_ranges), word_spans)
