"""Audio loading (lst_jax.data.audio) and pocketsphinx forced alignment (data_prep.forced_aligner).

Alignment is checked on real synthesized speech: espeak-ng (data_prep.corpus.tts)
speaks a sentence and reports each word's time; pocketsphinx, which never sees
those times, must find the same word boundaries.
"""

import concurrent.futures
import math
import multiprocessing
import os

import numpy as np
import pytest
import soundfile

from data_prep import forced_aligner
from data_prep.corpus import kjv, tts
from lst_jax.data import audio

# ---------------------------------------------------------------- audio


def _tone(rate: int, seconds: float = 0.5) -> np.ndarray:
  t = np.arange(int(rate * seconds)) / rate
  return np.sin(2 * np.pi * 440.0 * t)


@pytest.mark.parametrize("ext,rate,channels,subtype", [
    ("wav", 8000, 1, "PCM_16"), ("flac", 8000, 2, "PCM_16"),
    ("wav", 22050, 1, "PCM_16"), ("flac", 22050, 2, "PCM_24"),
    ("wav", 44100, 2, "FLOAT"), ("flac", 44100, 1, "PCM_16"),
    ("wav", 16000, 2, "PCM_16"), ("flac", 48000, 1, "PCM_24")])
def test_load_audio_is_mono_16k(tmp_path, ext, rate, channels, subtype):
  tone = _tone(rate)
  data = np.stack([0.5 * tone, 0.25 * tone], axis=1)[:, :channels]  # stereo averages to 0.375
  path = str(tmp_path / f"tone.{ext}")
  soundfile.write(path, data, rate, subtype=subtype)
  wave = audio.load_audio(path)
  assert wave.dtype == np.float32 and wave.ndim == 1
  assert len(wave) == math.ceil(len(tone) * audio.TARGET_RATE / rate)
  expected = data.mean(axis=1).max() * _tone(audio.TARGET_RATE)[:len(wave)]
  inner = slice(320, len(wave) - 320)  # the resampling filter's edges aside
  np.testing.assert_allclose(wave[inner], expected[inner], atol=0.01)


def _write_wav(path, samples=np.zeros(1600), rate=16000, subtype="PCM_16"):
  soundfile.write(path, np.asarray(samples, np.float32), rate, subtype=subtype)
  return path


def _patch_rate(path, rate):
  """Overwrites the sample rate in a WAV header, as a corrupt file would have it."""
  data = bytearray(open(path, "rb").read())
  fmt = data.index(b"fmt ")
  data[fmt + 12:fmt + 16] = int(rate).to_bytes(4, "little")
  open(path, "wb").write(bytes(data))
  return path


def _text_file(path):
  open(path, "w").write("this is not audio\n")
  return path


def _touch(path):
  open(path, "wb").close()
  return path


@pytest.mark.parametrize("make,why", [
    (lambda d: os.path.join(d, "missing.wav"), "no such file"),
    (lambda d: d, "not a regular file"),
    (lambda d: _touch(os.path.join(d, "zero.wav")), "empty file"),
    (lambda d: _text_file(os.path.join(d, "notes.flac")), "not a WAV/FLAC"),
    (lambda d: _patch_rate(_write_wav(os.path.join(d, "rate0.wav")), 0), "not a WAV/FLAC"),
    (lambda d: _write_wav(os.path.join(d, "nosamples.wav"), np.zeros(0)), "empty audio"),
    (lambda d: _write_wav(os.path.join(d, "low.wav"), rate=4000), "sample rate 4000"),
    (lambda d: _patch_rate(_write_wav(os.path.join(d, "huge.wav")), 10**9), "sample rate 1000000000"),
    (lambda d: _write_wav(os.path.join(d, "nan.wav"), [0.0, np.nan, np.inf, 0.1], subtype="FLOAT"),
     "2 non-finite"),
])
def test_load_audio_errors_name_the_path(tmp_path, make, why):
  path = make(str(tmp_path))
  with pytest.raises(audio.AudioError) as e:
    audio.load_audio(path)
  assert str(e.value).startswith(path + ":") and why in str(e.value)
  assert isinstance(e.value, ValueError)


def test_resample_uses_the_exact_rational_factor():
  x = np.ones(44100, np.float32)
  assert len(audio.resample(x, 44100)) == 16000  # 160/441
  assert len(audio.resample(x[:22050], 22050)) == 16000  # 320/441
  np.testing.assert_array_equal(audio.resample(x, 16000), x)
  assert audio.resample(np.ones(11025), 11025, 22050).dtype == np.float32

# ---------------------------------------------------------------- alignment

SENTENCES = {
    "light": "And God said, Let there be light: and there was light.",
    "beginning": "In the beginning God created the heaven and the earth.",
    "oov": "And Mahalaleel lived sixty and five years, and begat Zorblaxian.",
}
VOICES = {v.name: v for v in tts.TRAIN_VOICES + tts.HELDOUT_VOICES}


@pytest.fixture(scope="module")
def spoken():
  """(sentence, voice) -> (words, 16 kHz audio, espeak's word times): synthesized once."""
  cache = {}

  def get(sentence: str, voice: str = "en-m3"):
    if (sentence, voice) not in cache:
      words, marked = kjv.split_words(SENTENCES[sentence])
      speech = tts.synthesize(words, VOICES[voice], marked)
      cache[sentence, voice] = (list(words), audio.resample(speech.wave, speech.sample_rate),
                                speech.word_times)
    return cache[sentence, voice]
  return get


def _check_spans(spans, num_words: int, duration: float) -> np.ndarray:
  spans = np.asarray(spans, np.float64)
  assert spans.shape == (num_words, 2)
  assert np.all(spans[:, 1] > spans[:, 0]), "every word lasts"
  assert np.all(spans[1:, 0] >= spans[:-1, 1]), "in order, not overlapping"
  assert spans[0, 0] >= 0.0 and spans[-1, 1] <= duration + 1e-9, "inside the audio"
  return spans


@pytest.mark.parametrize("sentence,voice", [
    ("light", "en-m3"), ("light", "en-f4"), ("beginning", "en-f3"), ("oov", "en-m7")])
def test_alignment_agrees_with_espeak_word_times(spoken, sentence, voice):
  words, wave, espeak_times = spoken(sentence, voice)
  spans = _check_spans(forced_aligner.align_words(wave, words), len(words), len(wave) / audio.TARGET_RATE)
  error = np.abs(spans - espeak_times)
  # Measured: 13-42 ms mean per utterance here; 20 ms over 2 x 300 Exodus verses, 4 voices.
  assert error.mean() < 0.08, f"mean boundary error {error.mean():.3f} s"
  assert error.max() < 0.4, f"worst boundary error {error.max():.3f} s"
  espeak_pauses = espeak_times[1:, 0] - espeak_times[:-1, 1]
  k = int(np.argmax(espeak_pauses))
  if espeak_pauses[k] >= 0.1:  # after "light:" or "years,"
    assert spans[k + 1, 0] - spans[k, 1] >= 0.05, "espeak's longest pause stays uncovered"


def test_punctuation_and_case_do_not_matter(spoken):
  words, wave, _ = spoken("light")
  styled = ["AND", "God", "said,", "\u201cLet", "THERE", "be", "light:", "and", "There", "was",
            "light."]
  assert [w.lower() for w in words] == [forced_aligner.dictionary_parts(w)[0] for w in styled]
  assert forced_aligner.align_words(wave, styled) == forced_aligner.align_words(wave, words)


def test_words_outside_the_dictionary_get_a_pronunciation():
  assert forced_aligner.pronunciation("light") == ("L AY T", True)
  assert forced_aligner.pronunciation("Light,")[0] == "L AY T"
  phones, known = forced_aligner.pronunciation("Zorblaxian")
  assert not known and phones.split()[:2] == ["Z", "AO"]
  assert not forced_aligner.pronunciation("Mahalaleel")[1]
  assert forced_aligner.number_words("1611") == ["one", "thousand", "six", "hundred", "eleven"]
  assert forced_aligner.pronunciation("1,611")[0] == forced_aligner.pronunciation("1611")[0]
  assert forced_aligner.pronunciation("forty-two")[0] == forced_aligner.pronunciation("42")[0]
  assert forced_aligner.letter_phones("knight") == ["N", "AY", "T"]
  assert forced_aligner.letter_phones("cell") == ["S", "EH", "L"]
  assert forced_aligner.dictionary_parts("Caf\u00e9-au-lait,") == ["cafe", "au", "lait"]


def test_alignment_is_a_pure_function(spoken):
  words_a, wave_a, _ = spoken("light")
  words_b, wave_b, _ = spoken("beginning", "en-f3")
  first = forced_aligner.align_words(wave_a, words_a)
  forced_aligner.align_words(wave_b, words_b)
  assert forced_aligner.align_words(wave_a, words_a) == first
  assert forced_aligner.align_words(wave_a.astype(np.float64), tuple(words_a)) == first


def test_alignment_failures_say_why(spoken):
  words, wave, _ = spoken("light")
  cases = [
      (wave, [], "no words"),
      (wave, "And God said", "not one string"),
      (wave[:800], words, "too short"),
      (np.zeros(16000, np.float32), words, "silent"),
      (np.where(np.arange(len(wave)) == 5, np.nan, wave), words, "non-finite"),
      (np.stack([wave, wave]), words, "1-D"),
      ((wave * 32767).astype(np.int16), words, "1-D float"),
      (wave, words[:1] + ["\u2014"] + words[1:], "word 1: word '\u2014' has no letters"),
      (wave[:9600], words * 4, "no alignment reaches the end"),  # 44 words in 0.6 s
  ]
  for audio_16k, ws, why in cases:
    with pytest.raises(forced_aligner.AlignmentError) as e:
      forced_aligner.align_words(audio_16k, ws)
    assert why in str(e.value), (why, str(e.value))
  assert issubclass(forced_aligner.AlignmentError, ValueError)


def test_spawned_workers_align_like_the_parent(spoken):
  jobs = [spoken("light"), spoken("oov", "en-m7")]
  expected = [forced_aligner.align_words(wave, words) for words, wave, _ in jobs]
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
    got = list(pool.map(forced_aligner.align_words, [w for _, w, _ in jobs], [w for w, _, _ in jobs]))
  assert got == expected
