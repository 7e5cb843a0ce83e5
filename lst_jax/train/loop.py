"""The training loop, top to bottom: data, state (fresh or restored), steps, logs, checkpoints."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

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
  pcfg = config_lib.pipeline_config(exp.data, local_batch)
  batches = list(pipeline.eval_batches(manifest, pcfg, "heldout", jax.process_index(), jax.process_count(),
                                       max_batches=exp.train.eval_batches or None))
  if jax.process_count() > 1:  # every process must run the same number of eval steps: pad with empty batches
    from jax.experimental import multihost_utils
    count = int(np.max(multihost_utils.process_allgather(np.int32(len(batches)))))
    batches += [pipeline.empty_batch(pcfg)] * (count - len(batches))
  total = None
  for batch in batches:
    sums = eval_step(params, sharding.global_batch(batch, mesh))
    total = sums if total is None else losses.add(total, sums)
  total = jax.device_get(total)
  means = losses.mean_losses(total)
  return {"heldout_loss": float(means["loss"]), "heldout_text_loss": float(means["text_loss"]),
          "heldout_speech_loss": float(means["speech_loss"]),
          "heldout_target_tokens": int(total["all_count"])}


def train(config, workdir: str, stop_at: int | None = None) -> Result:
  """Trains the experiment `config` (a ConfigDict) in `workdir`, resuming if it has checkpoints.

  `stop_at` ends this run early at that step (checkpointed), as a preempted job
  would; rerunning continues on the same schedule. SIGTERM does the same after
  the step in flight.
  """
  with _Preemption() as preemption:
    return _train(config, workdir, stop_at, preemption)


def _train(config, workdir: str, stop_at: int | None, preemption: _Preemption) -> Result:
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
  local_batch = exp.data.batch_size // jax.process_count()

  run = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed, accum_steps=accum)
  abstract, train_step, eval_step = run.abstract, run.train_step, run.eval_step

  pcfg = config_lib.pipeline_config(exp.data, local_batch)
  if exp.data.patching == patching.CURRICULUM:  # progress = documents read / documents of the run
    pcfg = dataclasses.replace(pcfg, total_docs=int(pipeline.docs_per_batch(manifest, pcfg) * exp.train.steps))
  data = iter(pipeline.train_dataset(manifest, pcfg, "train", jax.process_index(), jax.process_count()))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), exp.train.checkpoint_every,
                      exp.train.keep_checkpoints, exp.train.keep_every)
  config_record = config.to_dict()
  n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  restored = ckpt.restore_latest_good(abstract, run.shardings, data) if ckpt.latest_step() is not None else None
  if restored is not None:
    latest, state, data = restored
    console(f"resumed from {workdir}/checkpoints at step {latest}", lead)
  else:
    state = run.init()
  # On resume, records logged past the checkpoint are dropped (JSONL) and hidden (TensorBoard).
  writer = MetricsWriter(workdir, enabled=lead, resume_step=restored[0] if restored is not None else None)
  accounting = Accounting(  # derived metrics: bits, speech bits/s, cumulative FLOPs, tokens seen, MFU
      flops_lib.model_flops(exp.model, exp.data.batch_size, exp.data.max_tokens, exp.data.max_patches)["train"],
      peak_flops_per_second(jax.devices()[0].device_kind, mesh.size, exp.train.peak_flops_per_device),
      unit_rate=manifest.unit_rate, start_step=int(state.step), previous=read_records(workdir))
  console(f"{exp.model.kind}: {n_params / 1e6:.2f}M parameters on a {dict(mesh.shape)} mesh; "
          f"data {manifest.dir} ({manifest.split('train').num_speech} utterances, "
          f"{manifest.split('train').num_text} text documents)", lead)

  start = int(state.step)
  heldout_start = None
  if start == 0:
    heldout_start = evaluate(eval_step, state.params, manifest, exp, mesh, local_batch)
    writer.write(accounting({"step": 0, **heldout_start}))
    console(f"held-out loss before training: {heldout_start['heldout_loss']:.4f}", lead)

  def save(step: int, force: bool = False) -> bool:
    return ckpt.save(step, state, data, config_record, force=force)

  def check_finite(window: list, first_step: int) -> None:
    bad = [first_step + i for i, m in enumerate(jax.device_get([m["nonfinite"] for m in window])) if m]
    if bad:
      ckpt.close()
      writer.close()
      good = ckpt.latest_step()
      raise TrainingError(
          f"non-finite loss or gradient at step {bad[0]}: the run stopped there (the update was not "
          f"applied). Last good checkpoint: {f'step {good}' if good is not None else 'none'} in "
          f"{workdir}/checkpoints. Lower optim.learning_rate or check the data, then rerun to resume.")

  window, timed_from, t_window = [], 0, time.time()
  saved, compiled, preempted = start, False, False
  last = min(exp.train.steps, stop_at) if stop_at is not None else exp.train.steps
  for step in range(start + 1, last + 1):
    state, metrics = train_step(state, sharding.global_batch(next(data), mesh))
    window.append(metrics)
    if not compiled:  # the first step compiles: keep it out of the throughput
      jax.block_until_ready(metrics)
      console(f"compiled and ran step {step} in {time.time() - t_window:.1f}s", lead)
      compiled, timed_from, t_window = True, len(window), time.time()
    at_checkpoint = step % exp.train.checkpoint_every == 0
    if step % exp.train.log_every == 0 or step == exp.train.steps or at_checkpoint:
      check_finite(window, step - len(window) + 1)
    if step % exp.train.log_every == 0 or step == exp.train.steps:
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
      console(progress_line(step, exp.train.steps, record), lead)
      window, timed_from, t_window = [], 0, time.time()
    if save(step):
      saved = step
    if preemption.requested or (jax.process_count() > 1 and ckpt.manager.reached_preemption(step)):
      preempted = True
      break
    if exp.train.eval_every and step % exp.train.eval_every == 0 and step != exp.train.steps:
      ev = evaluate(eval_step, state.params, manifest, exp, mesh, local_batch)
      writer.write(accounting({"step": step, **ev}))
      console(f"held-out loss at step {step}: {ev['heldout_loss']:.4f}", lead)
    if exp.train.benchmark_every and step % exp.train.benchmark_every == 0:
      from lst_jax.eval import runner as bench_runner  # compiles its scorer once, on first use
      options = {"max_items": exp.train.benchmark_items} if exp.train.benchmark_items else {}
      res = bench_runner.run_benchmarks(state.params, run, exp, manifest, mesh, workdir=workdir, **options)
      writer.write({"step": step, **bench_runner.flat_metrics(res)})
      console(f"benchmarks at step {step}:\n{bench_runner.format_table(res)}", lead)

  if window:
    check_finite(window, int(state.step) - len(window) + 1)
  final_step = int(state.step)
  if saved != final_step:
    save(final_step, force=True)
  ckpt.close()
  if preempted:
    writer.close()
    console(f"preempted (SIGTERM) after step {final_step}: checkpoint saved in {workdir}/checkpoints; "
            f"rerun the same command to resume", lead)
    return Result(step=final_step, heldout_start=heldout_start, heldout_end=None, preempted=True)
  heldout_end = evaluate(eval_step, state.params, manifest, exp, mesh, local_batch)
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
