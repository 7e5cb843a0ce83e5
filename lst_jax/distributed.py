"""Multi-host start-up: `jax.distributed.initialize` from flags, or JAX's own cluster detection.

Every host of a TPU pod slice (or every node / GPU of a cluster) runs the same
command; `initialize` runs once, in the main process, before anything touches a
JAX backend. How the processes find each other (`--multihost`):

  auto     (default) --coordinator_address / --num_processes / --process_id given:
           "manual". Otherwise JAX's own cluster detection, the one
           `jax.distributed.initialize()` uses when given no arguments (Cloud TPU VMs
           and GKE, SLURM steps, Open MPI, Kubernetes with jax[k8s]): a cluster of more
           than one process is initialized with no arguments, so JAX derives the
           coordinator, process count and id (SLURM, Open MPI: one process per GPU, each
           using the GPU of its local rank; JAX_COORDINATOR_PORT sets the port). No
           cluster, or a cluster of one process: one process, nothing initialized.
  off      one process; never initialize.
  manual   --coordinator_address=HOST:PORT (process 0's address, the same on every
           process), --num_processes=N, --process_id=I; no detection.
  mpi4py   any MPI through mpi4py (must be installed; JAX never picks it by itself).
--local_device_ids restricts this process's devices in every mode but off.
CPU processes talk through gloo (JAX's default CPU collectives).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import multiprocessing
import re

MODES = ("auto", "off", "manual", "mpi4py")
MANUAL = ("coordinator_address", "num_processes", "process_id")


class DistributedError(ValueError):
  """Inconsistent multi-host options, or a cluster JAX could not start."""


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
  """What `initialize` will do: `mode` is "off" (nothing), "manual", "mpi4py" or the
  name of the cluster JAX detected; `kwargs` go to jax.distributed.initialize."""
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
                               "How processes find each other: auto (explicit options mean manual, else "
                               "JAX's cluster detection: Cloud TPU, SLURM, Open MPI, ...), off, manual, mpi4py."),
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


# ---------------------------------------------------------------------------- planning

def detect_cluster() -> tuple[str, int] | None:
  """(name, process count) of the cluster `jax.distributed.initialize()` would use when
  given no arguments, or None: JAX's own detection, in its order, opt-in methods
  (mpi4py) left out. Reads the environment (and, on Cloud TPU, the VM's metadata)."""
  from jax._src import clusters  # what jax.distributed.initialize() consults itself
  try:
    env = next((c for c in clusters.ClusterEnv._cluster_types
                if not c.opt_in_only_method and c.is_env_present()), None)
    return None if env is None else (env.name or env.__name__, env.get_process_count())
  except Exception as e:  # noqa: BLE001 - metadata servers, Kubernetes APIs, malformed variables
    raise DistributedError(f"JAX's cluster detection failed: {e!r}; run one process with --multihost=off, or "
                           f"give --coordinator_address, --num_processes and --process_id") from e


def _check(options: Options) -> None:
  if options.mode not in MODES:
    raise DistributedError(f"--multihost must be one of {', '.join(MODES)}, got {options.mode!r}")
  if options.num_processes is not None and options.num_processes < 1:
    raise DistributedError(f"--num_processes must be at least 1, got {options.num_processes}")
  if options.process_id is not None and options.process_id < 0:
    raise DistributedError(f"--process_id must be non-negative, got {options.process_id}")
  if (options.num_processes is not None and options.process_id is not None
      and options.process_id >= options.num_processes):
    raise DistributedError(f"--process_id={options.process_id} must be less than "
                           f"--num_processes={options.num_processes}")
  ids = options.local_device_ids
  if ids is not None and (not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids)):
    raise DistributedError(f"--local_device_ids must be distinct non-negative integers, got {list(ids)}")
  address = options.coordinator_address
  if address is not None:
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^\s:\[\]]+):(\d+)", address)
    if not m or not 0 < int(m.group(2)) < 65536:
      raise DistributedError(f"--coordinator_address must be HOST:PORT (e.g. 10.0.0.1:1234), got {address!r}")


def plan(options: Options) -> Plan:
  """Decides how (and whether) to initialize; raises DistributedError on bad options.
  In auto mode without explicit options, asks JAX's cluster detection."""
  _check(options)
  explicit = options.explicit()
  kwargs = {**explicit, "initialization_timeout": options.timeout_s}
  if options.mode == "off":
    if explicit:
      raise DistributedError(f"--multihost=off runs one process, but {', '.join(f'--{k}' for k in explicit)} "
                             f"{'was' if len(explicit) == 1 else 'were'} given; drop "
                             f"{'it' if len(explicit) == 1 else 'them'} or use --multihost=manual")
    return Plan("off", {}, "--multihost=off")
  if options.mode == "manual" or (options.mode == "auto" and any(k in explicit for k in MANUAL)):
    missing = [f"--{k}" for k in MANUAL if k not in explicit]
    if missing:
      raise DistributedError(f"--multihost=manual needs --coordinator_address, --num_processes and --process_id "
                             f"(missing: {', '.join(missing)})")
    return Plan("manual", {**kwargs, "cluster_detection_method": "deactivate"},
                "--coordinator_address, --num_processes and --process_id")
  if options.mode == "mpi4py":
    if importlib.util.find_spec("mpi4py") is None:
      raise DistributedError("--multihost=mpi4py but mpi4py is not installed (pip install mpi4py)")
    return Plan("mpi4py", {**kwargs, "cluster_detection_method": "mpi4py"}, "--multihost=mpi4py")
  cluster = detect_cluster()
  if cluster is None or cluster[1] <= 1:
    if explicit:  # only --local_device_ids: meaningless without a cluster
      raise DistributedError("--local_device_ids needs a multi-process job: also give --coordinator_address, "
                             "--num_processes and --process_id (or run under srun / mpirun, or on a TPU slice)")
    return Plan("off", {}, "no cluster detected" if cluster is None else f"{cluster[0]} with one process")
  return Plan(cluster[0], kwargs, f"JAX detected {cluster[0]} with {cluster[1]} processes")


# ---------------------------------------------------------------------------- start-up

def initialize(options: Options | None = None) -> Topology | None:
  """Initializes JAX's distributed system as `plan` decides; returns the topology.

  A no-op (None) outside the main process (e.g. in data-loading workers); does not
  initialize twice in one process. Must run before any JAX computation.
  """
  if multiprocessing.parent_process() is not None:
    return None
  decided = plan(options or Options())
  import jax

  if decided.mode != "off" and not jax.distributed.is_initialized():
    try:
      jax.distributed.initialize(**decided.kwargs)
    except (ValueError, TypeError, KeyError, RuntimeError) as e:  # RuntimeError: also timeouts (XlaRuntimeError)
      hint = (" (lst_jax.distributed.initialize must run before any JAX computation)"
              if "must be called before" in str(e) else "")
      raise DistributedError(f"jax.distributed.initialize ({decided.reason}) failed: {e}{hint}") from e
  return Topology(mode=decided.mode, process_index=jax.process_index(), process_count=jax.process_count(),
                  local_devices=jax.local_device_count(), global_devices=jax.device_count(),
                  coordinator=decided.kwargs.get("coordinator_address"))
