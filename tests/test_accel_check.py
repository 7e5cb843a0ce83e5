"""make accel-check's pieces, on CPU: the requirements its bootstrap installs, the peak-FLOP
table, and the whole script in --smoke mode (the code an accelerator runs, on the tiny preset),
so that it cannot rot between the sessions that have an accelerator."""

import json
import math
import os
import subprocess
import sys
import tomllib

import pytest

from lst_jax.tools import accel_check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements(*args) -> list[str]:
  out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "accel_requirements.py"), *args],
                       cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
  return out.stdout.split()


def test_bootstrap_installs_the_pinned_versions():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  cuda, tpu = _requirements("--accel=cuda"), _requirements("--accel=tpu")
  assert cuda[:3] == ["jax[cuda13]==0.10.2", "jax-cuda13-plugin==0.10.2", "jax-cuda13-pjrt==0.10.2"]
  assert tpu[:2] == ["jax[tpu]==0.10.2", "libtpu==0.0.42.1"]
  assert _requirements("--accel=cpu")[:2] == ["jax==0.10.2", "jaxlib==0.10.2"]
  rest = _requirements("--accel=cuda", "--no_jax")
  assert rest == cuda[3:] == tpu[2:] and not any(r.startswith("jax") for r in rest)
  assert set(rest) <= set(project["dependencies"] + project["optional-dependencies"]["test"])
  assert {"flax==0.12.8", "optax==0.2.8", "grain==0.2.18", "pytest==9.2.0"} <= set(rest)


def test_missing_lists_what_a_python_lacks(tmp_path):
  """--missing in a bare venv that has only flax installed (a dist-info stands in for it) and no JAX:
  everything pinned but flax, JAX included (this machine's own venv is not what is checked)."""
  import venv
  venv.EnvBuilder(with_pip=False).create(tmp_path / "venv")
  python = str(tmp_path / "venv" / "bin" / "python")
  site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True, check=True).stdout.strip()
  os.makedirs(os.path.join(site, "flax-0.12.8.dist-info"))
  with open(os.path.join(site, "flax-0.12.8.dist-info", "METADATA"), "w") as f:
    f.write("Metadata-Version: 2.1\nName: flax\nVersion: 0.12.8\n")
  run = lambda *a: subprocess.run([python, os.path.join(REPO, "tools", "accel_requirements.py"), *a], cwd=REPO,
                                  capture_output=True, text=True, timeout=60, check=True).stdout.split()
  everything = _requirements("--accel=cuda")
  assert run("--accel=cuda") == everything
  assert run("--accel=cuda", "--missing") == [r for r in everything if r != "flax==0.12.8"]


def test_peak_flops_by_device_kind():
  assert accel_check.peak_flops("NVIDIA H200") == accel_check.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert accel_check.peak_flops("TPU v5 lite") == 197e12   # v5e, not v5p's 459
  assert accel_check.peak_flops("TPU v5p") == 459e12
  assert accel_check.peak_flops("cpu") is None


def test_the_train_section_runs_the_program_aot_compiles_for_the_device():
  """On an H100 the 1b check runs the h100-32 deployment's per-device program (1 micro-batch of
  4 rows, cuDNN, fsdp 8 on 8 GPUs); on a v6e its v6e-64 program; on one device fsdp 1."""
  from lst_jax import presets
  from lst_jax.tools import aot
  c, target = aot.device_experiment("lst", "1b", "NVIDIA H100 80GB HBM3", 8)
  dep = presets.SIZES["1b"].deployment("h100-32")
  assert target == "h100-32" and c.model.attention == "cudnn" and c.model.remat == "full" and c.model.scan_layers
  assert c.train.grad_accum_steps == dep.grad_accum and c.mesh.fsdp == dep.fsdp
  assert c.data.batch_size == 8 * dep.grad_accum * (128 // 32 // dep.grad_accum)
  c, target = aot.device_experiment("baseline", "1b", "TPU v6 lite", 1)
  dep = presets.SIZES["1b"].deployment("v6e-64")
  assert target == "v6e-64" and c.model.attention == "pallas" and c.mesh.fsdp == 1
  assert c.data.batch_size == dep.grad_accum * (128 // 64 // dep.grad_accum)
  c, target = aot.device_experiment("lst", "1b", "NVIDIA H200", 1, micro_rows=1)   # no h200 deployment
  assert target == "h100-32" and c.data.batch_size == presets.SIZES["1b"].deployment().grad_accum
  c, target = aot.device_experiment("lst", "tiny", "cpu", 8)
  assert target == "" and c.train.grad_accum_steps == 2 and c.data.batch_size == 16


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path):
  out = tmp_path / "accel_check.json"
  proc = subprocess.run([sys.executable, "-m", "lst_jax.tools.accel_check", "--smoke", f"--out={out}",
                         "--sections=environment,train,decode"], cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  result = json.loads(out.read_text())
  sections = result["sections"]
  assert list(sections) == ["environment", "train_lst", "train_baseline", "decode"]
  assert all(s["ok"] for s in sections.values()), sections
  env = sections["environment"]
  assert env["backend"] == "cpu" and env["device_count"] == 8 and env["peak_bf16_flops"] is None
  for kind in ("lst", "baseline"):
    t = sections[f"train_{kind}"]
    assert t["kind"] == kind and t["size"] == "tiny" and t["dtype"] == "bfloat16" and t["accum_steps"] == 2
    assert t["rows"] == t["micro_rows_per_device"] * t["accum_steps"] * t["devices"] == 16
    assert math.isfinite(t["loss"]) and t["loss"] > 0 and t["step_s"] > 0 and t["real_tokens"] > 0
    assert t["model_train_flops"] > 0 and t["mfu"] is None   # no peak figure for a CPU
  assert sections["decode"]["batch_1"]["lst"] > 0 and sections["decode"]["batch_16"]["baseline"] > 0
  assert "train_lst: " in proc.stdout and f"wrote {out}" in proc.stdout
