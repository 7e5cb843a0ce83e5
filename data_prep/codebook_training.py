"""Fitting the speech-unit codebook: k-means over normalized frame features (a HuBERT-units stand-in).

Fit on training audio only, then applied to every split, so held-out units
come from the same codebook. k-means++ initialisation and Lloyd iterations use
one seeded generator and chunked distance computation (memory O(chunk * k)),
so a fit is deterministic and small. The codebook lives in normalized feature
space; the normalization stats are saved beside it. Applying a codebook (and
loading one) is lst_jax.data.codebook, which evaluation uses too.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from scipy import sparse

from lst_jax.data.codebook import CODEBOOK, FEATURE_STATS, Codebook, QuantizerError, nearest


def fit(features: Sequence[np.ndarray], num_units: int = 500, seed: int = 0, iterations: int = 20,
        max_frames: int = 60_000) -> Codebook:
  """Fits a codebook on a list of [F, D] feature arrays (at most `max_frames` sampled frames)."""
  x = np.concatenate([np.asarray(f, np.float32) for f in features], axis=0)
  if len(x) < num_units:
    raise QuantizerError(f"k-means needs at least num_units={num_units} frames, got {len(x)}; "
                         f"use more training audio or fewer units")
  mean = x.mean(axis=0)
  std = np.maximum(x.std(axis=0), 1e-5)
  rng = np.random.default_rng(seed)
  if len(x) > max_frames:
    x = x[np.sort(rng.choice(len(x), max_frames, replace=False))]
  x = (x - mean) / std
  centroids = kmeans(x, num_units, rng, iterations)
  return Codebook(centroids=centroids.astype(np.float32), mean=mean.astype(np.float32),
                  std=std.astype(np.float32))


def kmeans(x_ND: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
  """Lloyd's k-means from a k-means++ start; returns [k, D] centroids."""
  c_KD = kmeans_plus_plus(x_ND, k, rng)
  for _ in range(iterations):
    assign, dist = nearest(x_ND, c_KD)
    counts = np.bincount(assign, minlength=k)
    one_hot_KN = sparse.csr_matrix((np.ones(len(x_ND)), (assign, np.arange(len(x_ND)))),
                                   shape=(k, len(x_ND)))
    sums = one_hot_KN @ x_ND.astype(np.float64)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c_KD)
    empty = np.nonzero(counts == 0)[0]
    if len(empty):  # re-seed empty clusters at the worst-fit points
      new[empty] = x_ND[np.argsort(-dist, kind="stable")[:len(empty)]]
    converged = np.allclose(new, c_KD, atol=1e-6)
    c_KD = new.astype(np.float32)
    if converged:
      break
  return c_KD


def kmeans_plus_plus(x_ND: np.ndarray, k: int, rng: np.random.Generator,
                     max_points: int = 20_000) -> np.ndarray:
  """k-means++ seeding (on at most `max_points` sampled points), [k, D]."""
  if len(x_ND) > max_points:
    x_ND = x_ND[np.sort(rng.choice(len(x_ND), max_points, replace=False))]
  chosen = [int(rng.integers(len(x_ND)))]
  d2 = np.sum((x_ND - x_ND[chosen[0]]) ** 2, axis=1, dtype=np.float64)
  for _ in range(1, k):
    total = d2.sum()
    i = int(rng.choice(len(x_ND), p=d2 / total)) if total > 0 else int(rng.integers(len(x_ND)))
    chosen.append(i)
    d2 = np.minimum(d2, np.sum((x_ND - x_ND[i]) ** 2, axis=1, dtype=np.float64))
  return x_ND[chosen].astype(np.float32)


def save(codebook: Codebook, directory: str) -> tuple[str, str]:
  """Writes codebook.npy and feature_stats.npy (atomically); returns both paths."""
  paths = os.path.join(directory, CODEBOOK), os.path.join(directory, FEATURE_STATS)
  for path, array in zip(paths, (codebook.centroids, np.stack([codebook.mean, codebook.std]))):
    with open(path + ".tmp", "wb") as f:
      np.save(f, np.asarray(array, np.float32))
    os.replace(path + ".tmp", path)
  return paths

