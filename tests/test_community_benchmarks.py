"""The community's published benchmarks (lst_jax.eval.community): ZeroSpeech 2021 sWUGGY / sBLIMP
folders, spoken StoryCloze folders and Hugging Face parquet exports, each read in its published
layout into items, grouped and scored by its own protocol, end to end through the runner."""

import csv
import dataclasses
import io
import os

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax.data import pipeline
from lst_jax.eval import community
from lst_jax.eval import runner as runner_lib
from lst_jax.eval.benchmark_files import BenchmarkError
from lst_jax.model.factory import build_model
from lst_jax.train import step as step_lib

RATE = 16000
SWUGGY_COLUMNS = ("id", "filename", "word", "phones", "length", "frequency", "voice", "correct")
SBLIMP_COLUMNS = ("id", "filename", "voice", "type", "subtype", "correct", "transcription")


def _wave(seed: int, seconds: float = 0.3) -> np.ndarray:
  t = np.arange(int(RATE * seconds)) / RATE
  return (0.3 * np.sin(2 * np.pi * (200 + 40 * seed) * t * (1 + t))).astype(np.float32)


def _wav_bytes(seed: int) -> bytes:
  import soundfile
  buf = io.BytesIO()
  soundfile.write(buf, _wave(seed), RATE, format="WAV")
  return buf.getvalue()


def _write_gold(folder, columns, rows):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "gold.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(columns)
    w.writerows(rows)
  for i, row in enumerate(rows):
    name = row[columns.index("filename")]
    path = os.path.join(folder, f"{name}.wav")
    if not os.path.exists(path):
      with open(path, "wb") as f:
        f.write(_wav_bytes(i))


def _swuggy(root):
  """lexical/dev of a ZeroSpeech 2021 dataset: 2 pairs x 2 voices; pair "b" is out of vocabulary."""
  rows = []
  for pid, word, _nonword, freq in (("a", "brick", "brilk", 12), ("b", "quaff", "quaft", 0)):
    for voice in ("Alex", "Bruce"):
      rows.append((pid, f"{pid}{voice}w", word, "b r I k", 4, freq, voice, 1))
      rows.append((pid, f"{pid}{voice}n", "", "b r I l k", 5, "", voice, 0))
  folder = os.path.join(root, "lexical", "dev")
  _write_gold(folder, SWUGGY_COLUMNS, rows)
  return folder


def test_swuggy_folder_pairs_word_and_non_word_by_id_and_voice(tmp_path):
  folder = _swuggy(str(tmp_path))
  for spec in (f"swuggy:{tmp_path}", f"swuggy:{tmp_path}/lexical", f"SWUGGY:{folder}"):
    kind, path = community.parse_spec(spec)
    bench = community.load(kind, path)
    assert bench.name == "swuggy-dev" and len(bench.items) == 4
  assert [it.id for it in bench.items] == ["a/Alex", "a/Bruce", "b/Alex", "b/Bruce"]
  first = bench.items[0]
  assert first.label == 0 and first.prompt == community.EMPTY
  assert [os.path.basename(c.audio) for c in first.candidates] == ["aAlexw.wav", "aAlexn.wav"]
  assert first.extra["group"] == "a" and first.extra["word"] == "brick" and first.extra["frequency"] == 12
  assert [it.extra["subsets"] for it in bench.items] == [["invocab"]] * 2 + [[]] * 2
  assert bench.directions() == ["S->S"]    # no spelling of the non-words: speech only
  assert bench.header["protocol"]["score"] == "sum"
  assert not bench.uses("units")           # no unit provenance needed: audio goes through the quantizer


def test_sblimp_folder_with_transcriptions_gives_text_too(tmp_path):
  rows = []
  for pid, good, bad in (("1", "the cats sleep", "the cats sleeps"), ("2", "who did you see", "who you did see")):
    for voice in ("Alex", "Vicki"):
      rows.append((pid, f"s{pid}{voice}1", voice, "agreement", "plural", 1, good))
      rows.append((pid, f"s{pid}{voice}0", voice, "agreement", "plural", 0, bad))
  folder = os.path.join(str(tmp_path), "syntactic", "test")
  _write_gold(folder, SBLIMP_COLUMNS, rows)
  bench = community.load("sblimp", folder)
  assert bench.name == "sblimp-test" and len(bench.items) == 4
  assert bench.directions() == ["S->S", "T->T"]
  assert [c.text for c in bench.items[0].candidates] == ["the cats sleep", "the cats sleeps"]
  assert bench.items[0].extra["type"] == "agreement" and bench.header["protocol"]["score"] == "sum"


def test_story_cloze_folders(tmp_path):
  flat = tmp_path / "sSC"
  flat.mkdir()
  for n in (0, 1, 10, 2):
    (flat / f"{n}_correct.wav").write_bytes(_wav_bytes(n))
    (flat / f"{n}_incorrect.wav").write_bytes(_wav_bytes(n + 20))
  bench = community.load("ssc", str(flat))
  assert [it.id for it in bench.items] == ["0", "1", "2", "10"]
  assert bench.items[0].candidates[0].audio.endswith("0_correct.wav") and bench.items[0].label == 0
  assert bench.header["protocol"]["score"] == "mean" and bench.directions() == ["S->S"]
  # slamkit's cross-modal layout: one subfolder per split, a shared prompt and transcripts
  sub = tmp_path / "tSC" / "part"
  sub.mkdir(parents=True)
  for role, text in (("mutual", "Tom went out."), ("correct", "He came back."), ("incorrect", "Fish fly.")):
    (sub / f"7_{role}.wav").write_bytes(_wav_bytes(len(text)))
    (sub / f"7_{role}.txt").write_text(text + "\n")
  bench = community.load("tsc", str(tmp_path / "tSC"))
  (item,) = bench.items
  assert item.id == os.path.join("part", "7") and item.prompt.text == "Tom went out."
  assert [c.text for c in item.candidates] == ["He came back.", "Fish fly."]
  assert bench.directions() == ["S->S", "T->T"]


def _parquet(path, columns: dict):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table(columns), str(path))
  return str(path)


def _audio(seed, name):
  return {"bytes": _wav_bytes(seed), "path": name}


def test_parquet_exports(tmp_path):
  path = _parquet(tmp_path / "train-00000-of-00001.parquet",
                  {"positive": [_audio(i, f"{i}_pos.wav") for i in range(3)],
                   "negative": [_audio(i + 9, f"{i}_neg.wav") for i in range(3)]})
  bench = community.load("ssc", path)
  assert len(bench.items) == 3 and bench.items[1].id == "1"
  good, bad = bench.items[1].candidates
  import soundfile
  np.testing.assert_allclose(soundfile.read(good.audio)[0], _wave(1), atol=1e-4)   # the bytes, as written
  np.testing.assert_allclose(soundfile.read(bad.audio)[0], _wave(10), atol=1e-4)
  # an export of gold.csv's rows with an audio column is grouped like the folder
  rows = {c: [] for c in ("id", "voice", "word", "frequency", "correct", "audio")}
  for k, (pid, voice, correct) in enumerate((("a", "v1", 1), ("a", "v1", 0), ("a", "v2", 0), ("a", "v2", 1))):
    for c, v in (("id", pid), ("voice", voice), ("word", "w"), ("frequency", 3), ("correct", correct),
                 ("audio", _audio(k, f"{k}.wav"))):
      rows[c].append(v)
  bench = community.load("swuggy", _parquet(tmp_path / "swuggy.parquet", rows))
  assert [it.id for it in bench.items] == ["a/v1", "a/v2"]
  assert soundfile.read(bench.items[1].candidates[0].audio)[0] == pytest.approx(_wave(3), abs=1e-4)
  with pytest.raises(BenchmarkError, match=r"bad\.parquet: columns text, label fit no ssc export"):
    community.load("ssc", _parquet(tmp_path / "bad.parquet", {"text": ["x"], "label": [1]}))


def test_bad_layouts_name_the_file(tmp_path):
  folder = _swuggy(str(tmp_path))
  gold = os.path.join(folder, "gold.csv")
  with pytest.raises(BenchmarkError, match=r"no gold\.csv for sblimp .*syntactic/dev"):
    community.load("sblimp", str(tmp_path))
  lines = open(gold).read().splitlines()
  for bad, message in (
      ([lines[0].replace("voice", "speaker")] + lines[1:], r"gold\.csv: missing column\(s\) \['voice'\]"),
      (lines[:2] + [lines[2][:-2] + ",1"] + lines[3:], r"gold\.csv:2: id 'a' voice 'Alex' has 2 correct .*lines 2, 3"),
      (lines[:2] + [lines[2].replace("aAlexn", "nowhere")] + lines[3:], r"gold\.csv:3: field filename 'nowhere'"),
      (lines[:2] + [lines[2][:-2] + ",maybe"] + lines[3:], r"gold\.csv:3: field correct must be 1 or 0")):
    with open(gold, "w") as f:
      f.write("\n".join(bad) + "\n")
    with pytest.raises(BenchmarkError, match=message):
      community.load("swuggy", folder)
  (tmp_path / "stories").mkdir()
  (tmp_path / "stories" / "0_pos.wav").write_bytes(_wav_bytes(0))
  with pytest.raises(BenchmarkError, match=r"stories: no <n>_correct\.wav .*found 1 other \.wav files, e\.g\. 0_pos"):
    community.load("ssc", str(tmp_path / "stories"))
  (tmp_path / "stories" / "3_correct.wav").write_bytes(_wav_bytes(0))
  with pytest.raises(BenchmarkError, match=r"stories/3_incorrect\.wav: missing"):
    community.load("ssc", str(tmp_path / "stories"))
  with pytest.raises(BenchmarkError, match="unknown benchmark kind 'wuggy'"):
    community.parse_spec(f"wuggy:{folder}")
  assert community.parse_spec(gold) == (None, gold)        # plain paths keep working


def test_protocol_pools_voices_per_pair_and_reports_in_vocab():
  from lst_jax.eval.benchmark_files import Item, Segment
  seg = Segment(audio="x")
  items = [Item(id=f"{g}/{v}", prompt=community.EMPTY, candidates=(seg, seg), label=0,
                extra={"group": g, "subsets": ["invocab"] if g != "c" else []})
           for g, v in (("a", 1), ("a", 2), ("b", 1), ("c", 1), ("c", 2), ("c", 3))]
  credit_sum = np.array([1, 0.5, 0, 1, 1, 0])       # a: 0.75, b: 0, c: 2/3
  credit_mean = np.ones(6)
  r = community.protocol_result(community.PROTOCOLS["swuggy"].to_json(), items, credit_sum, credit_mean)
  assert r["score"] == pytest.approx((0.75 + 0 + 2 / 3) / 3) and r["score_n"] == 3
  assert r["subsets"]["invocab"] == {"score": pytest.approx(0.375), "n": 2}
  r = community.protocol_result(community.PROTOCOLS["ssc"].to_json(), items, credit_sum, credit_mean)
  assert r["score"] == 1.0 and r["score_n"] == 6 and "subsets" not in r   # mean ranking, per item


def test_end_to_end_through_the_runner_and_the_datasets_quantizer(dataset, tmp_path):
  """Audio -> the dataset's quantizer -> units -> a tiny random model's log-likelihoods -> the protocol."""
  from data_prep import codebook_training
  from lst_jax.data import codebook as codebook_lib
  from lst_jax.data import features
  rng = np.random.default_rng(5)
  codebook = codebook_lib.Codebook(centroids=rng.normal(size=(40, 80)).astype(np.float32),
                                   mean=np.zeros(80, np.float32), std=np.ones(80, np.float32))
  codebook_training.save(codebook, str(tmp_path))
  units = {**dataset.raw["units"], "codebook": codebook_lib.CODEBOOK, "features": features.FEATURES}
  manifest = dataclasses.replace(dataset, dir=str(tmp_path), units=units)
  folder = _swuggy(str(tmp_path / "zr"))
  # pair b / voice Bruce: the non-word is the word's own audio, so the two must tie (credit 1/2)
  with open(os.path.join(folder, "bBrucew.wav"), "rb") as f:
    same = f.read()
  with open(os.path.join(folder, "bBrucen.wav"), "wb") as f:
    f.write(same)
  ssc = _parquet(tmp_path / "ssc.parquet", {"positive": [_audio(i, "p.wav") for i in range(3)],
                                            "negative": [_audio(i + 5, "n.wav") for i in range(3)]})
  config = tiny_config(dataset.dir, kind="baseline")
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  mesh = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  setup = step_lib.setup(exp.model, exp.optim, vocab, mesh)
  params = nnx.state(build_model(exp.model, 0), nnx.Param)
  run = runner_lib.BenchmarkRunner(setup.graphdef, setup.shardings.params, vocab, manifest, mesh, model_kind="baseline",
                                   max_tokens=128, max_patches=128, patch_size=4, batch_size=8,
                                   paths=[f"swuggy:{tmp_path / 'zr'}", f"ssc:{ssc}"], heldout=False)
  result = run(params, with_scores=True)
  sw, sc = result["benchmarks"]["swuggy-dev"]["S->S"], result["benchmarks"]["ssc"]["S->S"]
  assert set(result["benchmarks"]) == {"swuggy-dev", "ssc"} and sw["n"] == 4 and sc["n"] == 3
  scores = {s["id"]: s for s in result["scores"] if s["benchmark"] == "swuggy-dev"}
  assert scores["b/Bruce"]["sum"][0] == scores["b/Bruce"]["sum"][1] and scores["b/Bruce"]["credit_sum"] == 0.5
  by_pair = {}
  for pid, s in scores.items():
    by_pair.setdefault(pid.split("/")[0], []).append(s["credit_sum"])
  assert sw["score"] == pytest.approx(np.mean([np.mean(v) for v in by_pair.values()])) and sw["score_n"] == 2
  assert sw["subsets"]["invocab"]["score"] == pytest.approx(np.mean(by_pair["a"]))
  assert sc["score"] == pytest.approx(sc["acc_mean"]) and sc["protocol"]["score"] == "mean"
  table = runner_lib.format_table(result)
  assert "swuggy-dev S->S" in table and "ZeroSpeech 2021 lexical (sWUGGY): sum log-likelihood" in table
  assert "spoken StoryCloze (sSC): mean" in table and "invocab" in table
  assert runner_lib.flat_metrics(result)["bench/swuggy-dev/S->S/score_invocab"] == sw["subsets"]["invocab"]["score"]
  # every candidate went through the dataset's quantizer: as many units as 25 Hz frames of its audio
  conv = runner_lib.Converter(manifest, vocab)
  item = run.benchmarks[0].items[0]
  assert len(conv.speech(item.candidates[0], "x")) == round(0.3 * 25)
