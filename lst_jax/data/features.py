"""Log-mel features at the unit rate (25 Hz), in numpy/scipy only.

Frame i summarizes audio around [i * 40 ms, (i + 1) * 40 ms) (a 50 ms Hann
window centred on that hop), so a word spanning [t0, t1) seconds covers units
round(t0 * 25) .. round(t1 * 25) and an utterance of d seconds has ceil(d * 25)
frames. Audio is resampled to 16 kHz first so features do not depend on the
synthesizer's sample rate. Here in lst_jax because evaluation must compute the
exact features the dataset's codebook was fit on; data_prep uses them from here.
"""

from __future__ import annotations

import functools
import math

import numpy as np

FEATURES = {
    "type": "logmel-cmn+delta", "sample_rate": 16000, "frame_rate": 25.0, "hop_ms": 40.0,
    "win_ms": 50.0, "n_fft": 1024, "n_mels": 40, "fmin_hz": 20.0, "fmax_hz": 8000.0,
    "preemphasis": 0.97, "log_floor": 1e-6, "cmn_range_db": 40.0, "delta_width": 2,
}


def num_frames(num_samples: int, sample_rate: int, frame_rate: float = FEATURES["frame_rate"]) -> int:
  """Frames for an utterance: ceil(duration * frame_rate), at least 1."""
  return max(1, math.ceil(num_samples * frame_rate / sample_rate - 1e-9))


def logmel(wave: np.ndarray, sample_rate: int, settings: dict = FEATURES) -> np.ndarray:
  """[S] float waveform -> [F, 2 * n_mels] float32: mean-normalized log-mel energies, deltas."""
  from scipy import signal  # slow to import (~1 s); keeps `FEATURES` cheap to read
  sr = settings["sample_rate"]
  frames = num_frames(len(wave), sample_rate, settings["frame_rate"])
  x = np.asarray(wave, np.float64)
  if sample_rate != sr:
    g = math.gcd(sr, sample_rate)
    x = signal.resample_poly(x, sr // g, sample_rate // g)
  x = np.append(x[:1], x[1:] - settings["preemphasis"] * x[:-1]) if len(x) else np.zeros(1)
  hop = int(round(sr * settings["hop_ms"] / 1000))
  win = int(round(sr * settings["win_ms"] / 1000))
  left = (win - hop) // 2  # centre each window on its hop
  x = np.pad(x, (left, max(0, frames * hop + win - left - len(x))))
  windows_FA = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:frames]
  spectrum_FY = np.abs(np.fft.rfft(windows_FA * signal.get_window("hann", win), settings["n_fft"])) ** 2
  mel_FM = spectrum_FY @ _mel_filters(sr, settings["n_fft"], settings["n_mels"],
                                      settings["fmin_hz"], settings["fmax_hz"]).T
  log_FM = np.log(mel_FM + settings["log_floor"])
  log_FM -= speech_mean(mel_FM, log_FM, settings["cmn_range_db"])
  return np.concatenate([log_FM, deltas(log_FM, settings["delta_width"])], axis=1).astype(np.float32)


def speech_mean(mel_FM: np.ndarray, log_FM: np.ndarray, range_db: float) -> np.ndarray:
  """Mean log-mel of the frames within `range_db` of the loudest, [M] (per-utterance CMN).

  Subtracting it removes much of the speaker's spectral tilt, so one codebook
  fits unseen voices better; silence frames are left out of the mean.
  """
  energy_db = 10.0 * np.log10(mel_FM.sum(axis=1) + 1e-30)
  speech = energy_db >= energy_db.max() - range_db
  return log_FM[speech].mean(axis=0)


def deltas(x_FE: np.ndarray, width: int) -> np.ndarray:
  """Regression deltas over +-width frames (edges repeated), [F, E]."""
  padded = np.pad(x_FE, ((width, width), (0, 0)), mode="edge")
  n = len(x_FE)
  num = sum(k * (padded[width + k:width + k + n] - padded[width - k:width - k + n])
            for k in range(1, width + 1))
  return num / (2 * sum(k * k for k in range(1, width + 1)))


@functools.lru_cache(maxsize=4)
def _mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
  """Triangular HTK-mel filterbank, [n_mels, n_fft // 2 + 1]."""
  to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
  freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
  lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  up = (freqs - lo) / (mid - lo)
  down = (hi - freqs) / (hi - mid)
  return np.maximum(0.0, np.minimum(up, down))
