"""Units back to audio, automatic listening and the samples page (no trained model needed)."""

import json
import os

import numpy as np
import pytest

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


def test_three_word_error_rates_their_intervals_and_endings():
  from lst_jax.eval import listening, stats
  # 3 utterances of 10 words: originals heard with 0/1/2 errors, ceilings 2/2/3, generated 5/6/10.
  heard = [{"source": f"u{i}", "words": 10, "stop": stop, "seconds": sec, "original": o, "ceiling": c,
            "generated": g}
           for i, (o, c, g, stop, sec) in enumerate([(0, 2, 5, "eos", 0.4), (1, 2, 6, "switch", 2.0),
                                                     (2, 3, 10, "length", 6.0)])]
  out = listening.three_wers(heard)
  assert (out["original_wer"], out["vocoder_ceiling_wer"], out["t2s_wer"]) == (0.1, 7 / 30, 0.7)
  assert out["t2s_above_ceiling"] == 0.7 - 7 / 30
  for key in ("original_wer", "vocoder_ceiling_wer", "t2s_wer", "t2s_above_ceiling"):
    lo, hi = out[key + "_ci"]
    assert lo <= out[key] <= hi and hi - lo > 0
  # Resampling utterances: the interval of 0/10, 1/10, 2/10 lies inside [0, 0.2] and is not all of it.
  assert 0.0 <= out["original_wer_ci"][0] < 0.1 < out["original_wer_ci"][1] <= 0.2
  # A paired difference: generated minus ceiling per utterance is 3, 4, 7 errors of 10: always > 0.
  assert out["t2s_above_ceiling_ci"][0] >= 0.3 - 1e-9
  assert stats.ratio_interval([], []) != stats.ratio_interval([], [])   # nan: nothing to resample
  # Without original audio for every utterance the original WER is reported as missing, not as 0.
  missing = listening.three_wers([{**heard[0], "original": None}] + heard[1:])
  assert missing["original_wer"] is None and missing["t2s_wer"] == 0.7
  assert "n/a (no original audio" in listening.summary_line(missing)
  samples = [{"stop": h["stop"], "seconds": h["seconds"]} for h in heard]
  ends = listening.endings(samples)
  assert ends == {"samples": 3, "eos": 1, "switch": 1, "length": 1, "under_1s": 1, "mean_seconds": pytest.approx(2.8)}
  line = listening.summary_line({**out, "t2s_endings": ends})
  assert line.index("original audio WER 0.100") < line.index("vocoder ceiling WER 0.233") < \
      line.index("generated (t2s) WER 0.700")
  assert "generated - ceiling +0.467 [" in line
  assert "t2s: 3 speech samples, 1 ended at EOS, 1 at a switch to text, 1 at the length limit, 1 under 1 s" in line
