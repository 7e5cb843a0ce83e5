"""Automatic listening: pocketsphinx transcribes speech, jiwer scores word error rate.

pocketsphinx (a dependency already: data_prep aligns with it) ships the CMU US
English acoustic model, dictionary and a general language model, so nothing is
downloaded. It is a weak recognizer for robotic, vocoded speech; what it scores
is comparable between samples and against the ceiling of ground-truth units
through the same vocoder, not against human listeners.
"""

from __future__ import annotations

import re

import numpy as np

RATE = 16000


def normalize(text: str) -> str:
  """Lowercase words of letters, digits and apostrophes (what both sides of a WER compare)."""
  return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


class Recognizer:
  """pocketsphinx, a fresh decoder per utterance: a reused one adapts (cepstral means and more)
  to what it heard before, so the same audio would be transcribed differently by position in a
  list; loading costs ~0.5 s, decoding an utterance several times that."""

  description = "pocketsphinx (en-us model, general LM)"

  def transcribe(self, wave: np.ndarray, rate: int = RATE) -> str:
    import pocketsphinx
    if rate != RATE:
      from lst_jax.data import audio
      wave = audio.resample(wave, rate, RATE)
    pcm = (np.clip(np.asarray(wave, np.float32), -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    d = pocketsphinx.Decoder(loglevel="FATAL")
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    return normalize(hyp.hypstr) if hyp is not None else ""


def errors(reference: str, hypothesis: str) -> tuple[int, int]:
  """(word errors: substitutions + deletions + insertions, reference words) of one utterance, on
  normalized text (jiwer); summed over utterances they give the corpus WER `wer` reports."""
  import jiwer
  ref, hyp = normalize(reference), normalize(hypothesis)
  if not ref:
    return len(hyp.split()), 0
  out = jiwer.process_words(ref, hyp or "")
  return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(references: list[str], hypotheses: list[str]) -> float:
  """Word error rate over all pairs (jiwer), on normalized text; empty references are skipped."""
  import jiwer
  pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses) if normalize(r)]
  if not pairs:
    return float("nan")
  refs, hyps = zip(*pairs)
  return float(jiwer.wer(list(refs), list(hyps)))
