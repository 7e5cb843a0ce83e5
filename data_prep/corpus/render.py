"""One utterance, rendered in a worker process: text -> espeak-ng audio -> 25 Hz features.

Only features and word times travel back to the parent (not the waveform), so
inter-process traffic stays small. Jobs and results are small picklable
dataclasses, as a spawn-context pool needs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep.corpus import tts
from lst_jax.data import features


@dataclasses.dataclass(frozen=True)
class Job:
  id: str
  words: tuple[str, ...]
  spoken: tuple[str, ...]
  voice: tts.Voice


@dataclasses.dataclass(frozen=True)
class Rendered:
  id: str
  features: np.ndarray    # float32 [F, E] at 25 Hz
  word_times: np.ndarray  # float32 [W, 2] seconds
  duration_s: float


def render(job: Job) -> Rendered:
  speech = tts.synthesize(job.words, job.voice, job.spoken)
  return Rendered(id=job.id, features=features.logmel(speech.wave, speech.sample_rate),
                  word_times=speech.word_times, duration_s=speech.duration)
