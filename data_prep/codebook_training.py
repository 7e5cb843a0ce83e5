"""Fitting the speech-unit codebook: k-means over normalized frame features (scikit-learn's KMeans).

Fit on training audio only, then applied to every split, so held-out units
come from the same codebook. One seeded generator picks the frame sample and
the k-means++ start (on at most 20,000 frames, for speed); scikit-learn's
Lloyd iterations then run on one thread, whose sums do not depend on thread
timing, so a rerun gives the same codebook bit for bit.

Saved three ways in one folder: codebook.npy + feature_stats.npy (what
lst_jax.data.codebook loads: evaluation and the vocoder use it) and
kmeans.joblib, a fitted sklearn KMeans over the normalized features, the format
the speech community's k-means scripts write: `predict((logmel - mean) / std)`
gives our units, and `--kmeans=DIR/kmeans.joblib` reuses it in a build.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from lst_jax.data.codebook import CODEBOOK, FEATURE_STATS, Codebook, QuantizerError

KMEANS_JOBLIB = "kmeans.joblib"  # a fitted sklearn KMeans beside codebook.npy
SEED_POINTS = 20_000             # frames the k-means++ start is drawn from


def fit(features: Sequence[np.ndarray], num_units: int = 500, seed: int = 0, iterations: int = 20,
        max_frames: int = 60_000) -> Codebook:
  """Fits a codebook on a list of [F, E] feature arrays (at most `max_frames` sampled frames)."""
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
  centroids = kmeans(x, num_units, rng, iterations).cluster_centers_
  return Codebook(centroids=np.asarray(centroids, np.float32), mean=mean.astype(np.float32),
                  std=std.astype(np.float32))


def kmeans(x_FE: np.ndarray, k: int, rng: np.random.Generator, iterations: int):
  """A fitted sklearn KMeans: Lloyd's iterations from a seeded k-means++ start, on one thread."""
  from sklearn.cluster import KMeans, kmeans_plusplus
  from threadpoolctl import threadpool_limits
  x_FE = np.asarray(x_FE, np.float32)
  sample = x_FE
  if len(x_FE) > SEED_POINTS:
    sample = x_FE[np.sort(rng.choice(len(x_FE), SEED_POINTS, replace=False))]
  seed = int(rng.integers(2**31 - 1))
  with threadpool_limits(1), warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning: fewer distinct points than k is handled below
    start, _ = kmeans_plusplus(sample, k, random_state=seed)
    return KMeans(k, init=start, n_init=1, max_iter=iterations, tol=0.0, random_state=seed).fit(x_FE)


def as_kmeans(codebook: Codebook):
  """A fitted sklearn KMeans whose centroids are exactly the codebook's (for codebooks not fit here)."""
  from sklearn.cluster import KMeans
  from threadpoolctl import threadpool_limits
  c = np.asarray(codebook.centroids, np.float32)
  with threadpool_limits(1), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    model = KMeans(len(c), init=c, n_init=1, max_iter=1).fit(c)
  model.cluster_centers_ = c.copy()
  return model


def save(codebook: Codebook, directory: str) -> tuple[str, str]:
  """Writes codebook.npy, feature_stats.npy and kmeans.joblib (each atomically); returns the first two."""
  import joblib
  paths = os.path.join(directory, CODEBOOK), os.path.join(directory, FEATURE_STATS)
  for path, array in zip(paths, (codebook.centroids, np.stack([codebook.mean, codebook.std]))):
    with open(path + ".tmp", "wb") as f:
      np.save(f, np.asarray(array, np.float32))
    os.replace(path + ".tmp", path)
  path = os.path.join(directory, KMEANS_JOBLIB)
  joblib.dump(as_kmeans(codebook), path + ".tmp")
  os.replace(path + ".tmp", path)
  return paths


def read_centroids(path: str) -> np.ndarray:
  """float32 [K, D] centroids of a k-means file: a joblib/pickle of a fitted (MiniBatch)KMeans, as
  fairseq's and textlesslib's scripts write it, or a .npy array. QuantizerError says what is wrong."""
  if not os.path.isfile(path):
    raise QuantizerError(f"--kmeans={path}: no such file")
  if path.endswith(".npy"):
    try:
      c = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise QuantizerError(f"--kmeans={path}: not a .npy array ({e})") from None
  else:
    import joblib
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InconsistentVersionWarning: older sklearn pickles load fine
        model = joblib.load(path)
    except Exception as e:  # unpickling can fail in many ways; the file is simply not usable
      raise QuantizerError(f"--kmeans={path}: not a joblib k-means model ({type(e).__name__}: {e}); "
                           f"save its cluster_centers_ as a .npy [K, D] array instead") from None
    if not hasattr(model, "cluster_centers_"):
      raise QuantizerError(f"--kmeans={path}: a {type(model).__name__}, not a fitted k-means "
                           f"(no cluster_centers_)")
    c = model.cluster_centers_
  c = np.asarray(c)
  if c.ndim != 2 or len(c) < 1 or not np.issubdtype(c.dtype, np.number) or not np.all(np.isfinite(c)):
    raise QuantizerError(f"--kmeans={path}: centroids must be a finite [K, D] array, got shape {c.shape}")
  return c.astype(np.float32)
