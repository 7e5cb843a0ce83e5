"""The held-out utterances' original audio, kept in the dataset beside their units.

  <dataset>/audio/heldout/<name>.flac     16 kHz mono, 16-bit FLAC, one file per speech record

so listening (lst_jax.eval) can report the recognizer's word error rate on the
original audio beside its ceiling on ground-truth units through the vocoder.
The demo builder (data_prep.corpus.demo_build) writes them; datasets built
otherwise may have none, and `read` then returns None. The one naming rule
(`file_name`) is here so the writer and the reader cannot disagree: a record id
such as "speech/Ge.1.3/en-f4" becomes "speech+Ge.1.3+en-f4.flac" ("/" -> "+";
any other character outside [A-Za-z0-9._-], "+" included, as %XX), which is
one flat, injective name per id on local disks and in buckets alike.
"""

from __future__ import annotations

import io

import numpy as np

from lst_jax import storage

FOLDER = ("audio", "heldout")
SUFFIX = ".flac"
RATE = 16000
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def file_name(record_id: str) -> str:
  """The file name (no folder) of a record's audio."""
  if not record_id:
    raise ValueError("a record id is needed to name its audio")
  out = "".join(c if c in _SAFE else "+" if c == "/" else "".join(f"%{b:02X}" for b in c.encode("utf-8"))
                for c in record_id)
  if out.strip(".") == "":
    out = out.replace(".", "%2E")   # "." and ".." are not file names
  return out + SUFFIX


def folder(dataset_dir: str) -> str:
  return storage.join(dataset_dir, *FOLDER)


def path_for(dataset_dir: str, record_id: str) -> str:
  """Where the held-out record `record_id`'s original audio lives in `dataset_dir`."""
  return storage.join(folder(dataset_dir), file_name(record_id))


def write(dataset_dir: str, record_id: str, wave: np.ndarray, rate: int = RATE) -> str:
  """Writes one utterance (int16, or float in [-1, 1]; resampled to 16 kHz) whole or not at all; its path."""
  import soundfile
  wave = np.asarray(wave)
  if wave.dtype != np.int16:
    from lst_jax.data import audio
    wave = np.round(np.clip(audio.resample(wave.astype(np.float32), rate, RATE), -1.0, 1.0) * 32767)
    wave = wave.astype(np.int16)
  elif rate != RATE:
    raise ValueError(f"int16 audio must already be at {RATE} Hz (got {rate} Hz)")
  buf = io.BytesIO()
  soundfile.write(buf, wave, RATE, format="FLAC", subtype="PCM_16")
  path = path_for(dataset_dir, record_id)
  storage.write_bytes(path, buf.getvalue())
  return path


def read(dataset_dir: str, record_id: str) -> tuple[np.ndarray, int] | None:
  """(float32 waveform in [-1, 1], its rate: 16000) of a held-out record, or None where the dataset
  has no audio for it (built before audio was kept, or by another builder)."""
  import soundfile
  path = path_for(dataset_dir, record_id)
  if not storage.isfile(path):
    return None
  wave, rate = soundfile.read(io.BytesIO(storage.read_bytes(path)), dtype="float32", always_2d=False)
  return wave, int(rate)
