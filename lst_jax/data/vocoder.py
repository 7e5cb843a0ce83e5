"""Speech units back to audio, for the built-in quantizer (log-mel k-means units).

unit -> its codebook centroid (normalized log-mel + delta, lst_jax.data.features)
-> the log-mel half, de-normalized -> mel power -> linear spectrogram (least
squares through the mel filterbank's pseudo-inverse, librosa's filterbank) ->
waveform by Griffin-Lim (librosa). The units come at
25 Hz with 50 ms windows; Griffin-Lim needs overlapping frames, so the mel
frames are interpolated to a 10 ms hop first. Per-utterance mean normalization
(CMN) removed each utterance's spectral level, so the level is a constant and
the waveform is peak-normalized. The result is robotic but intelligible enough
to measure: its ceiling (ground-truth units through this vocoder, then ASR) is
reported beside every generated sample's score.
"""

from __future__ import annotations

import functools

import numpy as np

from lst_jax.data.codebook import Codebook
from lst_jax.data.features import FEATURES

SYNTH_HOP_MS = 10.0
LEVEL = 2.0          # log-mel offset added back (CMN removed the utterance's own level)


def units_to_logmel(units, codebook: Codebook, settings: dict = FEATURES) -> np.ndarray:
  """[F] unit ids -> [F, n_mels] log-mel frames (the centroids' static half, de-normalized)."""
  units = np.asarray(units, np.int64)
  if units.size and (units.min() < 0 or units.max() >= codebook.num_units):
    raise ValueError(f"unit ids must lie in [0, {codebook.num_units}); got {units.min()}..{units.max()}")
  frames = codebook.centroids[units] * codebook.std + codebook.mean
  return frames[:, :settings["n_mels"]]


def logmel_to_wave(logmel_FM: np.ndarray, settings: dict = FEATURES, iterations: int = 32,
                   seed: int = 0) -> np.ndarray:
  """[F, n_mels] log-mel at the unit rate -> float32 waveform at settings' sample rate: exactly
  F / frame_rate seconds, peak 0.9."""
  import librosa  # heavy (numba); only decoding needs it
  sr, n_fft = settings["sample_rate"], settings["n_fft"]
  hop = int(round(sr * SYNTH_HOP_MS / 1000))
  up = int(round(settings["hop_ms"] / SYNTH_HOP_MS))
  f = len(logmel_FM)
  if f == 0:
    return np.zeros(0, np.float32)
  t_in = (np.arange(f) + 0.5) * up
  t_out = np.arange(f * up) + 0.5
  fine = np.stack([np.interp(t_out, t_in, logmel_FM[:, m]) for m in range(logmel_FM.shape[1])], axis=1)
  mel_power = np.exp(fine + LEVEL).T                                   # [n_mels, frames]
  basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=settings["n_mels"], fmin=settings["fmin_hz"],
                              fmax=settings["fmax_hz"], htk=True, norm=None)
  # Least squares through the filterbank's pseudo-inverse, clipped at 0 (librosa's NNLS inversion
  # gives the same ears at ~100x the time).
  stft_mag = np.maximum(_pinv(basis) @ mel_power, 0.0) ** 0.5
  rng = np.random.default_rng(seed)
  wave = librosa.griffinlim(stft_mag, n_iter=iterations, hop_length=hop, n_fft=n_fft,
                            win_length=int(round(sr * settings["win_ms"] / 1000)), init=None, random_state=rng)
  length = f * up * hop                          # exactly F units' duration
  wave = np.pad(wave, (0, max(0, length - len(wave))))[:length]
  if settings.get("preemphasis"):
    from scipy import signal
    wave = signal.lfilter([1.0], [1.0, -settings["preemphasis"]], wave)  # undo the features' pre-emphasis
  peak = float(np.max(np.abs(wave))) or 1.0
  return (0.9 * wave / peak).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _pinv_cached(key: bytes, shape: tuple[int, int]) -> np.ndarray:
  return np.linalg.pinv(np.frombuffer(key).reshape(shape))


def _pinv(basis: np.ndarray) -> np.ndarray:
  b = np.ascontiguousarray(basis, np.float64)
  return _pinv_cached(b.tobytes(), b.shape)


def units_to_wave(units, codebook: Codebook, settings: dict = FEATURES) -> tuple[np.ndarray, int]:
  """(waveform, sample rate) of a unit sequence."""
  return logmel_to_wave(units_to_logmel(units, codebook, settings), settings), settings["sample_rate"]
