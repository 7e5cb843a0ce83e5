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


def _save_initial_checkpoint(config, data, workdir: str, step: int) -> None:
  """A checkpoint as training writes it (random parameters: this tests the plumbing, not the model)."""
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
  params = nnx.state(build_model(exp.model, 0), nnx.Param)
  state = step_lib.TrainState(step=jax.numpy.full((), step, jax.numpy.int32), params=params,
                              opt_state=setup.optimizer.init(params))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), 1, 2)
  ckpt.save(step, state, {"pos": 0}, force=True)
  ckpt.close()


@pytest.mark.slow
def test_generate_writes_samples_and_eval_listens(tmp_path):
  data = random_dataset.make_dataset(str(tmp_path / "data"), num_speech=24, num_text=24, num_units=40,
                                     text_vocab=60, heldout=6, seed=1, listenable=True)
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
  assert html.count("<tr>") >= 1 + 4 and "t2s_wer" in r.stdout and "vocoder_ceiling_wer" in r.stdout
  for s in samples:
    assert s["stop"] in ("eos", "length", "switch"), s
    if s["task"] in ("s2s", "t2s") and s.get("generated_wav"):
      wave, rate = soundfile.read(out / s["generated_wav"])
      units = open(out / s["generated_wav"].replace(".wav", ".units.txt")).read().split()
      assert rate == 16000 and len(wave) == len(units) * 16000 // 25 and 0 < len(units) <= 25
      assert np.isfinite(wave).all()
    if s["task"] in ("t2t", "s2t"):
      assert os.path.exists(out / f"{s['id']}_generated.txt")

  r = _run("lst_jax.generate", f"--config={cfg}", f"--workdir={workdir}", "--num=1", "--seconds=100000")
  assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert "--seconds=100000 of speech" in r.stderr and "of a row the model trained on" in r.stderr, r.stderr

  from lst_jax.eval.evaluate import evaluate_checkpoint   # make eval's --listen, in-process (one import less)
  lines = []
  result = evaluate_checkpoint(config, workdir, heldout=False, listen=1, log=lines.append)
  assert json.load(open(tmp_path / "run" / "eval" / "2.json"))["listening"] == json.loads(json.dumps(result["listening"]))
  listening = result["listening"]
  assert listening["prompts"] == 1 and listening["t2s_wer"] >= 0 and listening["vocoder_ceiling_wer"] >= 0
  assert any("t2s WER" in line and "vocoder ceiling WER" in line for line in lines)


def test_generate_refuses_units_without_a_vocoder(dataset, tmp_path):
  cfg = _config_file(tmp_path, tiny_config(dataset.dir))
  workdir = tmp_path / "run"
  r = _run("lst_jax.generate", f"--config={cfg}", f"--workdir={workdir}")
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert "units have no codebook to turn back into audio" in r.stderr, r.stderr
