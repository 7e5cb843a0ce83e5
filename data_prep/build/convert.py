"""Parsed items -> validated records: tokenize words, place them on units.

Pure given a tokenizer (and, for audio, a quantizer): every failure is an
InputError naming the item's file and line (or record), never a crash, so a
build can skip the item and go on.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data_prep import frame_spans
from data_prep.formats.items import InputError, Item, check_word_times
from lst_jax.data import audio as audio_lib
from lst_jax.data import features
from lst_jax.data import records as records_lib

SAMPLE_RATE = features.FEATURES["sample_rate"]
FRAME_RATE = features.FEATURES["frame_rate"]


class WordTokenizer:
  """tokenizer.encode_words with a per-word cache: words repeat (Zipf), and one
  sentencepiece call per new word is ~10x faster than its batch call on short lists."""

  def __init__(self, sp, max_cached: int = 1 << 20):
    self.sp, self.unk, self.max_cached = sp, [sp.unk_id()], max_cached
    self.vocab_size = sp.get_piece_size()
    self.cache: dict[str, list[int]] = {}

  def __call__(self, words) -> list[list[int]]:
    out = []
    for w in words:
      ids = self.cache.get(w)
      if ids is None:
        ids = self.sp.encode(w, out_type=int) or self.unk
        if len(self.cache) < self.max_cached:
          self.cache[w] = ids
      out.append(ids)
    return out


@dataclasses.dataclass(frozen=True)
class Converted:
  record: records_lib.Record
  seconds: float  # speech duration (0 for text)
  place: tuple = (None, None)  # (file, line) of the entry in the input


@dataclasses.dataclass(frozen=True)
class Analysis:
  """An audio item, read and word-timed, waiting for its batch to be quantized."""
  item: Item
  wave: np.ndarray        # float32 [S] at 16 kHz
  word_times: np.ndarray  # float64 [W, 2] seconds
  seconds: float


def text_item(item: Item, encode: WordTokenizer) -> Converted:
  rec = records_lib.text_record(item.id, encode(item.words))
  return Converted(_validate(item, rec, None, encode.vocab_size), 0.0, (item.file, item.line))


def units_item(item: Item, encode: WordTokenizer, num_units: int) -> Converted:
  """An item with user-given units and word spans."""
  if len(item.units) / item.unit_rate > audio_lib.MAX_SECONDS:
    hours = len(item.units) / item.unit_rate / 3600
    raise item.error(f"{len(item.units)} units at {item.unit_rate:g} Hz are {hours:.1f} "
                     f"h of speech in one utterance; at most {audio_lib.MAX_SECONDS / 3600:g} h (split it)")
  rec = records_lib.speech_record(item.id, encode(item.words), item.units, item.word_spans, item.unit_rate)
  return Converted(_validate(item, rec, num_units, encode.vocab_size), len(item.units) / item.unit_rate,
                   (item.file, item.line))


def load_wave(item: Item) -> tuple[np.ndarray, float]:
  """(16 kHz wave, seconds) of an audio item; InputError if the audio is bad."""
  from lst_jax.data import audio  # only audio builds need it (and its decoder)
  try:
    wave = audio.load_audio(item.audio)
  except audio.AudioError as e:
    raise item.error(_strip_path(str(e), item)) from None
  if len(wave) == 0:
    raise item.error(f"{item.audio}: the audio is empty")
  return wave, len(wave) / SAMPLE_RATE


def load_features(item: Item) -> tuple[np.ndarray, np.ndarray, float]:
  """(built-in features [F, E], 16 kHz wave, seconds) of an audio item (fitting the codebook)."""
  wave, seconds = load_wave(item)
  return features.logmel(wave, SAMPLE_RATE), wave, seconds


def analyze(item: Item) -> Analysis:
  """The wave and word times (from the input, else the forced aligner) of an audio item."""
  wave, seconds = load_wave(item)
  times = item.word_times
  if times is None:
    from data_prep import forced_aligner  # pocketsphinx: loaded only when words need timing
    try:
      times = np.asarray(forced_aligner.align_words(wave, list(item.words)), np.float64).reshape(-1, 2)
    except forced_aligner.AlignmentError as e:
      raise item.error(f"forced alignment failed: {e}") from None
  why = check_word_times(times, seconds, 1.0 / FRAME_RATE)
  if why:
    raise item.error(why)
  return Analysis(item, wave, times, seconds)


def audio_items(analyses: Sequence[Analysis], encode: WordTokenizer, quantizer) -> list[Converted | InputError]:
  """Quantizes a batch of analysed audio items at once (a quantizer from lst_jax.data.quantizers:
  the built-in one or HuBERT; batches are much faster than one call per item)."""
  if not analyses:
    return []
  rate = quantizer.frame_rate
  out = []
  for a, u in zip(analyses, quantizer.units_batch([a.wave for a in analyses], SAMPLE_RATE)):
    try:
      spans = frame_spans.unit_spans(a.word_times, len(u), rate)
    except frame_spans.AlignmentError as e:
      out.append(a.item.error(str(e)))
      continue
    rec = records_lib.speech_record(a.item.id, encode(a.item.words), u, spans, rate)
    try:
      out.append(Converted(_validate(a.item, rec, quantizer.num_units, encode.vocab_size), a.seconds,
                           (a.item.file, a.item.line)))
    except InputError as e:
      out.append(e)
  return out


def _validate(item: Item, rec: records_lib.Record, num_units, text_vocab) -> records_lib.Record:
  try:
    return rec.validate(num_units, text_vocab)
  except records_lib.RecordError as e:
    raise item.error(str(e)) from None


def _strip_path(message: str, item: Item) -> str:
  """Audio errors name their file; keep it once when the item's location is that file."""
  if item.line is None and message.startswith(item.audio):
    return message[len(item.audio):].lstrip(": ")
  return message
