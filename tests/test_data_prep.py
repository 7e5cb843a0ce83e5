"""data_prep: real espeak-ng, real SentencePiece, real ArrayRecord; no mocks."""

import functools
import os
import shutil
import subprocess
import sys

import grain
import numpy as np
import pytest

from data_prep import codebook_training, frame_spans, shards, tokenizer_training
from data_prep.corpus import demo, kjv, tts
from data_prep.corpus import selection as corpus
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import features, tokenizer
from lst_jax.data import records
from lst_jax.data.manifest import load_manifest



def needs_bible(test):
  """Marks tests that read the KJV: `make test` installs Debian's bible-kjv, so its absence
  is a setup failure, never a skip."""
  @functools.wraps(test)
  def run(*args, **kwargs):
    assert shutil.which("bible"), "Debian's bible-kjv is missing: run `make setup` (apt-get install bible-kjv)"
    return test(*args, **kwargs)
  return run

SENTENCES = [
    ("Let there be light. And there was light,", "and God saw that it was good."),
    ("The LORD is my shepherd; I shall not want.",),
]


def _words(text):
  return kjv.split_words(" ".join(text))


def test_split_words_keeps_words_and_prosody():
  words, spoken = kjv.split_words("And God said, Let there be light: the sons' king's (house).")
  assert words == ("And", "God", "said", "Let", "there", "be", "light", "the", "sons'", "king's", "house")
  assert spoken[2] == "said," and spoken[6] == "light:" and spoken[-1] == "house."
  v = kjv.parse_verse("Ge1:3 And God said, Let there be light: and there was light.")
  assert (v.ref, v.book, len(v.words)) == ("Ge1:3", "Ge", 11)


def test_missing_bible_cli_says_how_to_install(monkeypatch):
  monkeypatch.setenv("PATH", "/nonexistent")
  with pytest.raises(kjv.BibleError, match="apt-get install bible-kjv"):
    kjv.read_verses("Ge1:1")


@needs_bible
def test_read_verses():
  verses = kjv.read_verses("Ge1:1-5")
  assert [v.ref for v in verses] == [f"Ge1:{i}" for i in range(1, 6)]
  assert verses[0].words[:3] == ("In", "the", "beginning")


@pytest.mark.parametrize("voice", [tts.TRAIN_VOICES[0], tts.HELDOUT_VOICES[0]])
@pytest.mark.parametrize("text", SENTENCES)
def test_synthesis_gives_one_ordered_time_per_word(text, voice):
  words, spoken = _words(text)
  speech = tts.synthesize(words, voice, spoken)
  assert speech.sample_rate == 22050
  assert speech.wave.dtype == np.float32 and 1.0 < speech.duration < 10.0
  assert np.abs(speech.wave).max() <= 1.0
  t = speech.word_times.astype(np.float64)
  assert t.shape == (len(words), 2)
  assert np.all(t[:, 1] > t[:, 0])                    # every word has audio
  assert np.all(t[1:, 0] >= t[:-1, 1])                # in order, non-overlapping
  assert t[0, 0] >= 0 and t[-1, 1] <= speech.duration + 1e-6
  # Pauses (after a comma or full stop) are left out of the words, as silence.
  assert np.sum(t[1:, 0] - t[:-1, 1]) > 0.05


def test_voices_differ():
  words, spoken = _words(SENTENCES[1])
  a = tts.synthesize(words, tts.TRAIN_VOICES[0], spoken)
  b = tts.synthesize(words, tts.TRAIN_VOICES[1], spoken)
  assert len(a.wave) != len(b.wave) or not np.allclose(a.wave, b.wave)
  assert len({v.espeak for v in tts.TRAIN_VOICES}) >= 3
  assert not {v.espeak for v in tts.HELDOUT_VOICES} & {v.espeak for v in tts.TRAIN_VOICES}


def test_synthesis_is_deterministic():
  # espeak-ng keeps hidden state between calls; synthesize must not depend on it.
  words, spoken = _words(SENTENCES[0])
  first = tts.synthesize(words, tts.TRAIN_VOICES[1], spoken)
  tts.synthesize(*_words(SENTENCES[1])[:1], tts.HELDOUT_VOICES[0])
  again = tts.synthesize(words, tts.TRAIN_VOICES[1], spoken)
  np.testing.assert_array_equal(first.wave, again.wave)
  np.testing.assert_array_equal(first.word_times, again.word_times)


def test_word_times_share_a_stretch_espeak_spoke_as_one():
  # Word 2's mark sits on word 3's: espeak spoke words 1-2 together in [0.5, 1.0).
  loud = np.zeros(200)  # 0 dB everywhere: nothing to trim
  t = tts.word_times(np.array([0.0, 0.5, 1.0, 1.0]), [3, 5, 5, 4], loud, 2.0)
  np.testing.assert_allclose(t, [[0, 0.5], [0.5, 0.75], [0.75, 1.0], [1.0, 2.0]], atol=1e-6)
  t = tts.word_times(np.array([0.0, 0.0, 1.0]), [1, 3, 4], loud, 2.0)  # a silent first mark
  np.testing.assert_allclose(t, [[0, 0.25], [0.25, 1.0], [1.0, 2.0]], atol=1e-6)
  # Trailing silence is pulled out of a word.
  quiet_tail = np.where(np.arange(200) >= 150, -100.0, 0.0)
  t = tts.word_times(np.array([0.0, 1.0]), [3, 3], quiet_tail, 2.0)
  np.testing.assert_allclose(t, [[0, 1.0], [1.0, 1.5]], atol=1e-6)


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.37])
def test_features_are_25_frames_per_second(seconds):
  sr = 22050
  wave = np.random.default_rng(0).normal(scale=0.1, size=int(seconds * sr)).astype(np.float32)
  f = features.logmel(wave, sr)
  assert abs(len(f) - 25 * seconds) <= 1
  assert f.shape[1] == 2 * features.FEATURES["n_mels"] and f.dtype == np.float32
  assert np.all(np.isfinite(f))


def test_features_of_speech():
  words, spoken = _words(SENTENCES[0])
  speech = tts.synthesize(words, tts.TRAIN_VOICES[2], spoken)
  f = features.logmel(speech.wave, speech.sample_rate)
  assert abs(len(f) - 25 * speech.duration) <= 1


def _blobs(seed=0):
  rng = np.random.default_rng(seed)
  centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
  labels = rng.integers(4, size=800)
  return centers[labels] + rng.normal(scale=0.5, size=(800, 2)).astype(np.float32), labels


def test_kmeans_recovers_blobs_deterministically():
  x, labels = _blobs()
  cb = codebook_training.fit([x[:300], x[300:]], num_units=4, seed=3)
  units = codebook_lib.quantize(x, cb)
  assert units.dtype == np.int32 and units.min() >= 0 and units.max() < 4
  # Each true cluster maps to exactly one unit, and the units are distinct.
  mapping = {int(l): set(units[labels == l].tolist()) for l in range(4)}
  assert all(len(m) == 1 for m in mapping.values())
  assert len(set.union(*mapping.values())) == 4
  again = codebook_training.fit([x[:300], x[300:]], num_units=4, seed=3)
  np.testing.assert_array_equal(cb.centroids, again.centroids)


def test_codebook_save_load(tmp_path):
  x, _ = _blobs()
  cb = codebook_training.fit([x], num_units=4, seed=0)
  codebook_training.save(cb, str(tmp_path))
  loaded = codebook_lib.load(str(tmp_path))
  np.testing.assert_array_equal(codebook_lib.quantize(x, loaded), codebook_lib.quantize(x, cb))


def test_kmeans_needs_enough_frames():
  with pytest.raises(codebook_lib.QuantizerError, match="at least num_units=50"):
    codebook_training.fit([np.zeros((20, 3), np.float32)], num_units=50)


def test_tokenizer_gives_every_word_an_id(tmp_path):
  lines = [" ".join(w) for w in (_words(s)[0] for s in SENTENCES)] * 20
  model = tokenizer_training.train(lines, vocab_size=60)
  path = tokenizer_training.save(model, str(tmp_path))
  sp = tokenizer.load(path)
  assert sp.bos_id() == -1 and sp.eos_id() == -1 and sp.pad_id() == -1 and sp.unk_id() == 0
  words = ["Let", "there", "be", "light", "Zebulun", "x"]
  ids = tokenizer.encode_words(sp, words)
  assert len(ids) == len(words) and all(len(w) >= 1 for w in ids)
  assert all(0 <= i < sp.get_piece_size() for w in ids for i in w)
  assert tokenizer_training.train(lines, vocab_size=60) == model  # deterministic


def test_unit_spans_are_valid_after_collisions():
  # Two words inside one frame, a zero-length word, and a word past the end.
  times = np.array([[0.00, 0.01], [0.01, 0.015], [0.5, 0.5], [0.5, 0.9], [0.9, 5.0]])
  spans = frame_spans.unit_spans(times, num_frames=20)
  rec = records.speech_record("x", [[1]] * 5, np.zeros(20), spans).validate()
  assert rec.word_spans[-1, 1] == 20
  squeezed = frame_spans.unit_spans(np.array([[0.0, 1.0]] * 4), num_frames=4)
  np.testing.assert_array_equal(squeezed, [[0, 1], [1, 2], [2, 3], [3, 4]])
  with pytest.raises(frame_spans.AlignmentError):
    frame_spans.unit_spans(np.zeros((5, 2)), num_frames=4)


def test_shards_round_trip_through_grain(tmp_path):
  recs = [records.speech_record(f"s{i}", [[1, 2], [3]], np.arange(10) % 7, [[0, 4], [5, 9]])
          for i in range(5)] + [records.text_record("t", [[4], [5, 6]])]
  names = shards.write_records(str(tmp_path), "train", "mixed", recs, num_shards=2)
  assert names == ["train/mixed-00000-of-00002.array_record", "train/mixed-00001-of-00002.array_record"]
  assert not [p for p in os.listdir(tmp_path / "train") if p.endswith(".tmp")]
  source = grain.sources.ArrayRecordDataSource([str(tmp_path / n) for n in names])
  assert len(source) == len(recs)
  for i, want in enumerate(recs):
    got = records.decode(source[i])
    assert got.id == want.id and got.kind == want.kind
    for field in ("text_ids", "word_offsets", "units", "word_spans"):
      np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


@needs_bible
def test_corpus_splits_are_disjoint():
  c = corpus.select(kjv.read_verses(), num_train=40, num_heldout=10, num_docs=30, seed=1)
  train = {v.ref for v in c.train_speech}
  heldout = {v.ref for v in c.heldout_speech}
  assert len(train) == 40 and len(heldout) == 10 and not train & heldout
  doc_words = sum(len(d.words) for d in c.train_docs)
  assert len(c.train_docs) == 30 and doc_words > 30 * corpus.VERSES_PER_DOC
  assert all(corpus.MIN_WORDS <= len(v.words) <= corpus.MAX_WORDS for v in c.train_speech)
  assert [d.id for d in c.heldout_docs] == [v.ref for v in c.heldout_speech]


@pytest.mark.slow
@needs_bible
def test_demo_build_end_to_end_then_reuse(tmp_path, capsys):
  out = str(tmp_path / "demo")
  argv = [f"--output={out}", "--num_train_verses=6", "--num_heldout_verses=2", "--num_text_docs=5",
          "--num_units=24", "--vocab_size=300"]
  assert demo.main(argv) == 0
  log = capsys.readouterr().out
  assert "synthesized 20/20 utterances" in log and "demo data ready at" in log

  m = load_manifest(out)
  assert m.num_units == 24 and m.unit_rate == 25.0 and m.units["quantizer"] == "logmel-kmeans"
  assert 0 < m.text_vocab_size <= 300
  train, heldout = m.split("train"), m.split("heldout")
  assert (train.num_speech, train.num_text, heldout.num_speech, heldout.num_text) == (18, 5, 2, 2)
  assert m.raw["splits"]["train"]["voices"] == [v.name for v in tts.TRAIN_VOICES]
  assert train.speech_hours > 0
  for split in (train, heldout):
    for paths, count, kind in ((split.speech, split.num_speech, "speech"),
                               (split.text, split.num_text, "text")):
      source = grain.sources.ArrayRecordDataSource(list(paths))
      assert len(source) == count
      for i in range(len(source)):
        rec = records.decode(source[i]).validate(m.num_units, m.text_vocab_size)
        assert rec.kind == kind

  # Same settings again: a no-op that says so, in a fresh process that loads none of the build's
  # machinery (jax, the build pipeline, its synthesis, tokenizer, k-means and shard libraries)
  # and rewrites no file of the dataset.
  def files():  # path -> (mtime, size) of every file in the dataset
    paths = [os.path.join(d, f) for d, _, names in os.walk(out) for f in names]
    return {p: (os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths}
  before = files()
  heavy = ("jax", "data_prep.corpus.demo_build", "data_prep.corpus.render", "scipy", "sentencepiece", "array_record")
  again = subprocess.run([sys.executable, "-c", "import sys; from data_prep.corpus import demo; "
                          "rc = demo.main(sys.argv[1:]); "
                          f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded; "
                          "sys.exit(rc)",
                          *argv], capture_output=True, text=True, cwd=os.path.dirname(demo.__file__) + "/../..")
  assert again.returncode == 0, again.stderr
  assert "demo data ready at" in again.stdout and "reused" in again.stdout
  assert files() == before


def test_study_corpus_settings_and_voice_rotation():
  """The study corpus: six training voices (each verse spoken by three, in rotation, so each voice
  speaks half of the verses), two unseen held-out voices; the demo keeps every voice on every
  verse in its old order."""
  from data_prep.corpus import demo_build
  study = demo.build_settings(demo.parse_args(["--corpus=study"]))
  train = [tts.Voice(**v) for v in study["train_voices"]]
  heldout = [tts.Voice(**v) for v in study["heldout_voices"]]
  assert len(train) + len(heldout) >= 8 and study["voices_per_verse"] == 3
  assert not {v.espeak for v in train} & {v.espeak for v in heldout}
  assert len({v.espeak for v in train + heldout}) == len(train) + len(heldout)
  verses = [kjv.Verse(ref=f"Ge1:{i}", book="Ge", text="w", words=("w",) * 8, spoken=("w",) * 8)
            for i in range(1, 13)]
  jobs = demo_build.speech_jobs(verses, train, 3)
  assert len(jobs) == 36
  per_verse = {}
  for j in jobs:
    per_verse.setdefault(j.id.split("/")[1], []).append(j.voice.name)
  assert all(len(set(v)) == 3 for v in per_verse.values())
  counts = {v.name: sum(j.voice == v for j in jobs) for v in train}
  assert set(counts.values()) == {6}                                   # 12 verses x 3 / 6 voices
  demo_settings = demo.build_settings(demo.parse_args([]))
  assert [v["name"] for v in demo_settings["train_voices"]] == [v.name for v in tts.TRAIN_VOICES]
  assert [j.voice.name for j in demo_build.speech_jobs(verses[:2], tts.TRAIN_VOICES, 3)] == \
      [v.name for v in tts.TRAIN_VOICES] * 2
  assert demo.parse_args(["--corpus=study", "--num_train_verses=7"]).num_train_verses == 7
