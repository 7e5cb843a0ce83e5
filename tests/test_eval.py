"""Likelihood benchmarks: scorer against hand-computed log-probs, directions, ties, intervals,
JSONL round trips, provenance refusals, the runner and the checkpoint CLI path, and the
built-in benchmark builder's item logic."""

import json
import os

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from data_prep.benchmarks import builtin
from data_prep.corpus import kjv
from data_prep.corpus import selection as corpus_lib
from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax import vocab as vocab_lib
from lst_jax.data import datasets, packing, patching, pipeline
from lst_jax.data.manifest import DataError
from lst_jax.eval import benchmark_files as bench_lib
from lst_jax.eval import runner as runner_lib
from lst_jax.eval import scoring, stats
from lst_jax.eval.benchmark_files import BenchmarkError, Item, Segment
from lst_jax.model.factory import build_model
from lst_jax.train import step as step_lib
from lst_jax.train.checkpoint import Checkpointer


def _mesh():
  return sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])


@pytest.fixture(scope="module", params=["lst", "baseline"])
def model(request, dataset):
  config = tiny_config(dataset.dir, kind=request.param)
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  mesh = _mesh()
  setup = step_lib.setup(exp.model, exp.optim, vocab, mesh)
  params = nnx.state(build_model(exp.model, 0), nnx.Param)   # eager: no init compile
  return {"config": config, "exp": exp, "vocab": vocab, "mesh": mesh, "setup": setup, "params": params}


def _ids(rng, vocab, modality, n):
  if modality == "S":
    return vocab.units(rng.integers(0, vocab.num_units, n))
  return vocab.text(rng.integers(0, vocab.text_size, n))


def _hand_row(tokens, patch_size, max_tokens, max_patches, vocab):
  """One document alone in a row, laid out by hand (not by scoring.pack)."""
  n = len(tokens)
  starts = patching.static_patch_starts(vocab.is_speech(tokens), patch_size)
  lengths = patching.patch_lengths(starts)
  pad = lambda a, m: np.pad(np.asarray(a, np.int32), (0, m - len(a)))
  packed = {"tokens": pad(tokens, max_tokens), "targets": pad(np.append(tokens[1:], 0), max_tokens),
            "patch_start": pad(starts, max_tokens), "truncated": np.zeros(max_tokens, np.int32),
            "tokens_segment_ids": pad(np.ones(n), max_tokens), "tokens_positions": pad(np.arange(n), max_tokens),
            "patch_len": pad(lengths, max_patches), "patch_len_segment_ids": pad(np.ones(len(lengths)), max_patches),
            "patch_len_positions": pad(np.arange(len(lengths)), max_patches),
            "patch_aligned": np.zeros(max_patches, np.int32)}
  return packing.finalize_row(packed, max_patches)


@pytest.mark.slow
def test_scores_equal_hand_computed_log_probs(model):
  """Three continuations packed into one row score exactly what each gets alone, computed by hand
  as log_softmax(logits)[t, tokens[t + 1]] summed over the candidate's tokens."""
  vocab, setup, params, d = model["vocab"], model["setup"], model["params"], model["exp"].data
  rng = np.random.default_rng(0)
  seqs = []
  for x, y, np_, nc in (("S", "S", 13, 9), ("T", "S", 6, 11), ("S", "T", 10, 4)):
    seqs.append(scoring.continuation(vocab, _ids(rng, vocab, x, np_), x, _ids(rng, vocab, y, nc), y,
                                     d.max_tokens, d.max_patches, d.patching.patch_size))
  scorer = scoring.Scorer(setup.graphdef, setup.shardings.params, vocab, model["mesh"], max_tokens=d.max_tokens,
                          max_patches=d.max_patches, patch_size=d.patching.patch_size, batch_size=8)
  packed = scorer.pack(seqs)
  assert len(packed.rows) == 1, "all three must share a row for this test to mean something"
  sums, counts = scorer.score_packed(params, packed, len(seqs))
  rows = [_hand_row(seq.tokens, d.patching.patch_size, d.max_tokens, d.max_patches, vocab) for seq in seqs]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  logits = jax.jit(lambda p, b: nnx.merge(setup.graphdef, p)(b))(params, batch)
  logp_all = np.asarray(jax.nn.log_softmax(logits.astype(np.float32), axis=-1), np.float64)
  for seq, got, count, logp in zip(seqs, sums, counts, logp_all):
    want = sum(logp[t, seq.tokens[t + 1]] for t in range(len(seq.tokens) - 1) if seq.score[t + 1])
    assert count == seq.score.sum()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-4)


def test_continuation_layout_per_direction():
  vocab = vocab_lib.Vocab(text_size=50, num_units=20)
  p_text, p_speech = vocab.text([5, 6, 7]), vocab.units([1, 2, 3, 4, 5])
  c_text, c_speech = vocab.text([9, 10]), vocab.units([7, 8, 9])
  forms = {"T": (p_text, c_text), "S": (p_speech, c_speech)}
  for direction in bench_lib.DIRECTIONS:
    x, y = bench_lib.parse_direction(direction)
    prompt, cand = forms[x][0], forms[y][1]
    seq = scoring.continuation(vocab, prompt, x, cand, y, 64, 64, 4)
    mode = {"S": vocab.speech_mode, "T": vocab.text_mode}
    middle = [mode[y]] if x != y else []
    want = [vocab_lib.BOS, mode[x], *prompt, *middle, *cand]
    np.testing.assert_array_equal(seq.tokens, want)
    assert seq.score.sum() == len(cand) and seq.score[-len(cand):].all(), direction
    assert seq.truncated == 0
  with pytest.raises(ValueError, match="unknown direction"):
    bench_lib.parse_direction("S->X")


def test_long_prompt_is_cut_from_the_left():
  vocab = vocab_lib.Vocab(text_size=50, num_units=20)
  prompt, cand = vocab.units(np.arange(100) % 20), vocab.units([1, 2, 3, 4, 5, 6])
  seq = scoring.continuation(vocab, prompt, "S", cand, "S", 40, 12, 4)
  assert len(seq.tokens) <= 40 and scoring.num_patches(seq.tokens, vocab, 4) <= 12
  assert list(seq.tokens[:2]) == [vocab_lib.BOS, vocab.speech_mode]
  np.testing.assert_array_equal(seq.tokens[-6:], cand)
  np.testing.assert_array_equal(seq.tokens[2:-6], prompt[seq.truncated:])
  assert seq.truncated > 60
  with pytest.raises(scoring.TooLong):
    scoring.continuation(vocab, prompt, "S", vocab.units(np.zeros(50, int)), "S", 40, 12, 4)


def test_ties_count_as_shared_credit():
  assert stats.item_credit([1.0, 1.0], 0) == 0.5
  assert stats.item_credit([-3.0, -3.0 + 1e-9], 1) == 0.5
  assert stats.item_credit([2.0, 1.0, 2.0, 0.0], 2) == 0.5
  assert stats.item_credit([3.0, 3.0, 3.0, 1.0], 0) == pytest.approx(1 / 3)
  assert stats.item_credit([1.0, 2.0], 1) == 1.0
  assert stats.item_credit([1.0, 2.0], 0) == 0.0
  acc, credit = stats.accuracy([[1, 1], [2, 1], [0, 3]], [0, 0, 0])
  assert acc == pytest.approx(0.5)
  np.testing.assert_allclose(credit, [0.5, 1.0, 0.0])
  assert stats.chance([2, 2, 4]) == pytest.approx((0.5 + 0.5 + 0.25) / 3)


def test_confidence_intervals():
  lo, hi = stats.wilson_interval(0.5, 100)
  assert lo == pytest.approx(0.404, abs=2e-3) and hi == pytest.approx(0.596, abs=2e-3)
  lo2, hi2 = stats.wilson_interval(0.5, 1000)
  assert lo < lo2 < 0.5 < hi2 < hi
  lo, hi = stats.wilson_interval(0.0, 20)
  assert lo == 0.0 and 0.0 < hi < 0.2
  lo, hi = stats.wilson_interval(1.0, 20)
  assert hi == 1.0 and 0.8 < lo < 1.0
  assert all(np.isnan(stats.wilson_interval(0.5, 0)))
  credit = np.random.default_rng(0).integers(0, 2, 200).astype(float)
  lo, hi = stats.bootstrap_interval(credit)
  wl, wh = stats.wilson_interval(credit.mean(), len(credit))
  assert lo < credit.mean() < hi and abs(lo - wl) < 0.03 and abs(hi - wh) < 0.03


def _items(vocab, rng, n=6, ways=2):
  items = []
  for i in range(n):
    seg = lambda k: Segment(text_ids=tuple(int(t) for t in rng.integers(0, vocab.text_size, k)),
                            units=tuple(int(u) for u in rng.integers(0, vocab.num_units, 3 * k)))
    items.append(Item(id=f"item{i}", prompt=seg(5), candidates=tuple(seg(3 + j) for j in range(ways)),
                      label=int(rng.integers(0, ways))))
  return items


def _header(dataset):
  return {"name": "toy", "units": dataset.raw["units"], "tokenizer": dataset.raw["tokenizer"]}


def test_jsonl_round_trip_and_errors(tmp_path):
  vocab = vocab_lib.Vocab(text_size=60, num_units=40)
  items = _items(vocab, np.random.default_rng(1))
  wav = tmp_path / "audio" / "a.wav"
  items[0] = Item(id="with-audio", prompt=Segment(text="in the beginning", audio=str(wav)),
                  candidates=(Segment(text="God created"), Segment(text="was the word", units=(1, 2))),
                  label=1, extra={"source": "heldout"})
  path = bench_lib.write_benchmark(str(tmp_path / "toy.jsonl"), items, {"name": "toy"})
  assert '"audio":"audio/a.wav"' in open(path).read()   # stored relative to the file
  back = bench_lib.load_benchmark(path)
  assert back.items == tuple(items) and back.name == "toy"
  assert back.directions() == ["T->T", "S->T"]   # item 0's prompt has audio, a candidate no speech
  assert bench_lib.load_benchmark(bench_lib.write_benchmark(str(tmp_path / "b.jsonl"), items[1:])).directions() \
      == list(bench_lib.DIRECTIONS)
  lines = open(path).read().splitlines()
  for bad, message in ((dict(json.loads(lines[2]), label=5), "label must be an index"),
                       ({k: v for k, v in json.loads(lines[2]).items() if k != "prompt"}, "missing 'prompt'"),
                       (dict(json.loads(lines[2]), prompt={"units": [-1]}), "non-negative integers"),
                       (dict(json.loads(lines[2]), prompt={"speech": [1]}), "unknown key")):
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(BenchmarkError, match=f"bad.jsonl:2: .*{message}"):
      bench_lib.load_benchmark(str(tmp_path / "bad.jsonl"))


def test_provenance_mismatch_is_refused_naming_the_field(dataset, tmp_path):
  vocab = pipeline.vocab_of(dataset)
  items = _items(vocab, np.random.default_rng(2))
  run = {"tokenizer": dataset.raw["tokenizer"], "units": dataset.raw["units"]}
  ok = bench_lib.load_benchmark(bench_lib.write_benchmark(str(tmp_path / "ok.jsonl"), items, _header(dataset)))
  bench_lib.check_provenance(ok, run)
  for field, change in (("units.num_units", {"units": {**dataset.raw["units"], "num_units": 41}}),
                        ("units.codebook_sha256", {"units": {**dataset.raw["units"], "codebook_sha256": "x"}}),
                        ("tokenizer.sha256", {"tokenizer": {**dataset.raw["tokenizer"], "sha256": "other"}})):
    b = bench_lib.load_benchmark(bench_lib.write_benchmark(str(tmp_path / "x.jsonl"), items,
                                                           {**_header(dataset), **change}))
    with pytest.raises(BenchmarkError, match=f"differ in {field}"):
      bench_lib.check_provenance(b, run)
  bare = bench_lib.load_benchmark(bench_lib.write_benchmark(str(tmp_path / "bare.jsonl"), items, {}))
  with pytest.raises(BenchmarkError, match="no unit provenance"):
    bench_lib.check_provenance(bare, run)


@pytest.mark.slow
def test_runner_all_directions_and_heldout(model, dataset, tmp_path, monkeypatch):
  vocab = model["vocab"]
  path = bench_lib.write_benchmark(str(tmp_path / "toy.jsonl"), _items(vocab, np.random.default_rng(3), 6, 3),
                                   _header(dataset))
  result = runner_lib.run_benchmarks(model["params"], model["setup"], model["exp"], dataset, model["mesh"],
                                     paths=[path])
  dirs = result["benchmarks"]["toy"]
  assert list(dirs) == list(bench_lib.DIRECTIONS)
  for r in dirs.values():
    assert r["n"] == 6 and r["chance"] == pytest.approx(1 / 3)
    for acc, ci in ((r["acc_sum"], r["ci_sum"]), (r["acc_mean"], r["ci_mean"])):
      assert 0 <= ci[0] <= acc <= ci[1] <= 1
  h = result["heldout_unimodal"]
  assert h["text_documents"] == 8 and h["speech_documents"] == 8
  # An untrained model spreads its mass over the whole vocabulary: several bits per token.
  assert 0.5 * np.log2(vocab.size) < h["text_bits_per_token"] < 2 * np.log2(vocab.size)
  assert h["speech_bits_per_second"] == pytest.approx(25 * h["speech_bits_per_unit"])
  table = runner_lib.format_table(result)
  assert "toy" in table and "T->S" in table and "held-out" in table
  flat = runner_lib.flat_metrics(result)
  assert "bench/toy/S->T/acc_sum" in flat and flat["heldout_unimodal_text_bits_per_token"] == h["text_bits_per_token"]
  assert not any(k.startswith("heldout_interleaved") for k in flat)   # the training loop's, not these
  built = []
  real_from_setup = runner_lib.BenchmarkRunner.from_setup
  monkeypatch.setattr(runner_lib.BenchmarkRunner, "from_setup",
                      classmethod(lambda cls, *a, **k: built.append(1) or real_from_setup(*a, **k)))
  again = runner_lib.run_benchmarks(model["params"], model["setup"], model["exp"], dataset, model["mesh"],
                                    paths=[path])
  assert again["benchmarks"] == result["benchmarks"] and built == []   # the cached runner, same numbers
  few = runner_lib.run_benchmarks(model["params"], model["setup"], model["exp"], dataset, model["mesh"],
                                  paths=[path], max_items=2, directions=["T->S"], heldout=False)
  assert list(few["benchmarks"]["toy"]) == ["T->S"] and few["benchmarks"]["toy"]["T->S"]["n"] == 2
  assert "heldout_unimodal" not in few


@pytest.mark.slow
def test_evaluate_checkpoint_writes_result(dataset, tmp_path):
  from lst_jax.train.restore import restore_params
  from lst_jax.eval.evaluate import evaluate_checkpoint
  config = tiny_config(dataset.dir, kind="baseline")   # compiles fastest; the LST is covered above
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  setup = step_lib.setup(exp.model, exp.optim, vocab, sharding.make_mesh(1, 1, 1))
  workdir = str(tmp_path / "run")
  datasets.check_run_provenance(workdir, dataset)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), 1, 2)
  params = nnx.state(build_model(exp.model, 0), nnx.Param)
  state = step_lib.TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                              opt_state=setup.optimizer.init(params))
  ckpt.save(3, state, {"pos": 0}, force=True)
  ckpt.close()
  chex.assert_trees_all_equal(restore_params(os.path.join(workdir, "checkpoints"), 3, setup.abstract,
                                             setup.shardings), state.params)
  path = bench_lib.write_benchmark(str(tmp_path / "toy.jsonl"), _items(vocab, np.random.default_rng(4)),
                                   _header(dataset))
  lines = []
  result = evaluate_checkpoint(config, workdir, benchmarks=[path], directions=["S->T", "T->T"], heldout=False,
                               log=lines.append)
  assert result["step"] == 3 and list(result["benchmarks"]["toy"]) == ["T->T", "S->T"]
  saved = json.load(open(os.path.join(workdir, "eval", "3.json")))
  assert saved["benchmarks"] == json.loads(json.dumps(result["benchmarks"]))
  scores = open(os.path.join(workdir, "eval", "3.scores.jsonl")).read().splitlines()
  assert len(scores) == 2 * 6
  assert any("S->T" in line for line in lines)
  with pytest.raises(DataError, match="does not fit the lst model .* has no parameter"):
    evaluate_checkpoint(tiny_config(dataset.dir), workdir, benchmarks=[path], log=lines.append)
  with pytest.raises(DataError, match="no checkpoint for step 7"):
    evaluate_checkpoint(config, workdir, step=7, benchmarks=[path], log=lines.append)
  other = bench_lib.write_benchmark(str(tmp_path / "other.jsonl"), _items(vocab, np.random.default_rng(4)),
                                    {**_header(dataset), "units": {**dataset.raw["units"], "frame_rate": 50.0}})
  with pytest.raises(BenchmarkError, match="units.frame_rate: 25.0 vs 50.0"):
    evaluate_checkpoint(config, workdir, benchmarks=[other], log=lines.append)


def _verse(ref, text):
  return kjv.parse_verse(f"{ref} {text}")


def test_builtin_items_logic():
  assert builtin.split_point(tuple("a b c d, e f g h i j".split())) == 4   # the comma, nearest the middle
  assert builtin.split_point(tuple("a b c d e f g h i j".split())) == 5    # no mark: the middle
  letters = "abcdefghijklmnopqrstuvwxyz"
  verses = [_verse(f"Ge1:{i}", " ".join(f"v{letters[i]}w{letters[k]}" for k in range(8 + i)) + ".")
            for i in range(12)]
  train_doc = corpus_lib.Doc("doc", tuple(w for v in verses[3:5] for w in v.words))
  corpus = corpus_lib.Corpus(train_speech=(verses[0],), heldout_speech=(verses[1], verses[2]),
                             train_docs=(train_doc,), heldout_docs=())
  chosen = builtin.select_verses(verses, corpus, extra=7, seed=0)
  assert [v.source for v in chosen] == ["heldout"] * 2 + ["unseen"] * 7
  assert {v.ref for v in chosen[2:]} == {v.ref for v in verses[5:]}   # not training speech or text
  with pytest.raises(builtin.BenchmarkBuildError):
    builtin.select_verses(verses, corpus, extra=8, seed=0)
  units = {(v.ref, part): np.arange(3) for v in chosen for part in ("prompt", "continuation")}
  items = builtin.make_items(chosen, units, 4, seed=1)
  assert items == builtin.make_items(chosen, units, 4, seed=1)      # deterministic
  for v, it in zip(chosen, items):
    texts = [c["text"] for c in it["candidates"]]
    assert texts[it["label"]] == v.continuation_text and len(set(texts)) == 4
    bench_lib.parse_item(it, "x", "/")
  for two, four in zip(builtin.make_items(chosen, units, 2, seed=1), items):   # cloze2 within cloze4
    assert {c["text"] for c in two["candidates"]} <= {c["text"] for c in four["candidates"]}
    assert two["candidates"][two["label"]] == four["candidates"][four["label"]]


def test_builtin_refuses_non_demo_data(dataset, capsys):
  with pytest.raises(builtin.BenchmarkBuildError, match="not a demo build"):
    builtin.build(dataset.dir, log=lambda _: None)
  assert builtin.main([f"--data_dir={dataset.dir}"]) == 2
  assert builtin.main([f"--data_dir={dataset.dir}", "--if_demo"]) == 0
  assert "no demo build" in capsys.readouterr().out


def test_audio_and_text_strings_go_through_the_datasets_quantizer_and_tokenizer(dataset, tmp_path):
  """audio -> 16 kHz -> the dataset's features -> its codebook; text -> its SentencePiece model, word by word."""
  import dataclasses

  import soundfile

  from data_prep import codebook_training, tokenizer_training
  from lst_jax.data import codebook as codebook_lib
  from lst_jax.data import features, tokenizer
  from lst_jax.data.manifest import sha256_file
  rng = np.random.default_rng(5)
  codebook = codebook_lib.Codebook(centroids=rng.normal(size=(40, 80)).astype(np.float32),
                                   mean=np.zeros(80, np.float32), std=np.ones(80, np.float32))
  codebook_training.save(codebook, str(tmp_path))
  model = tokenizer_training.train(["in the beginning god created the heaven and the earth"] * 20, 40)
  tok = tokenizer_training.save(model, str(tmp_path))
  units = {**dataset.raw["units"], "codebook": codebook_lib.CODEBOOK, "features": features.FEATURES}
  manifest = dataclasses.replace(dataset, dir=str(tmp_path), units=units, tokenizer_path=tok,
                                 tokenizer_sha256=sha256_file(tok))
  sp = tokenizer.load(tok)
  vocab = vocab_lib.Vocab(text_size=sp.get_piece_size(), num_units=40)
  t = np.arange(22050) / 22050
  soundfile.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t * (1 + t)), 22050)
  conv = runner_lib.Converter(manifest, vocab)
  ids = conv.speech(Segment(audio=str(tmp_path / "a.wav")), "a")
  from lst_jax.data import audio
  feats = features.logmel(audio.load_audio(str(tmp_path / "a.wav")), 16000)
  assert len(ids) == 25 and vocab.is_speech(ids).all()   # 1 s at 25 Hz
  np.testing.assert_array_equal(ids, vocab.units(codebook_lib.quantize(feats, codebook)))
  text = conv.text(Segment(text="the beginning  created"), "t")
  np.testing.assert_array_equal(text, vocab.text([i for w in tokenizer.encode_words(sp, ["the", "beginning",
                                                                                         "created"]) for i in w]))
  user = dataclasses.replace(manifest, units={"source": "user", "format": "lst_jsonl", "num_units": 40})
  with pytest.raises(BenchmarkError, match="audio needs the dataset's quantizer"):
    runner_lib.Converter(user, vocab).speech(Segment(audio=str(tmp_path / "a.wav")), "a")


@pytest.mark.slow
def test_training_runs_the_benchmarks_every_n_steps(tmp_path):
  """config.train.benchmark_every: the loop scores <data dir>/benchmarks/*.jsonl and logs the accuracies."""
  from data_prep.corpus import random_dataset
  from lst_jax.train import metrics
  from lst_jax.train.loop import train
  ds = random_dataset.make_dataset(str(tmp_path / "data"), num_speech=16, num_text=16, num_units=40, text_vocab=60,
                                   heldout=4, seed=1)
  vocab = pipeline.vocab_of(ds)
  os.makedirs(os.path.join(ds.dir, "benchmarks"))
  bench_lib.write_benchmark(os.path.join(ds.dir, "benchmarks", "toy.jsonl"),
                            _items(vocab, np.random.default_rng(5), 4), _header(ds))
  config = tiny_config(ds.dir)
  config.train.update(steps=2, benchmark_every=2, benchmark_items=3)
  train(config, str(tmp_path / "run"), benchmarks=runner_lib.benchmark_callback)
  logged = [r for r in metrics.read_records(str(tmp_path / "run")) if "bench/toy/S->S/acc_sum" in r]
  assert len(logged) == 1 and logged[0]["step"] == 2
  assert {f"bench/toy/{d}/acc_mean" for d in ("S->S", "T->T", "S->T", "T->S")} <= set(logged[0])
  assert all(0.0 <= logged[0][f"bench/toy/{d}/acc_sum"] <= 1.0 for d in ("S->S", "T->T"))
