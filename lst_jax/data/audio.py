"""Audio files -> float32 mono 16 kHz waveforms, the one format the aligner and features take.

soundfile (libsndfile, bundled in its wheel) reads WAV and FLAC at any rate and
sample format; we average channels and resample with a polyphase filter by the
exact rational factor, so 44.1 kHz -> 16 kHz is 160/441 and no rate is rounded.
Every failure is an AudioError whose message starts with the path, so a bad
file in a large corpus is easy to find and skip. Here in lst_jax, not data_prep,
because evaluation reads benchmark audio the same way the corpus builder does.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from lst_jax import storage

TARGET_RATE = 16000
MIN_RATE = 8000      # below this speech loses too much (telephone audio is 8 kHz)
MAX_RATE = 768000    # above any real recording format: a larger rate is a corrupt header
MAX_SECONDS = 3600.0  # one utterance; longer audio is a recording to split, not a training example


class AudioError(ValueError):
  """An audio file cannot be used; the message starts with its path and says why."""


def resample(wave: np.ndarray, rate: int, target: int = TARGET_RATE) -> np.ndarray:
  """float32 [S] at `rate` -> float32 at `target`, by the reduced factor target/rate."""
  wave = np.asarray(wave, np.float32)
  if rate == target:
    return wave
  import scipy.signal  # 1-2 s to import; only processes that resample pay for it
  g = math.gcd(int(target), int(rate))
  return scipy.signal.resample_poly(wave, target // g, rate // g).astype(np.float32)


def load_audio(path: str) -> np.ndarray:
  """Reads a WAV or FLAC file as float32 mono at TARGET_RATE; raises AudioError naming the path."""
  import soundfile  # imported here so `import lst_jax.data.audio` stays cheap
  path = os.fspath(path)
  if not storage.exists(path):
    raise AudioError(f"{path}: no such file")
  if not storage.isfile(path):
    raise AudioError(f"{path}: not a regular file")
  if storage.getsize(path) == 0:
    raise AudioError(f"{path}: empty file (0 bytes)")
  try:
    source = io.BytesIO(storage.read_bytes(path)) if storage.is_url(path) else path
    info = soundfile.info(source)
    if info.frames / max(info.samplerate, 1) > MAX_SECONDS:  # before decoding it: 139 h would be 32 GB
      raise AudioError(f"{path}: {info.frames / info.samplerate / 3600:.1f} h of audio in one file; an "
                       f"utterance may last at most {MAX_SECONDS / 3600:g} h (split the recording)")
    if hasattr(source, "seek"):
      source.seek(0)
    data, rate = soundfile.read(source, dtype="float32", always_2d=True)
  except (RuntimeError, TypeError, ValueError) as e:  # LibsndfileError is a RuntimeError
    raise AudioError(f"{path}: unreadable or not a WAV/FLAC audio file ({e})") from None
  if not MIN_RATE <= rate <= MAX_RATE:
    raise AudioError(f"{path}: unexpected sample rate {rate} Hz (need {MIN_RATE}-{MAX_RATE} Hz)")
  if data.shape[0] == 0 or data.shape[1] == 0:
    raise AudioError(f"{path}: empty audio (no samples)")
  if not np.all(np.isfinite(data)):
    raise AudioError(f"{path}: {int(np.sum(~np.isfinite(data)))} non-finite (NaN/inf) samples")
  return resample(data.mean(axis=1), rate)
