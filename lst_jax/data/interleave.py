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

  tokens       int32 [n]  shared-vocabulary ids
  is_speech    bool  [n]  speech-unit tokens (mode tokens are not speech)
  align_start  bool  [n]  first unit of each aligned segment (a word, or the silence
                          between words); always true at the start of a speech span
  """
  tokens: np.ndarray
  is_speech: np.ndarray
  align_start: np.ndarray


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


def aligned_segment_starts(spans_WK: np.ndarray, start: int, end: int) -> np.ndarray:
  """Bool [end - start]: where each word and each silence of units [start, end) begins."""
  marks = np.zeros(end - start, bool)
  marks[0] = True
  for s, e in spans_WK:
    for boundary in (s, e):  # a word starts at s; the silence after it at e
      if start < boundary < end:
        marks[boundary - start] = True
  return marks


def interleave(record: records.Record, vocab: vocab_lib.Vocab, rng: np.random.Generator,
               cfg: InterleaveConfig = InterleaveConfig()) -> Sequence:
  """Draws one interleaving of a record (text-only records are a single text span)."""
  words = record.word_offsets
  if record.kind == records.TEXT:
    spans = [("text", 0, record.num_words)]
  else:
    spans = draw_spans(record.num_words, rng, cfg)
  tokens, speech, align = [np.array([vocab_lib.BOS], np.int32)], [np.zeros(1, bool)], [np.zeros(1, bool)]
  for modality, a, b in spans:
    if modality == "text":
      body = vocab.text(record.text_ids[words[a]:words[b]])
      tokens += [np.array([vocab.text_mode], np.int32), body]
      speech += [np.zeros(1 + len(body), bool)]
      align += [np.zeros(1 + len(body), bool)]
    else:
      s, e = speech_span_units(record.word_spans, len(record.units), a, b)
      tokens += [np.array([vocab.speech_mode], np.int32), vocab.units(record.units[s:e])]
      speech += [np.zeros(1, bool), np.ones(e - s, bool)]
      align += [np.zeros(1, bool), aligned_segment_starts(record.word_spans, s, e)]
  tokens.append(np.array([vocab_lib.EOS], np.int32))
  speech.append(np.zeros(1, bool))
  align.append(np.zeros(1, bool))
  return Sequence(np.concatenate(tokens), np.concatenate(speech), np.concatenate(align))
