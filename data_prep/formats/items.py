"""What a format reader yields: parsed input items, and errors that name where they came from.

A reader never raises for one bad entry: it yields an InputError in that
entry's place, so the build can stop (--on_error=fail) or skip it and go on
(--on_error=skip) without losing the entries around it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lst_jax.data.manifest import DataError

SPEECH, TEXT = "speech", "text"


class InputError(DataError):
  """One input entry is bad; the message is `FILE:LINE: what`, or `FILE: what` for an entry that
  is a whole file (an audio file). `record` (the entry's id, when known) goes to the skip report."""

  def __init__(self, file: str, what: str, line: int | None = None, record: str | None = None):
    self.file, self.what, self.line, self.record = file, what, line, record
    super().__init__(f"{self.location}: {what}")

  @property
  def location(self) -> str:
    return f"{self.file}:{self.line}" if self.line is not None else self.file

  def to_json(self) -> dict:
    return {"file": self.file, "line": self.line, "record": self.record, "error": self.what}

  def __reduce__(self):  # crosses process boundaries (worker -> parent) intact
    return InputError, (self.file, self.what, self.line, self.record)


@dataclasses.dataclass(frozen=True)
class Options:
  """What parsing needs to know beyond the input itself."""
  num_units: int                  # user-given unit ids must lie in [0, num_units)
  unit_rate: float | None = None  # manifest format: the dataset's unit rate (from its first entry)
  mode: str | None = None         # manifest format: "units" or "audio" (from its first entry)


@dataclasses.dataclass(frozen=True)
class Item:
  """One parsed entry: a speech utterance (units or audio) or a text-only document."""
  id: str
  file: str
  line: int | None
  words: tuple[str, ...]
  units: np.ndarray | None = None       # int32 [U] user-given units
  word_spans: np.ndarray | None = None  # int32 [W, 2] unit span of each word
  unit_rate: float | None = None        # units per second of `units`
  word_times: np.ndarray | None = None  # float64 [W, 2] seconds (audio items; None: align)
  audio: str | None = None              # audio file (units come from the quantizer)

  def error(self, what: str) -> InputError:
    return InputError(self.file, what, self.line, self.id)


def check_word_times(times: np.ndarray, duration_s: float, tolerance_s: float) -> str | None:
  """Why word times [W, 2] are unusable (None if fine): reversed, overlapping, past the end."""
  for w, (start, end) in enumerate(times):
    if not (np.isfinite(start) and np.isfinite(end)) or start < 0:
      return f"word {w}: times ({start}, {end}) must be finite and >= 0"
    if end < start:
      return f"word {w}: end {end} s is before its start {start} s"
    if w and start < times[w - 1, 1] - 1e-6:
      return (f"word {w}: starts at {start} s, before word {w - 1} ends ({times[w - 1, 1]} s): "
              f"word times overlap or are out of order")
  if len(times) and times[-1, 1] > duration_s + tolerance_s:
    return f"word {len(times) - 1}: ends at {times[-1, 1]} s, past the end of the speech ({duration_s:.3f} s)"
  return None
