"""A speech-unit codebook and applying it: [F, E] features -> unit ids (the nearest centroid).

The codebook lives in normalized feature space: centroids beside the training
features' mean and std, saved as two .npy files. It is here in lst_jax because
evaluation quantizes benchmark audio with the dataset's codebook; fitting one
(k-means) is data_prep's job (data_prep/codebook_training.py).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from lst_jax import storage

CODEBOOK = "codebook.npy"        # float32 [K, D] centroids of normalized features
FEATURE_STATS = "feature_stats.npy"  # float32 [2, D]: mean, std of training features
_CHUNK = 8192


class QuantizerError(ValueError):
  """Not enough data to fit, or a codebook that does not match the features."""


@dataclasses.dataclass(frozen=True)
class Codebook:
  centroids: np.ndarray  # float32 [C, E]
  mean: np.ndarray       # float32 [E]
  std: np.ndarray        # float32 [E]

  @property
  def num_units(self) -> int:
    return len(self.centroids)


def nearest(x_FE: np.ndarray, c_CE: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Index of and squared distance to the nearest centroid for each row, in chunks."""
  c_sq = np.sum(c_CE.astype(np.float32) ** 2, axis=1)
  idx = np.empty(len(x_FE), np.int32)
  dist = np.empty(len(x_FE), np.float32)
  for lo in range(0, len(x_FE), _CHUNK):
    x = np.asarray(x_FE[lo:lo + _CHUNK], np.float32)
    d_FC = c_sq[None, :] - 2.0 * (x @ c_CE.T)
    idx[lo:lo + len(x)] = np.argmin(d_FC, axis=1)
    dist[lo:lo + len(x)] = np.maximum(
        d_FC[np.arange(len(x)), idx[lo:lo + len(x)]] + np.sum(x * x, axis=1), 0.0)
  return idx, dist


def quantize(features: np.ndarray, codebook: Codebook) -> np.ndarray:
  """[F, E] features -> int32 [F] unit ids in [0, num_units)."""
  f = np.asarray(features, np.float32)
  if f.ndim != 2 or f.shape[1] != codebook.centroids.shape[1]:
    raise QuantizerError(f"features of shape {f.shape} do not match a codebook of dimension "
                         f"{codebook.centroids.shape[1]}")
  return nearest((f - codebook.mean) / codebook.std, codebook.centroids)[0]


def load(directory: str) -> Codebook:
  centroids = np.load(io.BytesIO(storage.read_bytes(storage.join(directory, CODEBOOK))))
  mean, std = np.load(io.BytesIO(storage.read_bytes(storage.join(directory, FEATURE_STATS))))
  return Codebook(centroids=centroids, mean=mean, std=std)
