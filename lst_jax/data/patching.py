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
falling linearly to 0 at t2, 0 after). Inference (scoring, decoding,
benchmarks, held-out losses) has no aligner and always patches statically:
`for_inference` and `inference_starts` are the one place that says so.
"""

from __future__ import annotations

import numpy as np

from lst_jax.config import (ALIGNED, CURRICULUM, MIXED, PATCHING_STRATEGIES as STRATEGIES, SILENCE_MERGED, STATIC,
                            PatchingConfig)


def describe(cfg: PatchingConfig) -> str:
  """A patching configuration as tables and logs name it, e.g. "static p=4", "aligned, silence merged"
  (data_prep's statistics and loader benchmark use these words too)."""
  if cfg.strategy == STATIC:
    return f"static p={cfg.patch_size}"
  aligned = f"aligned, silence {cfg.silence}"
  if cfg.strategy == ALIGNED:
    return aligned
  if cfg.strategy == MIXED:
    return f"mixed ({aligned} with p={cfg.mixed_aligned_prob:g})"
  return f"curriculum ({aligned}, then static p={cfg.patch_size})"


def uses_progress(cfg: PatchingConfig) -> bool:
  """Whether the strategy changes over training, so the loader must know the run's length in documents."""
  return cfg.strategy == CURRICULUM


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


def for_inference(cfg: PatchingConfig) -> PatchingConfig:
  """The patching inference uses for a model trained with `cfg`: static, at its patch size (no
  aligner at test time, so the words' boundaries are unknown)."""
  return PatchingConfig(strategy=STATIC, patch_size=cfg.patch_size)


def inference_starts(is_speech: np.ndarray, patch_size: int) -> np.ndarray:
  """Bool [n]: the patch starts inference uses for a token sequence (`for_inference`'s rule)."""
  return static_patch_starts(is_speech, patch_size)


def static_sequence_starts(seq, patch_size: int) -> np.ndarray:
  """Static patches of an interleave.Document (same as static_patch_starts, span by span)."""
  starts = ~seq.is_speech
  for offset, lo, hi, _ in seq.speech_ranges:
    starts[offset:offset + hi - lo:patch_size] = True
  return starts


def aligned_patch_starts(seq, cfg: PatchingConfig) -> np.ndarray:
  """Aligned patches of an interleave.Document: one per word (and silence), split past max_patch_len."""
  marks = aligned_segment_starts(seq, merge_silence=cfg.silence == SILENCE_MERGED)
  return patch_starts(seq.is_speech, marks, cfg.max_patch_len)


def aligned_segment_starts(seq, merge_silence: bool) -> np.ndarray:
  """Bool [n]: where aligned segments start inside the speech of an interleave.Document.

  Silence separate: where each word and each silence (units between words) begins.
  Silence merged: where each word begins, except the first word of a span, so a span's
  leading silence joins its first word and every other silence joins the word before it.
  """
  marks = np.zeros(len(seq.tokens), bool)
  if not seq.speech_ranges:
    return marks
  starts, ends = seq.word_spans[:, 0], seq.word_spans[:, 1]
  unit_marks = np.zeros(int(ends[-1]) + 1, bool)  # units past the last word never start a segment
  unit_marks[starts] = True
  if not merge_silence:
    unit_marks[ends] = True
  for offset, lo, hi, first_word in seq.speech_ranges:
    top = min(hi, len(unit_marks))
    if top > lo:
      marks[offset:offset + top - lo] = unit_marks[lo:top]
    if merge_silence and starts[first_word] > lo:  # leading silence joins the first word
      marks[offset + starts[first_word] - lo] = False
  return marks


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
