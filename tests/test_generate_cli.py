"""make generate and make eval's listening, end to end on a tiny run's checkpoint (a listenable random
dataset: real tokenizer, random codebook; the audio is noise, the path is the real one)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from conftest import tiny_config
from data_prep.corpus import random_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=400):
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=")  # + the test run's XLA cache
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _config_file(tmp_path, config) -> str:
  path = tmp_path / "exp.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")
  return str(path)


def _own_modality_head(model, vocab) -> None:
  """The baseline's output head set so that every row keeps to its modality up to its length limit:
  the EOS and mode-token columns zero (logit 0), every text and unit column 100x its random init
  (logits ~N(0, 100^2)), so a row's likeliest own-modality token outscores EOS and a switch by
  >= 50 (all 40 units below 0.5 sigma: p ~ 1e-7) and no sampling draws them: speech prompts
  always generate speech (--seconds of units), text prompts text."""
  from lst_jax import vocab as vocab_lib
  w = np.array(model.head.kernel[...]) * 100.0
  w[:, [vocab_lib.EOS, vocab.text_mode, vocab.speech_mode]] = 0.0
  model.head.kernel[...] = w


def _save_initial_checkpoint(config, data, workdir: str, step: int) -> None:
  """A checkpoint as training writes it (random parameters: this tests the plumbing, not the model;
  the head keeps each row to its modality, _own_modality_head)."""
  import jax
  from flax import nnx

  from lst_jax import config as config_lib, sharding
  from lst_jax.data import datasets, pipeline
  from lst_jax.model.factory import build_model
  from lst_jax.train import step as step_lib
  from lst_jax.train.checkpoint import Checkpointer
  vocab = pipeline.vocab_of(data)
  exp = config_lib.parse(config, vocab.size)
  setup = step_lib.setup(exp.model, exp.optim, vocab, sharding.make_mesh(1, 1, 1))
  datasets.check_run_provenance(workdir, data)
  model = build_model(exp.model, 0)
  _own_modality_head(model, vocab)
  params = nnx.state(model, nnx.Param)
  state = step_lib.TrainState(step=jax.numpy.full((), step, jax.numpy.int32), params=params,
                              opt_state=setup.optimizer.init(params))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), 1, 2)
  ckpt.save(step, state, {"pos": 0}, force=True)
  ckpt.close()


def _keep_heldout_audio(data) -> None:
  """Original audio for every held-out utterance, as the demo builder keeps it (here: its units through
  the Griffin-Lim vocoder, so the original-audio WER has audio to hear)."""
  from lst_jax.data import codebook as codebook_lib, heldout_audio, vocoder
  from lst_jax.data.shards import Shards
  codebook = codebook_lib.load(data.dir)
  for r in Shards(data.split("heldout").speech, data.shard_records):
    heldout_audio.write(data.dir, r.id, *vocoder.units_to_wave(r.units, codebook))


@pytest.mark.slow
def test_generate_writes_samples_and_eval_listens(tmp_path):
  data = random_dataset.make_dataset(str(tmp_path / "data"), num_speech=24, num_text=24, num_units=40,
                                     text_vocab=60, heldout=6, seed=1, listenable=True)
  _keep_heldout_audio(data)
  config = tiny_config(data.dir, kind="baseline")   # compiles fastest; LST decoding: tests/test_decode.py
  config.train.update(steps=2, checkpoint_every=2, log_every=1)
  cfg, workdir = _config_file(tmp_path, config), str(tmp_path / "run")
  _save_initial_checkpoint(config, data, workdir, step=2)

  r = _run("lst_jax.generate", f"--config={cfg}", f"--workdir={workdir}", "--num=1", "--seconds=1",
           "--text_tokens=5", "--seed=3")
  assert r.returncode == 0, r.stderr[-2000:]
  out = tmp_path / "run" / "samples"
  samples = [json.loads(line) for line in open(out / "samples.jsonl")]
  assert sorted(s["id"] for s in samples) == sorted(f"{t}_{i}" for t in ("s2s", "t2t", "t2s", "s2t")
                                                    for i in range(1))
  html = open(out / "index.html").read()
  assert html.count("<tr>") >= 1 + 4
  for heard in ("original audio WER", "vocoder ceiling WER", "generated (t2s) WER"):   # always the three
    assert heard in r.stdout and heard in html, (heard, r.stdout[-1000:])
  assert "s2s: 1 speech samples, 0 ended at EOS, 0 at a switch to text, 1 at the length limit" in r.stdout
  scores = json.loads((out / "scores.json").read_text())
  assert scores["t2s_endings"]["length"] == 1 and len(scores["t2s_utterances"]) == 1 and "vocoder" in scores
  for s in samples:   # every row runs to its limit (the head keeps it to its modality)
    assert s["stop"] == "length", s
    if s["task"] in ("s2s", "t2s"):   # 1 s of units -> a 1 s WAV through the vocoder, every time
      assert s["generated_wav"] == f"{s['id']}_generated.wav" and s["seconds"] == 1.0, s
      assert f"length ({s['seconds']:.2f} s)" in html
      wave, rate = soundfile.read(out / s["generated_wav"])
      units = open(out / s["generated_units"]).read().split()
      assert rate == 16000 and len(units) == 25 and len(wave) == 25 * 16000 // 25, (rate, len(units), len(wave))
      assert all(0 <= int(u) < 40 for u in units) and len(set(units)) > 1
      assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3
      assert f'src="{s["generated_wav"]}"' in html
    if s["task"] in ("t2t", "s2t"):
      assert "generated_wav" not in s and open(out / f"{s['id']}_generated.txt").read().strip()

  r = _run("lst_jax.generate", f"--config={cfg}", f"--workdir={workdir}", "--num=1", "--seconds=100000")
  assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert "--seconds=100000 of speech" in r.stderr and "of a row the model trained on" in r.stderr, r.stderr

  from lst_jax.eval.evaluate import evaluate_checkpoint   # make eval's --listen, in-process (one import less)
  lines = []
  result = evaluate_checkpoint(config, workdir, heldout=False, listen=1, log=lines.append)
  written = json.loads((tmp_path / "run" / "eval" / "2.json").read_text())
  assert written["listening"] == json.loads(json.dumps(result["listening"]))
  listening = result["listening"]
  assert listening["prompts"] == 1
  (heard,) = listening["t2s_utterances"]
  assert heard["words"] > 0 and heard["stop"] == "length" and heard["seconds"] > 0
  for key, which in (("original_wer", "original"), ("vocoder_ceiling_wer", "ceiling"), ("t2s_wer", "generated")):
    lo, hi = listening[key + "_ci"]
    assert listening[key] == heard[which] / heard["words"] and lo <= listening[key] <= hi, (key, listening)
  assert listening["t2s_above_ceiling"] == pytest.approx(listening["t2s_wer"] - listening["vocoder_ceiling_wer"])
  assert listening["t2s_endings"]["samples"] == 1 and listening["t2s_endings"]["length"] == 1
  assert any("original audio WER" in line and "vocoder ceiling WER" in line and "generated (t2s) WER" in line
             for line in lines)


def test_generate_refuses_units_without_a_vocoder(dataset, tmp_path):
  cfg = _config_file(tmp_path, tiny_config(dataset.dir))
  workdir = tmp_path / "run"
  r = _run("lst_jax.generate", f"--config={cfg}", f"--workdir={workdir}")
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert "units have no built-in vocoder" in r.stderr and "--vocoder=DIR" in r.stderr, r.stderr
