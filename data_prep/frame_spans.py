"""Word times in seconds -> word spans in unit frames, with the record invariants guaranteed.

Rounding 40 ms frames can collapse a short word to zero length or make
neighbours collide; spans are fixed up so that every word owns >= 1 unit,
spans are in order and non-overlapping, and all lie inside the utterance.
Units covered by no word are silence.
"""

from __future__ import annotations

import numpy as np


class AlignmentError(ValueError):
  """The words cannot get one unit each (more words than units)."""


def unit_spans(word_times: np.ndarray, num_frames: int, frame_rate: float = 25.0) -> np.ndarray:
  """[W, 2] (start_s, end_s) -> int32 [W, 2] unit spans [start, end) within [0, num_frames)."""
  times = np.asarray(word_times, np.float64).reshape(-1, 2)
  if len(times) > num_frames:
    raise AlignmentError(f"{len(times)} words cannot each own a unit of a {num_frames}-unit utterance")
  spans = np.rint(times * frame_rate).astype(np.int64)
  prev_end = 0
  for w in range(len(spans)):  # forward: in order, each word at least one unit
    spans[w, 0] = max(spans[w, 0], prev_end)
    spans[w, 1] = max(spans[w, 1], spans[w, 0] + 1)
    prev_end = spans[w, 1]
  limit = num_frames
  for w in reversed(range(len(spans))):  # backward: pull words that ran past the end back inside
    spans[w, 1] = min(spans[w, 1], limit)
    spans[w, 0] = min(spans[w, 0], spans[w, 1] - 1)
    limit = spans[w, 0]
  return spans.astype(np.int32)
