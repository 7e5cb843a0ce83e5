"""An aligned manifest: JSONL, one utterance per line, with units or with audio.

  {"id": "u1", "transcript": "hello world",
   "words": [{"word": "hello", "start": 0.10, "end": 0.52}, ...],   optional, seconds
   "units": [12, 7, ...], "unit_rate": 25.0}                        user-given units
  {"id": "u2", "transcript": "hello world", "audio": "wav/u2.flac"}  audio (path relative to this file)

With units, word times are required (they place each word on the units).
With audio, units come from the built-in quantizer and missing word times from
the forced aligner. One manifest gives either units or audio throughout (the
first entry decides), since a dataset has one unit provenance.
"""

from __future__ import annotations

import math
import os
from typing import Iterator, Sequence

import numpy as np

from data_prep import frame_spans
from data_prep.formats import lst_jsonl, spans as spans_lib
from data_prep.formats.items import SPEECH, InputError, Item, Options, check_word_times

KIND = SPEECH
UNITS, AUDIO = "units", "audio"


class EntryError(ValueError):
  """A manifest entry breaks the format."""


def list_sources(path: str) -> list[spans_lib.Span]:
  return [s for f in spans_lib.input_files(path, (".jsonl", ".json")) for s in spans_lib.line_spans(f)]


def first_entry(sources: Sequence[spans_lib.Span]) -> tuple[str, float | None] | None:
  """(mode, unit_rate) of the first well-formed entry: the dataset's kind of units."""
  for _, obj in spans_lib.json_objects(sources):
    if isinstance(obj, dict):
      if "units" in obj:
        rate = obj.get("unit_rate")
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
          return UNITS, float(rate)
      elif "audio" in obj:
        return AUDIO, None
  return None


def parse(sources: Sequence[spans_lib.Span], options: Options) -> Iterator[Item | InputError]:
  for span, obj in spans_lib.json_objects(sources):
    if isinstance(obj, InputError):
      yield obj
      continue
    try:
      yield item(obj, span, options)
    except EntryError as e:
      yield InputError(span.file, str(e), span.line, lst_jsonl.record_id(obj.get("id")))


def item(obj: dict, span: spans_lib.Span, options: Options) -> Item:
  id_ = obj.get("id")
  if not isinstance(id_, (str, int)) or isinstance(id_, bool) or id_ == "":
    raise EntryError(f"\"id\" must be a non-empty string, got {id_!r}")
  transcript = obj.get("transcript")
  if not isinstance(transcript, str):
    raise EntryError(f"\"transcript\" must be a string, got {type(transcript).__name__}")
  words = tuple(transcript.split())
  if not words:
    raise EntryError("empty transcript")
  times = None
  if obj.get("words") is not None:
    words, times = _word_times(obj["words"], words)
  has_units, has_audio = obj.get("units") is not None, obj.get("audio") is not None
  if has_units == has_audio:
    raise EntryError("give either \"units\" (with \"unit_rate\") or \"audio\", not "
                     + ("both" if has_units else "neither"))
  mode = UNITS if has_units else AUDIO
  if options.mode is not None and mode != options.mode:
    raise EntryError(f"this entry gives {mode}, but the manifest's first entry gives {options.mode}; "
                     f"one dataset has one kind of units")
  base = dict(id=str(id_), file=span.file, line=span.line, words=words)
  if mode == AUDIO:
    audio = obj["audio"]
    if not isinstance(audio, str) or not audio:
      raise EntryError(f"\"audio\" must be a file path, got {audio!r}")
    return Item(**base, audio=os.path.join(os.path.dirname(span.file), audio), word_times=times)
  units, rate = _units(obj, options)
  if times is None:
    raise EntryError("\"units\" without word timings: add \"words\" with start/end seconds "
                     "(or give \"audio\" so the aligner can time the words)")
  why = check_word_times(times, len(units) / rate, 1.0 / rate)
  if why:
    raise EntryError(why)
  try:
    word_spans = frame_spans.unit_spans(times, len(units), rate)
  except frame_spans.AlignmentError as e:
    raise EntryError(str(e)) from None
  return Item(**base, units=units, word_spans=word_spans, unit_rate=rate)


def _word_times(entries, transcript_words) -> tuple[tuple[str, ...], np.ndarray]:
  if not isinstance(entries, list) or not entries:
    raise EntryError("\"words\" must be a non-empty list of {\"word\", \"start\", \"end\"}")
  words, times = [], []
  for w, e in enumerate(entries):
    if not isinstance(e, dict) or not isinstance(e.get("word"), str) or not e["word"].strip():
      raise EntryError(f"words[{w}] must be {{\"word\": str, \"start\": s, \"end\": s}}, got {e!r:.80}")
    t = (e.get("start"), e.get("end"))
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in t):
      raise EntryError(f"words[{w}] ({e['word']!r}): \"start\" and \"end\" must be numbers (seconds)")
    words.append(e["word"].strip())
    times.append(t)
  if len(words) != len(transcript_words):
    raise EntryError(f"\"words\" has {len(words)} entries but the transcript has "
                     f"{len(transcript_words)} words")
  return tuple(words), np.asarray(times, np.float64)


def _units(obj: dict, options: Options) -> tuple[np.ndarray, float]:
  rate = obj.get("unit_rate")
  if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
    raise EntryError(f"\"unit_rate\" (units per second) must be a positive number, got {rate!r}")
  if options.unit_rate is not None and float(rate) != options.unit_rate:
    raise EntryError(f"unit_rate {rate} differs from the dataset's {options.unit_rate} "
                     f"(the first entry's); one dataset has one unit rate")
  units = obj["units"]
  if not isinstance(units, list) or not units:
    raise EntryError("\"units\" must be a non-empty list of unit ids")
  if not all(isinstance(u, int) and not isinstance(u, bool) for u in units):
    bad = next(u for u in units if not isinstance(u, int) or isinstance(u, bool))
    raise EntryError(f"\"units\": {bad!r} is not a unit id")
  bad = next((u for u in units if not 0 <= u < options.num_units), None)  # before numpy: any size
  if bad is not None:
    raise EntryError(f"unit id {str(bad)[:40]} is outside the codebook's [0, {options.num_units}) "
                     f"(set --num_units to the codebook size)")
  return np.asarray(units, np.int32), float(rate)
