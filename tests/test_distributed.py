"""Multi-host: 2 processes on localhost (CPU, gloo) train with the same global batch as
1 process, and the losses match; lst_jax.distributed's option checks."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lst_jax import distributed
from lst_jax.distributed import DistributedError, Options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
COMPARED = ("loss", "text_loss", "speech_loss", "grad_norm")
HELDOUT = ("heldout_loss", "heldout_text_loss", "heldout_speech_loss")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  # LLVM at -O0 and without its expensive passes: a third less compile time, same flags in all runs.
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count={devices} "
                       "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
  return env


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_two_processes_match_one(config, tmp_path):
  """2 processes x 1 CPU device (a data-parallel mesh of 2, gradients summed over gloo), each
  feeding its 4 rows of the global batch of 8 from its own slice of the data, against 1
  process x 2 devices fed the same global batches (both processes' rows concatenated)."""
  config.mesh.data = 2
  config.train.steps, config.train.log_every, config.train.checkpoint_every = 4, 1, 2
  config_json = tmp_path / "config.json"
  config_json.write_text(json.dumps(config.to_dict()))
  multi, single = tmp_path / "multi", tmp_path / "single"
  coordinator = f"127.0.0.1:{_free_port()}"
  base = [sys.executable, WORKER, f"--config_json={config_json}"]
  procs = [subprocess.Popen(base + [f"--workdir={multi}", f"--coordinator={coordinator}", "--num_processes=2",
                                    f"--process_id={i}"],
                            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
           for i in range(2)]
  procs.append(subprocess.Popen(base + [f"--workdir={single}", "--emulate_processes=2"], env=_env(2),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO))
  deadline, outputs = time.time() + 240, []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=max(1.0, deadline - time.time()))[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        outputs.append(p.communicate()[0])
  names = ("process 0", "process 1", "single process")
  log = "\n".join(f"--- {n} (exit {p.returncode}):\n{o[-3000:]}" for n, p, o in zip(names, procs, outputs))
  assert all(p.returncode == 0 for p in procs), log
  assert "process 0 of 2 via manual" in outputs[0] and "1 local / 2 global devices" in outputs[0], log
  assert "process 1 of 2" in outputs[1], log
  assert "2 local / 2 global devices" in outputs[2], log

  multi_records, single_records = _records(multi), _records(single)
  steps = lambda rs: [r for r in rs if "loss" in r]
  held = lambda rs: [r for r in rs if "heldout_loss" in r]
  assert [r["step"] for r in steps(multi_records)] == [1, 2, 3, 4]
  assert [r["step"] for r in steps(single_records)] == [1, 2, 3, 4]
  for m, s in zip(steps(multi_records), steps(single_records)):
    for k in COMPARED:
      np.testing.assert_allclose(m[k], s[k], rtol=2e-5, err_msg=f"{k} at step {m['step']}")
    assert m["lr"] == s["lr"]
  # Training moved the model, identically in both runs.
  assert steps(multi_records)[-1]["loss"] < steps(multi_records)[0]["loss"]
  assert [r["step"] for r in held(multi_records)] == [0, 4]
  for m, s in zip(held(multi_records), held(single_records)):
    for k in HELDOUT:
      np.testing.assert_allclose(m[k], s[k], rtol=2e-5, err_msg=f"{k} at step {m['step']}")
    assert m["heldout_target_tokens"] == s["heldout_target_tokens"]
  # Only process 0 writes metrics; both wrote the shared checkpoints.
  assert sorted(os.listdir(multi / "checkpoints")) == ["2", "4"]


# ---------------------------------------------------------------------------- options

NO_CLUSTER = {}
SLURM = {"SLURM_JOB_ID": "1234", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_NTASKS": "4",
         "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}


def test_plan_auto_without_cluster_is_one_process(monkeypatch):
  monkeypatch.setattr(distributed, "on_cloud_tpu", lambda env: False)
  assert distributed.plan(Options(), NO_CLUSTER).mode == "off"
  one_task = {**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
  assert distributed.plan(Options(), one_task).mode == "off"


def test_plan_auto_detects_slurm_and_tpu(monkeypatch):
  monkeypatch.setattr(distributed, "on_cloud_tpu", lambda env: False)
  p = distributed.plan(Options(), SLURM)
  assert p.mode == "slurm" and p.kwargs["cluster_detection_method"] == "slurm"
  assert "coordinator_address" not in p.kwargs  # JAX derives it from the node list and job id
  monkeypatch.setattr(distributed, "on_cloud_tpu", lambda env: True)
  p = distributed.plan(Options(), NO_CLUSTER)
  assert p.mode == "tpu" and set(p.kwargs) == {"initialization_timeout"}  # no arguments: automatic


def test_plan_manual():
  p = distributed.plan(Options(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                               local_device_ids=(0, 1)), NO_CLUSTER)
  assert p.mode == "manual"
  assert p.kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
                      "local_device_ids": [0, 1], "initialization_timeout": 300,
                      "cluster_detection_method": "deactivate"}
  # Explicit options in auto mode mean manual, even inside SLURM.
  assert distributed.plan(Options(coordinator_address="h:1", num_processes=2, process_id=0), SLURM).mode == "manual"


@pytest.mark.parametrize("options, env, message", [
    (Options(mode="manual", coordinator_address="h:1"), NO_CLUSTER, "missing: --num_processes, --process_id"),
    (Options(coordinator_address="h:1", num_processes=2), NO_CLUSTER, "missing: --process_id"),
    (Options(coordinator_address="nohost", num_processes=2, process_id=0), NO_CLUSTER, "HOST:PORT"),
    (Options(coordinator_address="h:99999", num_processes=2, process_id=0), NO_CLUSTER, "HOST:PORT"),
    (Options(coordinator_address="h:1", num_processes=2, process_id=2), NO_CLUSTER,
     "--process_id=2 must be less than --num_processes=2"),
    (Options(mode="off", num_processes=2), NO_CLUSTER, "--multihost=off runs one process, but --num_processes"),
    (Options(mode="slurm"), NO_CLUSTER, "SLURM_JOB_ID"),
    (Options(mode="slurm", num_processes=8), SLURM, "--num_processes=8 contradicts SLURM_NTASKS=4"),
    (Options(mode="ompi"), NO_CLUSTER, "mpirun"),
    (Options(mode="tpu"), NO_CLUSTER, "not a Cloud TPU VM"),
    (Options(local_device_ids=(0, 0), coordinator_address="h:1", num_processes=2, process_id=0), NO_CLUSTER,
     "distinct"),
    (Options(local_device_ids=(0,)), NO_CLUSTER, "--local_device_ids needs a multi-process job"),
    (Options(mode="cluster"), NO_CLUSTER, "--multihost must be one of"),
])
def test_plan_rejects_inconsistent_options(monkeypatch, options, env, message):
  monkeypatch.setattr(distributed, "on_cloud_tpu", lambda env: False)
  with pytest.raises(DistributedError, match=message.replace("-", r"\-").replace("[", r"\[")):
    distributed.plan(options, env)


def test_flags_round_trip():
  """In a fresh interpreter: other modules' required flags (tests import several CLIs) stay out."""
  code = """
from absl import flags
from lst_jax import distributed
from lst_jax.distributed import DistributedError, Options
holders = distributed.define_flags()
assert distributed.define_flags() is holders  # idempotent
flags.FLAGS(["prog", "--multihost=manual", "--coordinator_address=10.0.0.1:1234", "--num_processes=2",
             "--process_id=1", "--local_device_ids=0,1", "--distributed_timeout_s=60"])
assert distributed.options_from_flags() == Options(
    mode="manual", coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1,
    local_device_ids=(0, 1), timeout_s=60)
flags.FLAGS(["prog", "--local_device_ids=0,x"])
try:
  distributed.options_from_flags()
  raise SystemExit("no error for a bad --local_device_ids")
except DistributedError as e:
  assert "comma-separated integers" in str(e), e
print("ok")
"""
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
