"""Compile a preset for the accelerators it is meant for, on this CPU host (nothing runs).

  python -m lst_jax.tools.aot --config=experiments/lst_compute_matched.py:1b --target=v5p-64
  python -m lst_jax.tools.aot --matrix [--sizes=420m,1b,7b] [--out=runs/aot]     (make aot)

For one experiment and target (lst_jax.targets: v5p-N, v5e-N, v6e-N, h100-N, h200-N) it
compiles, with XLA's real TPU or GPU compiler on the target's compile-only devices, the programs
a run executes: the train step (the experiment's micro-batches, remat policy, scanned layers and
attention backend, its mesh over the target's devices), the eval step, and greedy decoding (one
device, batch 16). For each: the compiler's memory per device (arguments, outputs, aliased,
temporaries) beside lst_jax.memory's model and the device's memory, whether it fits in 75% of
it, and the compile time; on TPU also the compiler's cost analysis of the train step: FLOPs, bytes
and its estimated step time (`optimal_seconds`), with the MFU that estimate implies, labelled the
compiler's estimate. Its loops (scanned layers, micro-batches) are counted once by XLA's cost
analysis, so those figures come from a second compile of one micro-batch with the layers
unrolled (at two depths, extrapolated to the model's), times the micro-batches (`--cost=false`
skips it). Nothing here is measured on hardware.

`--matrix` compiles every accelerator preset (lst_jax.presets: its deployments), both members of
the compute-matched pair, for each of its targets, each in its own process, and writes
<out>/<size>_<member>_<target>.json and <out>/matrix.md; entries already compiled are kept
unless --force. An out-of-memory plan or a compile error is one line and a non-zero exit.

The compilers live in their own venvs (.venv-aot-tpu, .venv-aot-cuda, made by `make aot-setup`
over .venv), so CPU training never loads libtpu or the CUDA plugin; run from .venv, this tool
re-runs itself there with the environment targets.compile_environment() gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from lst_jax import cli
from lst_jax.tools import programs as programs_lib
from lst_jax import targets as targets_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = "LST_AOT_CHILD"
DECODE_BATCH, DECODE_SLOTS = 16, 1024

FLAGS = flags.FLAGS
_CONFIG = None   # the --config holder, made by define_flags()


def define_flags():
  """Flags of the command line only (importing this module defines none: accel_check and the
  tests import it beside tools with flags of their own)."""
  global _CONFIG
  _CONFIG = cli.config_flag(required=False)
  flags.DEFINE_string("target", "", "What to compile for: v5p-N, v5e-N, v6e-N, h100-N, h200-N.")
  flags.DEFINE_string("json", "", "Also write the result here (JSON).")
  flags.DEFINE_list("programs", ["train", "eval", "decode"], "Programs to compile.")
  flags.DEFINE_boolean("cost", True, "TPU: the cost estimate from unrolled one-micro-batch compiles.")
  flags.DEFINE_boolean("search", False, "Also find the fewest micro-batches that fit, by compiling.")
  flags.DEFINE_boolean("matrix", False, "Every accelerator preset x member x target.")
  flags.DEFINE_list("sizes", [], "--matrix: only these sizes (default: every accelerator preset).")
  flags.DEFINE_list("targets", [], "--matrix: only these targets.")
  flags.DEFINE_string("out", "runs/aot", "--matrix: where each entry's JSON and matrix.md go.")
  flags.DEFINE_boolean("force", False, "--matrix: compile entries whose JSON already exists.")
  flags.DEFINE_integer("timeout_s", 1800, "--matrix: seconds one entry may take.")


class AotError(RuntimeError):
  """A compile that cannot give a plan (unsupported op, compiler out of memory): one line."""


# ----------------------------------------------------------------------------- in the compile venv


def _compile(lowered) -> tuple:
  t = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # XlaRuntimeError / NotImplementedError from the compiler: one line
    raise AotError(_first_line(e)) from e
  return compiled, time.perf_counter() - t


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  if not cost:
    return {}
  return {k: float(cost[k]) for k in ("flops", "bytes accessed", "transcendentals", "optimal_seconds") if k in cost}


PROBE_LAYERS = (2, 4)  # global layers of the two unrolled compiles the cost estimate extrapolates from


def cost_estimate(exp, vocab, devices) -> dict:
  """XLA's cost analysis of the train step, per device: its loops (scanned layers, micro-batches)
  would be counted once, so one micro-batch is compiled with the global layers unrolled, at
  PROBE_LAYERS depths, extrapolated linearly to the model's depth, times the micro-batches."""
  import dataclasses
  from lst_jax import sharding
  accum = exp.train.grad_accum_steps
  mesh = sharding.make_mesh(-1, exp.mesh.fsdp, exp.mesh.tensor, devices=devices)
  probes, seconds = [], 0.0
  for layers in PROBE_LAYERS:
    one = dataclasses.replace(
        exp, model=dataclasses.replace(exp.model, scan_layers=False, global_layers=layers),
        data=dataclasses.replace(exp.data, batch_size=exp.data.batch_size // accum),
        train=dataclasses.replace(exp.train, grad_accum_steps=1))
    run, batch = programs_lib.train_programs(one, vocab, mesh)
    compiled, s = _compile(run.train_step.trace(run.abstract, batch).lower())
    probes.append(_cost(compiled))
    seconds += s
  (l1, c1), (l2, c2) = zip(PROBE_LAYERS, probes)
  at_depth = lambda k: c1[k] + (c2[k] - c1[k]) * (exp.model.global_layers - l1) / (l2 - l1)
  out = {"compile_s": round(seconds, 1), "micro_batches": accum, "probe_layers": list(PROBE_LAYERS),
         "probes": probes}
  for k in c1:
    if k in c2 and c2[k] > c1[k] > 0:   # more layers, more work: otherwise the figure means nothing
      out[k] = at_depth(k) * accum
  return out


def decode_program(exp, vocab, device):
  """Greedy generation (lst_jax.decode.generate.Decoder: prompts and new tokens in one program) of
  DECODE_BATCH rows of DECODE_SLOTS slots, on one device, for abstract fp32 parameters."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from lst_jax.decode import cache as cache_lib
  from lst_jax.decode import generate as generate_lib
  from lst_jax.decode import sampling as sampling_lib
  from lst_jax.model.factory import build_model
  model = nnx.eval_shape(lambda: cache_lib.unstack_layers(build_model(exp.model, 0)))
  decoder = generate_lib.Decoder(model, vocab, exp.data.patching.patch_size)
  one = jax.sharding.SingleDeviceSharding(device)
  place = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one)
  params = jax.tree.map(place, decoder.params)
  b, s = DECODE_BATCH, DECODE_SLOTS
  arg = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=one)
  key = jax.eval_shape(lambda: jax.random.key(0))
  return decoder._generate.trace(params, arg((b, s), jnp.int32), arg((b,), jnp.int32), arg((b,), bool),
                                 arg((b,), jnp.int32), arg((b,), bool), arg((b,), jnp.int32),
                                 arg(key.shape, key.dtype), sampling=sampling_lib.Sampling()).lower()


def _train_memory(exp, vocab, mesh, accum: int) -> int | None:
  """Bytes per device XLA plans for the train step with `accum` micro-batches (None: the
  compiler refused a plan larger than the device)."""
  import dataclasses
  exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, grad_accum_steps=accum))
  run, batch = programs_lib.train_programs(exp, vocab, mesh)
  try:
    compiled, _ = _compile(run.train_step.trace(run.abstract, batch).lower())
  except AotError as e:
    if not _out_of_memory(e):
      raise
    return None
  return programs_lib.memory_per_device(compiled)["total"]


def fewest_micro_batches(exp, vocab, mesh, device_bytes: int, planned: dict[int, int]) -> dict:
  """The fewest micro-batches (a divisor of the rows per device: the most rows per micro-batch)
  whose train step XLA plans within the 75% budget, searched by compiling from the experiment's
  own count up or down, as MaxText's estimator searches; `planned` {micro-batches: bytes} holds
  what is compiled already (None: over the device). {"fewest": n or None, "planned": {n: bytes}}."""
  from lst_jax import memory as memory_lib
  rows = memory_lib.rows_per_device(exp, mesh)
  counts = [a for a in range(1, rows + 1) if rows % a == 0]

  def fits(accum: int) -> bool:
    if accum not in planned:
      planned[accum] = _train_memory(exp, vocab, mesh, accum)
    return planned[accum] is not None and planned[accum] <= memory_lib.DEFAULT_BUDGET * device_bytes

  i = counts.index(exp.train.grad_accum_steps)
  if fits(counts[i]):
    while i > 0 and fits(counts[i - 1]):
      i -= 1
    best = counts[i]
  else:
    best = next((a for a in counts[i + 1:] if fits(a)), None)
  return {"fewest": best, "rows_per_device": rows, "planned": {str(a): b for a, b in sorted(planned.items())}}


def _out_of_memory(e: AotError) -> bool:
  """The TPU compiler refuses a plan larger than the device (RESOURCE_EXHAUSTED) itself."""
  return "RESOURCE_EXHAUSTED" in str(e)


# The custom calls a fused attention kernel becomes: Pallas (Mosaic) on TPU, cuDNN's fused attention on GPU.
FUSED_ATTENTION_CALLS = {"pallas": "tpu_custom_call", "cudnn": "__cudnn$fmha"}


def fused_attention_calls(lowered, compiled, attention: str) -> int | None:
  """How many calls of the attention backend's fused kernel the program holds (None for a backend
  without one): 0 means the kernel fell back or was left out. Pallas kernels are in the lowered
  program; cuDNN's calls appear once SPMD has partitioned it."""
  name = FUSED_ATTENTION_CALLS.get(attention)
  if name is None:
    return None
  return (lowered.as_text() + compiled.as_text()).count(name)


def _program_report(lowered, device_bytes: int, attention: str = "") -> dict:
  """A program compiled: its memory plan, its share of the device, whether it fits the budget,
  its compile time, the fused attention kernel calls in it (for a fused backend); a plan the
  compiler refuses as larger than the device is reported as not fitting, with the compiler's
  words (any other compile error is raised)."""
  from lst_jax import memory as memory_lib
  try:
    compiled, seconds = _compile(lowered)
  except AotError as e:
    if not _out_of_memory(e):
      raise
    return {"fits": False, "error": str(e)}
  mem = programs_lib.memory_per_device(compiled)
  report = {"compile_s": round(seconds, 1), "memory": mem, "fraction": mem["total"] / device_bytes,
            "fits": mem["total"] <= memory_lib.DEFAULT_BUDGET * device_bytes}
  calls = fused_attention_calls(lowered, compiled, attention)
  if calls is not None:
    report["fused_attention_calls"] = calls
  return report


def compile_experiment(exp, vocab, target: targets_lib.Target, programs=("train", "eval", "decode"),
                       cost: bool = True, search: bool = False) -> dict:
  """Every program of `exp` compiled for `target` (module docstring); a dict for JSON."""
  from lst_jax import flops as flops_lib
  from lst_jax import memory as memory_lib
  from lst_jax import sharding
  devices = targets_lib.compile_devices(target)
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor, devices=devices)
  shape = tuple(int(mesh.shape[a]) for a in sharding.MESH_AXES)
  m, d = exp.model, exp.data
  est = memory_lib.estimate(exp, shape)
  out = {"target": target.name, "platform": target.platform, "device_kind": target.spec.device_kind,
         "devices": target.devices, "device_bytes": target.memory_bytes, "budget": memory_lib.DEFAULT_BUDGET,
         "mesh": dict(zip(sharding.MESH_AXES, shape)), "kind": m.kind, "rows": d.batch_size,
         "tokens_per_row": d.max_tokens, "patches_per_row": d.max_patches,
         "micro_batches": exp.train.grad_accum_steps, "micro_rows_per_device": est.micro_rows,
         "remat": m.remat, "scan_layers": m.scan_layers, "attention": m.attention, "dtype": m.dtype,
         "memory_model": est.as_dict(), "programs": {}}
  run, batch = programs_lib.train_programs(exp, vocab, mesh)
  if "train" in programs:
    report = _program_report(run.train_step.trace(run.abstract, batch).lower(), target.memory_bytes,
                             m.attention)
    if "memory" in report:
      report["model_over_compiler"] = est.total / max(report["memory"]["total"], 1)
    out["programs"]["train"] = report
    if search:
      out["micro_batch_search"] = fewest_micro_batches(
          exp, vocab, mesh, target.memory_bytes,
          {exp.train.grad_accum_steps: report["memory"]["total"] if "memory" in report else None})
  if "eval" in programs:
    out["programs"]["eval"] = _program_report(run.eval_step.trace(run.abstract.params, batch).lower(),
                                              target.memory_bytes, m.attention)
  if "decode" in programs:
    from lst_jax.config import ConfigError
    try:
      lowered = decode_program(exp, vocab, devices[0])
    except ConfigError as e:   # a model decoding does not support (cross-attention windows > 1)
      out["decode_skipped"] = str(e)
    else:
      out["programs"]["decode"] = {**_program_report(lowered, target.memory_bytes),
                                   "batch": DECODE_BATCH, "slots": DECODE_SLOTS}
  # What a deployment is for: its train and eval steps. Decoding (one device, fp32 parameters)
  # is reported beside them: a 7b does not decode on one 32 GiB chip, whatever the slice.
  out["fits"] = all(p["fits"] for name, p in out["programs"].items() if name != "decode")
  if cost and target.platform == "tpu" and "train" in programs:
    try:
      estimate = cost_estimate(exp, vocab, devices)
    except AotError as e:   # its one-micro-batch probes did not compile: say so, keep the plans
      out["compiler_estimate"] = {"error": str(e)}
      return out
    model = flops_lib.model_flops(m, d.batch_size, d.max_tokens, d.max_patches)["train"]
    step_s = estimate.get("optimal_seconds")
    estimate["model_train_flops"] = model
    estimate["mfu"] = model / step_s / target.devices / target.spec.peak_bf16 if step_s else None
    if not step_s:
      estimate["note"] = ("the compiler's step times of the probes are not positive and growing with depth "
                          "(v6e's are negative): no step estimate")
    out["compiler_estimate"] = estimate
  return out


# ----------------------------------------------------------------------------- any venv


ACCUM_WITHOUT_DEPLOYMENT = 2   # micro-batches of a size with no deployment (CPU sizes: accel-check --smoke)


def device_experiment(kind: str, size: str, device_kind: str, devices: int, micro_rows: int = 0):
  """The program `make aot` compiles for `size`'s deployment on this kind of device, at the devices
  at hand (`make accel-check` runs it): the deployment's micro-batches, rows per device per
  micro-batch, remat, scan and attention, bf16, the global batch scaled to `devices`. The
  deployment is the first on the device's generation, else on its platform; `micro_rows`
  overrides the rows (an out-of-memory retry). Returns (config, the deployment's target or "")."""
  from lst_jax import presets
  s = presets.SIZES[size]
  gen = targets_lib.generation_of(device_kind)
  platform = targets_lib.GENERATIONS[gen].platform if gen else None
  same = [d for d in s.deployments if targets_lib.parse(d.target).generation == gen]
  near = [d for d in s.deployments if targets_lib.parse(d.target).platform == platform]
  dep = (same or near or list(s.deployments) or [None])[0]
  c = presets.experiment(kind, f"{size}@{dep.target}" if dep else size)
  accum = dep.grad_accum if dep else ACCUM_WITHOUT_DEPLOYMENT
  per_device = max(1, s.rows // targets_lib.parse(dep.target).devices // accum) if dep else 1
  rows = micro_rows or per_device
  fsdp = dep.fsdp if dep and devices % dep.fsdp == 0 else 1
  c.model.dtype = "bfloat16"
  c.data.batch_size = rows * accum * devices
  c.train.grad_accum_steps = accum
  c.mesh.update(data=-1, fsdp=fsdp, tensor=1)
  return c, (dep.target if dep else "")


def _gib(n: float | None) -> str:
  return "over the device" if n is None else f"{n / 2 ** 30:.1f}"


def describe(r: dict) -> str:
  """One entry as lines of text."""
  g = lambda n: f"{n / 2 ** 30:.1f}"
  lines = [f"{r.get('name', r['kind'])} on {r['target']} ({r['devices']} x {r['device_kind']}, "
           f"{g(r['device_bytes'])} GiB each), mesh {r['mesh']}, {r['micro_batches']} micro-batch(es) of "
           f"{r['micro_rows_per_device']} rows per device, remat {r['remat']}, attention {r['attention']}"]
  for name, p in r["programs"].items():
    if "memory" not in p:
      lines.append(f"  {name:<6} DOES NOT FIT: the compiler refused it ({p['error']})")
      continue
    mem = p["memory"]
    line = (f"  {name:<6} {g(mem['total'])} GiB per device = arguments {g(mem['argument'])} + outputs "
            f"{g(mem['output'])} - aliased {g(mem['alias'])} + temporaries {g(mem['temp'])}: "
            f"{p['fraction']:.0%} of the device, {'fits' if p['fits'] else 'DOES NOT FIT'} in "
            f"{r['budget']:.0%}; compiled in {p['compile_s']:.0f} s")
    if name == "train":
      line += f"; memory model {g(r['memory_model']['total'])} GiB ({p['model_over_compiler']:.2f}x the compiler's)"
    if "fused_attention_calls" in p:
      calls = p["fused_attention_calls"]
      line += f"; {calls} fused attention call(s)" if calls else "; NO fused attention call (the kernel fell back)"
    lines.append(line)
  if r.get("decode_skipped"):
    lines.append(f"  decode not compiled: {r['decode_skipped']}")
  search = r.get("micro_batch_search")
  if search:
    planned = ", ".join(f"{a}: {_gib(b)}" for a, b in search["planned"].items())
    lines.append(f"  fewest micro-batches that fit: {search['fewest'] or 'none'} of {search['rows_per_device']} rows "
                 f"per device (GiB planned by micro-batches: {planned})")
  c = r.get("compiler_estimate")
  if c and (c.get("optimal_seconds") or 0) > 0:
    lines.append(f"  compiler's estimate (not measured): {c['flops'] / 1e12:.1f} TFLOP per device, step "
                 f"{c['optimal_seconds']:.2f} s, MFU {c['mfu']:.0%} (model FLOPs "
                 f"{c['model_train_flops'] / 1e15:.2f} PFLOP per step)")
  return "\n".join(lines)


def _venv_python(platform: str) -> str:
  return os.path.join(REPO, targets_lib.AOT_VENVS[platform], "bin", "python")


def _child_command(platform: str) -> list[str]:
  """How to run this tool where the platform's compiler is (this Python, or its venv)."""
  if targets_lib.has_compiler(platform):
    return [sys.executable]
  python = _venv_python(platform)
  if not os.path.exists(python):
    raise AotError(f"the {platform.upper()} compiler is not installed: run `make aot-setup` "
                   f"(creates {targets_lib.AOT_VENVS[platform]} over .venv)")
  return [python]


def _rerun_in_compile_venv(target: targets_lib.Target, argv: list[str]) -> int:
  env = {**os.environ, **targets_lib.compile_environment(target.platform), CHILD: "1"}
  return subprocess.call(_child_command(target.platform) + ["-m", "lst_jax.tools.aot", *argv[1:]], env=env)


def _compile_here(config, target: targets_lib.Target) -> dict:
  from lst_jax import config as config_lib
  vocab = programs_lib.vocab_for(config, 0)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  result = compile_experiment(exp, vocab, target, tuple(FLAGS.programs), FLAGS.cost, FLAGS.search)
  result["name"] = f"{config.get('size', '')} {exp.model.kind}".strip()
  return result


def main(argv):
  if FLAGS.matrix:
    return run_matrix()
  if not FLAGS.target or _CONFIG.value is None:
    raise app.UsageError("give --config=... and --target=... (or --matrix)")
  try:
    target = targets_lib.parse(FLAGS.target)
    if os.environ.get(CHILD) != "1":
      sys.exit(_rerun_in_compile_venv(target, sys.argv))
    result = _compile_here(_CONFIG.value, target)
  except (AotError, targets_lib.TargetError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(describe(result))
  if FLAGS.json:
    cli.write_results(FLAGS.json, result)
  if not result["fits"]:
    sys.exit(f"error: {result['name']} does not fit on {target.name} in {result['budget']:.0%} of device memory")


def matrix_entries(sizes=(), only_targets=()) -> list[tuple[str, str, str]]:
  """(size, member experiment, target) of every accelerator preset's compute-matched pair."""
  from lst_jax import presets
  entries = []
  for size, s in presets.SIZES.items():
    if not s.deployments or (sizes and size not in sizes):
      continue
    for dep in s.deployments:
      if only_targets and dep.target not in only_targets:
        continue
      for member in presets.PAIR_EXPERIMENTS["compute_matched"].values():
        entries.append((size, member, dep.target))
  return entries


def entry_path(out: str, size: str, member: str, target: str) -> str:
  return os.path.join(out, f"{size}_{member}_{target}.json")


def _has_search(path: str) -> bool:
  with open(path) as f:
    return "micro_batch_search" in json.load(f)


def run_matrix() -> None:
  """Each entry in its own process (a compiler crash or out-of-memory loses nothing else)."""
  entries = matrix_entries(tuple(FLAGS.sizes), tuple(FLAGS.targets))
  failed = []
  for i, (size, member, target) in enumerate(entries):
    path = entry_path(FLAGS.out, size, member, target)
    if os.path.exists(path) and not FLAGS.force and not (FLAGS.search and not _has_search(path)):
      print(f"[{i + 1}/{len(entries)}] {size} {member} on {target}: kept {path}", flush=True)
      continue
    print(f"[{i + 1}/{len(entries)}] {size} {member} on {target}: compiling ...", flush=True)
    argv = [sys.argv[0], f"--config=experiments/{member}.py:{size}@{target}", f"--target={target}",
            f"--json={path}", f"--cost={str(FLAGS.cost).lower()}", f"--search={str(FLAGS.search).lower()}"]
    t = time.time()
    try:
      rc = subprocess.run([sys.executable, "-m", "lst_jax.tools.aot", *argv[1:]], timeout=FLAGS.timeout_s,
                          cwd=REPO).returncode
    except subprocess.TimeoutExpired:
      rc = "timeout"
    if rc != 0:
      failed.append(f"{size} {member} on {target} ({rc}, {time.time() - t:.0f} s)")
  table = matrix_table(FLAGS.out, entries)
  with open(os.path.join(FLAGS.out, "matrix.md"), "w") as f:
    f.write(table + "\n")
  print(table)
  if failed:
    sys.exit("error: " + "; ".join(failed))


MATRIX_HEAD = ("| size | member | target | mesh data x fsdp | micro-batches x rows/device | attention | train GiB "
               "per device (share) | model GiB (x compiler) | fits 75% | fewest micro-batches that fit (GiB) "
               "| eval GiB | decode GiB (1 device) | compile s | compiler's step estimate, MFU |")




def matrix_row(size: str, member: str, target: str, r: dict | None) -> str:
  """One entry of the matrix table ("not compiled" without its JSON)."""
  columns = MATRIX_HEAD.count("|") - 1
  if r is None:
    return f"| {size} | {member} | {target} | not compiled |" + " |" * (columns - 4)
  p = r["programs"]
  total = lambda name: p[name]["memory"]["total"] if "memory" in p[name] else None
  program = lambda name: (_gib(total(name)) + ("" if p[name]["fits"] or total(name) is None else " (over 75%)")
                          if name in p else "-")
  train = p["train"]
  search = r.get("micro_batch_search") or {}
  fewest = search.get("fewest")
  fewest = (f"{fewest} ({_gib(search['planned'][str(fewest)])})" if fewest else "none") if search else "-"
  c = r.get("compiler_estimate") or {}
  flops = f"{c['flops'] / 1e12:.0f} TFLOP/device" if c.get("flops") else ""
  estimate = ("none (GPU: no cost model)" if r["platform"] == "cuda" else
              f"{c['optimal_seconds']:.2f} s, {c['mfu']:.0%}; {flops}" if (c.get("optimal_seconds") or 0) > 0 else
              f"no step time (the compiler's is negative); {flops}" if flops else "-")
  fits = all(p[n]["fits"] for n in ("train", "eval") if n in p)
  compile_s = sum(x.get("compile_s", 0) for x in p.values()) + c.get("compile_s", 0)
  cells = [size, member, target, f"{r['mesh']['data']} x {r['mesh']['fsdp']}",
           f"{r['micro_batches']} x {r['micro_rows_per_device']}", r["attention"],
           _gib(total("train")) + (f" ({train['fraction']:.0%})" if "fraction" in train else ""),
           _gib(r["memory_model"]["total"]) + (f" ({train['model_over_compiler']:.2f}x)" if "memory" in train else ""),
           "yes" if fits else "NO",
           fewest, program("eval"), program("decode"), f"{compile_s:.0f}", estimate]
  return "| " + " | ".join(cells) + " |"


def matrix_table(out: str, entries) -> str:
  """The matrix as a Markdown table, one row per entry."""
  lines = [MATRIX_HEAD, "|" + "---|" * (MATRIX_HEAD.count("|") - 1)]
  for size, member, target in entries:
    path = entry_path(out, size, member, target)
    r = None
    if os.path.exists(path):
      with open(path) as f:
        r = json.load(f)
    lines.append(matrix_row(size, member, target, r))
  return "\n".join(lines)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
