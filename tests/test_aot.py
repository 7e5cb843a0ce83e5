"""Compiled for the hardware it names: target names, and XLA's real TPU and GPU compilers (run on
this CPU host from the compile-only venvs `make test` builds) planning the train, eval and decode
programs of small presets with micro-batches, remat full and scanned layers, as the 420m and 7b
presets run them."""

import json
import os
import subprocess
import sys

import pytest

from lst_jax import presets
from lst_jax.tools import aot
from lst_jax import targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_target_names_as_users_rent_them():
  v5p = targets.parse("v5p-64")   # TensorCores: 32 chips
  assert (v5p.platform, v5p.devices, v5p.topology, v5p.spec.device_kind) == ("tpu", 32, "v5p:2x4x4", "TPU v5")
  assert targets.parse("v5p-8").topology == "v5p:2x2x1"
  assert targets.parse("v5p-128").topology == "v5p:4x4x4"
  assert (targets.parse("v6e-64").devices, targets.parse("v6e-64").topology) == (64, "v6e:8x8")
  assert targets.parse("v6e-32").topology == "v6e:4x8" and targets.parse("V5E-16").topology == "v5e:4x4"
  h100 = targets.parse("h100-32")
  assert (h100.platform, h100.devices, h100.topology, h100.hosts) == ("cuda", 32, "1x4x8", 4)
  assert targets.parse("h200-2").topology == "1x1x2"
  assert targets.parse("h200-8").memory_bytes > targets.parse("h100-8").memory_bytes > 79 * 2 ** 30


@pytest.mark.parametrize("name,message", [
    ("tpu-v9", "unknown target 'tpu-v9': name a TPU slice (v5p-N, v5e-N, v6e-N) or a GPU system (h100-N, h200-N)"),
    ("v5p-6", "a v5p slice has a power-of-two number of chips, at least 4 (v5p-8); v5p-N counts TensorCores"),
    ("v6e-12", "a v6e slice has a power-of-two number of chips"),
    ("h100-12", "a h100 system is 1, 2, 4 or 8 GPUs, or nodes of 8")])
def test_bad_target_names_say_what_exists(name, message):
  with pytest.raises(targets.TargetError, match=message.replace("(", r"\(").replace(")", r"\)")):
    targets.parse(name)


def test_every_accelerator_preset_names_tpu_and_gpu_targets():
  for size, s in presets.SIZES.items():
    if not s.accelerator:
      assert not s.deployments, size
      continue
    platforms = {targets.parse(d.target).platform for d in s.deployments}
    assert platforms == {"tpu", "cuda"}, size
    for d in s.deployments:
      t = targets.parse(d.target)
      assert t.devices % d.fsdp == 0 and (s.rows // t.devices) % d.grad_accum == 0, (size, d)
      assert d.attention == ("pallas" if t.platform == "tpu" else "cudnn"), (size, d)
      c = presets.experiment("lst", f"{size}@{d.target}")
      assert (c.mesh.fsdp, c.train.grad_accum_steps, c.model.attention) == (d.fsdp, d.grad_accum, d.attention)
  assert len(aot.matrix_entries()) == 2 * sum(len(s.deployments) for s in presets.SIZES.values())


def _compile(target: str, *specs: str) -> list[dict]:
  platform = targets.parse(target).platform
  python = os.path.join(REPO, targets.AOT_VENVS[platform], "bin", "python")
  assert os.path.exists(python), f"{targets.AOT_VENVS[platform]} is missing: `make test` builds it"
  env = {**os.environ, **targets.compile_environment(platform)}
  env.pop("XLA_FLAGS", None)   # the CPU test settings (8 fake devices, no optimisation) are not the target's
  r = subprocess.run([python, os.path.join(REPO, "tests", "aot_driver.py"), target, *specs], env=env,
                     capture_output=True, text=True, timeout=900, cwd=REPO)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


def _check_plans(results, target):
  t = targets.parse(target)
  for r in results:
    assert r["devices"] == t.devices and r["device_kind"] == t.spec.device_kind, r["spec"]
    assert r["micro_batches"] == 2 and r["remat"] == "full" and r["scan_layers"], r["spec"]
    assert r["mesh"] == {"data": 1, "fsdp": t.devices, "tensor": 1}
    train = r["programs"]["train"]
    for p in r["programs"].values():
      m = p["memory"]
      assert m["total"] == m["argument"] + m["output"] - m["alias"] + m["temp"] > 0 and p["fits"]
    # The train step donates its state: its outputs alias its inputs.
    assert train["memory"]["alias"] > 0.9 * train["memory"]["output"], r["spec"]
    assert 0.25 < train["model_over_compiler"] < 4, (r["spec"], train["model_over_compiler"])
    if r["attention"] in aot.FUSED_ATTENTION_CALLS:   # the fused kernel is in the program, not a fallback
      assert train["fused_attention_calls"] > 0, r["spec"]
    else:
      assert "fused_attention_calls" not in train, r["spec"]
    if r["model_cfg"]["decoder_window"] == 1:   # eval holds no optimizer state; decoding compiles
      assert set(r["programs"]) == {"train", "eval", "decode"}, r["spec"]
      assert r["programs"]["eval"]["memory"]["argument"] < train["memory"]["argument"], r["spec"]
    else:                                       # a wider window: its train step only
      assert set(r["programs"]) == {"train"}, r["spec"]


@pytest.mark.slow
def test_small_presets_compile_for_a_tpu_slice():
  """tiny's LST with the Pallas splash kernel (the TPU deployments' backend) compiled as Mosaic, not
  interpreted, and tiny's baseline, on a v5p-8 slice (4 chips, fsdp 4): train, eval and decode programs,
  and XLA's TPU cost estimate of the baseline's step. (The demo's presets, compiled here before, cost
  make test ~80 s each for checks the tiny ones make too; `make aot` compiles any preset for any target.)"""
  results = _compile("v5p-8", "tiny:lst:pallas", "tiny:baseline")
  _check_plans(results, "v5p-8")
  c = results[1]["compiler_estimate"]   # XLA's TPU cost model, on tiny's baseline (the LST's costs 3x the time)
  assert c["flops"] > 0 and c["optimal_seconds"] > 0 and 0 < c["mfu"] < 1, results[1]["spec"]
  assert "compiler_estimate" not in results[0] and results[0]["attention"] == "pallas"


@pytest.mark.slow
def test_small_presets_compile_for_two_h100s():
  """tiny's LST with cuDNN's fused attention and tiny's baseline on a 2-GPU H100 system: train, eval and
  decode programs, and the LST's train step with cross-attention windows of 3 patches as well as 1 (the
  decoder's one-query cross-attention once made cuDNN refuse the program). The demo presets compile for
  the TPU slice above; on H100s they repeated its checks at a large share of make test's time."""
  results = _compile("h100-2", "tiny:lst:cudnn", "tiny:baseline", "tiny:lst:cudnn:3")
  _check_plans(results, "h100-2")
  assert all("compiler_estimate" not in r for r in results)   # XLA's GPU compiler has no cost model
  assert [r["attention"] for r in results] == ["cudnn", results[1]["attention"], "cudnn"]
  assert results[2]["model_cfg"]["encoder_window"] == results[2]["model_cfg"]["decoder_window"] == 3


@pytest.mark.slow
def test_the_command_line_says_one_line_for_what_does_not_fit_or_exist(tmp_path):
  env = {**os.environ}
  env.pop("XLA_FLAGS", None)
  run = lambda *args: subprocess.run([sys.executable, "-m", "lst_jax.tools.aot", *args], capture_output=True,
                                     text=True, env=env, cwd=REPO, timeout=600)
  r = run("--config=experiments/demo.py:tiny", "--target=v7x-8")
  assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: unknown target 'v7x-8'")
  # 4,096 rows of 6,144 tokens on one v5e chip (16 GiB): the plan is far over the device.
  out = tmp_path / "big.json"
  r = run("--config=experiments/demo.py:tiny", "--target=v5e-1", "--config.data.batch_size=4096",
          "--config.data.max_tokens=6144", "--config.data.max_patches=2048", "--programs=train", "--nocost",
          f"--json={out}")
  assert r.returncode == 1, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and ("does not fit on v5e-1" in last or "RESOURCE_EXHAUSTED" in last), last
  if out.exists():
    assert not json.loads(out.read_text())["fits"]
