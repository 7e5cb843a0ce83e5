"""HuBERT units from the user's own checkpoint and k-means, end to end through data_prep.build, and our
own k-means on scikit-learn. A tiny randomly initialised HubertModel (hidden 32, 2 layers, conv strides
10 * 8 * 8 = 640 samples: 25 Hz) stands in for the 25 Hz mHuBERT; nothing is downloaded."""

import json
import math
import os

import joblib
import numpy as np
import pytest
import soundfile

from data_prep import codebook_training
from data_prep.build import cli
from data_prep.corpus import tts
from data_prep.maintenance import merge, stats
from lst_jax.data import audio, codebook as codebook_lib, hubert, provenance, quantizers
from lst_jax.data.manifest import load_manifest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LAYER, K, HOP, FIELD = 1, 8, 640, 650   # receptive field 1 + 19 * 1 + 7 * 10 + 7 * 80
SENTENCES = ["Let there be light and there was light", "The LORD is my shepherd I shall not want"]


def tiny_hubert(path, seed, layers=2, large=False):
  """large: HuBERT large's layout (layer-norm conv stack on normalized waveforms, pre-norm transformer)."""
  torch.manual_seed(seed)
  config = transformers.HubertConfig(
      hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
      conv_dim=(16, 16, 16), conv_stride=(10, 8, 8), conv_kernel=(20, 8, 8), num_conv_pos_embeddings=16,
      num_conv_pos_embedding_groups=2, feat_extract_norm="layer" if large else "group",
      do_stable_layer_norm=large)
  transformers.HubertModel(config).save_pretrained(str(path))
  return str(path)


def centred_frames_input(wave):
  """Zero-padded so that frame i of the conv stack is centred on [i * HOP, (i + 1) * HOP): [1, samples]."""
  frames = math.ceil(len(wave) / HOP)
  left = (FIELD - HOP) // 2
  x = np.pad(wave, (left, (frames - 1) * HOP + FIELD - left - len(wave)))
  return torch.from_numpy(x[None].astype(np.float32))


def reference_units(checkpoint, wave, kmeans):
  """The independent computation: zero-pad to centred frames, HubertModel hidden_states[LAYER], predict."""
  model = transformers.HubertModel.from_pretrained(checkpoint, local_files_only=True).eval()
  with torch.inference_mode():
    h = model(centred_frames_input(wave), output_hidden_states=True).hidden_states[LAYER]
  return kmeans.predict(h[0].numpy())


def sine_audio(seconds, freq, rate=16000):
  t = np.arange(int(seconds * rate)) / rate
  noise = np.random.default_rng(int(freq)).normal(scale=0.02, size=len(t))
  return (0.3 * np.sin(2 * np.pi * freq * t * (1 + 0.5 * t)) + noise).astype(np.float32)


def run(capsys, *argv):
  rc = cli.main([*argv, "--workers=0"])
  out, err = capsys.readouterr()
  return rc, out, err


def records(out_dir, split="train"):
  m = load_manifest(str(out_dir))
  return {r.id: r for r in stats.read_records(m.split(split).speech)}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  """Two checkpoints, a k-means fit on the first one's layer-1 states (joblib and .npy), another k-means,
  a manifest of sine sweeps with word times, and a folder of espeak-ng speech with transcripts."""
  from sklearn.cluster import KMeans
  root = tmp_path_factory.mktemp("hubert")
  a, b = tiny_hubert(root / "hubert_a", 0), tiny_hubert(root / "hubert_b", 1)
  waves = {f"s{i}": sine_audio(s, f) for i, (s, f) in enumerate([(1.2, 220.0), (0.8, 500.0), (2.0, 330.0)])}
  feats = hubert.Hubert(a, LAYER, "cpu").features(list(waves.values()))
  km = KMeans(K, n_init=1, random_state=0).fit(np.concatenate(feats))
  joblib.dump(km, root / "km.joblib")
  np.save(root / "km.npy", km.cluster_centers_)
  other = KMeans(K, n_init=1, random_state=1).fit(np.concatenate(feats)[::-1] + 0.01)
  joblib.dump(other, root / "other.joblib")
  lines, wav = [], _mkdir(root / "wav")
  for id_, w in waves.items():
    soundfile.write(wav / f"{id_}.wav", w, 16000)
    dur = len(w) / 16000
    lines.append(json.dumps({"id": id_, "transcript": "one two", "audio": f"wav/{id_}.wav",
                             "words": [{"word": "one", "start": 0.0, "end": dur / 2},
                                       {"word": "two", "start": dur / 2, "end": dur}]}))
  (root / "sines.jsonl").write_text("\n".join(lines) + "\n")
  speech = _mkdir(root / "speech")
  for i, s in enumerate(SENTENCES):
    sp = tts.synthesize(s.split(), tts.TRAIN_VOICES[i])
    soundfile.write(speech / f"u{i}.wav", sp.wave, sp.sample_rate)
    (speech / f"u{i}.txt").write_text(s + "\n")
  return {"root": root, "a": a, "b": b, "km": km, "waves": waves, "speech": str(speech),
          "joblib": str(root / "km.joblib"), "npy": str(root / "km.npy"), "other": str(root / "other.joblib"),
          "sines": str(root / "sines.jsonl")}


def _mkdir(path):
  os.makedirs(path, exist_ok=True)
  return path


def hubert_args(checkpoint, kmeans):
  return ["--units=hubert", f"--hubert={checkpoint}", f"--layer={LAYER}", f"--kmeans={kmeans}"]


def test_audio_folder_with_hubert_units(assets, tmp_path, capsys):
  out = tmp_path / "ds"
  rc, log, err = run(capsys, "--format=audio", f"--input={assets['speech']}", f"--output={out}",
                     "--vocab_size=60", *hubert_args(assets["a"], assets["joblib"]))
  assert rc == 0, err
  assert "2 speech records from 2 entries" in log
  m = load_manifest(str(out))
  u = m.units
  sha, files = hubert.checkpoint_sha256(assets["a"])
  assert (u["source"], u["quantizer"], u["num_units"], u["frame_rate"], u["layer"]) == (
      "quantizer", quantizers.HUBERT_KMEANS, K, 25.0, LAYER)
  assert u["hubert_sha256"] == sha and set(files) == {"config.json", "model.safetensors"}
  assert u["hubert"]["path"] == os.path.abspath(assets["a"]) and u["hubert"]["hop"] == HOP
  assert u["kmeans_sha256"] and u["fit"]["from"] == os.path.abspath(assets["joblib"])
  np.testing.assert_array_equal(np.load(out / quantizers.KMEANS_FILE), assets["km"].cluster_centers_)
  recs = records(out)
  waves = [audio.load_audio(os.path.join(assets["speech"], f"u{i}.wav")) for i in range(2)]
  for i, wave in enumerate(waves):
    r = recs[f"u{i}"]
    assert len(r.units) == math.ceil(len(wave) / HOP) and abs(len(r.units) - 25 * len(wave) / 16000) < 1
    assert r.unit_rate == 25.0 and r.word_spans[-1, 1] <= len(r.units)
  wave = waves[0]
  np.testing.assert_array_equal(recs["u0"].units, reference_units(assets["a"], wave, assets["km"]))
  assert len(set(recs["u0"].units.tolist())) > 1
  # Evaluation turns audio into units with the dataset's own pipeline.
  np.testing.assert_array_equal(quantizers.for_manifest(m).units(wave, 16000), recs["u0"].units)
  from lst_jax import vocab as vocab_lib
  from lst_jax.eval import runner
  conv = runner.Converter(m, vocab_lib.Vocab(text_size=m.text_vocab_size, num_units=K))
  np.testing.assert_array_equal(conv.quantize(os.path.join(assets["speech"], "u0.wav"), "u0"), recs["u0"].units)

  # A second build with another k-means or another checkpoint is refused, naming the field; nothing written.
  kmeans_file = np.load(out / quantizers.KMEANS_FILE)
  rc, _, err = run(capsys, "--format=audio", f"--input={assets['speech']}", f"--output={out}", "--split=heldout",
                   *hubert_args(assets["a"], assets["other"]))
  assert rc == 2 and "differ in units.kmeans_sha256" in err and "Traceback" not in err, err
  rc, _, err = run(capsys, "--format=audio", f"--input={assets['speech']}", f"--output={out}", "--split=heldout",
                   *hubert_args(assets["b"], assets["joblib"]))
  assert rc == 2 and "differ in units.hubert_sha256" in err, err
  rc, _, err = run(capsys, "--format=audio", f"--input={assets['speech']}", f"--output={out}", "--split=heldout",
                   "--units=logmel")
  assert rc == 2 and "units.quantizer" in err, err
  assert "heldout" not in load_manifest(str(out)).splits
  np.testing.assert_array_equal(np.load(out / quantizers.KMEANS_FILE), kmeans_file)


def test_manifest_audio_npy_centroids_equal_joblib_and_merge_refuses_other_hubert(assets, tmp_path, capsys):
  dirs = {}
  for name, checkpoint, kmeans in (("joblib", assets["a"], assets["joblib"]), ("npy", assets["a"], assets["npy"]),
                                   ("other", assets["b"], assets["joblib"])):
    dirs[name] = tmp_path / name
    rc, _, err = run(capsys, "--format=manifest", f"--input={assets['sines']}", f"--output={dirs[name]}",
                     "--vocab_size=30", *hubert_args(checkpoint, kmeans))
    assert rc == 0, err
  by_joblib, by_npy = records(dirs["joblib"]), records(dirs["npy"])
  for id_, wave in assets["waves"].items():
    assert len(by_joblib[id_].units) == round(len(wave) / 16000 * 25)   # 1.2 s -> 30, 0.8 s -> 20, 2 s -> 50
    np.testing.assert_array_equal(by_joblib[id_].units, by_npy[id_].units)
  np.testing.assert_array_equal(by_joblib["s0"].units, reference_units(assets["a"], assets["waves"]["s0"],
                                                                         assets["km"]))
  raw = {k: load_manifest(str(d)).raw for k, d in dirs.items()}
  assert raw["joblib"]["units"]["kmeans_sha256"] == raw["npy"]["units"]["kmeans_sha256"]
  provenance.check_compatible(raw["joblib"], raw["npy"], "A", "B")
  # A second build reusing the directory's HuBERT needs no flags.
  rc, log, err = run(capsys, "--format=manifest", f"--input={assets['sines']}", f"--output={dirs['npy']}",
                     "--split=heldout", "--allow_overlap")
  assert rc == 0 and "HuBERT" in log, err
  # Merging datasets of different checkpoints is refused; of the same one, it copies the k-means.
  assert merge.main([f"--inputs={dirs['joblib']},{dirs['other']}", f"--output={tmp_path / 'm1'}"]) == 2
  assert "differ in units.hubert_sha256" in capsys.readouterr().err
  assert merge.main([f"--inputs={dirs['joblib']},{dirs['npy']}", f"--output={tmp_path / 'm2'}"]) == 0
  assert (tmp_path / "m2" / quantizers.KMEANS_FILE).is_file()


def test_bad_hubert_arguments_are_clear_errors(assets, tmp_path, capsys):
  src = ["--format=manifest", f"--input={assets['sines']}", f"--output={tmp_path / 'ds'}", "--vocab_size=30"]
  cases = [
      (["--units=hubert", f"--hubert={assets['a']}", f"--layer={LAYER}"], "--units=hubert needs"),
      (hubert_args(tmp_path / "nowhere", assets["joblib"]), "not a folder"),
      (["--units=hubert", f"--hubert={assets['a']}", "--layer=3", f"--kmeans={assets['joblib']}"],
       "--layer=3: "),
      (hubert_args(assets["a"], tmp_path / "missing.joblib"), "no such file"),
      (hubert_args(assets["a"], assets["sines"]), "not a joblib k-means model"),
  ]
  np.save(tmp_path / "wide.npy", np.zeros((4, 5), np.float32))
  cases.append((hubert_args(assets["a"], tmp_path / "wide.npy"), "5-dimensional centroids"))
  for extra, message in cases:
    rc, _, err = run(capsys, *src, *extra)
    assert rc == 2 and err.startswith("error: ") and message in err and "Traceback" not in err, (extra, err)
  assert not (tmp_path / "ds" / "manifest.json").exists()


def test_our_kmeans_is_deterministic_and_saves_a_joblib_kmeans(tmp_path, capsys):
  rng = np.random.default_rng(0)
  centers = rng.normal(scale=4.0, size=(6, 5)).astype(np.float32)
  x = centers[rng.integers(6, size=3000)] + rng.normal(size=(3000, 5)).astype(np.float32)
  cb = codebook_training.fit([x[:1000], x[1000:]], num_units=6, seed=7)
  again = codebook_training.fit([x[:1000], x[1000:]], num_units=6, seed=7)
  np.testing.assert_array_equal(cb.centroids, again.centroids)
  assert not np.array_equal(cb.centroids, codebook_training.fit([x], num_units=6, seed=8).centroids)
  codebook_training.save(cb, str(tmp_path))
  model = joblib.load(tmp_path / codebook_training.KMEANS_JOBLIB)
  assert type(model).__name__ == "KMeans" and model.cluster_centers_.shape == (6, 5)
  np.testing.assert_array_equal(model.predict((x - cb.mean) / cb.std), codebook_lib.quantize(x, cb))
  np.testing.assert_array_equal(codebook_training.read_centroids(str(tmp_path / "kmeans.joblib")), cb.centroids)


def test_our_logmel_codebook_is_reusable_with_kmeans_flag(assets, tmp_path, capsys):
  first, second = tmp_path / "first", tmp_path / "second"
  rc, _, err = run(capsys, "--format=manifest", f"--input={assets['sines']}", f"--output={first}",
                   "--vocab_size=30", "--num_units=8")
  assert rc == 0, err
  assert (first / codebook_training.KMEANS_JOBLIB).is_file()
  rc, log, err = run(capsys, "--format=manifest", f"--input={assets['sines']}", f"--output={second}",
                     "--vocab_size=30", f"--kmeans={first / codebook_training.KMEANS_JOBLIB}")
  assert rc == 0, err
  a, b = load_manifest(str(first)), load_manifest(str(second))
  assert a.units["codebook_sha256"] == b.units["codebook_sha256"]
  for id_ in assets["waves"]:
    np.testing.assert_array_equal(records(first)[id_].units, records(second)[id_].units)


@pytest.mark.parametrize("large", [False, True])
def test_every_layer_and_mixed_lengths_match_one_full_forward_each(tmp_path, large):
  """A 3-layer HuBERT (base and large layouts): hidden_states[N] for N = 0 (the encoder's input) to 3, taken
  from the model with the layers past N dropped, equals the untrimmed model's own hidden_states[N] (a
  full forward per waveform; padding and normalization done here); equal
  lengths share a batch, mixed lengths do not, neither changes the states."""
  checkpoint = tiny_hubert(tmp_path / "hubert3", 2, layers=3, large=large)
  full = transformers.HubertModel.from_pretrained(checkpoint, local_files_only=True).eval()
  assert len(full.encoder.layers) == 3
  s0 = sine_audio(1.2, 220.0)
  waves = [s0, sine_audio(0.8, 500.0), s0[::-1].copy()]
  normalized = lambda w: (w - w.mean()) / np.sqrt(w.var() + 1e-7) if large else w
  with torch.inference_mode():
    refs = [full(centred_frames_input(normalized(w)), output_hidden_states=True).hidden_states for w in waves]
  assert len(refs[0]) == 4
  for layer in range(4):
    h = hubert.Hubert(checkpoint, layer, "cpu")
    assert len(h.model.encoder.layers) <= layer + 1, layer   # the layers past N (+ 1) are dropped
    got = h.features(waves)
    for w, g, ref in zip(waves, got, refs):
      assert g.shape == (math.ceil(len(w) / HOP), 32)
      np.testing.assert_allclose(g, ref[layer][0].numpy(), atol=1e-5, err_msg=f"layer {layer}")
    if layer:   # each layer's states are its own (a transformer layer ran)
      assert np.abs(got[0] - refs[0][layer - 1][0].numpy()).max() > 1e-2, layer
