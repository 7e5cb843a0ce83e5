"""Plain UTF-8 text: a file, or a folder of *.txt files; each paragraph is one text-only document.

Paragraphs (runs of non-blank lines, separated by blank lines) rather than
lines, because a document should keep its context and wrapped prose breaks
lines mid-sentence; put one document per line with a blank line between
them if your documents are lines. Words are whitespace-separated tokens.
A document's id is FILE:LINE of its first line.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from data_prep.formats import spans as spans_lib
from data_prep.formats.items import TEXT, InputError, Item, Options

KIND = TEXT


def list_sources(path: str) -> list[spans_lib.Span]:
  return [s for f in spans_lib.input_files(path, (".txt",)) for s in spans_lib.paragraph_spans(f)]


def parse(sources: Sequence[spans_lib.Span], options: Options) -> Iterator[Item | InputError]:
  del options
  for span, data in spans_lib.read_spans(sources):
    try:
      words = tuple(spans_lib.decode(span, data).split())
    except InputError as e:
      yield InputError(e.file, e.what, e.line, f"{span.file}:{span.line}")
      continue
    yield Item(id=f"{span.file}:{span.line}", file=span.file, line=span.line, words=words)
