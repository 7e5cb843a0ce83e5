"""Which tokens start a patch (paper.md section 3). Only speech spans are patched.

Every non-speech token (text, BOS/EOS, mode tokens) is a patch of length 1.
Inside a speech span, patches start at segment starts and then every
`max_len` units: static patching uses the span itself as the segment and
max_len = p; aligned patching uses words (and silences, unless merged) as
segments and splits any longer than max_patch_len. No patch ever crosses a
modality boundary, because a speech run always begins a segment and
non-speech tokens always start one.

Strategies: static, aligned, mixed (aligned with a fixed probability per
document) and curriculum (aligned with probability 1 before progress t1,
falling linearly to 0 at t2, 0 after; inference uses static).
"""

from __future__ import annotations

import numpy as np

from lst_jax.config import (ALIGNED, CURRICULUM, MIXED, PATCHING_STRATEGIES as STRATEGIES, SILENCE_MERGED, STATIC,
                            PatchingConfig)


def aligned_probability(cfg: PatchingConfig, progress: float) -> float:
  """Chance that a document at training progress u in [0, 1] is patched aligned."""
  if cfg.strategy == STATIC:
    return 0.0
  if cfg.strategy == ALIGNED:
    return 1.0
  if cfg.strategy == MIXED:
    return cfg.mixed_aligned_prob
  if cfg.strategy == CURRICULUM:
    t1, t2 = cfg.curriculum_t1, cfg.curriculum_t2
    if progress < t1:
      return 1.0
    return 0.0 if progress >= t2 else (t2 - progress) / (t2 - t1)
  raise ValueError(f"unknown patching strategy {cfg.strategy!r}; choose from {STRATEGIES}")


def speech_run_starts(is_speech: np.ndarray) -> np.ndarray:
  """Bool [n]: the first unit of every contiguous run of speech."""
  starts = is_speech.copy()
  starts[1:] &= ~is_speech[:-1]
  return starts


def patch_starts(is_speech: np.ndarray, segment_start: np.ndarray, max_len: int) -> np.ndarray:
  """Bool [n]: tokens that open a patch, given segment starts inside speech."""
  opens = segment_start | ~is_speech | speech_run_starts(is_speech)
  if patch_lengths(opens).max(initial=0) <= max_len:  # the common case: nothing to split
    return opens
  idx = np.arange(len(is_speech))
  segment_begin = np.maximum.accumulate(np.where(opens, idx, 0))
  return ~is_speech | ((idx - segment_begin) % max_len == 0)


def static_patch_starts(is_speech: np.ndarray, patch_size: int) -> np.ndarray:
  return patch_starts(is_speech, np.zeros_like(is_speech), patch_size)


def static_sequence_starts(seq, patch_size: int) -> np.ndarray:
  """Static patches of an interleave.Sequence (same as static_patch_starts, span by span)."""
  starts = ~seq.is_speech
  for offset, lo, hi, _ in seq.speech_ranges:
    starts[offset:offset + hi - lo:patch_size] = True
  return starts


def aligned_patch_starts(seq, cfg: PatchingConfig) -> np.ndarray:
  """Aligned patches of an interleave.Sequence: one per word (and silence), split past max_patch_len."""
  marks = seq.aligned_marks(merge_silence=cfg.silence == SILENCE_MERGED)
  return patch_starts(seq.is_speech, marks, cfg.max_patch_len)


def document_patch_starts(seq, cfg: PatchingConfig, progress: float,
                          rng) -> tuple[np.ndarray, bool]:
  """(patch starts, whether aligned) of one document under the strategy at this training progress."""
  p = aligned_probability(cfg, progress)
  aligned = p >= 1.0 or (p > 0.0 and rng.random() < p)
  if aligned:
    return aligned_patch_starts(seq, cfg), True
  return static_sequence_starts(seq, cfg.patch_size), False


def patch_lengths(starts: np.ndarray) -> np.ndarray:
  """int32 [num_patches]: the length of each patch, from its start flags."""
  first = np.flatnonzero(starts)
  lengths = np.empty(len(first), np.int32)
  lengths[:-1] = first[1:] - first[:-1]
  lengths[-1:] = len(starts) - first[-1:]
  return lengths
