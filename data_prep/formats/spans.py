"""Input files as byte spans (a line, or a paragraph of lines) that workers read on their own.

Listing records only (file, first line number, byte offset, length), so the
parent never holds the input's text and a worker reads its chunk with one
read per file. Bytes are decoded per span, so one bad byte names its own line
and costs only its own entry.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Iterator, Sequence

import numpy as np

from data_prep.formats.items import InputError
from lst_jax.data import text_encoding
from lst_jax.data.manifest import DataError

_MAX_READ = 64 << 20  # bytes read at once for a run of spans


@dataclasses.dataclass(frozen=True, slots=True)  # slots: a million of them stay small
class Span:
  file: str
  line: int    # 1-based number of the span's first line
  offset: int  # byte offset of that line
  length: int  # bytes, up to the end of the span's last line (newline excluded)


@dataclasses.dataclass(frozen=True)
class Packed:
  """A run of spans as one array: a pipeline element moves as one object, not as thousands of small
  ones (Beam encodes an element's objects one by one)."""
  files: tuple[str, ...]
  table: np.ndarray  # [entries, 4] int64: file index, line, offset, length


def pack(sources: Sequence) -> Sequence:
  """Spans as one Packed; any other sources (audio files) as a tuple."""
  if not sources or not all(isinstance(s, Span) for s in sources):
    return tuple(sources)
  files: dict[str, int] = {}
  table = np.array([(files.setdefault(s.file, len(files)), s.line, s.offset, s.length) for s in sources], np.int64)
  return Packed(tuple(files), table)


def unpack(sources) -> tuple:
  """The sources `pack` was given."""
  if not isinstance(sources, Packed):
    return tuple(sources)
  return tuple(Span(sources.files[f], line, offset, length) for f, line, offset, length in sources.table.tolist())


def input_files(path: str, suffixes: tuple[str, ...]) -> list[str]:
  """`path` itself if a file, else its files ending in `suffixes` (recursively, sorted)."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise DataError(f"{path}: no such file or directory")
  files = tree_files(path, suffixes)
  if not files:
    raise DataError(f"{path}: no input files ({' or '.join('*' + s for s in suffixes)}) in this folder")
  return files


def tree_files(path: str, suffixes: tuple[str, ...]) -> list[str]:
  """Files under the folder `path` ending in `suffixes`, sorted. Symbolic links are followed, but a
  folder already visited (a link back up: a loop) is not entered again, and a file reached by a second
  path (a link to it) is listed once, by its first path in sorted order."""
  seen_dirs, found = set(), []
  for folder, dirs, names in os.walk(path, followlinks=True):
    st = os.stat(folder)
    if (st.st_dev, st.st_ino) in seen_dirs:
      dirs[:] = []
      continue
    seen_dirs.add((st.st_dev, st.st_ino))
    found += [os.path.join(folder, n) for n in names if n.endswith(suffixes)]
  seen_files, out = set(), []
  for p in sorted(found):
    if not os.path.isfile(p):
      continue
    st = os.stat(p)
    if (st.st_dev, st.st_ino) not in seen_files:
      seen_files.add((st.st_dev, st.st_ino))
      out.append(p)
  return out


def line_spans(path: str) -> list[Span]:
  """One span per non-blank line."""
  out = []
  with open(path, "rb") as f:
    offset = 0
    for number, raw in enumerate(f, 1):
      body = raw.rstrip(b"\r\n")
      if body.strip():
        out.append(Span(path, number, offset, len(body)))
      offset += len(raw)
  return out


def paragraph_spans(path: str) -> list[Span]:
  """One span per paragraph: a run of non-blank lines (blank lines separate paragraphs)."""
  out, start = [], None  # start: (line, offset) of the open paragraph
  end = 0
  with open(path, "rb") as f:
    offset = 0
    for number, raw in enumerate(f, 1):
      blank = not raw.strip()
      if blank and start is not None:
        out.append(Span(path, start[0], start[1], end - start[1]))
        start = None
      elif not blank:
        start = start or (number, offset)
        end = offset + len(raw.rstrip(b"\r\n"))
      offset += len(raw)
  if start is not None:
    out.append(Span(path, start[0], start[1], end - start[1]))
  return out


def read_spans(spans: Iterable[Span]) -> Iterator[tuple[Span, bytes]]:
  """The bytes of each span, in order; consecutive spans of one file come from one read."""
  run: list[Span] = []
  for span in spans:
    if run and (span.file != run[0].file or span.offset < run[-1].offset or
                span.offset + span.length - run[0].offset > _MAX_READ):
      yield from _read_run(run)
      run = []
    run.append(span)
  if run:
    yield from _read_run(run)


def _read_run(run: list[Span]) -> Iterator[tuple[Span, bytes]]:
  base = run[0].offset
  with open(run[0].file, "rb") as f:
    f.seek(base)
    data = f.read(run[-1].offset + run[-1].length - base)
  for span in run:
    yield span, data[span.offset - base:span.offset - base + span.length]


def decode(span: Span, data: bytes) -> str:
  """UTF-8 text of a span; raises InputError naming the line that holds the bad byte."""
  return decode_text(data, span.file, span.line, span.offset == 0)


def decode_text(data: bytes, file: str, line: int, file_start: bool) -> str:
  """`data` (starting at `line` of `file`) as UTF-8 text (lst_jax.data.text_encoding); an
  InputError naming the line for UTF-16 text, binary data or bytes that are not UTF-8."""
  try:
    return text_encoding.decode_utf8(data, file_start)
  except text_encoding.EncodingProblem as e:
    raise InputError(file, str(e), line + data[:e.offset].count(b"\n")) from None


def json_objects(spans: Iterable[Span]) -> Iterator[tuple[Span, dict | InputError]]:
  """Each span parsed as one JSON object, or the InputError saying why it is not one."""
  for span, data in read_spans(spans):
    try:
      obj = json.loads(decode(span, data))
    except InputError as e:
      yield span, e
      continue
    except json.JSONDecodeError as e:
      yield span, InputError(span.file, f"malformed JSON: {e.msg} (column {e.colno})", span.line)
      continue
    except ValueError as e:  # e.g. an integer of more than 4300 digits
      yield span, InputError(span.file, f"unusable JSON: {str(e).split(';')[0]}", span.line)
      continue
    if not isinstance(obj, dict):
      yield span, InputError(span.file, f"expected a JSON object, got {type(obj).__name__}", span.line)
      continue
    yield span, obj
