"""One shard's work, run in a worker process: parse its sources, convert, write it (or reuse it).

A shard holds a fixed run of input entries (entries [i * shard_size, (i + 1) *
shard_size) in listing order), so its name and contents are a pure function of
the input and the settings. Its fingerprint hashes the settings (format,
tokenizer, units) and its entries' bytes (for audio: each file's size and
mtime, and the transcript); a rerun whose journal has the same fingerprint for
a shard that is on disk reuses it without touching it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Sequence

import numpy as np

from data_prep import convert, shards
from data_prep.formats import READERS, audio_folder, spans as spans_lib
from data_prep.formats.items import TEXT, InputError, Options
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import records as records_lib
from lst_jax.data import tokenizer

FAIL, SKIP = "fail", "skip"
QUANTIZE_BATCH = 64          # audio items whose features are quantized together
_CACHE: dict[Any, Any] = {}  # per process: tokenizer and codebook, loaded once
_PROGRESS = None             # a multiprocessing.Value shared with the parent: entries finished


def init_worker(counter) -> None:
  """Pool initializer: where to count finished entries (the parent prints progress from it)."""
  global _PROGRESS
  _PROGRESS = counter


def _tick(n: int = 1) -> None:
  if _PROGRESS is not None:
    with _PROGRESS.get_lock():
      _PROGRESS.value += n


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every job needs (small, picklable)."""
  format: str
  output: str
  tokenizer: str              # path of the dataset's tokenizer.model
  codebook_dir: str | None    # directory of codebook.npy + feature_stats.npy (audio builds)
  options: Options
  on_error: str
  salt: str                   # hash of what the output depends on besides the entries


@dataclasses.dataclass(frozen=True)
class Job:
  name: str                   # shard path relative to the output
  sources: tuple
  done: dict | None = None    # the journal's entry for this shard from an earlier run


@dataclasses.dataclass
class Result:
  name: str
  fingerprint: str
  entries: int
  stats: dict
  errors: list[dict]
  reused: bool = False
  failure: InputError | None = None  # --on_error=fail: the first bad entry (nothing written)

  def journal(self) -> dict:
    return {"shard": self.name, "fingerprint": self.fingerprint, "stats": self.stats, "errors": self.errors}


def run(job: Job, settings: Settings) -> Result:
  fingerprint = digest(job.sources, settings.salt)
  path = os.path.join(settings.output, job.name)
  done = job.done
  if done and done["fingerprint"] == fingerprint and (os.path.isfile(path) or done["stats"]["records"] == 0):
    _tick(len(job.sources))
    if done["errors"] and settings.on_error == FAIL:  # an earlier --on_error=skip run skipped these
      e = done["errors"][0]
      return Result(job.name, fingerprint, len(job.sources), {}, [],
                    failure=InputError(e["file"], e["error"], e["line"], e.get("record")))
    return Result(job.name, fingerprint, len(job.sources), done["stats"], done["errors"], reused=True)
  converted, errors = convert_sources(job.sources, settings)
  if errors and settings.on_error == FAIL:
    return Result(job.name, fingerprint, len(job.sources), {}, [], failure=errors[0])
  if converted:
    shards.write_shard(path, [records_lib.encode(c.record) for c in converted])
  elif os.path.exists(path):
    os.remove(path)  # an earlier run's shard for entries that are all bad now
  return Result(job.name, fingerprint, len(job.sources), shard_stats(converted),
                [e.to_json() for e in errors])


def convert_sources(sources: Sequence, settings: Settings) -> tuple[list[convert.Converted], list[InputError]]:
  """Every source as a record, or as the error that says why it is not one (input order kept)."""
  reader = READERS[settings.format]
  encode = _tokenizer(settings.tokenizer)
  out: list = []  # Converted | InputError | Analysis (audio, until its batch is quantized)
  analyses: list[int] = []  # indices in `out` of audio items waiting to be quantized

  def quantize_waiting():
    batch = convert.audio_items([out[i] for i in analyses], encode, _codebook(settings.codebook_dir))
    for i, c in zip(analyses, batch):
      out[i] = c
    analyses.clear()

  for parsed in reader.parse(sources, settings.options):
    if isinstance(parsed, InputError):
      out.append(parsed)
    elif reader.KIND == TEXT:
      out.append(_attempt(convert.text_item, parsed, encode))
    elif parsed.audio is None:
      out.append(_attempt(convert.units_item, parsed, encode, settings.options.num_units))
    else:  # features are large: quantize in batches, keep only the units
      out.append(_attempt(convert.analyze, parsed))
      if not isinstance(out[-1], InputError):
        analyses.append(len(out) - 1)
      if len(analyses) >= QUANTIZE_BATCH:
        quantize_waiting()
    _tick()
    if settings.on_error == FAIL and isinstance(out[-1], InputError):
      break
  if analyses:
    quantize_waiting()
  return [c for c in out if isinstance(c, convert.Converted)], [e for e in out if isinstance(e, InputError)]


def _attempt(fn, *args):
  try:
    return fn(*args)
  except InputError as e:
    return e


def shard_stats(converted: Sequence[convert.Converted]) -> dict:
  """Counts for the manifest and the summary."""
  recs = [c.record for c in converted]
  speech = [r for r in recs if r.kind == records_lib.SPEECH]
  units = sum(len(r.units) for r in speech)
  in_words = sum(int(np.sum(r.word_spans[:, 1] - r.word_spans[:, 0])) for r in speech)
  return {"records": len(recs), "words": sum(r.num_words for r in recs),
          "text_tokens": sum(len(r.text_ids) for r in recs), "units": units,
          "silence_units": units - in_words, "seconds": round(sum(c.seconds for c in converted), 3)}


def transcripts(sources: Sequence, settings: Settings) -> tuple[list[str], list[InputError]]:
  """The words of every parsable entry, one line each (the tokenizer's training text)."""
  lines, errors = [], []
  for parsed in READERS[settings.format].parse(sources, settings.options):
    if isinstance(parsed, InputError):
      errors.append(parsed)
    else:
      lines.append(" ".join(parsed.words))
  return lines, errors


def fit_features(sources: Sequence, settings: Settings) -> tuple[list[np.ndarray], list[InputError]]:
  """Features of audio entries, for fitting the codebook (no alignment needed)."""
  feats, errors = [], []
  for parsed in READERS[settings.format].parse(sources, settings.options):
    try:
      if isinstance(parsed, InputError):
        raise parsed
      feats.append(convert.load_features(parsed)[0])
    except InputError as e:
      errors.append(e)
  return feats, errors


def digest(sources: Sequence, salt: str) -> str:
  h = hashlib.sha256(salt.encode())
  spans = [s for s in sources if isinstance(s, spans_lib.Span)]
  for span, data in spans_lib.read_spans(spans):
    h.update(f"{span.file}\0{span.line}\0{len(data)}\0".encode())
    h.update(data)
  for s in sources:
    if isinstance(s, audio_folder.AudioSource):
      h.update(repr((s.id, s.audio, _stat(s.audio), s.transcript, s.line, s.text,
                     None if s.text is not None or s.transcript is None else _stat(s.transcript))).encode())
  return h.hexdigest()


def _stat(path: str):
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_size, st.st_mtime_ns


def _tokenizer(path: str) -> convert.WordTokenizer:
  key = ("sp", path, _stat(path))
  if key not in _CACHE:
    _CACHE[key] = convert.WordTokenizer(tokenizer.load(path))
  return _CACHE[key]


def _codebook(directory: str) -> codebook_lib.Codebook:
  key = ("codebook", directory, _stat(os.path.join(directory, codebook_lib.CODEBOOK)))
  if key not in _CACHE:
    _CACHE[key] = codebook_lib.load(directory)
  return _CACHE[key]
