"""`make accel-check`: one prepared run on an accelerator, one JSON of what it measured.

  python -m lst_jax.tools.accel_check [--out=runs/accel_check.json] [--budget_s=450]
      [--size=1b] [--sections=environment,tests,train,decode]

Sections, each in its own process (a crash or an out-of-memory in one loses nothing
else; peak memory is per process), each written to the JSON as soon as it ends:
  environment  jax/jaxlib versions, backend, device kind and count, memory per device.
  tests        tests/test_accelerator.py on the device: every attention backend the
               platform has (cuDNN on GPU, Pallas splash on TPU) against the reference
               on packed, padded batches, values and gradients; one train step on a mesh
               of the local devices against the same step on the host CPU.
  train        bf16 train steps of the LST and the baseline: the very program `make aot`
               compiles for the --size preset's deployment on this kind of device
               (lst_jax.tools.aot.device_experiment: its micro-batches, rows per device,
               remat, attention backend and row shapes; the global batch scaled to the local
               devices; rows halved once on an out-of-memory): step time, tokens/s, MFU
               (model FLOPs of the real tokens, lst_jax.flops, against the device's dense
               bf16 peak), XLA's executed FLOPs, the device compiler's memory plan and the
               peak from the device's own statistics beside the memory model's figure.
  decode       greedy speech decoding of the --size LST and baseline (random weights):
               speech seconds per second at batch 1 and 16 (lst_jax.tools.bench_generate).
A section that the remaining budget cannot hold is recorded as not run, with why.
`--smoke` runs the same code on whatever devices jax sees with the tiny preset (tests
use it on CPU, so the script cannot rot between accelerator sessions).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import traceback

from absl import app, flags

from lst_jax import storage

SECTIONS = ("environment", "tests", "train", "decode")
# Dense bf16 peak FLOP/s per device, by jax's device_kind (vendor data sheets; SXM parts for NVIDIA).
PEAK_BF16 = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
             ("TPU v6", 918e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5", 459e12),
             ("TPU v4", 275e12))
# Seconds a section is allowed at most (its process is stopped after that); the budget decides what runs.
SECTION_LIMIT_S = {"environment": 60, "tests": 150, "train": 200, "decode": 120}

FLAGS = flags.FLAGS


def define_flags():
  """Flags of the command line only (importing this module defines none)."""
  flags.DEFINE_string("out", "runs/accel_check.json", "The result (JSON), rewritten after every section.")
  flags.DEFINE_float("budget_s", 450.0, "Wall-clock budget for all sections together.")
  flags.DEFINE_string("size", "1b", "Preset size whose global shape is measured (lst_jax.presets).")
  flags.DEFINE_list("sections", list(SECTIONS), "Sections to run, in order.")
  flags.DEFINE_boolean("smoke", False, "The tiny preset, one step: checks the script itself (CPU).")
  flags.DEFINE_integer("steps", 3, "Timed train steps per model (after one compile step).")
  # Internal: one section in this process, its result as JSON on stdout's last line.
  flags.DEFINE_string("one", "", "Run one section in this process (used by the orchestrator).")
  flags.DEFINE_string("kind", "lst", "Model kind of a train section.")
  flags.DEFINE_integer("micro_rows", 0, "Rows per device per micro-batch (0: the preset's deployment's).")


def peak_flops(device_kind: str) -> float | None:
  """The device's dense bf16 peak, or None for a kind we have no figure for (CPUs among them)."""
  for name, peak in PEAK_BF16:
    if name.lower() in device_kind.lower():
      return peak
  return None


def device_memory() -> dict:
  """The first local device's own memory statistics (empty where the platform keeps none)."""
  import jax
  stats = jax.local_devices()[0].memory_stats() or {}
  return {k: int(stats[k]) for k in ("bytes_limit", "peak_bytes_in_use", "bytes_in_use") if k in stats}


def environment() -> dict:
  import jax
  import jaxlib
  devices = jax.devices()
  out = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
         "backend": jax.default_backend(), "device_kind": devices[0].device_kind, "device_count": len(devices),
         "process_count": jax.process_count(), "memory": device_memory(),
         "peak_bf16_flops": peak_flops(devices[0].device_kind)}
  try:
    from jax.extend import backend
    out["platform_version"] = backend.get_backend().platform_version
  except Exception as e:  # informational only
    out["platform_version"] = f"unknown ({type(e).__name__})"
  return out


def _child_env() -> dict:
  """A section's environment: every platform jax finds (JAX_PLATFORMS unset or empty), unless
  LST_ACCEL_PLATFORMS or JAX_PLATFORMS names some (the CPU smoke test keeps "cpu")."""
  return dict(os.environ, JAX_PLATFORMS=os.environ.get("LST_ACCEL_PLATFORMS", os.environ.get("JAX_PLATFORMS", "")))


def run_tests(limit_s: float) -> dict:
  """tests/test_accelerator.py on this machine's accelerator, counted from pytest's JUnit XML."""
  import xml.etree.ElementTree as ET
  xml = os.path.join(os.path.dirname(storage.absolute(FLAGS.out)), "accel_tests.xml")
  if os.path.exists(xml):
    os.remove(xml)
  env = _child_env()
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
         "tests/test_accelerator.py"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit_s)
  if not os.path.exists(xml):
    raise RuntimeError(f"pytest exited {proc.returncode} without a report: {(proc.stdout + proc.stderr)[-1500:]}")
  suite = ET.parse(xml).getroot()
  suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
  cases = []
  for case in suite.iter("testcase"):
    failure = case.find("failure") if case.find("failure") is not None else case.find("error")
    cases.append({"name": case.get("name"), "seconds": float(case.get("time", 0)),
                  "ok": failure is None and case.find("skipped") is None,
                  **({"message": (failure.get("message") or "")[:500]} if failure is not None else {})})
  return {"passed": sum(c["ok"] for c in cases), "failed": sum(not c["ok"] for c in cases), "cases": cases,
          "pytest_rc": proc.returncode, "tail": proc.stdout[-1500:]}


def train_throughput(kind: str, size: str, steps: int, micro_rows: int, out: dict) -> dict:
  """bf16 train steps of the program `make aot` compiles for the size's deployment on this kind of
  device (lst_jax.tools.aot.device_experiment: its micro-batches and rows per device, remat,
  attention), on the local devices (see the module doc); fills `out` as it goes, so that a
  failure still reports the batch it tried."""
  import jax
  from lst_jax import config as config_lib, flops as flops_lib, memory, sharding
  from lst_jax.tools import aot, bench, programs
  from lst_jax.train import step as step_lib
  vocab = programs.DEFAULT_VOCAB
  devices = jax.local_device_count()
  limit = device_memory().get("bytes_limit", 0)
  config, target = aot.device_experiment(kind, size, jax.devices()[0].device_kind, devices, micro_rows)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  accum = exp.train.grad_accum_steps
  out.update(kind=kind, size=size, devices=devices, aot_target=target, accum_steps=accum,
             micro_rows_per_device=exp.data.batch_size // devices // accum,
             memory_model=memory.estimate(exp, (devices // exp.mesh.fsdp, exp.mesh.fsdp, 1)).as_dict())
  out.update(attention=exp.model.attention, remat=exp.model.remat, dtype=exp.model.dtype)
  d = exp.data
  mesh = sharding.make_mesh(-1, exp.mesh.fsdp, 1)
  run = step_lib.setup(exp.model, exp.optim, vocab, mesh, accum_steps=accum)
  state = run.init()
  batch = bench.speech_batch(d.batch_size, d.max_tokens, d.max_patches, vocab.size, vocab.num_units)
  gbatch = sharding.global_batch(batch, mesh)
  t0 = time.perf_counter()
  compiled = run.train_step.lower(state, gbatch).compile()
  out["compile_s"] = time.perf_counter() - t0
  out["compiler_memory"] = programs.memory_per_device(compiled)   # the device's own compiler's plan
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  state, m = compiled(state, gbatch)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, gbatch)
  jax.block_until_ready(m)
  step_s = (time.perf_counter() - t0) / steps
  tokens = int((batch["token_segment"] > 0).sum())
  patches = int((batch["patch_segment"] > 0).sum())
  real = flops_lib.model_flops(exp.model, d.batch_size, tokens // d.batch_size, max(patches // d.batch_size, 1))
  peak = peak_flops(jax.devices()[0].device_kind)
  out.update(step_s=step_s, loss=float(m["loss"]), rows=d.batch_size, tokens_per_row=d.max_tokens,
             patches_per_row=d.max_patches, real_tokens=tokens, tokens_per_s=tokens / step_s,
             model_train_flops=real["train"], xla_flops=float(cost.get("flops", 0.0)),
             mfu=(real["train"] / step_s / devices / peak) if peak else None,
             hardware_flops_utilization=(float(cost.get("flops", 0.0)) / step_s / peak) if peak else None,
             peak_device_bytes=device_memory().get("peak_bytes_in_use"), device_bytes_limit=limit or None)
  return out


def decode_speed(size: str) -> dict:
  """Speech seconds per second, LST vs baseline, batch 1 and 16 (random weights, greedy, 10 s rows)."""
  from lst_jax import vocab as vocab_lib
  from lst_jax.decode import generate as gen
  from lst_jax.tools import bench_generate
  vocab = vocab_lib.Vocab(text_size=1000, num_units=500)
  built = bench_generate.models(vocab, size)
  decoders = {kind: gen.Decoder(m, vocab, p) for kind, (m, p) in built.items()}
  units = 250
  out = {"size": size, "seconds_per_row": units / bench_generate.UNIT_RATE}
  for batch in (1, 16):
    row = {kind: bench_generate.speech_per_second(dec, vocab, batch, units) for kind, dec in decoders.items()}
    row["lst_over_baseline"] = row["lst"] / row["baseline"]
    out[f"batch_{batch}"] = row
  return out


def one_section(name: str, out: dict) -> dict:
  size = "tiny" if FLAGS.smoke else FLAGS.size
  if name == "environment":
    return environment()
  if name == "train":
    return train_throughput(FLAGS.kind, size, 1 if FLAGS.smoke else FLAGS.steps, FLAGS.micro_rows, out)
  if name == "decode":
    return decode_speed(size)
  raise ValueError(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")


def _subprocess(args: list[str], limit_s: float) -> dict:
  """One section in a fresh process; its last stdout line is the JSON result."""
  cmd = [sys.executable, "-m", "lst_jax.tools.accel_check", *args]
  env = _child_env()
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit_s)
  except subprocess.TimeoutExpired:
    return {"ok": False, "error": f"stopped after {limit_s:.0f} s"}
  lines = proc.stdout.strip().splitlines()
  try:
    return json.loads(lines[-1])
  except (IndexError, json.JSONDecodeError):
    return {"ok": False, "error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}


def _out_of_memory(r: dict) -> bool:
  text = f"{r.get('error', '')} {r.get('traceback', '')}"
  return not r.get("ok") and ("RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower())


def _write(result: dict) -> None:
  storage.write_json(FLAGS.out, result)


def orchestrate() -> dict:
  start = time.monotonic()
  left = lambda: FLAGS.budget_s - (time.monotonic() - start)
  common = [f"--size={FLAGS.size}", f"--steps={FLAGS.steps}"] + (["--smoke"] if FLAGS.smoke else [])
  result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": FLAGS.budget_s,
            "smoke": FLAGS.smoke, "sections": {}}
  jobs = []
  for name in FLAGS.sections:
    if name not in SECTIONS:
      raise app.UsageError(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
    jobs += [(f"train_{k}", ["--one=train", f"--kind={k}"]) for k in ("lst", "baseline")] if name == "train" \
        else [(name, [f"--one={name}"])]
  for key, args in jobs:
    base = key.split("_")[0]
    limit = min(SECTION_LIMIT_S[base], left())
    if limit < 20:
      result["sections"][key] = {"ok": False, "error": f"not run: {left():.0f} s of the budget left"}
    else:
      t0 = time.monotonic()
      if base == "tests":
        try:
          r = {"ok": True, **run_tests(limit)}
          r["ok"] = r["failed"] == 0 and r["passed"] > 0
        except Exception as e:
          r = {"ok": False, "error": f"{type(e).__name__}: {e}"}
      else:
        r = _subprocess(args + common, limit)
        micro = r.get("micro_rows_per_device", 0)
        if base == "train" and _out_of_memory(r) and micro > 1 and left() > 60:
          first = r   # the deployment's rows did not fit this device: half of them, once
          r = _subprocess(args + common + [f"--micro_rows={micro // 2}"], min(SECTION_LIMIT_S[base], left()))
          r["first_try"] = {k: first.get(k) for k in ("micro_rows_per_device", "error", "memory_model")}
      r["seconds"] = round(time.monotonic() - t0, 1)
      result["sections"][key] = r
    print(f"{key}: {_summary(result['sections'][key])}", flush=True)
    _write(result)
  result["seconds"] = round(time.monotonic() - start, 1)
  _write(result)
  return result


def _summary(r: dict) -> str:
  if not r.get("ok", True) and "error" in r:
    return f"FAILED ({r['error']})"
  keys = ("device_kind", "jax", "passed", "failed", "micro_rows_per_device", "step_s", "tokens_per_s", "mfu",
          "peak_device_bytes", "batch_1", "batch_16", "seconds")
  show = lambda v: (f"LST/baseline {v['lst']:.1f}/{v['baseline']:.1f}" if isinstance(v, dict)
                    else f"{v:.3g}" if isinstance(v, float) else str(v))
  return ", ".join(f"{k}={show(r[k])}" for k in keys if r.get(k) is not None)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.one:
    partial = {}
    try:
      r = {"ok": True, **one_section(FLAGS.one, partial)}
    except Exception as e:  # reported in the JSON, the other sections still run
      r = {**partial, "ok": False, "error": f"{type(e).__name__}: {str(e)[:800]}",
           "traceback": traceback.format_exc()[-3000:]}
    print(json.dumps(r))
    return
  result = orchestrate()
  failed = [k for k, v in result["sections"].items() if not v.get("ok")]
  print(f"wrote {FLAGS.out} ({result['seconds']:.0f} s)" + (f"; not ok: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
  define_flags()
  app.run(main)
