"""One utterance, rendered in a worker process: text -> espeak-ng audio -> 25 Hz features.

Only features and word times travel back to the parent, so inter-process
traffic stays small, except for the jobs marked `keep_wave` (the held-out
utterances, whose original audio the dataset keeps, and the training subset
that makes the vocoder bank): those also bring their waveform back, as int16
at the features' 16 kHz. Jobs and results are small picklable dataclasses, as
a spawn-context pool needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep.corpus import tts
from lst_jax.data import audio, features


@dataclasses.dataclass(frozen=True)
class Job:
  id: str
  words: tuple[str, ...]
  spoken: tuple[str, ...]
  voice: tts.Voice
  keep_wave: bool = False   # bring the waveform back (int16, 16 kHz)


@dataclasses.dataclass(frozen=True)
class Rendered:
  id: str
  features: np.ndarray    # float32 [F, E] at 25 Hz
  word_times: np.ndarray  # float32 [W, 2] seconds
  duration_s: float
  wave: np.ndarray | None = None   # int16 [S] at FEATURES' sample rate, for keep_wave jobs


def render(job: Job) -> Rendered:
  speech = tts.synthesize(job.words, job.voice, job.spoken)
  wave = None
  if job.keep_wave:
    w = audio.resample(speech.wave, speech.sample_rate, features.FEATURES["sample_rate"])
    wave = np.round(np.clip(w, -1.0, 1.0) * 32767).astype(np.int16)
  return Rendered(id=job.id, features=features.logmel(speech.wave, speech.sample_rate),
                  word_times=speech.word_times, duration_s=speech.duration, wave=wave)
