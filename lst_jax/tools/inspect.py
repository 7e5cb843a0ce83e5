"""Parameters, FLOPs and per-device memory of an experiment, without running it.

  python -m lst_jax.tools.inspect --config=experiments/lst_compute_matched.py:1b [--devices=32] \
      [--data=N] [--fsdp=N] [--tensor=N] [--vocab_size=V] [--nocompile]

1. Parameters per module, from an abstract model (nnx.eval_shape: nothing allocated).
2. Forward and train FLOPs per step per module (lst_jax.flops; train = 3 x forward):
   mask-aware, as lst_jax.model executes them, and as a dense implementation would.
3. Memory per device of the train step from the analytic model (lst_jax.memory:
   parameters, optimizer state, gradients, batch, saved activations under the remat
   policy, the largest transient), as a fraction of the memory of the hardware the
   preset is meant for (lst_jax.presets.hardware_of); then, unless --nocompile, beside
   XLA's own figure: the train step compiled ahead of time on the mesh for abstract
   sharded arguments (jit(...).lower(...).compile().memory_analysis()).

--devices=N compiles for N devices: when jax sees another count, the tool re-runs
itself on N fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N,
JAX_PLATFORMS=cpu); memory is then what XLA's CPU compiler plans, a guide to, not
a measurement of, an accelerator's. The vocabulary size comes from --vocab_size,
else from config.data.dir when it holds a prepared dataset, else DEFAULT_VOCAB
(the paper's: Llama-2's 32,000 text pieces and 501 HuBERT units, plus specials
and the two mode tokens: 32,506).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time

import jax
import ml_collections
from absl import app, flags
from flax import nnx

from lst_jax import cli
from lst_jax import config as config_lib
from lst_jax import flops as flops_lib
from lst_jax import memory as memory_lib
from lst_jax import presets
from lst_jax import sharding
from lst_jax.model import attention
from lst_jax.config import ModelConfig
from lst_jax.model.factory import build_model
from lst_jax.tools.programs import (DEFAULT_VOCAB, abstract_batch, lower_train_step,  # noqa: F401
                                   memory_per_device, vocab_for)


# Parameter path prefix -> module name of lst_jax.flops (longest prefix wins).
PARAM_MODULES = {
    ("encoder", "embed"): "embed", ("encoder", "layers"): "encoder",
    ("encoder", "cross"): "encoder_cross", ("encoder", "pool_to_queries"): "encoder_cross",
    ("encoder", "to_global"): "to_global", ("latent",): "global",
    ("decoder", "from_global"): "decoder_cross", ("decoder", "cross"): "decoder_cross",
    ("decoder", "layers"): "decoder", ("decoder", "norm"): "head", ("decoder", "head"): "head",
    ("embed",): "embed", ("body",): "global", ("head",): "head",
}



def param_module(path) -> str:
  """The FLOP-table module a parameter belongs to; unknown paths keep their own name."""
  names = tuple(str(p) for p in path)
  for n in range(len(names), 0, -1):
    if names[:n] in PARAM_MODULES:
      return PARAM_MODULES[names[:n]]
  return ".".join(names[:2])


def param_counts(model_cfg: ModelConfig) -> dict[str, int]:
  """Parameters per module of an abstract model (nothing is allocated)."""
  params = nnx.state(nnx.eval_shape(lambda: build_model(model_cfg, 0)), nnx.Param)
  counts: dict[str, int] = {}
  for path, var in nnx.to_flat_state(params):
    name = param_module(path)
    counts[name] = counts.get(name, 0) + int(var.size)
  return counts


def _fmt(n: float) -> str:
  for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.2f}{unit}"
  return f"{n:.0f}"


def report(exp: config_lib.Experiment, counts: dict[str, int], flops: dict) -> str:
  """The parameter and FLOP tables as text."""
  d, total_params = exp.data, sum(counts.values())
  lines = [f"{exp.model.kind}: {total_params / 1e6:.1f}M parameters; batch {d.batch_size} rows x "
           f"{d.max_tokens} tokens" + (f" / {d.max_patches} patches" if exp.model.kind == "lst" else ""),
           f"{'module':<15}{'params':>10}{'share':>7}{'fwd FLOPs':>12}{'executed':>12}{'dense':>12}"
           f"{'train FLOPs':>13}{'share':>7}"]
  names = list(flops["modules"]) + [n for n in counts if n not in flops["modules"]]
  zero = dict.fromkeys(flops_lib.KINDS, 0)
  for name in names:
    f, p = flops["modules"].get(name, zero), counts.get(name, 0)
    lines.append(f"{name:<15}{p / 1e6:>9.2f}M{p / total_params:>7.1%}{_fmt(f['forward']):>12}"
                 f"{_fmt(f['executed']):>12}{_fmt(f['dense']):>12}{_fmt(3 * f['forward']):>13}"
                 f"{f['forward'] / flops['forward']:>7.1%}")
  lines.append(f"{'total':<15}{total_params / 1e6:>9.2f}M{'':>7}{_fmt(flops['forward']):>12}"
               f"{_fmt(flops['executed']):>12}{_fmt(flops['dense']):>12}{_fmt(flops['train']):>13}")
  lines.append(f"train FLOPs per step (3 x forward, matmuls only, no remat recompute): "
               f"{_fmt(flops['train'])} mask-aware, {_fmt(flops['train_executed'])} as executed, "
               f"{_fmt(flops['train_dense'])} dense; paper-style (global transformer only): "
               f"{_fmt(3 * flops['global_only'])}")
  return "\n".join(lines)


def preset_hardware(config: ml_collections.ConfigDict) -> presets.Hardware | None:
  """The hardware the config's preset size is meant for (None for a config without one)."""
  return presets.hardware_of(config.get("size", ""))


def memory_report(est: memory_lib.MemoryEstimate, hardware: presets.Hardware | None) -> str:
  """The memory model's per-device breakdown, and its share of the preset's device memory."""
  line = f"memory model per device on mesh (data, fsdp, tensor) = {est.mesh}: {est.describe()}"
  if hardware is not None:
    line += (f"\n  = {est.fraction(hardware.memory_bytes):.0%} of a device of the preset's hardware, {hardware.device} "
             f"({hardware.memory_bytes / memory_lib.GiB:.1f} GiB per device, {hardware.devices} devices; "
             f"budget {memory_lib.DEFAULT_BUDGET:.0%})")
  return line


def _fake_devices_env(n: int) -> dict:
  xla_flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  return dict(os.environ, XLA_FLAGS=f"{xla_flags} --xla_force_host_platform_device_count={n}".strip(),
              JAX_PLATFORMS="cpu", LST_INSPECT_REEXEC="1")


_CONFIG = cli.config_flag()
_DEVICES = flags.DEFINE_integer("devices", 0, "Compile for this many devices (fake CPU devices if "
                                "jax sees another count); 0: the devices jax sees.")
_DATA = flags.DEFINE_integer("data", None, "Mesh data axis (default: the config's).")
_FSDP = flags.DEFINE_integer("fsdp", None, "Mesh fsdp axis (default: the config's).")
_TENSOR = flags.DEFINE_integer("tensor", None, "Mesh tensor axis (default: the config's).")
_VOCAB = flags.DEFINE_integer("vocab_size", 0, "Vocabulary size; 0: from config.data.dir if it is a "
                              f"prepared dataset, else {DEFAULT_VOCAB.size} (the paper's).")
_COMPILE = flags.DEFINE_boolean("compile", True, "Compile the train step for memory figures "
                                "(--nocompile: parameters and FLOPs only).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  n = _DEVICES.value
  if n and jax.device_count() != n:
    if os.environ.get("LST_INSPECT_REEXEC"):
      sys.exit(f"error: asked for {n} devices, jax sees {jax.device_count()}")
    os.execve(sys.executable, [sys.executable, "-m", "lst_jax.tools.inspect", *sys.argv[1:]],
              _fake_devices_env(n))
  config = _CONFIG.value
  try:
    vocab = vocab_for(config, _VOCAB.value)
    exp = config_lib.parse(config, vocab_size=vocab.size)
  except ValueError as e:  # ConfigError, DataError and a bad --vocab_size
    sys.exit(f"error: {e}")
  d = exp.data
  print(report(exp, param_counts(exp.model), flops_lib.model_flops(exp.model, d.batch_size, d.max_tokens,
                                                                     d.max_patches)))
  mesh_cfg, hardware = exp.mesh, preset_hardware(config)
  data = _DATA.value if _DATA.value is not None else (-1 if _FSDP.value or _TENSOR.value else mesh_cfg.data)
  fsdp, tensor = _FSDP.value or mesh_cfg.fsdp, _TENSOR.value or mesh_cfg.tensor
  if not _COMPILE.value:
    if data == -1:  # the devices of --devices, else of the preset's hardware, else the ones jax sees
      devices = n or (hardware.devices if hardware else jax.device_count())
      data = max(devices // (fsdp * tensor), 1)
    print(memory_report(memory_lib.estimate(exp, (data, fsdp, tensor)), hardware))
    return
  mesh = sharding.make_mesh(data, fsdp, tensor)
  if attention.platform_problem(exp.model.attention, jax.default_backend()):
    print(f"({attention.platform_problem(exp.model.attention, jax.default_backend())}: this plan uses xla "
          f"attention; `make aot` compiles for accelerators)")
    exp = dataclasses.replace(exp, model=dataclasses.replace(exp.model, attention="xla"))
  est = memory_lib.estimate(exp, tuple(mesh.shape[a] for a in sharding.MESH_AXES))
  print(memory_report(est, hardware))
  t = time.time()
  lowered = lower_train_step(exp, vocab, mesh)
  t_lower = time.time() - t
  compiled = lowered.compile()
  mem = memory_per_device(compiled)
  print(f"train step on mesh {dict(mesh.shape)} ({jax.devices()[0].platform}; lowered in {t_lower:.0f} s, "
        f"compiled in {time.time() - t - t_lower:.0f} s), memory per device: "
        f"{mem['total'] / 2**30:.2f} GiB = arguments {mem['argument'] / 2**30:.2f} + outputs "
        f"{mem['output'] / 2**30:.2f} - aliased {mem['alias'] / 2**30:.2f} + temporaries "
        f"{mem['temp'] / 2**30:.2f}; the memory model says {est.total / max(mem['total'], 1):.2f}x that")


if __name__ == "__main__":
  cli.run(main)
