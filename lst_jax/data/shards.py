"""Reading a split's ArrayRecord shards as one random-access source of decoded records.

Every read goes through `Shards`, so a damaged shard is named where it is found:
a record that fails to read or decode raises ShardError with the shard file and
the record's index in it, and a shard whose record count differs from the one
the build wrote into the manifest is refused when the source is opened (cheap:
ArrayRecord keeps the count in its footer).
"""

from __future__ import annotations

import bisect

import grain

from lst_jax import storage
from lst_jax.data import records
from lst_jax.data.manifest import DataError

VERIFY_HINT = "check the dataset with `python -m data_prep.maintenance.verify {dir}` and rebuild the damaged shard"


class ShardError(DataError):
  """A shard cannot be read: the message names the file and the record index."""


def _hint(path: str) -> str:
  return VERIFY_HINT.format(dir=storage.parent(storage.parent(storage.absolute(path))))


class Shards:
  """The records of `paths`, in order, decoded (lst_jax.data.records.Record).

  `expected_records`: {absolute shard path: record count} from the manifest (optional); `limits`:
  the manifest's (num_units, text vocabulary size): each record is checked against them as it is read
  (records.Record.validate: a few array reductions), so shards that disagree with their manifest stop
  the run naming the record instead of training on ids past the embedding tables."""

  def __init__(self, paths, expected_records: dict | None = None, limits: tuple[int, int] | None = None):
    self.paths, self.limits = list(paths), limits
    self._sources, counts = [], []
    for path in self.paths:
      try:
        source = grain.sources.ArrayRecordDataSource([path])
        count = len(source)
      except Exception as e:  # array_record raises several types for a damaged file
        raise ShardError(f"{path}: cannot be opened ({type(e).__name__}: {e}); {_hint(path)}") from None
      want = (expected_records or {}).get(path)
      if want is not None and want != count:
        raise ShardError(f"{path}: {count} records, the manifest says {want}; {_hint(path)}")
      self._sources.append(source)
      counts.append(count)
    self._starts = [0]
    for c in counts:
      self._starts.append(self._starts[-1] + c)

  def __len__(self) -> int:
    return self._starts[-1]

  def __getitem__(self, index: int) -> records.Record:
    shard = bisect.bisect_right(self._starts, index) - 1
    local = index - self._starts[shard]
    path = self.paths[shard]
    try:
      record = records.decode(self._sources[shard][local])
    except Exception as e:  # a damaged chunk (array_record) or record (msgpack, schema)
      raise ShardError(f"{path}: record {local} cannot be read ({type(e).__name__}: {e}); "
                       f"{_hint(path)}") from None
    if self.limits is not None:
      try:
        record.validate(*self.limits)
      except records.RecordError as e:
        raise ShardError(f"{path}: record {local}: {e}, but the manifest says units.num_units={self.limits[0]}, "
                         f"tokenizer.vocab_size={self.limits[1]}: the shards and their manifest disagree; "
                         f"{_hint(path)}") from None
    return record

  def __repr__(self) -> str:
    return f"Shards({len(self.paths)} files, {len(self)} records)"
