"""A folder tree of audio with transcripts: NAME.wav / NAME.flac with NAME.txt beside it,
or the LibriSpeech layout (one `*.trans.txt` per folder, lines "ID TRANSCRIPT", audio ID.flac).

Audio of any sample rate is loaded as 16 kHz mono (lst_jax.data.audio); units come
from the built-in quantizer and word times from the forced aligner. Other .txt
files with no audio beside them (a README) are ignored; audio with no
transcript is an error, and so is a transcript line whose audio is missing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Sequence

from data_prep.formats import spans as spans_lib
from data_prep.formats.items import SPEECH, InputError, Item, Options
from lst_jax.data.manifest import DataError

KIND = SPEECH
AUDIO_SUFFIXES = (".flac", ".wav")
TRANS_SUFFIX = ".trans.txt"


@dataclasses.dataclass(frozen=True)
class AudioSource:
  id: str
  audio: str                # audio file (it may be missing: parsing says so)
  transcript: str | None    # NAME.txt or the *.trans.txt holding the line; None: there is none
  line: int | None = None   # the line in a *.trans.txt
  text: bytes | None = None  # that line's transcript (LibriSpeech)


def list_sources(path: str) -> list[AudioSource]:
  if not os.path.isdir(path):
    raise DataError(f"{path}: --format=audio reads a folder (NAME.wav + NAME.txt, or LibriSpeech "
                    f"*.trans.txt), and this is not one")
  out = []
  for folder, dirs, files in os.walk(path):
    dirs.sort()
    out += folder_sources(folder, sorted(files), path)
  if not out:
    raise DataError(f"{path}: no audio ({', '.join(AUDIO_SUFFIXES)}) or *{TRANS_SUFFIX} files found")
  return out


def folder_sources(folder: str, files: list[str], root: str) -> list[AudioSource]:
  """Sources of one folder; ids: LibriSpeech ids, else the audio's path under `root` sans suffix."""
  names = set(files)
  audio = {os.path.splitext(f)[0]: f for f in files if f.endswith(AUDIO_SUFFIXES)}
  out, listed = [], set()
  for trans in (f for f in files if f.endswith(TRANS_SUFFIX)):
    path = os.path.join(folder, trans)
    with open(path, "rb") as f:
      for number, raw in enumerate(f, 1):
        if not raw.strip():
          continue
        id_bytes, _, text = raw.strip().partition(b" ")
        id_ = id_bytes.decode("utf-8", "replace")
        listed.add(id_)
        file = audio.get(id_, id_ + AUDIO_SUFFIXES[0])
        out.append(AudioSource(id_, os.path.join(folder, file), path, number, text))
  for stem, file in audio.items():
    if stem in listed:
      continue
    txt = stem + ".txt"
    out.append(AudioSource(os.path.relpath(os.path.join(folder, stem), root), os.path.join(folder, file),
                           os.path.join(folder, txt) if txt in names else None))
  return out


def parse(sources: Sequence[AudioSource], options: Options) -> Iterator[Item | InputError]:
  del options
  for s in sources:
    try:
      yield item(s)
    except InputError as e:
      yield e


def item(s: AudioSource) -> Item:
  if s.transcript is None:
    raise InputError(s.audio, f"no transcript: expected {os.path.splitext(s.audio)[0]}.txt beside it "
                     f"or a line for {s.id!r} in a *{TRANS_SUFFIX}")
  if s.text is not None:
    raw, file, line = s.text, s.transcript, s.line
  else:
    with open(s.transcript, "rb") as f:
      raw, file, line = f.read(), s.transcript, None
  words = tuple(spans_lib.decode_text(raw, file, line or 1, line is None).split())
  if not words:
    raise InputError(file, f"empty transcript for {s.id!r}", line)
  return Item(id=s.id, file=file if s.text is not None else s.audio, line=line, words=words, audio=s.audio)
