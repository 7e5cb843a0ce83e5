"""Likelihood benchmarks as JSONL: what an item is, reading and writing files, provenance.

A benchmark file holds one JSON object per line. The first line may be a header
(an object with the key "header"); every other line is an item:

  {"header": {"name": "cloze2", "description": "...",
              "units": {...the "units" entry of the dataset's manifest.json...},
              "tokenizer": {"sha256": "...", "vocab_size": 1000}}}
  {"id": "Ge1:3", "prompt": {"text": "And God said", "units": [12, 7, 7, ...]},
   "candidates": [{"text": "Let there be light", "units": [...]}, {"text": "...", "units": [...]}],
   "label": 0}

A prompt or candidate (a "segment") gives its text and/or its speech:
  text       a string, tokenized with the checkpoint's tokenizer word by word (as training did)
  text_ids   SentencePiece ids (needs header.tokenizer)
  units      speech unit ids in [0, num_units) (needs header.units)
  audio      a WAV/FLAC path, relative to the JSONL file; converted to units with the
             checkpoint dataset's quantizer (codebook and feature settings)
A direction X->Y (S = speech, T = text) is evaluated when every prompt gives X and
every candidate gives Y. `label` is the index of the correct candidate. A prompt of {}
means none: each candidate is scored on its own (as in sWUGGY); such a file names its
directions in header.directions (e.g. ["S->S"]).

Whatever provenance the header declares must match the checkpoint's data (the
run's <workdir>/data_provenance.json); a mismatch is refused, naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Sequence

import numpy as np

from lst_jax import storage
from lst_jax.data import provenance as provenance_lib
from lst_jax.data import text_encoding
from lst_jax.data.manifest import DataError

SPEECH, TEXT = "S", "T"
DIRECTIONS = ("S->S", "T->T", "S->T", "T->S")   # prompt modality -> candidate modality
SEGMENT_KEYS = ("text", "text_ids", "units", "audio")
MAX_ID = 2**31  # text ids and unit ids are int32


class BenchmarkError(DataError):
  """A benchmark file is malformed or does not fit the checkpoint; the message says where."""


def parse_direction(direction: str) -> tuple[str, str]:
  """"S->T" -> ("S", "T")."""
  parts = direction.split("->")
  if len(parts) != 2 or any(p not in (SPEECH, TEXT) for p in parts):
    raise ValueError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")
  return parts[0], parts[1]


@dataclasses.dataclass(frozen=True)
class Segment:
  """A prompt or a candidate in the forms it is given (any may be None)."""
  text: str | None = None
  text_ids: tuple[int, ...] | None = None
  units: tuple[int, ...] | None = None
  audio: str | None = None     # absolute path

  def has(self, modality: str) -> bool:
    if modality == TEXT:
      return self.text is not None or self.text_ids is not None
    return self.units is not None or self.audio is not None

  def to_json(self, base_dir: str | None = None) -> dict:
    out = {}
    if self.text is not None:
      out["text"] = self.text
    if self.text_ids is not None:
      out["text_ids"] = [int(i) for i in self.text_ids]
    if self.units is not None:
      out["units"] = [int(u) for u in self.units]
    if self.audio is not None:
      out["audio"] = os.path.relpath(self.audio, base_dir) if base_dir else self.audio
    return out


NO_PROMPT = Segment(units=(), text="")   # "prompt": {}: the candidates are scored alone, in any modality


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  prompt: Segment
  candidates: tuple[Segment, ...]
  label: int
  extra: dict = dataclasses.field(default_factory=dict)   # other keys, kept on a round trip

  def to_json(self, base_dir: str | None = None) -> dict:
    prompt = {} if self.prompt == NO_PROMPT else self.prompt.to_json(base_dir)
    return {"id": self.id, **self.extra, "prompt": prompt,
            "candidates": [c.to_json(base_dir) for c in self.candidates], "label": self.label}


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  path: str
  header: dict
  items: tuple[Item, ...]

  def directions(self) -> list[str]:
    """The directions every item supports, in DIRECTIONS order (only those header.directions names,
    if it does: an empty prompt, as in a published benchmark, supports any modality)."""
    out = []
    allowed = self.header.get("directions", DIRECTIONS)
    for d in DIRECTIONS:
      if d not in allowed:
        continue
      x, y = parse_direction(d)
      if self.items and all(it.prompt.has(x) and all(c.has(y) for c in it.candidates) for it in self.items):
        out.append(d)
    return out

  def uses(self, key: str) -> bool:
    """Whether any prompt or candidate gives `key` ("units", "text_ids", ...), not empty."""
    return any(getattr(s, key) for it in self.items for s in (it.prompt, *it.candidates))


def _segment(value, where: str, base_dir: str) -> Segment:
  if not isinstance(value, dict):
    raise BenchmarkError(f"{where}: must be an object with any of {', '.join(SEGMENT_KEYS)}")
  unknown = set(value) - set(SEGMENT_KEYS)
  if unknown:
    raise BenchmarkError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(SEGMENT_KEYS)}")
  if not value:
    raise BenchmarkError(f"{where}: empty; give text, text_ids, units or audio")
  text = value.get("text")
  if text is not None and (not isinstance(text, str) or not text.split()):
    raise BenchmarkError(f"{where}.text must be a non-empty string")

  def ints(key):
    v = value.get(key)
    if v is None:
      return None
    if not isinstance(v, list) or not v or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                   for i in v):
      raise BenchmarkError(f"{where}.{key} must be a non-empty list of non-negative integers")
    big = next((i for i in v if i >= MAX_ID), None)  # any size: numpy's int32 would overflow
    if big is not None:
      raise BenchmarkError(f"{where}.{key}: id {str(big)[:40]} is outside any vocabulary or codebook "
                           f"(ids are below {MAX_ID})")
    return tuple(v)

  audio = value.get("audio")
  if audio is not None:
    if not isinstance(audio, str) or not audio:
      raise BenchmarkError(f"{where}.audio must be a path")
    audio = storage.join(base_dir, audio) if storage.is_url(base_dir) else \
        storage.normal(os.path.join(base_dir, audio))
  return Segment(text=text, text_ids=ints("text_ids"), units=ints("units"), audio=audio)


def parse_item(obj, where: str, base_dir: str) -> Item:
  if not isinstance(obj, dict):
    raise BenchmarkError(f"{where}: an item must be a JSON object")
  for key in ("id", "prompt", "candidates", "label"):
    if key not in obj:
      raise BenchmarkError(f"{where}: missing {key!r} (an item has id, prompt, candidates, label)")
  cands = obj["candidates"]
  if not isinstance(cands, list) or len(cands) < 2:
    raise BenchmarkError(f"{where}: candidates must be a list of at least 2")
  label = obj["label"]
  if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(cands):
    raise BenchmarkError(f"{where}: label must be an index into the {len(cands)} candidates, got {label!r}")
  extra = {k: v for k, v in obj.items() if k not in ("id", "prompt", "candidates", "label")}
  prompt = NO_PROMPT if obj["prompt"] == {} else _segment(obj["prompt"], f"{where}: prompt", base_dir)
  return Item(id=str(obj["id"]), prompt=prompt,
              candidates=tuple(_segment(c, f"{where}: candidates[{i}]", base_dir) for i, c in enumerate(cands)),
              label=label, extra=extra)


def load_benchmark(path: str) -> Benchmark:
  """Reads and checks a benchmark JSONL file; raises BenchmarkError naming FILE:LINE."""
  if not storage.isfile(path):
    raise BenchmarkError(f"{path}: no such benchmark file")
  base = storage.parent(path)
  header, items, ids = {}, [], set()
  with storage.open_file(path, "rb") as f:
    for n, raw in enumerate(f, 1):
      where = f"{path}:{n}"
      line = _text_line(raw, where, n == 1)
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except ValueError as e:  # malformed, or an integer of more than 4300 digits
        raise BenchmarkError(f"{where}: not valid JSON ({str(e).split(';')[0]})") from None
      if isinstance(obj, dict) and "header" in obj:
        if items or header:
          raise BenchmarkError(f"{where}: the header must be the first line")
        if not isinstance(obj["header"], dict):
          raise BenchmarkError(f"{where}: header must be an object")
        header = obj["header"]
        continue
      item = parse_item(obj, where, base)
      if item.id in ids:
        raise BenchmarkError(f"{where}: duplicate id {item.id!r}")
      ids.add(item.id)
      items.append(item)
  if not items:
    raise BenchmarkError(f"{path}: no items")
  name = header.get("name") or os.path.splitext(path.rsplit("/", 1)[-1])[0]
  return Benchmark(name=str(name), path=path, header=header, items=tuple(items))


def _text_line(raw: bytes, where: str, first: bool) -> str:
  """One line of the file as UTF-8 text; UTF-16 and binary files are named as such."""
  try:
    return text_encoding.decode_utf8(raw, first)
  except text_encoding.EncodingProblem as e:
    raise BenchmarkError(f"{where}: {e}") from None


def write_benchmark(path: str, items: Sequence[Item], header: dict | None = None) -> str:
  """Writes a benchmark JSONL file atomically (header first); audio paths become relative."""
  base = os.path.dirname(storage.absolute(path))
  lines = [] if header is None else [json.dumps({"header": header}, sort_keys=True) + "\n"]
  lines += [json.dumps(item.to_json(base), separators=(",", ":")) + "\n" for item in items]
  storage.write_text(path, "".join(lines))
  return path


def find_benchmarks(paths: Iterable[str]) -> list[str]:
  """JSONL files named directly or found (not recursively) in the named directories, sorted."""
  out = []
  for p in paths:
    if storage.isdir(p):
      out += [storage.join(p, f) for f in storage.listdir(p) if f.endswith(".jsonl")]
    elif storage.isfile(p):
      out.append(p)
    else:
      raise BenchmarkError(f"{p}: no such benchmark file or directory")
  return out


def check_provenance(bench: Benchmark, run: dict, run_name: str = "the checkpoint's data") -> None:
  """Refuses a benchmark whose declared unit or tokenizer provenance differs from the run's.

  `run` is {"tokenizer": {...}, "units": {...}} (a manifest, or <workdir>/data_provenance.json).
  Unit ids need header.units and pre-tokenized text_ids need header.tokenizer: without
  them nothing says what the ids mean. Raises BenchmarkError naming the differing field.
  """
  header = bench.header
  if bench.uses("units") and "units" not in header:
    raise BenchmarkError(
        f"{bench.path}: gives speech units but its header declares no unit provenance; copy the "
        f"\"units\" entry of the manifest.json of the data those units come from into "
        f"{{\"header\": {{\"units\": ...}}}} on the first line (or give audio instead of units)")
  if bench.uses("text_ids") and "tokenizer" not in header:
    raise BenchmarkError(
        f"{bench.path}: gives text_ids but its header declares no tokenizer (sha256, vocab_size); "
        f"add it, or give text as strings")
  if "units" in header and not provenance_lib.has_units(run):
    raise BenchmarkError(f"{bench.path}: has speech units ({provenance_lib.units_source(header['units'])}) "
                         f"but {run_name} has none (units.source: none)")
  mine = {"tokenizer": header.get("tokenizer", run.get("tokenizer", {})),
          "units": header.get("units", run.get("units", {}))}
  try:
    provenance_lib.check_compatible(run, mine, run_name, f"benchmark {bench.path}")
  except DataError as e:
    raise BenchmarkError(str(e).replace("so they cannot share a dataset",
                                        "so this benchmark cannot score this checkpoint")) from None


def units_array(units: Sequence[int]) -> np.ndarray:
  return np.asarray(units, np.int32)
