"""The stored unit of data: one word-aligned utterance or one text-only document.

Utterances are stored un-interleaved so that interleaving and patching can be
re-drawn every epoch (paper.md section 4). One record is a msgpack map:

  schema        int, RECORD_SCHEMA
  id            str, unique within the dataset
  kind          "speech" (word-aligned utterance) or "text" (text-only document)
  text_ids      int32 [N]     SentencePiece ids of all words, in order
  word_offsets  int32 [W + 1] word w owns text_ids[word_offsets[w]:word_offsets[w+1]]
  units         int32 [U]     speech unit ids in [0, num_units); empty for text
  word_spans    int32 [W, 2]  unit span [start, end) of each word; [0, 2] for text.
                              Units not covered by a word are silence.
  unit_rate     float         units per second (25.0 for HuBERT-style units)
"""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np

RECORD_SCHEMA = 1
SPEECH = "speech"
TEXT = "text"


class RecordError(ValueError):
  """A record violates the schema; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class Record:
  id: str
  kind: str
  text_ids: np.ndarray
  word_offsets: np.ndarray
  units: np.ndarray
  word_spans: np.ndarray
  unit_rate: float = 25.0

  @property
  def num_words(self) -> int:
    return len(self.word_offsets) - 1

  def validate(self, num_units: int | None = None, text_vocab: int | None = None) -> "Record":
    """Checks every invariant the pipeline relies on; raises RecordError naming the field."""
    where = f"record {self.id!r}"
    if self.kind not in (SPEECH, TEXT):
      raise RecordError(f"{where}: kind must be {SPEECH!r} or {TEXT!r}, got {self.kind!r}")
    offsets = self.word_offsets
    if offsets.ndim != 1 or len(offsets) < 2:
      raise RecordError(f"{where}: word_offsets must hold at least one word (got {offsets.tolist()})")
    if offsets[0] != 0 or offsets[-1] != len(self.text_ids) or np.any(np.diff(offsets) <= 0):
      raise RecordError(f"{where}: word_offsets must rise strictly from 0 to len(text_ids)="
                        f"{len(self.text_ids)}; every word needs at least one token")
    if text_vocab is not None and len(self.text_ids) and (
        self.text_ids.min() < 0 or self.text_ids.max() >= text_vocab):
      raise RecordError(f"{where}: text id outside the tokenizer's [0, {text_vocab})")
    if self.kind == TEXT:
      if len(self.units) or len(self.word_spans):
        raise RecordError(f"{where}: a text record carries no units or word spans")
      return self
    spans = self.word_spans
    if spans.shape != (self.num_words, 2):
      raise RecordError(f"{where}: word_spans must be [{self.num_words}, 2], got {list(spans.shape)}")
    if np.any(spans[:, 1] <= spans[:, 0]):
      raise RecordError(f"{where}: every word span needs end > start")
    if spans[0, 0] < 0 or spans[-1, 1] > len(self.units):
      raise RecordError(f"{where}: word spans run outside the {len(self.units)} units")
    if np.any(spans[1:, 0] < spans[:-1, 1]):
      raise RecordError(f"{where}: word spans overlap or are out of order")
    if num_units is not None and len(self.units) and (
        self.units.min() < 0 or self.units.max() >= num_units):
      raise RecordError(f"{where}: unit id outside the codebook's [0, {num_units})")
    if not self.unit_rate > 0:
      raise RecordError(f"{where}: unit_rate must be positive, got {self.unit_rate}")
    return self


def speech_record(id: str, text_ids_per_word, units, word_spans, unit_rate=25.0) -> Record:
  """Builds a speech record from per-word token lists."""
  return _from_words(id, SPEECH, text_ids_per_word, units, word_spans, unit_rate)


def text_record(id: str, text_ids_per_word) -> Record:
  """Builds a text-only record from per-word token lists."""
  return _from_words(id, TEXT, text_ids_per_word, [], np.zeros((0, 2)), 25.0)


def _from_words(id, kind, text_ids_per_word, units, word_spans, unit_rate) -> Record:
  lengths = [len(w) for w in text_ids_per_word]
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
  flat = [t for w in text_ids_per_word for t in w]
  return Record(id=str(id), kind=kind, text_ids=np.asarray(flat, np.int32), word_offsets=offsets,
                units=np.asarray(units, np.int32),
                word_spans=np.asarray(word_spans, np.int32).reshape(-1, 2),
                unit_rate=float(unit_rate))


def encode(record: Record) -> bytes:
  """Serializes a record to msgpack bytes (arrays stored as little-endian int32)."""
  return msgpack.packb({
      "schema": RECORD_SCHEMA, "id": record.id, "kind": record.kind,
      "text_ids": _pack(record.text_ids), "word_offsets": _pack(record.word_offsets),
      "units": _pack(record.units), "word_spans": _pack(record.word_spans.reshape(-1)),
      "unit_rate": float(record.unit_rate)})


def decode(data: bytes) -> Record:
  """Parses bytes written by `encode`; raises RecordError on an unknown schema."""
  try:
    m = msgpack.unpackb(data)
  except Exception as e:  # msgpack raises several unrelated types
    raise RecordError(f"not a valid record: {e}") from e
  if m.get("schema") != RECORD_SCHEMA:
    raise RecordError(f"record schema {m.get('schema')!r}, this version reads {RECORD_SCHEMA}")
  return Record(id=m["id"], kind=m["kind"], text_ids=_unpack(m["text_ids"]),
                word_offsets=_unpack(m["word_offsets"]), units=_unpack(m["units"]),
                word_spans=_unpack(m["word_spans"]).reshape(-1, 2), unit_rate=m["unit_rate"])


def _pack(a) -> bytes:
  return np.ascontiguousarray(a, dtype="<i4").tobytes()


def _unpack(b: bytes) -> np.ndarray:
  """A read-only int32 view of the bytes (no copy on little-endian hosts)."""
  return np.frombuffer(b, dtype="<i4")
