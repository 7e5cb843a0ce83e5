"""Accuracy of multiple-choice scores (ties share the credit), word error rates over utterances,
and their 95% confidence intervals."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054
TIE_RTOL = 1e-5   # scores this close (relative, at least 1e-5 absolute) count as a tie


def item_credit(scores: Sequence[float], label: int, rtol: float = TIE_RTOL) -> float:
  """1 if the label's score is the unique maximum, 1/k if it ties with k-1 others at the
  maximum (a 2-way tie gives 0.5, the spoken-LM convention), else 0."""
  s = np.asarray(scores, np.float64)
  best = s.max()
  tol = rtol * max(1.0, abs(best))
  top = np.abs(s - best) <= tol
  return float(top[label]) / float(top.sum())


def accuracy(scores: Sequence[Sequence[float]], labels: Sequence[int]) -> tuple[float, np.ndarray]:
  """(mean credit, credit per item) over items with any number of candidates each."""
  credit = np.array([item_credit(s, l) for s, l in zip(scores, labels)], np.float64)
  return (float(credit.mean()) if len(credit) else float("nan")), credit


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval for a proportion p observed over n items (p may be fractional,
  as ties give half credit). Stays inside [0, 1] and is sensible at p = 0 or 1."""
  if n <= 0:
    return float("nan"), float("nan")
  z2 = z * z
  denom = 1.0 + z2 / n
  centre = (p + z2 / (2 * n)) / denom
  half = z / denom * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n))
  return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(credit: Sequence[float], samples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean credit (items resampled with replacement)."""
  c = np.asarray(credit, np.float64)
  if len(c) == 0:
    return float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = c[rng.integers(0, len(c), (samples, len(c)))].mean(axis=1)
  lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], samples: int = 2000,
                   seed: int = 0, level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of sum(numerators) / sum(denominators) with items resampled
  together (a word error rate over utterances: errors / reference words)."""
  num, den = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)
  if len(num) == 0 or den.sum() <= 0:
    return float("nan"), float("nan")
  idx = np.random.default_rng(seed).integers(0, len(num), (samples, len(num)))
  ratios = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-12)
  lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def paired_ratio_difference_interval(num_a: Sequence[float], num_b: Sequence[float], denominators: Sequence[float],
                                     samples: int = 2000, seed: int = 0,
                                     level: float = 0.95) -> tuple[float, float]:
  """Bootstrap interval of (sum(num_a) - sum(num_b)) / sum(denominators), items resampled together:
  e.g. how far generated speech's WER lies above its vocoder ceiling on the same utterances."""
  diff = np.asarray(num_a, np.float64) - np.asarray(num_b, np.float64)
  return ratio_interval(diff, denominators, samples, seed, level)


def chance(num_candidates: Sequence[int]) -> float:
  return float(np.mean([1.0 / k for k in num_candidates])) if len(num_candidates) else float("nan")
