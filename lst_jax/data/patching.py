"""Which tokens start a patch (paper.md section 3). Only speech spans are patched.

Every non-speech token (text, BOS/EOS, mode tokens) is a patch of length 1.
Inside a speech span, patches start at segment starts and then every
`max_len` units: static patching uses the span itself as the segment and
max_len = p; aligned patching uses words and silences as segments and splits
any longer than max_len. No patch ever crosses a modality boundary, because
a speech run always begins a segment and non-speech tokens always start one.
"""

from __future__ import annotations

import numpy as np

STATIC, ALIGNED = "static", "aligned"


def speech_run_starts(is_speech: np.ndarray) -> np.ndarray:
  """Bool [n]: the first unit of every contiguous run of speech."""
  prev = np.concatenate([[False], is_speech[:-1]])
  return is_speech & ~prev


def patch_starts(is_speech: np.ndarray, segment_start: np.ndarray, max_len: int) -> np.ndarray:
  """Bool [n]: tokens that open a patch, given segment starts inside speech."""
  n = len(is_speech)
  idx = np.arange(n)
  opens = segment_start | ~is_speech | speech_run_starts(is_speech)
  segment_begin = np.maximum.accumulate(np.where(opens, idx, 0))
  return ~is_speech | ((idx - segment_begin) % max_len == 0)


def static_patch_starts(is_speech: np.ndarray, patch_size: int) -> np.ndarray:
  return patch_starts(is_speech, speech_run_starts(is_speech), patch_size)


def aligned_patch_starts(is_speech: np.ndarray, align_start: np.ndarray, max_len: int) -> np.ndarray:
  return patch_starts(is_speech, align_start, max_len)


def patch_lengths(starts: np.ndarray) -> np.ndarray:
  """int32 [num_patches]: the length of each patch, from its start flags."""
  first = np.flatnonzero(starts)
  return np.diff(np.append(first, len(starts))).astype(np.int32)
