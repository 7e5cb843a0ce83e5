"""King James Bible verses from Debian's `bible-kjv`: real public-domain text, no download.

The `bible` CLI with `-f` (pretty-printing off) prints one verse per line as
"Ge1:3 And God said, Let there be light: and there was light." We split each
verse into words (letters with inner apostrophes/hyphens, possessive "sons'"
kept) for tokenization and alignment, and keep each word's trailing
punctuation only as a prosody hint for the synthesizer.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

WHOLE_BIBLE = "Gen1:1-Rev22:21"
_LINE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
# A word, then (up to the next word) the first prosody mark, which is never a word itself.
_WORD_AND_MARK = re.compile(r"([A-Za-z]+(?:['-][A-Za-z]+)*'?)[^A-Za-z,;:.!?]*([,;:.!?]?)[^A-Za-z]*")


class BibleError(RuntimeError):
  """The `bible` CLI is missing or printed something we cannot parse."""


@dataclasses.dataclass(frozen=True)
class Verse:
  ref: str                   # "Ge1:3" as the CLI prints it
  book: str                  # "Ge"
  text: str                  # the verse as printed
  words: tuple[str, ...]     # punctuation-free words, in order
  spoken: tuple[str, ...]    # words[i] plus its trailing punctuation (for TTS only)


def split_words(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """Returns (words, spoken): the words of `text` and each word with the punctuation after it."""
  pairs = _WORD_AND_MARK.findall(text)
  return tuple(w for w, _ in pairs), tuple(w + mark for w, mark in pairs)


def parse_verse(line: str) -> Verse:
  m = _LINE.match(line.strip())
  if not m:
    raise BibleError(f"cannot parse `bible -f` output line {line!r}")
  book, chapter, verse, text = m.groups()
  words, spoken = split_words(text)
  return Verse(ref=f"{book}{chapter}:{verse}", book=book, text=text, words=words, spoken=spoken)


def read_verses(spec: str = WHOLE_BIBLE) -> list[Verse]:
  """Runs `bible -f <spec>` (e.g. "Ps23", "Pr1-3", "Mt5:1-20") and parses every verse."""
  exe = shutil.which("bible")
  if exe is None:
    raise BibleError("the `bible` command is missing; the demo corpus needs the KJV text: "
                     "run `sudo apt-get install bible-kjv` (or `make setup`)")
  out = subprocess.run([exe, "-f", spec], capture_output=True, text=True, check=False,
                       env={"COLUMNS": "100000", "PATH": "/usr/bin:/bin"})
  if out.returncode != 0:
    raise BibleError(f"`bible -f {spec}` failed ({out.returncode}): {out.stderr.strip()}")
  verses = [parse_verse(line) for line in out.stdout.splitlines() if line.strip()]
  if not verses:
    raise BibleError(f"`bible -f {spec}` printed no verses")
  return [v for v in verses if v.words]
