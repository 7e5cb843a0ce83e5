"""The training loop, top to bottom: data, state (fresh or restored), steps, logs, checkpoints."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Callable

import jax
import numpy as np

from lst_jax import config as config_lib
from lst_jax import flops as flops_lib
from lst_jax import sharding
from lst_jax.data import datasets, patching, pipeline
from lst_jax.train import losses, step as step_lib
from lst_jax.train.checkpoint import Checkpointer
from lst_jax.train.metrics import (Accounting, MetricsWriter, console, peak_flops_per_second, progress_line,
                                   read_records)


@dataclasses.dataclass
class Result:
  step: int
  heldout_start: dict | None   # held-out losses before training (None when resumed past it)
  heldout_end: dict | None     # None when the run was preempted (SIGTERM) before its end
  preempted: bool = False


class TrainingError(RuntimeError):
  """The run cannot go on (e.g. a non-finite loss); the message says what and what was kept."""


class _Preemption:
  """SIGTERM (a preempted VM, a scheduler's time limit) sets a flag the loop checks after each
  step: it then saves a checkpoint and returns, and rerunning the same command resumes."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def evaluate(eval_step, params, manifest, exp: config_lib.Experiment, mesh, local_batch: int) -> dict:
  """Held-out losses (nats per target token) over the held-out split, per modality."""
  batches = list(pipeline.eval_batches(manifest, exp.data, local_batch, "heldout", jax.process_index(),
                                       jax.process_count(), max_batches=exp.train.eval_batches or None))
  if jax.process_count() > 1:  # every process must run the same number of eval steps: pad with empty batches
    from jax.experimental import multihost_utils
    count = int(np.max(multihost_utils.process_allgather(np.int32(len(batches)))))
    batches += [pipeline.empty_batch(exp.data, local_batch)] * (count - len(batches))
  total = None
  for batch in batches:
    sums = eval_step(params, sharding.global_batch(batch, mesh))
    total = sums if total is None else losses.add(total, sums)
  total = jax.device_get(total)
  means = losses.mean_losses(total)
  return {"heldout_loss": float(means["loss"]), "heldout_text_loss": float(means["text_loss"]),
          "heldout_speech_loss": float(means["speech_loss"]),
          "heldout_target_tokens": int(total["all_count"])}


# benchmarks(params, setup, exp, manifest, mesh, workdir) -> (flat metrics, printable table); the
# loop is handed it (lst_jax.eval.runner.benchmark_callback) rather than importing eval.
BenchmarkFn = Callable[..., tuple[dict, str]]


def train(config, workdir: str, stop_at: int | None = None, benchmarks: BenchmarkFn | None = None) -> Result:
  """Trains the experiment `config` (a ConfigDict) in `workdir`, resuming if it has checkpoints.

  `stop_at` ends this run early at that step (checkpointed), as a preempted job
  would; rerunning continues on the same schedule. SIGTERM does the same after
  the step in flight. `benchmarks` runs every config.train.benchmark_every steps.
  """
  with _Preemption() as preemption:
    return _train(config, workdir, stop_at, preemption, benchmarks)


@dataclasses.dataclass
class _Run:
  """What the phases of one training run share."""
  exp: config_lib.Experiment
  workdir: str
  manifest: object
  mesh: object
  local_batch: int
  setup: step_lib.Setup
  lead: bool


def _prepare(config, workdir: str) -> _Run:
  """Config, data set, mesh and compiled steps, every check before the first device op."""
  config_lib.parse(config)  # every key and value checked before the data or any device is touched
  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  lead = jax.process_index() == 0
  datasets.check_run_provenance(workdir, manifest, record=lead)
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  accum = exp.train.grad_accum_steps
  if exp.data.batch_size % (shards * accum) or exp.data.batch_size % jax.process_count():
    raise config_lib.ConfigError(
        f"config.data.batch_size={exp.data.batch_size} must be divisible by the {shards} data-parallel "
        f"devices times config.train.grad_accum_steps={accum}, and by the {jax.process_count()} processes")
  setup = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed, accum_steps=accum)
  return _Run(exp=exp, workdir=workdir, manifest=manifest, mesh=mesh,
              local_batch=exp.data.batch_size // jax.process_count(), setup=setup, lead=lead)


def _data(run: _Run):
  """This process's infinite batch iterator (curriculum progress = documents read / the run's)."""
  exp, manifest = run.exp, run.manifest
  total_docs = 0
  if exp.data.patching.strategy == patching.CURRICULUM:
    total_docs = int(pipeline.docs_per_batch(manifest, exp.data, run.local_batch) * exp.train.steps)
  return iter(pipeline.train_dataset(manifest, exp.data, run.local_batch, "train", jax.process_index(),
                                     jax.process_count(), total_docs))


def _train(config, workdir: str, stop_at: int | None, preemption: _Preemption,
           benchmarks: BenchmarkFn | None) -> Result:
  run = _prepare(config, workdir)
  exp, t, mesh, lead = run.exp, run.exp.train, run.mesh, run.lead
  if t.benchmark_every and benchmarks is None:
    raise config_lib.ConfigError("config.train.benchmark_every is set but this entry point runs no "
                                 "benchmarks; use python -m lst_jax.main")
  data = _data(run)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), t.checkpoint_every, t.keep_checkpoints, t.keep_every)
  restored = ckpt.restore_latest_good(run.setup.abstract, run.setup.shardings, data) \
      if ckpt.latest_step() is not None else None
  if restored is not None:
    latest, state, data = restored
    console(f"resumed from {workdir}/checkpoints at step {latest}", lead)
  else:
    state = run.setup.init()
  # On resume, records logged past the checkpoint are dropped (JSONL) and hidden (TensorBoard).
  writer = MetricsWriter(workdir, enabled=lead, resume_step=restored[0] if restored is not None else None)
  accounting = Accounting(  # derived metrics: bits, speech bits/s, cumulative FLOPs, tokens seen, MFU
      flops_lib.model_flops(exp.model, exp.data.batch_size, exp.data.max_tokens, exp.data.max_patches)["train"],
      peak_flops_per_second(jax.devices()[0].device_kind, mesh.size, t.peak_flops_per_device),
      unit_rate=run.manifest.unit_rate, start_step=int(state.step), previous=read_records(workdir))
  n_params = sum(x.size for x in jax.tree.leaves(run.setup.abstract.params))
  train_split = run.manifest.split("train")
  console(f"{exp.model.kind}: {n_params / 1e6:.2f}M parameters on a {dict(mesh.shape)} mesh; "
          f"data {run.manifest.dir} ({train_split.num_speech} utterances, {train_split.num_text} text documents)",
          lead)

  def heldout() -> dict:
    return evaluate(run.setup.eval_step, state.params, run.manifest, exp, mesh, run.local_batch)

  start = int(state.step)
  heldout_start = None
  if start == 0:
    heldout_start = heldout()
    writer.write(accounting({"step": 0, **heldout_start}))
    console(f"held-out loss before training: {heldout_start['heldout_loss']:.4f}", lead)

  window, timed_from, t_window = [], 0, time.time()
  saved, preempted = start, False

  def check_finite(step: int) -> None:
    first = step - len(window) + 1
    bad = [first + i for i, m in enumerate(jax.device_get([m["nonfinite"] for m in window])) if m]
    if bad:
      ckpt.close()
      writer.close()
      good = ckpt.latest_step()
      raise TrainingError(
          f"non-finite loss or gradient at step {bad[0]}: the run stopped there (the update was not "
          f"applied). Last good checkpoint: {f'step {good}' if good is not None else 'none'} in "
          f"{workdir}/checkpoints. Lower optim.learning_rate or check the data, then rerun to resume.")

  def log(step: int) -> None:
    nonlocal window, timed_from, t_window
    check_finite(step)
    fetched = jax.device_get(window)
    record = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    record.update(step=step, lr=float(fetched[-1]["lr"]))
    timed = fetched[timed_from:]
    if timed:
      elapsed = time.time() - t_window
      record.update(tokens_per_s=sum(m["real_tokens"] for m in timed) / elapsed,
                    patches_per_s=sum(m["real_patches"] for m in timed) / elapsed,
                    step_time_s=elapsed / len(timed))
    record = accounting(record)
    writer.write(record)
    console(progress_line(step, t.steps, record), lead)
    window, timed_from, t_window = [], 0, time.time()

  def checkpoint(step: int) -> None:
    nonlocal saved
    if step % t.checkpoint_every == 0:
      check_finite(step)  # never save a state past a non-finite update
    if ckpt.save(step, state, data, config_lib.to_dict(exp)):  # Orbax decides: every checkpoint_every
      saved = step

  def stop_if_preempted(step: int) -> None:
    nonlocal preempted
    preempted = preemption.requested or (jax.process_count() > 1 and ckpt.manager.reached_preemption(step))

  def heldout_eval(step: int) -> None:
    ev = heldout()
    writer.write(accounting({"step": step, **ev}))
    console(f"held-out loss at step {step}: {ev['heldout_loss']:.4f}", lead)

  def benchmark(step: int) -> None:
    metrics, table = benchmarks(state.params, run.setup, exp, run.manifest, mesh, workdir)
    writer.write({"step": step, **metrics})
    console(f"benchmarks at step {step}:\n{table}", lead)

  every = lambda n: (lambda step: n > 0 and step % n == 0)
  after_each_step = [  # in this order; a preempted run stops right after its checkpoint
      (lambda step: every(t.log_every)(step) or step == t.steps, log),
      (lambda step: True, checkpoint),
      (lambda step: True, stop_if_preempted),
      (lambda step: every(t.eval_every)(step) and step != t.steps, heldout_eval),
      (every(t.benchmark_every), benchmark),
  ]
  last = min(t.steps, stop_at) if stop_at is not None else t.steps
  for step in range(start + 1, last + 1):
    state, metrics = run.setup.train_step(state, sharding.global_batch(next(data), mesh))
    window.append(metrics)
    if step == start + 1:  # the first step compiles: keep it out of the throughput
      jax.block_until_ready(metrics)
      console(f"compiled and ran step {step} in {time.time() - t_window:.1f}s", lead)
      timed_from, t_window = len(window), time.time()
    for due, action in after_each_step:
      if due(step) and not preempted:
        action(step)
    if preempted:
      break

  final_step = int(state.step)
  if window:
    check_finite(final_step)
  if saved != final_step:
    ckpt.save(final_step, state, data, config_lib.to_dict(exp), force=True)
  ckpt.close()
  if preempted:
    writer.close()
    console(f"preempted (SIGTERM) after step {final_step}: checkpoint saved in {workdir}/checkpoints; "
            f"rerun the same command to resume", lead)
    return Result(step=final_step, heldout_start=heldout_start, heldout_end=None, preempted=True)
  heldout_end = heldout()
  writer.write(accounting({"step": final_step, "final": True, **heldout_end}))
  writer.close()
  msg = f"held-out loss after step {final_step}: {heldout_end['heldout_loss']:.4f} " \
        f"(text {heldout_end['heldout_text_loss']:.4f}, speech {heldout_end['heldout_speech_loss']:.4f})"
  first = heldout_start or next((r for r in read_records(workdir)
                                 if r.get("step") == 0 and "heldout_loss" in r), None)
  if first is not None:
    msg += f"; before training: {first['heldout_loss']:.4f}"
  console(msg, lead)
  return Result(step=final_step, heldout_start=heldout_start, heldout_end=heldout_end)
