"""Training end to end: sharded == single device, loss falls, checkpoints, resume, bad input."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax.data import pipeline
from lst_jax.data.manifest import DataError
from lst_jax.train import step as step_lib
from lst_jax.train.checkpoint import Checkpointer
from lst_jax.train.loop import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_step(dataset, config, mesh, batch):
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  run = step_lib.setup(exp.model, exp.optim, vocab, mesh)
  graphdef, state, step = run.graphdef, run.init(), run.train_step
  gbatch = sharding.global_batch(batch, mesh)
  grads = jax.jit(jax.grad(step_lib.make_loss_fn(graphdef, vocab), has_aux=True))(state.params, gbatch)[0]
  state, metrics = step(state, gbatch)
  return jax.device_get(state.params), jax.device_get(metrics), state, jax.device_get(grads)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lst", "baseline"])
def test_step_on_8_devices_matches_one_device(dataset, config, kind):
  """A whole train step (forward, backward, AdamW) on 2 x 2 x 2 data x fsdp x tensor devices
  equals the step on one device (tests/test_sharding.py covers more layouts of the forward)."""
  config.model.kind = kind
  config.optim.warmup_steps = 0
  exp = config_lib.parse(config, pipeline.vocab_of(dataset).size)
  batch = next(iter(pipeline.train_dataset(dataset, exp.data, 8)))
  one = _one_step(dataset, config, sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]), batch)
  assert len(jax.devices()) == 8
  for shape in [(2, 2, 2)]:
    mesh = sharding.make_mesh(*shape)
    params, metrics, state, grads = _one_step(dataset, config, mesh, batch)
    np.testing.assert_allclose(metrics["loss"], one[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], one[1]["grad_norm"], rtol=1e-4)
    chex.assert_trees_all_close(grads, one[3], atol=1e-6, rtol=1e-3)
    # Adam normalizes each update to about lr = 3e-3; summation order moves tiny gradients'
    # updates by a few percent of that.
    chex.assert_trees_all_close(params, one[0], atol=2e-4)
    specs = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
    assert any(s != "PartitionSpec()" for s in specs), "some parameter must be sharded"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lst", "baseline"])
def test_loss_falls(dataset, config, kind, tmp_path):
  config.model.kind = kind
  config.train.steps = 25
  config.train.log_every = 5
  train(config, str(tmp_path))
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  logged = [l for l in lines if "loss" in l]
  assert {"step", "loss", "text_loss", "speech_loss", "lr", "tokens_per_s"} <= set(logged[0])
  assert logged[-1]["loss"] < logged[0]["loss"] - 0.5
  held = [l for l in lines if "heldout_interleaved_loss" in l]
  assert held[0]["step"] == 0 and held[-1]["step"] == 25
  assert held[-1]["heldout_interleaved_loss"] < held[0]["heldout_interleaved_loss"]


@pytest.mark.slow
def test_checkpoint_round_trip(dataset, config, tmp_path):
  mesh = sharding.make_mesh(2, 2, 2)
  exp = config_lib.parse(config, pipeline.vocab_of(dataset).size)
  batch = next(iter(pipeline.train_dataset(dataset, exp.data, 8)))
  _, _, state, _ = _one_step(dataset, config, mesh, batch)
  run = step_lib.setup(exp.model, exp.optim, pipeline.vocab_of(dataset), mesh)
  abstract, shardings = run.abstract, run.shardings
  ckpt = Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, {"position": 7})
  ckpt.manager.wait_until_finished()
  restored, data_state = ckpt.restore(1, abstract, shardings)
  ckpt.close()
  assert data_state == {"position": 7}
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.sharding == b.sharding


@pytest.mark.slow
def test_rerun_resumes_from_last_checkpoint(dataset, config, tmp_path):
  """Train 6 steps in one go, or stop at 3 and rerun: identical losses and held-out result.
  Checkpoints: the last one kept, plus every 3rd step's (train.keep_every)."""
  config.train.update(steps=6, log_every=1, checkpoint_every=1, keep_checkpoints=1, keep_every=3)
  full = train(config, str(tmp_path / "full"))
  assert sorted(os.listdir(tmp_path / "full" / "checkpoints")) == ["3", "6"]
  stopped = train(config, str(tmp_path / "split"), stop_at=3)
  assert stopped.step == 3
  resumed = train(config, str(tmp_path / "split"))
  assert resumed.heldout_start is None and resumed.step == 6
  assert resumed.heldout_end == full.heldout_end
  read = lambda d: {l["step"]: l["loss"] for l in map(json.loads, open(tmp_path / d / "metrics.jsonl"))
                    if "loss" in l}
  a, b = read("full"), read("split")
  assert set(a) == {1, 2, 3, 4, 5, 6} and a == b   # every step's loss, bit for bit


def test_missing_data_dir_is_a_clear_error(config, tmp_path):
  config.data.dir = str(tmp_path / "nope")
  with pytest.raises(DataError, match="does not exist"):
    train(config, str(tmp_path / "run"))


def test_bad_config_values_name_the_key(dataset, config):
  vocab = pipeline.vocab_of(dataset).size
  config.train = {"steps": "ten"}  # as an experiment file could say; overrides are type-checked earlier
  with pytest.raises(config_lib.ConfigError, match=r"config\.train\.steps must be of type int"):
    config_lib.parse(config, vocab)
  config.train = {"steps": 5, "log_every": 1, "log_evry": 3}
  with pytest.raises(config_lib.ConfigError,
                     match=r"unknown key config\.train\.log_evry \(did you mean config\.train\.log_every\?\)"):
    config_lib.parse(config, vocab)
  config.train = {"steps": 5}
  config.model.kind = "gpt"
  with pytest.raises(config_lib.ConfigError, match=r"config\.model\.kind='gpt' is not one of"):
    config_lib.parse(config, vocab)
  config.model.kind = "lst"
  config.optim.warmup_steps = -5
  with pytest.raises(config_lib.ConfigError, match=r"config\.optim\.warmup_steps must be >= 0, got -5"):
    config_lib.parse(config, vocab)
  config.optim.warmup_steps = 2
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.patching is a section with keys strategy"):
    config_lib.parse({"data": {"patching": "aligned"}}, vocab)   # a section given as a value


def _main(*args):
  return subprocess.run([sys.executable, "-m", "lst_jax.main", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_command_line_errors_are_clear(tmp_path, dataset):
  r = _main("--config=experiments/demo.py", f"--workdir={tmp_path}", f"--config.data.dir={tmp_path}/absent")
  assert r.returncode == 2 and "error: data directory" in r.stderr and "Traceback" not in r.stderr
  r = _main("--config=experiments/demo.py", f"--workdir={tmp_path}", "--config.train.steps=abc")
  assert r.returncode != 0 and "steps" in r.stderr and "Traceback" not in r.stderr
  r = _main("--config=experiments/demo.py", f"--workdir={tmp_path}", f"--config.data.dir={dataset.dir}",
            "--config.model.kind=gpt")
  assert r.returncode == 2 and "config.model.kind='gpt' is not one of" in r.stderr
  r = _main("--config=experiments/nope.py", f"--workdir={tmp_path}")   # what `make train EXP=nope` runs
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert "no experiment config 'experiments/nope.py'; available in experiments/: " in r.stderr and "demo" in r.stderr
