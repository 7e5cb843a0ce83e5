"""The accelerators a preset is meant for, by the names users rent them under, and their
compile-only devices (XLA's real TPU and GPU compilers, run on a CPU host).

Names: a TPU slice as Cloud TPU names it (v5p-N counts TensorCores, two per chip, so v5p-64 is
32 chips; v5e-N and v6e-N count chips), or a GPU system as "h100-N" / "h200-N" (N GPUs: 1, 2,
4 or 8 in one node, else nodes of 8). `parse("v5p-64")` -> Target (platform, devices, memory per
device, topology); `compile_devices(target)` -> the topology's devices, which
`jit(...).lower(...).compile()` compiles for (nothing runs).

Compile-only devices need the platform's compiler beside the CPU JAX: libtpu for TPU targets,
the CUDA 13 plugin and its wheels (ptxas, nvvm, cuDNN) for GPU targets, each in its own venv
(`make aot` builds .venv-aot-tpu and .venv-aot-cuda over .venv), so CPU runs never load them.
JAX_PLATFORMS=cpu must be set before JAX starts (the CUDA plugin would otherwise look for a GPU);
`compile_environment()` is that environment. v4 is not offered: its compile-only topology counts
devices unlike the slices it is sold as (2x2x2 gives 16 devices), which we could not check.
"""

from __future__ import annotations

import dataclasses
import os
import re

GiB = 2 ** 30
PLATFORMS = ("tpu", "cuda")
# The venv (beside .venv) whose packages hold each platform's compiler.
AOT_VENVS = {"tpu": ".venv-aot-tpu", "cuda": ".venv-aot-cuda"}
GPU_TARGET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_targets")


@dataclasses.dataclass(frozen=True)
class Generation:
  """One accelerator generation: what a device of it holds and how its systems are named."""
  platform: str
  device_kind: str        # jax's device_kind of one device
  memory_bytes: int       # HBM per device
  peak_bf16: float        # dense bf16 FLOP/s per device (vendor data sheets)
  dims: int = 0           # TPU torus dimensions (0: a GPU system)
  cores_per_device: int = 1  # how many of the name's units one device is (v5p: 2 TensorCores)
  target_file: str = ""   # GPU: the XLA GpuTargetConfig text proto in gpu_targets/


GENERATIONS = {
    "v5p": Generation("tpu", "TPU v5", 95 * GiB, 459e12, dims=3, cores_per_device=2),
    "v5e": Generation("tpu", "TPU v5 lite", 16 * GiB, 197e12, dims=2),
    "v6e": Generation("tpu", "TPU v6 lite", 32 * GiB, 918e12, dims=2),
    "h100": Generation("cuda", "NVIDIA H100 80GB HBM3", 84_929_347_584, 989e12, target_file="h100_sxm.txtpb"),
    "h200": Generation("cuda", "NVIDIA H200", 150_754_820_096, 989e12, target_file="h200_sxm.txtpb"),
}


class TargetError(ValueError):
  """A target name that names no system we can compile for (one line for the user)."""


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  generation: str
  devices: int            # jax devices: chips of a TPU slice, GPUs of a GPU system
  topology: str           # jax.experimental.topologies' name for it

  @property
  def spec(self) -> Generation:
    return GENERATIONS[self.generation]

  @property
  def platform(self) -> str:
    return self.spec.platform

  @property
  def memory_bytes(self) -> int:
    return self.spec.memory_bytes

  @property
  def hosts(self) -> int:
    """Processes of a launch: 8 GPUs or 4 TPU chips per host (the usual VM shapes)."""
    return max(1, self.devices // (8 if self.platform == "cuda" else 4))


def _torus(chips: int, dims: int) -> str:
  """The slice shape Cloud TPU uses for `chips` (a power of two): the smallest dimension is doubled
  until the product is reached ("2x2x1", "2x2x4", "4x4x8"; "4x8" for 2-D slices)."""
  shape = [1] * dims
  while shape[0] * shape[1] * (shape[2] if dims == 3 else 1) < chips:
    shape[shape.index(min(shape))] *= 2
  shape = sorted(shape)
  if dims == 3 and shape[0] == 1:   # v5p-8: 4 chips are a 2x2x1 slice
    shape = shape[1:] + shape[:1]
  return "x".join(map(str, shape))


def parse(name: str) -> Target:
  """A Target from "v5p-64", "v6e-32", "v5e-16", "h100-8", "h200-32" (case-insensitive)."""
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.strip().lower())
  if not m or m.group(1) not in GENERATIONS:
    of = lambda platform: ", ".join(g + "-N" for g, s in GENERATIONS.items() if s.platform == platform)
    raise TargetError(f"unknown target {name!r}: name a TPU slice ({of('tpu')}) or a GPU system ({of('cuda')})")
  gen, count = m.group(1), int(m.group(2))
  spec = GENERATIONS[gen]
  if spec.platform == "tpu":
    devices, rem = divmod(count, spec.cores_per_device)
    smallest = 4 if spec.dims == 3 else 1
    if rem or devices < smallest or devices & (devices - 1):
      raise TargetError(f"target {name!r}: a {gen} slice has a power-of-two number of chips, at least "
                        f"{smallest} ({gen}-{smallest * spec.cores_per_device}); {gen}-N counts "
                        f"{'TensorCores (2 per chip)' if spec.cores_per_device == 2 else 'chips'}")
    return Target(name.lower(), gen, devices, f"{gen}:{_torus(devices, spec.dims)}")
  if count in (1, 2, 4, 8):
    return Target(name.lower(), gen, count, f"1x1x{count}")
  if count % 8:
    raise TargetError(f"target {name!r}: a {gen} system is 1, 2, 4 or 8 GPUs, or nodes of 8 (16, 32, ...)")
  return Target(name.lower(), gen, count, f"1x{count // 8}x8")


def generation_of(device_kind: str) -> str | None:
  """The generation ("h100", "v5p", ...) of a jax device_kind; None for others (CPUs among them)."""
  kind = device_kind.lower()
  for name, spec in sorted(GENERATIONS.items(), key=lambda g: -len(g[1].device_kind)):
    if kind.startswith(spec.device_kind.lower()) or name in kind:
      return name
  return None


def compile_environment(platform: str) -> dict:
  """Environment variables a compile-only process needs, set before JAX starts: the CPU as
  JAX's only runtime platform, and libtpu told not to ask a metadata server for its slice."""
  env = {"JAX_PLATFORMS": "cpu"}
  if platform == "tpu":
    env.update(TPU_SKIP_MDS_QUERY="1", TPU_ACCELERATOR_TYPE="v5p-8", TPU_WORKER_HOSTNAMES="localhost",
               TPU_WORKER_ID="0", TF_CPP_MIN_LOG_LEVEL="2")
  return env


def has_compiler(platform: str) -> bool:
  """Whether this Python can compile for the platform (libtpu, or the CUDA plugin, importable)."""
  import importlib.util
  module = "libtpu" if platform == "tpu" else "jax_plugins.xla_cuda13"
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    return False


def gpu_target_config(target: Target) -> str:
  """The GpuTargetConfig text proto of the target's GPU (compute capability, SMs, memory, cuDNN)."""
  with open(os.path.join(GPU_TARGET_DIR, target.spec.target_file)) as f:
    return f.read()


def compile_devices(target: Target) -> list:
  """The target's compile-only devices (a process set up by compile_environment)."""
  from jax.experimental import topologies
  try:
    if target.platform == "tpu":
      extra = {}
      if target.devices < 4:   # a slice smaller than one host (4 chips): the host is the slice
        shape = [int(n) for n in target.topology.split(":")[1].split("x")]
        extra["chips_per_host_bounds"] = (shape + [1, 1])[:3]
      topo = topologies.get_topology_desc(platform="tpu", topology_name=target.topology, **extra)
    else:
      _tell_cudnn_the_target(target)
      topo = topologies.get_topology_desc(platform="cuda", topology=target.topology,
                                          target_config=gpu_target_config(target))
  except Exception as e:  # the compiler's own refusal, as one line
    raise TargetError(f"target {target.name}: the {target.platform} compiler has no topology "
                      f"{target.topology}: {str(e).strip().splitlines()[0]}") from e
  devices = list(topo.devices)
  if len(devices) != target.devices:
    raise TargetError(f"target {target.name}: the compiler's topology {target.topology} has {len(devices)} "
                      f"devices, expected {target.devices}")
  return devices


def _tell_cudnn_the_target(target: Target) -> None:
  """JAX's Python-side cuDNN checks (head dims, sequence lengths, Hopper-only layouts) read the
  compute capability of a local GPU; on a CPU host there is none, so they are told the target's
  (9.0 for H100 and H200). The compiler itself reads the target config."""
  from jax._src.cudnn import fused_attention_stablehlo as fa
  major = re.search(r"cuda_compute_capability\s*{\s*major:\s*(\d+)(?:\s*minor:\s*(\d+))?", gpu_target_config(target))
  capability = (int(major.group(1)), int(major.group(2) or 0))
  at_least = lambda c: capability >= tuple(int(x) for x in c.split("."))
  equal = lambda c: capability == tuple(int(x) for x in c.split("."))
  fa.check_compute_capability, fa.is_cuda_compute_capability_equal = at_least, equal
  cudnn = re.search(r"dnn_version_info\s*{\s*major:\s*(\d+)\s*minor:\s*(\d+)\s*patch:\s*(\d+)",
                    gpu_target_config(target))
  version = int(cudnn.group(1)) * 10000 + int(cudnn.group(2)) * 100 + int(cudnn.group(3))
  fa.check_cudnn_version = lambda: version
