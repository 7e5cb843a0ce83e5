"""lst_jax.config: one declaration of every setting, every key settable from the command line,
clear one-line errors, and choices that the code behind them implements."""

import os
import subprocess
import sys

import pytest

from lst_jax import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(tmp_path, *args):
  return subprocess.run([sys.executable, "-m", "lst_jax.main", "--config=experiments/demo.py",
                         f"--workdir={tmp_path}/run", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300)


def test_every_declared_key_is_in_the_defaults_and_parses_back():
  c = config_lib.defaults()
  keys = config_lib.keys()
  assert "config.train.grad_accum_steps" in keys and "config.data.patching.max_patch_len" in keys
  assert "config.model.vocab_size" not in keys  # derived from the dataset, not a setting
  for key in keys:  # each key is reachable in the ConfigDict an experiment starts from
    node = c
    for part in key.split(".")[1:]:
      node = node[part]
  assert config_lib.parse(c, 100) == config_lib.Experiment(
      model=config_lib.ModelConfig(vocab_size=100, patch_gather_width=4),
      optim=config_lib.OptimizerConfig(total_steps=1000))


def test_parse_takes_every_value_and_checks_ranges():
  c = config_lib.defaults()
  c.train.grad_accum_steps, c.model.remat, c.data.patching.strategy = 2, "dots", "aligned"
  c.data.patching.max_patch_len = 12
  exp = config_lib.parse(c, 100)
  assert (exp.train.grad_accum_steps, exp.model.remat, exp.data.patching.strategy) == (2, "dots", "aligned")
  assert exp.model.patch_gather_width == 12  # the model gathers the longest patch the data makes
  for section, key, value, message in (
      ("optim", "warmup_steps", -5, "config.optim.warmup_steps must be >= 0, got -5"),
      ("optim", "b2", 1.5, "config.optim.b2 must be <= 1, got 1.5"),
      ("train", "steps", 0, "config.train.steps must be positive, got 0"),
      ("model", "dtype", "float16", "config.model.dtype='float16' is not one of 'float32', 'bfloat16'")):
    bad = config_lib.defaults()
    bad[section][key] = value
    with pytest.raises(config_lib.ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
      config_lib.parse(bad, 100)


def test_unknown_key_suggests_the_nearest():
  with pytest.raises(config_lib.ConfigError,
                     match=r"^unknown key config\.train\.stepz \(did you mean config\.train\.steps\?\)$"):
    config_lib.check_override_flags(["--config.train.stepz=3"])
  config_lib.check_override_flags(["--config.train.steps=3", "--config.data.patching.strategy=aligned",
                                   "--workdir=x"])


def test_command_line_sets_keys_the_experiment_file_does_not_mention(tmp_path):
  """Every key parses from the command line; the run then stops at the (missing) data, not the config."""
  r = _main(tmp_path, "--config.train.grad_accum_steps=2", "--config.train.benchmark_every=5",
            "--config.model.remat=dots", "--config.data.patching.max_patch_len=8",
            "--config.data.interleave.min_speech_words=3", f"--config.data.dir={tmp_path}/none")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert "does not exist" in r.stderr


@pytest.mark.parametrize("arg, message", [
    ("--config.train.stepz=3", "error: unknown key config.train.stepz (did you mean config.train.steps?)"),
    ("--config.optim.warmup_steps=-5", "error: config.optim.warmup_steps must be >= 0, got -5"),
])
def test_command_line_errors_are_one_line(tmp_path, arg, message):
  r = _main(tmp_path, arg)
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1] == message


def test_choices_are_what_the_code_implements():
  from lst_jax.model import attention, factory, transformer
  assert tuple(factory.MODELS) == config_lib.MODEL_KINDS
  assert tuple(transformer.REMAT_POLICIES) == config_lib.REMAT_POLICIES
  assert attention.IMPLEMENTATIONS == config_lib.ATTENTION_IMPLEMENTATIONS


def test_a_cudnn_deployment_off_gpus_stops_before_compiling(tmp_path, dataset):
  """The 1b's default deployment is an H100 system; started on other devices it names the fix."""
  r = _main(tmp_path, "--config.model.attention=cudnn", f"--config.data.dir={dataset.dir}")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.model.attention=cudnn needs NVIDIA GPUs, and this run's devices are cpu")
  assert "SIZE=1b@v5p-64" in last and not os.path.exists(f"{tmp_path}/run/checkpoints")
