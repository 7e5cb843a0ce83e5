"""One shard's work, run in a worker process: parse its sources, convert, write it (or reuse it).

A shard holds a fixed run of input entries (entries [i * shard_size, (i + 1) *
shard_size) in listing order), so its name and contents are a pure function of
the input and the settings. Its fingerprint hashes the settings (format,
tokenizer, units) and its entries' bytes (for audio: each file's size and
mtime, and the transcript); a rerun whose journal has the same fingerprint for
a shard that is on disk reuses it without touching it. The worker writes the
shard's journal entry (with every record's id, digest and place) itself and
returns the rest: the launching process holds nothing per record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Sequence

import numpy as np

from data_prep import shards
from data_prep.build import beam_options, convert, journal, shard_plan, worker_status
from data_prep.formats import READERS, audio_folder, spans as spans_lib
from data_prep.formats.items import TEXT, InputError, Options
from lst_jax import storage
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import features, quantizers
from lst_jax.data import records as records_lib
from lst_jax.data import tokenizer

with beam_options.quiet():
  import apache_beam as beam

FAIL, SKIP = "fail", "skip"
QUANTIZE_BATCH = 64          # audio items whose features are quantized together
_CACHE: dict[Any, Any] = {}  # per process: tokenizer and quantizer, loaded once


@dataclasses.dataclass(frozen=True)
class Settings:
  """What every job needs (small, picklable)."""
  format: str
  output: str
  tokenizer: str              # path of the dataset's tokenizer.model
  codebook_dir: str | None    # directory of the quantizer's files (audio builds): codebook or k-means
  options: Options
  on_error: str
  salt: str                   # hash of what the output depends on besides the entries
  units: dict | None = None   # the manifest's "units" entry: which quantizer (audio builds)
  run_id: str = ""            # this build run's id, kept in the entries it writes (older ones: reused)
  status_dir: str | None = None  # local runner: where workers keep their status files (worker_status)


@dataclasses.dataclass(frozen=True)
class Job:
  name: str                   # shard path relative to the output
  chunk: shard_plan.Chunk     # its entries (saved by the launcher)
  journal: str = ""           # path of the shard's journal entry (read for reuse, written when done)


@dataclasses.dataclass
class Result:
  name: str
  fingerprint: str
  entries: int
  stats: dict
  errors: list[dict]
  reused: bool = False
  failure: InputError | None = None  # --on_error=fail: the first bad entry (nothing written)
  records: int = 0            # records in the shard (ids and the like stay in the journal entry)
  ids: list[str] = dataclasses.field(default_factory=list)      # each record's id, in shard order
  digests: list[str] = dataclasses.field(default_factory=list)  # each record's content (record_digest)
  places: list = dataclasses.field(default_factory=list)        # each record's [file, line] in the input
  shard: dict | None = None   # the manifest's "shards" entry: records, bytes, sha256 (None: no records)
  run: str = ""               # the build run that converted it

  def journal(self) -> dict:
    return {"shard": self.name, "fingerprint": self.fingerprint, "stats": self.stats, "errors": self.errors,
            "ids": self.ids, "digests": self.digests, "places": pack_places(self.places), "file": self.shard,
            "run": self.run}


def from_journal(entry: dict, entries: int, run_id: str) -> Result:
  """A finished shard's result as the launcher needs it (no per-record lists), from its journal entry."""
  return Result(entry["shard"], entry["fingerprint"], entries, entry["stats"], entry["errors"],
                reused=entry.get("run") != run_id, records=entry["stats"].get("records", 0), shard=entry.get("file"),
                run=entry.get("run", ""))


def pack_places(places: list) -> dict:
  """[[file, line], ...] -> {"files": [file, ...], "at": [[file index, line], ...]} (journals stay small)."""
  files: dict = {}
  return {"at": [[files.setdefault(f, len(files)), line] for f, line in places], "files": list(files)}


def unpack_places(packed) -> list | None:
  if not isinstance(packed, dict):
    return packed
  return [[packed["files"][i], line] for i, line in packed["at"]]


def record_digest(record: records_lib.Record) -> str:
  """What a record says (words and units, not its id): equal digests mean the same utterance or document."""
  h = hashlib.sha256(record.kind.encode())
  for a in (record.text_ids, record.word_offsets, record.units, record.word_spans):
    h.update(np.ascontiguousarray(a, np.int64).tobytes() + b"|")
  return h.hexdigest()[:24]


def index_records(payloads) -> tuple[list[str], list[str]]:
  """(ids, digests) of encoded records."""
  recs = [records_lib.decode(p) for p in payloads]
  return [r.id for r in recs], [record_digest(r) for r in recs]


def read_shard(path: str) -> list[bytes]:
  from array_record.python.array_record_module import ArrayRecordReader
  reader = ArrayRecordReader(path)
  try:
    return list(reader.read_all())
  finally:
    reader.close()


def run(job: Job, settings: Settings, status: worker_status.Reporter | None = None) -> Result:
  """Converts (or reuses) one shard and journals it (or, in fail mode, its first bad entry); returns
  its result without the per-record lists (ids, digests, places: in the journal entry)."""
  status = status or worker_status.Reporter(None)
  status.holding(job.name)
  try:
    done = journal.read_entry(job.journal) if job.journal else None
    r = _run(job, shard_plan.load(job.chunk), settings, done, status)
    if r.failure is not None and job.journal:
      journal.write_failure(job.journal, r.failure.to_json())
    elif job.journal and (not r.reused or done != r.journal()):
      journal.write_entry(job.journal, r.journal())
    return dataclasses.replace(r, records=len(r.ids), ids=[], digests=[], places=[])
  finally:
    status.release()


def _run(job: Job, sources: tuple, settings: Settings, done: dict | None, status: worker_status.Reporter
         ) -> Result:
  fingerprint = digest(sources, settings.salt)
  path = storage.join(settings.output, job.name)
  if done and done["fingerprint"] == fingerprint and (done["stats"]["records"] == 0 or storage.isfile(path)):
    status.tick(len(sources))
    if done["errors"] and settings.on_error == FAIL:  # an earlier --on_error=skip run skipped these
      e = done["errors"][0]
      return Result(job.name, fingerprint, len(sources), {}, [],
                    failure=InputError(e["file"], e["error"], e["line"], e.get("record")))
    return reused(job, done, fingerprint, path)
  _fault(job.name)
  converted, errors = convert_sources(sources, settings, status.tick)
  if errors and settings.on_error == FAIL:
    return Result(job.name, fingerprint, len(sources), {}, [], failure=errors[0])
  info = None
  if converted:
    info = shards.publish_shard(path, [records_lib.encode(c.record) for c in converted])
  else:
    storage.remove(path)  # an earlier run's shard for entries that are all bad now
  return Result(job.name, fingerprint, len(sources), shard_stats(converted),
                [e.to_json() for e in errors], ids=[c.record.id for c in converted],
                digests=[record_digest(c.record) for c in converted],
                places=[list(c.place) for c in converted], shard=info, run=settings.run_id)


def reused(job: Job, done: dict, fingerprint: str, path: str) -> Result:
  """The journal's result for a shard on disk; what an older journal lacks is read from the shard."""
  r = Result(job.name, fingerprint, job.chunk.entries, done["stats"], done["errors"], reused=True,
             ids=done.get("ids"), digests=done.get("digests"), places=unpack_places(done.get("places")),
             shard=done.get("file"), run=done.get("run", ""))
  if done["stats"]["records"] and (r.ids is None or r.digests is None or r.shard is None):
    r.ids, r.digests = index_records(read_shard(path))
    r.shard = shards.shard_info(path, len(r.ids))
  r.ids, r.digests = r.ids or [], r.digests or []
  r.places = r.places or [[None, None]] * len(r.ids)
  return r


def _fault(shard: str) -> None:
  """Test hook: LST_DATA_PREP_FAULT=kill:NAME kills this worker (SIGKILL) as it starts shard NAME
  (a worker process of the local runner only: Beam gives them the control service's address)."""
  fault = os.environ.get("LST_DATA_PREP_FAULT", "")
  if fault.startswith("kill:") and fault[5:] and fault[5:] in shard and "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:
    os.kill(os.getpid(), 9)


def convert_sources(sources: Sequence, settings: Settings, tick: Callable[[int], None] = lambda n: None
                    ) -> tuple[list[convert.Converted], list[InputError]]:
  """Every source as a record, or as the error that says why it is not one (input order kept);
  tick(1) per entry done."""
  reader = READERS[settings.format]
  encode = _tokenizer(settings.tokenizer)
  out: list = []  # Converted | InputError | Analysis (audio, until its batch is quantized)
  analyses: list[int] = []  # indices in `out` of audio items waiting to be quantized

  def quantize_waiting():
    batch = convert.audio_items([out[i] for i in analyses], encode, _quantizer(settings))
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
    tick(1)
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


def _quantizer(settings: Settings):
  """The build's quantizer (lst_jax.data.quantizers), loaded once per process."""
  directory, units = settings.codebook_dir, settings.units
  files = (codebook_lib.CODEBOOK, codebook_lib.FEATURE_STATS, units.get("kmeans", "")) if units else \
      (codebook_lib.CODEBOOK, codebook_lib.FEATURE_STATS)
  key = ("quantizer", directory, json.dumps(units, sort_keys=True),
         tuple(_stat(os.path.join(directory, f)) for f in files))
  if key not in _CACHE:
    local = _local_copy(directory, [f for f in files if f])
    if units and units.get("quantizer") == quantizers.HUBERT_KMEANS:
      _CACHE[key] = quantizers.for_units(units, local)
    else:  # the built-in quantizer with this code's features (the build checked they match)
      _CACHE[key] = quantizers.LogmelQuantizer(codebook_lib.load(local), features.FEATURES)
  return _CACHE[key]


def _local_copy(directory: str, names: list[str]) -> str:
  """`directory` itself when local; for gs://, a folder of this process holding a copy of its `names`."""
  if not storage.is_url(directory):
    return directory
  local = tempfile.mkdtemp(prefix="lst_jax_quantizer_")
  for name in names:
    if storage.exists(storage.join(directory, name)):
      storage.copy_file(storage.join(directory, name), os.path.join(local, name))
  return local


class ConvertShards(beam.DoFn):
  """The convert stage: one element per shard (a Job), converted or reused by `run`. The tokenizer and
  quantizer (a HuBERT checkpoint too) load once per worker, in setup. In fail mode a shard stops at its
  first bad entry; shards not yet started are then left alone (the build fails anyway)."""

  def __init__(self, settings: Settings):
    self.settings = settings

  def setup(self):
    self.status = worker_status.Reporter(self.settings.status_dir)
    _tokenizer(self.settings.tokenizer)
    if self.settings.codebook_dir:
      quantizer = _quantizer(self.settings)
      if isinstance(quantizer, quantizers.HubertQuantizer):
        quantizer.model()  # the checkpoint, hash-checked, on the worker's GPU when it has one

  def process(self, job: Job):
    if self.settings.on_error == FAIL and job.journal and _stopped(job.journal):
      return
    run(job, self.settings, self.status)
    yield job.name


def _stopped(entry: str) -> bool:
  """Whether a shard of this input already stopped at a bad entry."""
  return bool(storage.glob(os.path.join(os.path.dirname(entry), "*" + journal.FAILED)))
