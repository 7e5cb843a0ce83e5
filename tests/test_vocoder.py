"""The built-in vocoders (exemplar synthesis from a vocoder bank; Griffin-Lim without one) and the
held-out audio files listening reads (lst_jax.data.vocoder, lst_jax.data.heldout_audio)."""

import types

import numpy as np
import pytest

from lst_jax.data import codebook as codebook_lib, features, heldout_audio, vocoder
from lst_jax.data.manifest import DataError, check_named_files

HOP = 640   # 40 ms at 16 kHz


def _codebook(num_units=12, seed=0):
  rng = np.random.default_rng(seed)
  d = 2 * features.FEATURES["n_mels"]
  return codebook_lib.Codebook(centroids=rng.normal(size=(num_units, d)).astype(np.float32),
                               mean=np.zeros(d, np.float32), std=np.ones(d, np.float32))


def _bank(codebook, absent=(), utterances=4, frames=30, seed=0):
  """Utterances of random units (none of `absent`), each frame a distinct random noise burst."""
  rng = np.random.default_rng(seed)
  allowed = np.setdiff1d(np.arange(codebook.num_units), absent)
  units = [rng.choice(allowed, frames + i) for i in range(utterances)]
  waves = [rng.integers(-20000, 20000, len(u) * HOP - 100 * i).astype(np.int16) for i, u in enumerate(units)]
  return vocoder.make_bank(waves, units, [f"speech/v{i}/en-m3" for i in range(utterances)], codebook), units


def _manifest(directory, units_entry, num_units):
  return types.SimpleNamespace(dir=str(directory), units=units_entry, num_units=num_units, unit_rate=25.0)


def test_bank_round_trip_and_hash_check(tmp_path):
  cb = _codebook()
  bank, units = _bank(cb)
  assert len(bank.wave) == sum(len(u) for u in units) * HOP   # the short waveform is zero-padded
  path = vocoder.save_bank(bank, str(tmp_path))
  from lst_jax.data.manifest import sha256_file
  entry = {"num_units": cb.num_units, vocoder.BANK_KEY: vocoder.BANK, "vocoder_bank_sha256": sha256_file(path)}
  got = vocoder.load_bank(_manifest(tmp_path, entry, cb.num_units))
  for field in ("wave", "units", "starts", "ids", "near", "near_cost", "representative"):
    assert np.array_equal(getattr(got, field), getattr(bank, field)), field
  assert got.wave.dtype == np.int16 and list(got.ids) == [f"speech/v{i}/en-m3" for i in range(4)]
  assert vocoder.load_bank(_manifest(tmp_path, {"num_units": cb.num_units}, cb.num_units)) is None  # no bank

  # The manifest must give the bank's hash (like the codebook's), and a changed file is refused.
  raw = {"tokenizer": {"path": None}, "units": {vocoder.BANK_KEY: vocoder.BANK}, "splits": {}}
  with pytest.raises(DataError, match="vocoder_bank_sha256"):
    check_named_files(raw, "manifest.json")
  with pytest.raises(DataError, match="12 units"):   # a bank for other units
    vocoder.load_bank(_manifest(tmp_path, entry, 13))
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 1
  open(path, "wb").write(bytes(data))
  with pytest.raises(DataError, match="differs from the manifest") as e:
    vocoder.load_bank(_manifest(tmp_path, entry, cb.num_units))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["viterbi", "longest", "greedy"])
def test_synthesis_has_the_units_duration_and_is_deterministic(method):
  cb = _codebook()
  bank, _ = _bank(cb)
  rng = np.random.default_rng(1)
  for n in (0, 1, 2, 37):
    units = rng.integers(0, cb.num_units, n)
    wave = vocoder.exemplar_wave(units, bank, method=method)
    assert wave.dtype == np.float32 and wave.shape == (n * HOP,) and np.all(np.abs(wave) <= 1.0)
    assert np.array_equal(wave, vocoder.exemplar_wave(units, bank, method=method))
    segments = vocoder.exemplar_segments(units, bank, method=method)
    assert [t for t, _, _ in segments] == list(np.cumsum([0] + [k for _, _, k in segments])[:-1])
    assert sum(k for _, _, k in segments) == n
  with pytest.raises(ValueError, match=r"\[0, 12\)"):
    vocoder.exemplar_wave([0, 12], bank)
  with pytest.raises(ValueError, match="one hop"):
    vocoder.exemplar_wave([0, 1], bank, crossfade_ms=50.0)


@pytest.mark.parametrize("method", ["viterbi", "longest"])
def test_a_bank_utterances_own_units_give_back_its_audio(method):
  """The contiguous path: one piece, no join, so no crossfade: the training audio itself."""
  cb = _codebook()
  bank, units = _bank(cb)
  for i, u in enumerate(units):
    assert vocoder.exemplar_segments(u, bank, method=method) == [(0, int(bank.starts[i]), len(u))]
    wave = vocoder.exemplar_wave(u, bank, method=method)
    assert np.array_equal(wave, bank.wave[bank.starts[i] * HOP:bank.starts[i + 1] * HOP] / np.float32(32768))
  # Two utterances' halves back to back: two pieces, one join; away from the join's crossfade the
  # audio is each utterance's own.
  query = np.concatenate([units[0][:12], units[1][5:20]])
  wave = vocoder.exemplar_wave(query, bank, method=method, crossfade_ms=10.0)
  (t0, b0, n0), (j, b1, n1) = vocoder.exemplar_segments(query, bank, method=method)
  assert (t0, b0, j + n1, b1 + n1) == (0, 0, 27, bank.starts[1] + 20)   # (the join may move where units agree)
  own_a = bank.wave[:n0 * HOP] / np.float32(32768)
  own_b = bank.wave[b1 * HOP:(b1 + n1) * HOP] / np.float32(32768)
  assert np.array_equal(wave[:j * HOP - 80], own_a[:-80]) and np.array_equal(wave[j * HOP + 80:], own_b[80:])
  assert not np.allclose(wave[j * HOP - 80:j * HOP + 80], np.concatenate([own_a[-80:], own_b[:80]]))


@pytest.mark.parametrize("crossfade_ms", [10.0, vocoder.CROSSFADE_MS, 40.0])
def test_crossfades_keep_a_steady_signal_steady(crossfade_ms):
  """Raised-cosine fades at a join sum to one: a constant signal stays constant across every join."""
  cb = _codebook()
  rng = np.random.default_rng(2)
  units = [rng.integers(0, cb.num_units, 40) for _ in range(3)]
  bank = vocoder.make_bank([np.full(len(u) * HOP, 1000, np.int16) for u in units], units, ["a", "b", "c"], cb)
  query = np.concatenate([units[0][5:15], units[2][3:20], units[1][10:30]])   # joins well inside utterances
  assert len(vocoder.exemplar_segments(query, bank)) == 3
  assert np.allclose(vocoder.exemplar_wave(query, bank, crossfade_ms=crossfade_ms), 1000 / 32768)


def test_a_unit_absent_from_the_bank_plays_its_nearest_present_unit():
  """Generated units may be any unit, so an absent one is never refused: it is played as the
  present unit whose centroid is nearest (the bank's table, made from the codebook)."""
  cb = _codebook()
  bank, _ = _bank(cb, absent=(3, 7))
  d = np.sum((cb.centroids[:, None] - cb.centroids[None]) ** 2, axis=-1)
  d[:, [3, 7]] = np.inf
  assert np.array_equal(bank.substitute, np.argmin(d, axis=1))
  assert bank.substitute[3] not in (3, 7) and bank.substitute[5] == 5
  assert np.all(bank.units[bank.representative] == bank.substitute)
  for method in ("viterbi", "longest", "greedy"):
    units = np.array([3, 3, 7, 5, 3])
    segments = vocoder.exemplar_segments(units, bank, method=method)
    played = np.concatenate([bank.units[b:b + k] for _, b, k in segments])
    assert not np.isin(played, [3, 7]).any()
    if method != "viterbi":   # exact units: each absent one is its substitute
      assert np.array_equal(played, bank.substitute[units])
    assert vocoder.exemplar_wave(units, bank, method=method).shape == (5 * HOP,)


def test_vocoder_picks_exemplar_with_a_bank_and_griffin_lim_without(tmp_path):
  cb = _codebook()
  bank, units = _bank(cb)
  v = vocoder.Vocoder(cb, bank)
  wave, rate = v(units[1])
  assert v.kind == vocoder.EXEMPLAR and rate == 16000 and wave.shape == (len(units[1]) * HOP,)
  assert "exemplar" in v.describe() and "12/12 units" in v.describe()
  assert np.array_equal(v.units_to_wave(units[1])[0], wave)
  gl = vocoder.Vocoder(cb)
  wave, rate = gl.units_to_wave(np.array([0, 1, 1, 2, 3] * 5))         # 25 units = 1 s
  assert gl.kind == vocoder.GRIFFIN_LIM and rate == 16000 and wave.shape == (16000,)
  assert np.isfinite(wave).all() and np.max(np.abs(wave)) == np.float32(0.9)
  with pytest.raises(ValueError, match="12 units"):
    vocoder.Vocoder(_codebook(num_units=13), bank)


def test_for_dataset_reads_the_manifest(tmp_path):
  """A dataset directory: its codebook and (hash-checked) bank, or Griffin-Lim where none is named."""
  from lst_jax.data.manifest import sha256_file
  cb = _codebook()
  np.save(tmp_path / codebook_lib.CODEBOOK, cb.centroids)
  np.save(tmp_path / codebook_lib.FEATURE_STATS, np.stack([cb.mean, cb.std]))
  bank, _ = _bank(cb)
  entry = {vocoder.BANK_KEY: vocoder.BANK,
           "vocoder_bank_sha256": sha256_file(vocoder.save_bank(bank, str(tmp_path)))}
  assert vocoder.Vocoder.for_dataset(_manifest(tmp_path, entry, cb.num_units)).kind == vocoder.EXEMPLAR
  assert vocoder.Vocoder.for_dataset(_manifest(tmp_path, {}, cb.num_units)).kind == vocoder.GRIFFIN_LIM
  forced = vocoder.Vocoder.for_dataset(_manifest(tmp_path, entry, cb.num_units), kind=vocoder.GRIFFIN_LIM)
  assert forced.kind == vocoder.GRIFFIN_LIM and forced.bank is None
  with pytest.raises(DataError, match="no vocoder bank"):
    vocoder.Vocoder.for_dataset(_manifest(tmp_path, {}, cb.num_units), kind=vocoder.EXEMPLAR)
  (tmp_path / vocoder.BANK).unlink()
  with pytest.raises(DataError, match="does not exist"):
    vocoder.Vocoder.for_dataset(_manifest(tmp_path, entry, cb.num_units))


def test_heldout_audio_naming_and_round_trip(tmp_path):
  assert heldout_audio.file_name("speech/Ge.1.3/en-f4") == "speech+Ge.1.3+en-f4.flac"
  names = [heldout_audio.file_name(i) for i in ("a/b", "a+b", "a%2Fb", "a b", "..", "é")]
  assert len(set(names)) == len(names) and all("/" not in n for n in names)
  assert names[4] == "%2E%2E.flac" and names[5] == "%C3%A9.flac"
  d = str(tmp_path)
  assert heldout_audio.path_for(d, "speech/Ge.1.3/en-f4") == str(tmp_path / "audio" / "heldout" /
                                                                 "speech+Ge.1.3+en-f4.flac")
  assert heldout_audio.read(d, "speech/Ge.1.3/en-f4") is None     # a dataset without held-out audio
  wave = (np.sin(np.arange(8000) / 7.0) * 12000).astype(np.int16)
  path = heldout_audio.write(d, "speech/Ge.1.3/en-f4", wave)
  assert path == heldout_audio.path_for(d, "speech/Ge.1.3/en-f4")
  got, rate = heldout_audio.read(d, "speech/Ge.1.3/en-f4")
  assert rate == 16000 and got.dtype == np.float32 and np.array_equal(np.round(got * 32768), wave)
  heldout_audio.write(d, "x", np.zeros(22050, np.float32), 22050)   # float audio at another rate: resampled
  assert heldout_audio.read(d, "x")[0].shape == (16000,)


@pytest.mark.slow
def test_the_demo_builder_writes_a_bank_and_heldout_audio(tmp_path, capsys):
  """A tiny demo build: the bank (its training utterances' own units give back their audio), the
  held-out utterances' audio, both named by the manifest; a changed bank is refused."""
  import shutil
  from data_prep.corpus import demo
  from lst_jax.data.manifest import load_manifest
  from lst_jax.data.shards import Shards
  assert shutil.which("bible"), "Debian's bible-kjv is missing: run `make setup` (apt-get install bible-kjv)"
  out = str(tmp_path / "demo")
  assert demo.main([f"--output={out}", "--num_train_verses=4", "--num_heldout_verses=2", "--num_text_docs=3",
                    "--num_units=20", "--vocab_size=200", "--vocoder_bank_utterances=5", "--workers=0"]) == 0
  assert "wrote the vocoder bank (5 training utterances) and 2 held-out" in capsys.readouterr().out
  m = load_manifest(out)
  assert m.raw["build"]["version"] == demo.BUILD_VERSION == 2 and m.units[vocoder.BANK_KEY] == vocoder.BANK
  assert demo.not_ours(out) is None
  v = vocoder.Vocoder.for_dataset(m)
  train = {r.id: r for r in Shards(m.split("train").speech, m.shard_records)}
  assert v.kind == vocoder.EXEMPLAR and len(v.bank.ids) == 5 and set(v.bank.ids) <= set(train)
  for i, rid in enumerate(v.bank.ids):
    wave, _ = v(train[rid].units)
    assert np.array_equal(wave, v.bank.wave[v.bank.starts[i] * HOP:v.bank.starts[i + 1] * HOP] / np.float32(32768))
  for r in Shards(m.split("heldout").speech, m.shard_records):
    wave, rate = heldout_audio.read(out, r.id)
    assert rate == 16000 and features.num_frames(len(wave), rate) == len(r.units)
  with open(f"{out}/{vocoder.BANK}", "r+b") as f:
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(DataError, match="sha256"):
    vocoder.Vocoder.for_dataset(load_manifest(out))
