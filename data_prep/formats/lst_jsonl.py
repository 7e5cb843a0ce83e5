"""The official LST JSONL: one word-aligned utterance per line (paper.md section 4).

  {"file_id": "...", "interleaved": "<LST MODE SEP>TEXT [SIL] <LST MODE SEP>HUBERT 99 99 7
                                     <LST MODE SEP>TEXT in <LST MODE SEP>HUBERT 117 313 ..."}

Segments are joined by `<LST MODE SEP>`; each is `TEXT <word>` or `HUBERT <unit ids>`.
A word owns the HUBERT units that follow it up to the next TEXT segment; `TEXT [SIL]`
opens silence, and units before any TEXT segment are silence too. Every segment
is kept, the first one included (the reference tokenizer strips one character
too many from the leading separator and loses it).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from data_prep.formats import spans as spans_lib
from data_prep.formats.items import SPEECH, InputError, Item, Options

KIND = SPEECH
SEP = "<LST MODE SEP>"
SILENCE = "[SIL]"
FRAME_RATE = 25.0     # HuBERT units
DEFAULT_NUM_UNITS = 501  # HuBERT codebook of the official data


class SegmentError(ValueError):
  """The interleaved string breaks the format; the message names the segment."""


def list_sources(path: str) -> list[spans_lib.Span]:
  return [s for f in spans_lib.input_files(path, (".jsonl", ".json")) for s in spans_lib.line_spans(f)]


def parse(sources: Sequence[spans_lib.Span], options: Options) -> Iterator[Item | InputError]:
  for span, obj in spans_lib.json_objects(sources):
    if isinstance(obj, InputError):
      yield obj
      continue
    try:
      yield item(obj, span, options.num_units)
    except SegmentError as e:
      yield InputError(span.file, str(e), span.line, record_id(obj.get("file_id")))


def record_id(value) -> str | None:
  """An entry's id for the skip report (None when it has no usable one)."""
  return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None


def item(obj: dict, span: spans_lib.Span, num_units: int) -> Item:
  for key in ("file_id", "interleaved"):
    if key not in obj:
      raise SegmentError(f"missing field {key!r}")
  file_id, text = obj["file_id"], obj["interleaved"]
  if not isinstance(file_id, (str, int)) or isinstance(file_id, bool) or file_id == "":
    raise SegmentError(f"\"file_id\" must be a non-empty string, got {file_id!r}")
  if not isinstance(text, str):
    raise SegmentError(f"\"interleaved\" must be a string, got {type(text).__name__}")
  words, units, word_spans = parse_interleaved(text, num_units)
  return Item(id=str(file_id), file=span.file, line=span.line, words=words, units=units,
              word_spans=word_spans, unit_rate=FRAME_RATE)


def parse_interleaved(text: str, num_units: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
  """An interleaved string -> (words, int32 units [U], int32 word spans [W, 2]).

  Silence ([SIL] and leading units) stays in `units`, outside every word span.
  """
  segments = text.split(SEP)
  if not segments[0].strip():
    segments = segments[1:]  # the string starts with a separator: nothing before it
  words: list[str] = []
  spans: list[list[int]] = []
  tokens: list[str] = []  # every unit id, as text
  open_word = None  # index of the word that owns the next units
  for k, segment in enumerate(segments, 1):
    parts = segment.split()
    kind = parts[0] if parts else ""
    if kind == "HUBERT":
      if len(parts) == 1:
        raise SegmentError(f"segment {k}: a HUBERT segment with no unit ids")
      tokens += parts[1:]
      if open_word is not None:
        spans[open_word][1] = len(tokens)
    elif kind == "TEXT":
      if len(parts) != 2:
        raise SegmentError(f"segment {k}: a TEXT segment holds exactly one word, got "
                           f"{' '.join(parts[1:])[:80]!r}")
      _check_has_units(open_word, words, spans)
      if parts[1] == SILENCE:
        open_word = None
      else:
        words.append(parts[1])
        spans.append([len(tokens), len(tokens)])
        open_word = len(words) - 1
    else:
      raise SegmentError(f"segment {k}: unknown segment kind {kind[:40]!r} (expected TEXT or HUBERT)")
  _check_has_units(open_word, words, spans)
  if not words:
    raise SegmentError("no words (empty transcript): the utterance needs at least one TEXT word")
  units = unit_ids(tokens, num_units, segments)
  return tuple(words), units.astype(np.int32), np.asarray(spans, np.int32).reshape(-1, 2)


def unit_ids(tokens: list[str], num_units: int, segments: list[str]) -> np.ndarray:
  """Unit ids as int64 [U]: plain ASCII decimal integers in [0, num_units), whatever their length
  (Python's int() would take "1_2" as 12, "١" as 1, and 20 digits overflow numpy)."""
  if not tokens:
    return np.zeros(0, np.int64)
  joined = "".join(tokens)  # fast path, at C speed: all ASCII digits, none too long for int64
  if joined.isascii() and joined.isdigit() and max(map(len, tokens)) <= 18:
    units = np.fromiter(map(int, tokens), np.int64, len(tokens))
    if not len(units) or units.max() < num_units:
      return units
  for k, segment in enumerate(segments, 1):
    parts = segment.split()
    for token in parts[1:] if parts and parts[0] == "HUBERT" else []:
      if not (token.isascii() and token.isdigit()):
        raise SegmentError(f"segment {k}: {token[:40]!r} is not a unit id (a plain decimal integer)")
      if len(token.lstrip("0")) > len(str(num_units)) or int(token) >= num_units:  # int(): <= 4300 digits
        raise SegmentError(f"segment {k}: unit id {token[:40]} is outside the codebook's [0, {num_units}) "
                           f"(set --num_units to the codebook size)")
  raise SegmentError("a HUBERT segment holds something that is not a unit id")


def _check_has_units(open_word, words, spans) -> None:
  if open_word is not None and spans[open_word][1] == spans[open_word][0]:
    raise SegmentError(f"word {open_word} {words[open_word]!r} has no HUBERT units after it")


def format_interleaved(words, units, word_spans) -> str:
  """The inverse of parse_interleaved: silence is written `TEXT [SIL]` before its units."""
  parts, pos = [], 0
  for word, (start, end) in zip(words, np.asarray(word_spans).reshape(-1, 2)):
    if start > pos:
      parts += [f"TEXT {SILENCE}", "HUBERT " + " ".join(map(str, units[pos:start]))]
    parts += [f"TEXT {word}", "HUBERT " + " ".join(map(str, units[start:end]))]
    pos = end
  if pos < len(units):
    parts += [f"TEXT {SILENCE}", "HUBERT " + " ".join(map(str, units[pos:]))]
  return "".join(SEP + p for p in parts)
