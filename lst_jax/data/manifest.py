"""The JSON manifest that describes one prepared dataset directory.

  <dir>/manifest.json
  {
    "schema": 1, "name": "demo",
    "tokenizer": {"path": "tokenizer.model", "sha256": "...", "vocab_size": 1000},
    "units": {"quantizer": "logmel-kmeans", "num_units": 500, "frame_rate": 25.0,
              "codebook": "codebook.npy", "codebook_sha256": "...", "features": {...},
              "vocoder_bank": "vocoder_bank.npz", "vocoder_bank_sha256": "..."},   # optional
    "splits": {"train":   {"speech": [shard, ...], "text": [shard, ...],
                           "num_speech": n, "num_text": n, "speech_hours": h, "voices": [...]},
               "heldout": {..., "audio": "audio/heldout"}},   # optional: lst_jax.data.heldout_audio
    "build": {...},     # free-form: the settings that produced the data (for reuse checks)
    "shards": {"train/speech-00000-of-00002.array_record": {"records": n, "bytes": n, "sha256": "..."}}
  }

Shard paths are relative to the directory. Opening a dataset checks each shard's
size against "shards" (cheap; `python -m data_prep.maintenance.verify` checks the sha256 and
every record). Training refuses data whose unit or
tokenizer provenance is missing, since silently mismatched units are the most
common way spoken-LM pipelines go wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from lst_jax import storage

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1


class DataError(ValueError):
  """The dataset directory is missing, incomplete or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Split:
  speech: tuple[str, ...]  # absolute shard paths
  text: tuple[str, ...]
  num_speech: int
  num_text: int
  speech_hours: float


@dataclasses.dataclass(frozen=True)
class Manifest:
  dir: str
  name: str
  tokenizer_path: str | None   # None: a dataset without a tokenizer (synthetic text ids)
  tokenizer_sha256: str | None
  text_vocab_size: int
  num_units: int
  unit_rate: float
  units: dict
  splits: dict[str, Split]
  raw: dict
  shard_records: dict = dataclasses.field(default_factory=dict)  # absolute shard path -> record count

  def load_tokenizer(self):
    """The dataset's SentencePiece model, refused (DataError) unless its sha256 is the manifest's."""
    from lst_jax.data import tokenizer  # sentencepiece: only for who needs it
    if self.tokenizer_path is None:
      raise DataError(f"{self.dir}: this dataset has no tokenizer (its text ids are synthetic)")
    data = storage.read_bytes(self.tokenizer_path)
    got = hashlib.sha256(data).hexdigest()
    if got != self.tokenizer_sha256:
      raise DataError(f"{self.tokenizer_path}: sha256 {got[:16]}... differs from the manifest's "
                      f"{self.tokenizer_sha256[:16]}...: the tokenizer changed since the dataset was built, so "
                      f"its text ids would mean other words; put the dataset's tokenizer back")
    return tokenizer.load(data)

  @property
  def limits(self) -> tuple[int, int]:
    """(units, text pieces): every stored id must be below these (lst_jax.data.shards checks)."""
    return self.num_units, self.text_vocab_size

  def split(self, name: str) -> Split:
    if name not in self.splits:
      raise DataError(f"{self.dir}: no split {name!r}; the manifest has {sorted(self.splits)}")
    return self.splits[name]


def sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with storage.open_file(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def write_manifest(directory: str, manifest: dict) -> str:
  """Writes manifest.json atomically (a reader never sees half a manifest)."""
  path = storage.join(directory, MANIFEST)
  storage.write_json(path, {"schema": MANIFEST_SCHEMA, **manifest}, sort_keys=True)
  return path


def _check_size(shard: str, size: int, info: dict | None, directory: str) -> None:
  if info is None or "bytes" not in info:
    return
  if size != int(info["bytes"]):
    raise DataError(f"{shard}: {size} bytes, the manifest says {info['bytes']}: the shard changed after the "
                    f"build; check it with `python -m data_prep.maintenance.verify {directory}` and rebuild it")


# units entries naming a file, each with <key>_sha256 ("vocoder_bank": lst_jax.data.vocoder's exemplar audio)
UNIT_FILE_KEYS = ("codebook", "feature_stats", "kmeans", "vocoder_bank")


def check_named_files(raw: dict, path: str) -> None:
  """Every path the manifest names stays inside its dataset (relative, no '..'), and every file it
  names for reading ids' meaning (tokenizer, quantizer files) has its sha256: DataError otherwise."""
  tok, units = raw["tokenizer"], raw["units"]
  named = [("tokenizer.path", tok.get("path"))]
  named += [(f"units.{k}", units.get(k)) for k in UNIT_FILE_KEYS + ("kmeans_joblib",)]
  named += [(f"splits.{name}", p) for name, s in raw["splits"].items() for k in ("speech", "text")
            for p in s.get(k, [])]
  for what, rel in named:
    if rel is None:
      continue
    parts = str(rel).replace("\\", "/").split("/")
    if not isinstance(rel, str) or not rel or rel.startswith("/") or storage.is_url(rel) or ".." in parts:
      raise DataError(f"{path}: {what} {rel!r} leaves the dataset folder; every path a manifest names is "
                      f"relative and inside it")
  hashes = [("tokenizer.sha256", tok.get("sha256"))] * (tok.get("path") is not None)
  hashes += [(f"units.{k}_sha256", units.get(f"{k}_sha256")) for k in UNIT_FILE_KEYS if units.get(k)]
  for what, value in hashes:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
      raise DataError(f"{path}: {what} is {value!r}, not a sha256: the file's hash is required (it says the "
                      f"ids mean what they meant at the build)")


def load_manifest(directory: str) -> Manifest:
  """Reads and checks <directory>/manifest.json; raises DataError saying what is wrong."""
  try:
    storage.check_reachable(directory, "data directory")
  except storage.StorageError as e:
    raise DataError(str(e)) from None
  if not storage.isdir(directory):
    raise DataError(f"data directory {directory!r} does not exist; build it first "
                    f"(the demo: `make data`, or `python -m data_prep.corpus.demo --output={directory}`)")
  path = storage.join(directory, MANIFEST)
  if not storage.isfile(path):
    raise DataError(f"{directory!r} has no {MANIFEST}: it is not a prepared dataset "
                    f"(or its preparation did not finish)")
  try:
    raw = json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not valid JSON ({e})") from e
  try:
    if raw.get("schema") != MANIFEST_SCHEMA:
      raise DataError(f"{path}: schema {raw.get('schema')!r}, this version reads {MANIFEST_SCHEMA}")
    tok, units = raw["tokenizer"], raw["units"]
    check_named_files(raw, path)
    splits = {}
    listed = [storage.join(directory, p) for s in raw["splits"].values() for k in ("speech", "text")
              for p in s.get(k, [])]
    on_disk = storage.file_sizes(listed, directory)  # one listing on object storage
    for name, s in raw["splits"].items():
      shards = {k: tuple(storage.join(directory, p) for p in s.get(k, [])) for k in ("speech", "text")}
      for rel, p in zip(s.get("speech", []) + s.get("text", []), shards["speech"] + shards["text"]):
        if p not in on_disk:
          raise DataError(f"{path}: split {name!r} lists shard {p}, which does not exist")
        _check_size(p, on_disk[p], raw.get("shards", {}).get(rel), directory)
      splits[name] = Split(speech=shards["speech"], text=shards["text"],
                           num_speech=int(s.get("num_speech", 0)), num_text=int(s.get("num_text", 0)),
                           speech_hours=float(s.get("speech_hours", 0.0)))
    return Manifest(dir=directory, name=raw.get("name", directory.rstrip("/").rsplit("/", 1)[-1]),
                    tokenizer_path=storage.join(directory, tok["path"]) if tok["path"] is not None else None,
                    tokenizer_sha256=tok["sha256"], text_vocab_size=int(tok["vocab_size"]),
                    num_units=int(units["num_units"]), unit_rate=float(units["frame_rate"]),
                    units=units, splits=splits, raw=raw,
                    shard_records={storage.join(directory, p): int(info["records"])
                                   for p, info in raw.get("shards", {}).items() if "records" in info})
  except KeyError as e:
    raise DataError(f"{path}: missing field {e}") from e
