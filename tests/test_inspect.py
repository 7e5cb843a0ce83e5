"""lst_jax.tools.inspect: parameter counts, AOT lowering of the 1B preset on 8 devices, memory figures.

Compiling the 1B train step takes over a minute on 2 cores, so the 1B preset is
only lowered here; the compile path (memory analysis) runs through the command
line on a shrunken 20M preset.
"""

import os
import subprocess
import sys

import jax
import pytest

from lst_jax import cli
from lst_jax import config as config_lib
from lst_jax import flops as flops_lib
from lst_jax import sharding
from lst_jax.tools import inspect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def preset(name: str):
  """"lst_1b" -> experiments/lst_compute_matched.py:1b"""
  kind, size = name.split("_")
  return cli.load_experiment(os.path.join(REPO, "experiments", f"{kind}_compute_matched.py:{size}"))


def block_params(d: int, mlp: int) -> int:
  return 4 * d * d + 3 * d * mlp + 2 * d


PRESETS = [f"{k}_{s}" for k in ("lst", "baseline") for s in ("20m", "420m", "1b", "7b")]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_parse(name):
  exp = config_lib.parse(preset(name), inspect.DEFAULT_VOCAB.size)
  assert exp.model.kind == name.split("_")[0]
  assert exp.optim.learning_rate == 4e-4 and exp.optim.b2 == 0.95 and exp.optim.weight_decay == 0.1


@pytest.mark.slow
def test_lst_1b_params_and_lowering():
  vocab = inspect.DEFAULT_VOCAB
  config = preset("lst_1b")
  config.model.attention = "xla"   # the preset's cuDNN cannot be traced without a GPU (test_aot compiles it)
  exp = config_lib.parse(config, vocab.size)
  m = exp.model
  counts = inspect.param_counts(m)
  assert set(counts) == set(flops_lib.LST_MODULES)
  g = m.d_global
  assert counts["global"] == m.global_layers * block_params(g, m.mlp_dim(g)) + g
  assert counts["embed"] == vocab.size * m.d_local
  total = sum(counts.values())
  assert 1.0e9 < counts["global"] < 1.4e9 and 1.2e9 < total < 1.8e9, counts

  mesh = sharding.make_mesh(1, 8, 1)
  assert len(jax.devices()) == 8
  lowered = inspect.lower_train_step(exp, vocab, mesh)
  # The step's new state holds exactly the counted parameters, sharded over fsdp.
  params_out = lowered.out_info[0].params
  assert sum(x.size for x in jax.tree.leaves(params_out)) == total
  matrices = [x for p, x in jax.tree_util.tree_leaves_with_path(params_out)  # 3-D: scanned layers
              if len(x.shape) >= 2 and "norm" not in jax.tree_util.keystr(p)]
  assert matrices and all("fsdp" in tuple(x.sharding.spec) for x in matrices)


@pytest.mark.slow
def test_cli_reexecs_on_fake_devices():
  out = subprocess.run(
      [sys.executable, "-m", "lst_jax.tools.inspect", f"--config={REPO}/experiments/lst_compute_matched.py:20m",
       "--devices=4", "--fsdp=4", "--vocab_size=1000", "--config.model.global_layers=1",
       "--config.model.decoder_layers=1", "--config.data.max_tokens=64", "--config.data.max_patches=32"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "train FLOPs per step" in out.stdout
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in out.stdout and "memory per device" in out.stdout
  # The memory model beside XLA's figure, on the compile mesh, with its share of the preset's device.
  assert "memory model per device on mesh (data, fsdp, tensor) = (1, 4, 1)" in out.stdout
  assert "the memory model says" in out.stdout
  assert "of a device of the preset's hardware, this 2-core CPU machine" in out.stdout
  assert "0.00M" not in out.stdout.split("total")[0]   # every module has parameters


def test_nocompile_prints_the_memory_model_on_the_presets_hardware():
  """--nocompile: the analytic memory figure alone, on the preset's hardware (the 1B: 32 H100s,
  fsdp 8), with its share of a device's memory."""
  out = subprocess.run(
      [sys.executable, "-m", "lst_jax.tools.inspect", f"--config={REPO}/experiments/lst_compute_matched.py:1b",
       "--nocompile"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  line = next(x for x in out.stdout.splitlines() if x.startswith("memory model per device"))
  assert "(4, 8, 1)" in line and "params 0.70" in line and "4 rows per device per micro-batch x 1" in line
  assert ("of a device of the preset's hardware, h100-32 (NVIDIA H100 80GB HBM3) (79.1 GiB per device, "
          "32 devices; budget 75%)") in out.stdout
  assert "memory per device:" not in out.stdout   # no compile


def test_memory_report_without_a_preset():
  exp = config_lib.parse(preset("lst_1b"), inspect.DEFAULT_VOCAB.size)
  from lst_jax import memory
  text = inspect.memory_report(memory.estimate(exp, (4, 8, 1)), None)
  assert text.startswith("memory model per device on mesh (data, fsdp, tensor) = (4, 8, 1): ") and "preset" not in text
  assert inspect.preset_hardware(preset("lst_1b")).devices == 32
  assert inspect.preset_hardware(config_lib.defaults()) is None
