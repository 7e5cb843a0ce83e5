"""Which quantizer a dataset's units come from, and running it: waveform -> int32 unit ids.

Two kinds, named by the manifest's "units" entry:
  built-in   log-mel features (lst_jax.data.features) + a k-means codebook in
             normalized feature space (codebook.npy, feature_stats.npy)
  HuBERT     hidden_states[layer] of the user's checkpoint (lst_jax.data.hubert)
             + the user's k-means centroids (copied into the dataset as a .npy)
The build and evaluation both go through `for_units`, so benchmark audio becomes
units exactly as the training audio did.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from lst_jax.data import codebook as codebook_lib
from lst_jax.data.codebook import QuantizerError

HUBERT_KMEANS = "hubert-kmeans"   # units["quantizer"] of HuBERT units
KMEANS_FILE = "hubert_kmeans.npy"  # float32 [K, D] centroids, in the dataset directory


class LogmelQuantizer:
  """The built-in quantizer: log-mel features -> nearest centroid of the codebook."""

  def __init__(self, codebook: codebook_lib.Codebook, settings: dict):
    self.codebook, self.settings = codebook, settings
    self.num_units, self.frame_rate = codebook.num_units, float(settings["frame_rate"])

  def units(self, wave: np.ndarray, rate: int) -> np.ndarray:
    return self.units_batch([wave], rate)[0]

  def units_batch(self, waves: Sequence[np.ndarray], rate: int, log=None) -> list[np.ndarray]:
    """One quantize call for the batch (many small calls are much slower)."""
    from lst_jax.data import features
    del log
    feats = [features.logmel(w, rate, self.settings) for w in waves]
    if not feats:
      return []
    units = codebook_lib.quantize(np.concatenate(feats), self.codebook)
    return np.split(units, np.cumsum([len(f) for f in feats])[:-1])


class HubertQuantizer:
  """The user's HuBERT layer -> nearest k-means centroid (the model is loaded on first use)."""

  def __init__(self, directory: str, layer: int, centroids: np.ndarray, frame_rate: float,
               sha256: str | None = None, device: str | None = None):
    self.directory, self.layer, self.sha256, self.device = directory, layer, sha256, device
    self.centroids = np.asarray(centroids, np.float32)
    self.num_units, self.frame_rate = len(self.centroids), float(frame_rate)
    self._model = None

  def model(self):
    if self._model is None:
      from lst_jax.data import hubert
      if self.sha256 is not None:
        got, _ = hubert.checkpoint_sha256(self.directory)
        if got != self.sha256:
          raise QuantizerError(f"{self.directory}: the HuBERT checkpoint changed since the dataset was built "
                               f"(sha256 {got} vs {self.sha256}); its units would differ")
      self._model = hubert.Hubert(self.directory, self.layer, self.device)
      if self._model.config["hidden_size"] != self.centroids.shape[1]:
        raise QuantizerError(f"{self.directory}: hidden size {self._model.config['hidden_size']} does not "
                             f"match the k-means' dimension {self.centroids.shape[1]}")
    return self._model

  def units(self, wave: np.ndarray, rate: int) -> np.ndarray:
    return self.units_batch([wave], rate)[0]

  def units_batch(self, waves: Sequence[np.ndarray], rate: int,
                  log: Callable[[str], None] | None = None) -> list[np.ndarray]:
    from lst_jax.data import audio, hubert
    waves = [audio.resample(w, rate, hubert.SAMPLE_RATE) for w in waves]
    return [codebook_lib.nearest(f, self.centroids)[0] for f in self.model().features(waves, log)]


def for_units(units: dict, directory: str, device: str | None = None):
  """The quantizer a manifest's "units" entry names; its files are in `directory`. QuantizerError if none."""
  if units.get("quantizer") == HUBERT_KMEANS:
    hub = units.get("hubert") or {}
    path = os.path.join(directory, units.get("kmeans", KMEANS_FILE))
    if not hub.get("path") or not os.path.isfile(path):
      raise QuantizerError(f"{directory}: the units entry names a HuBERT quantizer but "
                           f"{'no checkpoint path' if not hub.get('path') else path + ' is missing'}")
    if not os.path.isdir(hub["path"]):
      raise QuantizerError(f"{directory}: its units come from the HuBERT checkpoint {hub['path']}, which is "
                           f"not there any more; put it back (sha256 {units.get('hubert_sha256')})")
    return HubertQuantizer(hub["path"], int(units["layer"]), np.load(path), units["frame_rate"],
                           units.get("hubert_sha256"), device)
  if "codebook" in units and "features" in units:
    return LogmelQuantizer(codebook_lib.load(directory), units["features"])
  raise QuantizerError(f"{directory}: its units come from {units.get('source', 'elsewhere')} "
                       f"({units.get('format', 'no codebook')}), not from a quantizer this code can run")


def for_manifest(manifest, device: str | None = None):
  """The quantizer of a loaded Manifest (the first directory of a comma-separated run)."""
  return for_units(manifest.units, manifest.dir.split(",")[0].strip(), device)
