"""Units back to audio, automatic listening and the samples page (no trained model needed)."""

import json
import os

import numpy as np

from lst_jax.data import codebook as codebook_lib, features, vocoder
from lst_jax.eval import asr, samples


def _codebook(num_units=16, seed=0):
  rng = np.random.default_rng(seed)
  d = 2 * features.FEATURES["n_mels"]
  return codebook_lib.Codebook(centroids=rng.normal(size=(num_units, d)).astype(np.float32),
                               mean=np.zeros(d, np.float32), std=np.ones(d, np.float32))


def test_vocoder_gives_the_units_duration_at_the_feature_rate():
  units = np.array([0, 1, 1, 2, 3, 3, 3, 4, 5, 6] * 5)           # 50 units = 2 s at 25 Hz
  wave, rate = vocoder.units_to_wave(units, _codebook())
  assert rate == features.FEATURES["sample_rate"] == 16000
  assert wave.dtype == np.float32 and wave.shape == (2 * 16000,)
  assert np.isfinite(wave).all() and np.max(np.abs(wave)) == np.float32(0.9)
  # The features of the result have one frame per unit again.
  assert len(codebook_lib.quantize(features.logmel(wave, rate), _codebook())) == len(units)


def test_wer_and_normalization():
  assert asr.normalize("And God said, Let there be light!") == "and god said let there be light"
  assert asr.wer(["and god said"], ["And God said."]) == 0.0
  assert asr.wer(["a b c d"], ["a x c"]) == 0.5                     # one substitution, one deletion
  assert np.isnan(asr.wer([""], ["anything"]))


def test_samples_folder_and_page(tmp_path):
  wave = np.zeros(1600, np.float32)
  items = [{"id": "t2s_0", "task": "t2s", "stop": "length", "rate": 16000, "prompt_text": "in the <beginning>",
            "units": np.array([3, 4]), "wave": wave, "asr": "in the"},
           {"id": "s2t_0", "task": "s2t", "stop": "eos", "rate": 16000, "prompt_units": np.array([1, 2]),
            "prompt_wave": wave, "text": "and god"}]
  items.append({"id": "s2s_0", "task": "s2s", "stop": "switch", "rate": 16000, "wave": np.zeros(0, np.float32),
                "units": np.zeros(0, np.int32)})
  page = samples.write(str(tmp_path), items, "title", "summary")
  html = open(page).read()
  assert html.count("<audio controls") == 2 and "in the &lt;beginning&gt;" in html
  assert "(no speech)" in html and not (tmp_path / "s2s_0_generated.wav").exists()
  lines = [json.loads(l) for l in open(tmp_path / "samples.jsonl")]
  assert [l["id"] for l in lines] == ["t2s_0", "s2t_0", "s2s_0"] and lines[0]["generated_wav"] == "t2s_0_generated.wav"
  assert open(tmp_path / "t2s_0_generated.units.txt").read() == "3 4\n"
  for name in ("t2s_0_generated.wav", "s2t_0_prompt.wav", "s2t_0_generated.txt", "t2s_0_prompt.txt"):
    assert os.path.getsize(tmp_path / name) > 0


def test_transcripts_do_not_depend_on_what_was_heard_before():
  """A recognizer that adapted to earlier utterances would score the same audio differently by its
  place in a list (a reused pocketsphinx decoder does, on these)."""
  from data_prep.corpus import tts
  from lst_jax.data import audio
  texts = ["in the beginning god created the heaven and the earth", "and god said let there be light"]
  waves = []
  for i, text in enumerate(texts):
    speech = tts.synthesize(text.split(), tts.TRAIN_VOICES[i % len(tts.TRAIN_VOICES)])
    waves.append(audio.resample(speech.wave, speech.sample_rate, asr.RATE))
  recognizer = asr.Recognizer()
  first = recognizer.transcribe(waves[0])
  for w in waves[1:]:
    recognizer.transcribe(w)
  assert recognizer.transcribe(waves[0]) == first and first
