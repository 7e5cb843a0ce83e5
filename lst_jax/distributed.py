"""Multi-host start-up: `jax.distributed.initialize` from flags and the environment.

Every host of a TPU pod slice (or every node / GPU of a cluster) runs the same
command; `initialize` runs once, in the main process, before anything touches a
JAX backend. How the processes find each other (`--multihost`):

  auto     (default) the first that applies:
           - --coordinator_address / --num_processes / --process_id given: "manual";
           - inside a SLURM step with more than one task (srun): "slurm";
           - inside an Open MPI job with more than one rank (mpirun): "ompi";
           - on a Cloud TPU VM (libtpu installed, TPU chips attached): "tpu";
           - otherwise one process: nothing is initialized.
  off      one process; never initialize.
  manual   --coordinator_address=HOST:PORT (process 0's address, the same on every
           process), --num_processes=N, --process_id=I; optional --local_device_ids.
  slurm    SLURM's variables (coordinator = first node of the step, port from the job
           id or $JAX_COORDINATOR_PORT). One process per GPU by default (JAX then
           makes device SLURM_LOCALID the process's only device); one process per node
           needs --local_device_ids=0,1,...
  ompi     Open MPI's variables (mpirun).
  tpu      Cloud TPU metadata: all workers of the slice, no arguments needed.
  mpi4py   any MPI through mpi4py (must be installed).
In the cluster modes, options given explicitly override what is detected.
CPU processes talk through gloo (JAX's default CPU collectives).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import multiprocessing
import os
import re
from typing import Mapping

MODES = ("auto", "off", "manual", "slurm", "ompi", "tpu", "mpi4py")
# What JAX's own cluster detection reads (jax/_src/clusters/*.py).
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
OMPI_VARS = ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")
GOOGLE_PCI_VENDOR = "0x1ae0"


class DistributedError(ValueError):
  """Inconsistent multi-host options, or a forced mode whose environment is absent."""


@dataclasses.dataclass(frozen=True)
class Options:
  mode: str = "auto"
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  timeout_s: int = 300

  def explicit(self) -> dict:
    """The options given on the command line, as jax.distributed.initialize arguments."""
    out = {"coordinator_address": self.coordinator_address, "num_processes": self.num_processes,
           "process_id": self.process_id,
           "local_device_ids": list(self.local_device_ids) if self.local_device_ids is not None else None}
    return {k: v for k, v in out.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `initialize` will do: `mode` is "off" (nothing) or the cluster mode it uses."""
  mode: str
  kwargs: dict
  reason: str


@dataclasses.dataclass(frozen=True)
class Topology:
  mode: str
  process_index: int
  process_count: int
  local_devices: int
  global_devices: int
  coordinator: str | None = None

  def summary(self) -> str:
    where = f" via {self.mode}" + (f" (coordinator {self.coordinator})" if self.coordinator else "")
    return (f"process {self.process_index} of {self.process_count}{where if self.process_count > 1 else ''}: "
            f"{self.local_devices} local / {self.global_devices} global devices")


# ---------------------------------------------------------------------------- flags

_FLAGS = None


def define_flags():
  """Defines --multihost, --coordinator_address, --num_processes, --process_id,
  --local_device_ids and --distributed_timeout_s on absl's FLAGS (once; later calls
  return the same holders). Call at import time of the main module."""
  global _FLAGS
  if _FLAGS is None:
    from absl import flags
    _FLAGS = dict(
        mode=flags.DEFINE_enum("multihost", "auto", MODES,
                               "How processes find each other: auto (detect SLURM, Open MPI, Cloud TPU; "
                               "explicit options mean manual), off, manual, slurm, ompi, tpu, mpi4py."),
        coordinator_address=flags.DEFINE_string(
            "coordinator_address", None, "HOST:PORT of process 0's coordinator service, the same on all processes."),
        num_processes=flags.DEFINE_integer("num_processes", None, "Number of processes in the job.", lower_bound=1),
        process_id=flags.DEFINE_integer("process_id", None, "This process's id, 0 .. num_processes-1.",
                                        lower_bound=0),
        local_device_ids=flags.DEFINE_list("local_device_ids", None,
                                           "Local devices this process uses (e.g. 0,1,2,3); default: JAX's choice."),
        timeout_s=flags.DEFINE_integer("distributed_timeout_s", 300,
                                       "Seconds to wait for all processes to connect.", lower_bound=1),
    )
  return _FLAGS


def options_from_flags() -> Options:
  """Options from the parsed flags (define_flags() must have been called)."""
  f = define_flags()
  ids = f["local_device_ids"].value
  if ids is not None:
    try:
      ids = tuple(int(i) for i in ids)
    except ValueError:
      raise DistributedError(f"--local_device_ids must be comma-separated integers, got {','.join(ids)!r}") from None
  return Options(mode=f["mode"].value, coordinator_address=f["coordinator_address"].value,
                 num_processes=f["num_processes"].value, process_id=f["process_id"].value,
                 local_device_ids=ids, timeout_s=f["timeout_s"].value)


# ---------------------------------------------------------------------------- detection

def _int_env(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env.get(name, "1"))
  except ValueError:
    return 1


def in_slurm_step(env: Mapping[str, str]) -> bool:
  return all(v in env for v in SLURM_VARS)


def in_ompi_job(env: Mapping[str, str]) -> bool:
  return all(v in env for v in OMPI_VARS)


def on_cloud_tpu(env: Mapping[str, str]) -> bool:
  """libtpu installed and TPU chips attached (Google PCI devices), or a GKE TPU pod."""
  if importlib.util.find_spec("libtpu") is None:
    return False
  if env.get("TPU_WORKER_HOSTNAMES"):
    return True
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return bool(glob.glob("/dev/accel[0-9]*"))


def _check_address(address: str) -> None:
  m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^\s:\[\]]+):(\d+)", address)
  if not m or not 0 < int(m.group(2)) < 65536:
    raise DistributedError(f"--coordinator_address must be HOST:PORT (e.g. 10.0.0.1:1234), got {address!r}")


def _check_ids(options: Options) -> None:
  if options.num_processes is not None and options.num_processes < 1:
    raise DistributedError(f"--num_processes must be at least 1, got {options.num_processes}")
  if options.process_id is not None and options.process_id < 0:
    raise DistributedError(f"--process_id must be non-negative, got {options.process_id}")
  if (options.num_processes is not None and options.process_id is not None
      and options.process_id >= options.num_processes):
    raise DistributedError(f"--process_id={options.process_id} must be less than "
                           f"--num_processes={options.num_processes}")
  if options.local_device_ids is not None:
    ids = options.local_device_ids
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
      raise DistributedError(f"--local_device_ids must be distinct non-negative integers, got {list(ids)}")
  if options.coordinator_address is not None:
    _check_address(options.coordinator_address)


def plan(options: Options, env: Mapping[str, str] | None = None) -> Plan:
  """Decides how (and whether) to initialize; raises DistributedError on bad options.
  Pure: reads only `env` (default os.environ) and what is installed."""
  env = os.environ if env is None else env
  if options.mode not in MODES:
    raise DistributedError(f"--multihost must be one of {', '.join(MODES)}, got {options.mode!r}")
  _check_ids(options)
  explicit = options.explicit()
  mode = options.mode

  if mode == "off":
    if explicit:
      raise DistributedError(f"--multihost=off runs one process, but {_names(explicit)} "
                             f"{'was' if len(explicit) == 1 else 'were'} given; drop "
                             f"{'it' if len(explicit) == 1 else 'them'} or use --multihost=manual")
    return Plan("off", {}, "--multihost=off")

  if mode == "auto":
    if any(k in explicit for k in ("coordinator_address", "num_processes", "process_id")):
      mode, reason = "manual", "explicit --coordinator_address/--num_processes/--process_id"
    elif in_slurm_step(env) and _int_env(env, "SLURM_NTASKS") > 1:
      mode, reason = "slurm", f"SLURM step with {env['SLURM_NTASKS']} tasks"
    elif in_ompi_job(env) and _int_env(env, "OMPI_COMM_WORLD_SIZE") > 1:
      mode, reason = "ompi", f"Open MPI job with {env['OMPI_COMM_WORLD_SIZE']} ranks"
    elif on_cloud_tpu(env):
      mode, reason = "tpu", "Cloud TPU VM"
    else:
      if explicit:  # only --local_device_ids: meaningless without a cluster
        raise DistributedError("--local_device_ids needs a multi-process job: also give --coordinator_address, "
                               "--num_processes and --process_id (or run under srun / mpirun, or on a TPU VM)")
      return Plan("off", {}, "no cluster environment detected (one process)")
  else:
    reason = f"--multihost={mode}"

  kwargs = {**explicit, "initialization_timeout": options.timeout_s}
  if mode == "manual":
    missing = [f"--{k}" for k in ("coordinator_address", "num_processes", "process_id") if k not in explicit]
    if missing:
      raise DistributedError(f"--multihost=manual needs --coordinator_address, --num_processes and --process_id "
                             f"(missing: {', '.join(missing)})")
    kwargs["cluster_detection_method"] = "deactivate"
  elif mode == "slurm":
    missing = [v for v in SLURM_VARS if v not in env]
    if missing:
      raise DistributedError(f"--multihost=slurm but {', '.join(missing)} not set: start one process per task "
                             f"with srun inside the allocation (sbatch alone starts only the batch script)")
    _check_against(options, _int_env(env, "SLURM_NTASKS"), "SLURM_NTASKS")
    kwargs["cluster_detection_method"] = "slurm"
  elif mode == "ompi":
    missing = [v for v in OMPI_VARS if v not in env]
    if missing:
      raise DistributedError(f"--multihost=ompi but {', '.join(missing)} not set: start the processes with mpirun")
    _check_against(options, _int_env(env, "OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE")
    kwargs["cluster_detection_method"] = "ompi"
  elif mode == "tpu":
    if not on_cloud_tpu(env):
      raise DistributedError("--multihost=tpu but this is not a Cloud TPU VM (libtpu is not installed or no TPU "
                             "chips are attached); install jax[tpu] on the TPU VM, or use --multihost=manual")
    # JAX's TPU detection is the default one (GCE or GKE); no method named on purpose.
  elif mode == "mpi4py":
    if importlib.util.find_spec("mpi4py") is None:
      raise DistributedError("--multihost=mpi4py but mpi4py is not installed (pip install mpi4py)")
    kwargs["cluster_detection_method"] = "mpi4py"
  return Plan(mode, kwargs, reason)


def _check_against(options: Options, detected: int, source: str) -> None:
  if options.num_processes is not None and options.num_processes != detected:
    raise DistributedError(f"--num_processes={options.num_processes} contradicts {source}={detected}")
  if options.process_id is not None and options.process_id >= detected:
    raise DistributedError(f"--process_id={options.process_id} is out of range for {source}={detected}")


def _names(explicit: dict) -> str:
  return ", ".join(f"--{k}" for k in explicit)


# ---------------------------------------------------------------------------- start-up

def initialize(options: Options | None = None, env: Mapping[str, str] | None = None) -> Topology | None:
  """Initializes JAX's distributed system as `plan` decides; returns the topology.

  A no-op (None) outside the main process (e.g. in data-loading workers) and when
  already initialized in this process. Must run before any JAX computation.
  """
  if multiprocessing.parent_process() is not None:
    return None
  options = options or Options()
  decided = plan(options, env)
  import jax  # after flags and the environment are settled

  if decided.mode != "off" and not jax.distributed.is_initialized():
    try:
      jax.distributed.initialize(**decided.kwargs)
    except (ValueError, TypeError) as e:
      raise DistributedError(f"jax.distributed.initialize ({decided.reason}) failed: {e}") from e
    except RuntimeError as e:  # e.g. a JAX computation already ran in this process
      raise DistributedError(f"jax.distributed.initialize ({decided.reason}) failed: {e} "
                             f"(lst_jax.distributed.initialize must run before any JAX computation)") from e
  return Topology(mode=decided.mode, process_index=jax.process_index(), process_count=jax.process_count(),
                  local_devices=jax.local_device_count(), global_devices=jax.device_count(),
                  coordinator=decided.kwargs.get("coordinator_address"))
