"""Multi-host: 2 processes on localhost (CPU, gloo) start from explicit options and from
JAX's cluster detection (a faked SLURM step), and train with the same global batch as 1
process, the losses matching; lst_jax.distributed's option checks and plans."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lst_jax import distributed
from lst_jax.distributed import DistributedError, Options, Plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
COMPARED = ("loss", "text_loss", "speech_loss", "grad_norm")
HELDOUT = ("heldout_interleaved_loss", "heldout_interleaved_text_loss", "heldout_interleaved_speech_loss")
# Variables through which JAX detects a cluster (jax/_src/clusters/*.py) or that steer it.
CLUSTER_VARS = ("SLURM_", "OMPI_", "KUBERNETES_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  # LLVM at -O0 and without its expensive passes: a third less compile time, same flags in all runs.
  env = {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}
  env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_cpu_experimental_ynn_fusion_type= --xla_force_host_platform_device_count={devices} "
                       "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true", **extra)
  return env


def _run_all(runs, timeout_s: float):
  """Starts every (name, argv, env) at once, waits for all; (outputs, log). Asserts all exit 0."""
  procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
           for _, argv, env in runs]
  deadline, outputs = time.time() + timeout_s, []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=max(1.0, deadline - time.time()))[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        outputs.append(p.communicate()[0])
  log = "\n".join(f"--- {name} (exit {p.returncode}):\n{o[-3000:]}" for (name, _, _), p, o in zip(runs, procs, outputs))
  assert all(p.returncode == 0 for p in procs), log
  return outputs, log


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
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
  outputs, log = _run_all(
      [(f"process {i}", base + [f"--workdir={multi}", f"--coordinator={coordinator}", "--num_processes=2",
                                f"--process_id={i}"], _env(1)) for i in range(2)]
      + [("single process", base + [f"--workdir={single}", "--emulate_processes=2"], _env(2))], timeout_s=240)
  assert "process 0 of 2 via manual" in outputs[0] and "1 local / 2 global devices" in outputs[0], log
  assert "process 1 of 2" in outputs[1], log
  assert "2 local / 2 global devices" in outputs[2], log

  multi_records, single_records = _records(multi), _records(single)
  steps = lambda rs: [r for r in rs if "loss" in r]
  held = lambda rs: [r for r in rs if "heldout_interleaved_loss" in r]
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
    assert m["heldout_interleaved_target_tokens"] == s["heldout_interleaved_target_tokens"]
  # Only process 0 writes metrics; both wrote the shared checkpoints.
  assert sorted(os.listdir(multi / "checkpoints")) == ["2", "4"]


INIT = """
import sys
from absl import flags
from lst_jax import distributed
distributed.define_flags()
flags.FLAGS(sys.argv)
topology = distributed.initialize(distributed.options_from_flags())
import jax
from jax.experimental import multihost_utils
gathered = multihost_utils.process_allgather(jax.numpy.int32(10 + jax.process_index()))
print(topology.summary(), "| gathered", sorted(int(i) for i in gathered))
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["explicit", "slurm"])
def test_two_processes_initialize(how):
  """2 CPU processes find each other and all-gather over gloo: from --coordinator_address /
  --num_processes / --process_id, or from a (faked) 2-task SLURM step that JAX detects
  (--multihost=auto, no options: coordinator localhost:JAX_COORDINATOR_PORT)."""
  port = _free_port()
  runs = []
  for i in range(2):
    if how == "explicit":
      argv, extra = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"], {}
    else:
      argv, extra = [], dict(SLURM_JOB_ID="1234", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
                             SLURM_PROCID=str(i), SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=str(port))
    runs.append((f"process {i}", [sys.executable, "-c", INIT, "--distributed_timeout_s=60", *argv],
                 _env(1, **extra)))
  outputs, log = _run_all(runs, timeout_s=120)
  mode = "manual (coordinator 127.0.0.1:" if how == "explicit" else "slurm:"
  for i, out in enumerate(outputs):
    assert f"process {i} of 2 via {mode}" in out, log
    assert "1 local / 2 global devices | gathered [10, 11]" in out, log


# ---------------------------------------------------------------------------- plans

SLURM = {"SLURM_JOB_ID": "1234", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_NTASKS": "4",
         "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
OMPI = {"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1:34911", "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}


@pytest.fixture
def cluster_env(monkeypatch):
  """No cluster in the environment (not even a Cloud TPU VM); returns a setter for one."""
  for k in list(os.environ):
    if k.startswith(CLUSTER_VARS):
      monkeypatch.delenv(k)
  from jax._src.clusters import cloud_tpu_cluster
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", False)

  def set_env(variables):
    for k, v in variables.items():
      monkeypatch.setenv(k, v)
  return set_env


def test_auto_without_cluster_is_one_process(cluster_env):
  assert distributed.plan(Options()) == Plan("off", {}, "no cluster detected")
  cluster_env({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"})  # e.g. srun -n1: all GPUs, no service
  assert distributed.plan(Options()) == Plan("off", {}, "slurm with one process")


@pytest.mark.parametrize("env, name", [(SLURM, "slurm"), (OMPI, "ompi")])
def test_auto_leaves_a_detected_cluster_to_jax(cluster_env, env, name):
  """Initialized with no arguments: JAX derives coordinator, count and id itself."""
  cluster_env(env)
  p = distributed.plan(Options(timeout_s=60))
  assert (p.mode, p.kwargs) == (name, {"initialization_timeout": 60})
  assert distributed.plan(Options(local_device_ids=(0, 1))).kwargs == {"local_device_ids": [0, 1],
                                                                       "initialization_timeout": 300}


def test_plan_manual(cluster_env):
  p = distributed.plan(Options(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                               local_device_ids=(0, 1)))
  assert p.mode == "manual"
  assert p.kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
                      "local_device_ids": [0, 1], "initialization_timeout": 300,
                      "cluster_detection_method": "deactivate"}
  # Explicit options in auto mode mean manual, even inside SLURM; so does --multihost=manual.
  cluster_env(SLURM)
  explicit = Options(coordinator_address="[::1]:1", num_processes=2, process_id=0)
  assert distributed.plan(explicit).mode == "manual"
  assert distributed.plan(Options(mode="manual", **{k: getattr(explicit, k) for k in distributed.MANUAL})) \
      == distributed.plan(explicit)


def test_plan_mpi4py(monkeypatch):
  monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: object())
  p = distributed.plan(Options(mode="mpi4py", process_id=1))
  assert p.kwargs == {"process_id": 1, "initialization_timeout": 300, "cluster_detection_method": "mpi4py"}
  monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(DistributedError, match="mpi4py is not installed"):
    distributed.plan(Options(mode="mpi4py"))


@pytest.mark.parametrize("options, env, message", [
    (Options(mode="manual", coordinator_address="h:1"), {}, "missing: --num_processes, --process_id"),
    (Options(coordinator_address="h:1", num_processes=2), {}, "missing: --process_id"),
    (Options(process_id=0), SLURM, "missing: --coordinator_address, --num_processes"),
    (Options(coordinator_address="nohost", num_processes=2, process_id=0), {}, "HOST:PORT"),
    (Options(coordinator_address="h:99999", num_processes=2, process_id=0), {}, "HOST:PORT"),
    (Options(coordinator_address="h:1", num_processes=2, process_id=2), {},
     "--process_id=2 must be less than --num_processes=2"),
    (Options(num_processes=0), {}, "--num_processes must be at least 1"),
    (Options(mode="off", num_processes=2), {}, "--multihost=off runs one process, but --num_processes was"),
    (Options(local_device_ids=(0, 0), coordinator_address="h:1", num_processes=2, process_id=0), {}, "distinct"),
    (Options(local_device_ids=(0,)), {}, "--local_device_ids needs a multi-process job"),
    (Options(mode="slurm"), SLURM, "--multihost must be one of auto, off, manual, mpi4py, got 'slurm'"),
    (Options(), {**SLURM, "SLURM_NTASKS": "four"}, "JAX's cluster detection failed: ValueError"),
])
def test_plan_rejects_inconsistent_options(cluster_env, options, env, message):
  cluster_env(env)
  with pytest.raises(DistributedError, match=message.replace("-", r"\-").replace("[", r"\[")):
    distributed.plan(options)


def test_initialize_after_a_computation_is_a_clear_error():
  import jax
  jax.devices()  # the backend is up: too late for jax.distributed
  with pytest.raises(DistributedError, match="must run before any JAX computation"):
    distributed.initialize(Options(coordinator_address="127.0.0.1:1", num_processes=2, process_id=1, timeout_s=1))
  assert not jax.distributed.is_initialized()


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
