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
from lst_jax import sharding, storage
from lst_jax.data import datasets, pipeline
from lst_jax.model import attention
from lst_jax.train import losses, step as step_lib
from lst_jax.train import workdir as workdir_lib
from lst_jax.train.checkpoint import Checkpointer, state_shapes
from lst_jax.train.metrics import (Accounting, MetricsWriter, console, interleaved, peak_flops_per_second,
                                   progress_line, read_records)


@dataclasses.dataclass
class Result:
  step: int
  heldout_start: dict | None   # held-out losses (heldout_interleaved_*) before training (None when resumed past it)
  heldout_end: dict | None     # None when the run was preempted (SIGTERM) before its end
  preempted: bool = False


class TrainingError(RuntimeError):
  """The run cannot go on (e.g. a non-finite loss); the message says what and what was kept."""


class _Preemption:
  """SIGTERM (a preempted VM, a scheduler's time limit) or a first Ctrl-C sets a flag the loop
  checks after each step: it then saves a checkpoint and returns, and rerunning the same command
  resumes. A second Ctrl-C stops at once (KeyboardInterrupt: one line from the command line)."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    if signum == signal.SIGINT:
      print("\ninterrupted (Ctrl-C): saving a checkpoint after this step; Ctrl-C again to stop at once",
            flush=True)
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def schedule_moves(exp: config_lib.Experiment, saved_steps: int, step: int) -> str:
  """What a changed train.steps does to the learning rate: warmup and cosine decay span train.steps."""
  import dataclasses as dc

  from lst_jax.train import optimizer
  before = float(optimizer.schedule(dc.replace(exp.optim, total_steps=saved_steps))(step))
  after = float(optimizer.schedule(exp.optim)(step))
  return (f"the learning-rate schedule spans train.steps, so at step {step} the rate goes from {before:.3g} "
          f"(the schedule over {saved_steps} steps) to {after:.3g} (over {exp.train.steps})"
          + (f", {after / before:.2g}x" if before > 0 else ""))


HELDOUT_LOSS = interleaved("loss")  # the key that marks the loop's held-out evaluation records


def evaluate(eval_step, params, manifest, exp: config_lib.Experiment, mesh, local_batch: int) -> dict:
  """Held-out losses (nats per target token) over the held-out split, all targets and per modality, with
  the documents drawn as in training (utterances interleaved with their transcripts) and packed into
  rows: the heldout_interleaved_* metrics (lst_jax.train.metrics)."""
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
  return {interleaved("loss"): float(means["loss"]), interleaved("text_loss"): float(means["text_loss"]),
          interleaved("speech_loss"): float(means["speech_loss"]),
          interleaved("target_tokens"): int(total["all_count"])}


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
  try:
    storage.check_reachable(workdir, "--workdir")  # a gs:// URL's bucket; an unknown scheme refused
    if storage.isfile(workdir):
      raise storage.StorageError(f"--workdir={workdir} is a file, not a folder")
    for name, what in (("manifest.json", "a dataset"), ("model.safetensors", "an export")):
      if storage.exists(storage.join(workdir, name)):
        raise storage.StorageError(f"--workdir={workdir} holds {what} ({name}), not a run: train in another "
                                   f"folder (a run's files would mix with it)")
    storage.check_writable(workdir, "--workdir")   # read-only: before compiling, not at the first checkpoint
  except storage.StorageError as e:
    raise workdir_lib.WorkdirError(str(e)) from None
  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  lead = jax.process_index() == 0
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  platform = mesh.devices.flat[0].platform
  problem = attention.platform_problem(exp.model.attention, platform)
  if problem:
    raise config_lib.ConfigError(
        f"{problem}: pick a deployment of this device (e.g. SIZE=1b@v5p-64 on a TPU slice; `make aot` lists "
        f"them) or set "
        f"--config.model.attention=xla (or pallas on TPU)")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  accum = exp.train.grad_accum_steps
  if exp.data.batch_size % (shards * accum) or exp.data.batch_size % jax.process_count():
    raise config_lib.ConfigError(
        f"config.data.batch_size={exp.data.batch_size} must be divisible by the {shards} data-parallel "
        f"devices times config.train.grad_accum_steps={accum}, and by the {jax.process_count()} processes")
  setup = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed, accum_steps=accum)
  return _Run(exp=exp, workdir=workdir, manifest=manifest, mesh=mesh,
              local_batch=exp.data.batch_size // jax.process_count(), setup=setup, lead=lead)


def _all_processes(ok: bool, what: str) -> None:
  """Multi-host: every process learns whether the lead's check passed (it raised there)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if not bool(multihost_utils.broadcast_one_to_all(np.int32(ok))):
      raise workdir_lib.WorkdirError(f"{what}: see process 0's error")


def _claim_workdir(run: _Run, lock: workdir_lib.RunLock) -> None:
  """One run at a time; a previous run kept aside when asked; the data must be the run's."""
  ok = False
  try:
    lock.acquire()
    if lock.note:
      console(f"warning: {lock.note}", run.lead)
    if run.exp.train.resume == "archive_and_restart" and run.lead:
      moved = workdir_lib.archive_previous_run(run.workdir)
      if moved:
        console(f"moved the previous run in {run.workdir} to {moved}", run.lead)
    ok = True
  finally:
    _all_processes(ok, f"{run.workdir} cannot take this run")
  datasets.check_run_provenance(run.workdir, run.manifest, record=run.lead)
def _data(run: _Run):
  """This process's infinite batch iterator (curriculum progress = documents read / the run's)."""
  exp, manifest = run.exp, run.manifest
  total_docs = pipeline.total_documents(manifest, exp.data, run.local_batch, exp.train.steps)
  return iter(pipeline.train_dataset(manifest, exp.data, run.local_batch, "train", jax.process_index(),
                                     jax.process_count(), total_docs))


def _train(config, workdir: str, stop_at: int | None, preemption: _Preemption,
           benchmarks: BenchmarkFn | None) -> Result:
  run = _prepare(config, workdir)
  if run.exp.train.benchmark_every and benchmarks is None:
    raise config_lib.ConfigError("config.train.benchmark_every is set but this entry point runs no "
                                 "benchmarks; use python -m lst_jax.main")
  lock = workdir_lib.RunLock(workdir, lead=run.lead, stale_s=run.exp.train.lock_stale_s)
  try:
    _claim_workdir(run, lock)
    trainer = _Trainer(run, preemption, benchmarks, lock)
    try:
      heldout_start = trainer.evaluate_before_training()
      trainer.steps(stop_at)
      return trainer.finish(heldout_start)
    finally:
      trainer.close()  # an error too leaves finished checkpoints only (no half-written one, no async noise)
  finally:
    lock.release()


class _Trainer:
  """One training run's state and what happens around its steps, each phase a method:
  restore or initialize, held-out loss before training, the steps with their periodic
  actions (log, checkpoint, stop when preempted, held-out loss, benchmarks), finish."""

  def __init__(self, run: _Run, preemption: _Preemption, benchmarks: BenchmarkFn | None,
               lock: workdir_lib.RunLock):
    self.run, self.t, self.preemption, self.benchmarks = run, run.exp.train, preemption, benchmarks
    self.lock = lock
    exp, t, workdir = run.exp, run.exp.train, run.workdir
    self.data = _data(run)
    self.config_record = config_lib.to_dict(exp)  # saved with every checkpoint; compared on resume
    self.writer = None
    self.ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), t.checkpoint_every, t.keep_checkpoints,
                             t.keep_every)
    try:
      restored = self.restore_or_init()
    except BaseException:
      self.ckpt.close()
      raise
    # On resume, records logged past the checkpoint are dropped (JSONL) and hidden (TensorBoard); a
    # fresh start drops an earlier attempt's records (it saved no checkpoint): one run per file.
    self.writer = MetricsWriter(workdir, enabled=run.lead, resume_step=restored[0] if restored else -1)
    slots = flops_lib.model_flops(exp.model, exp.data.batch_size, exp.data.max_tokens, exp.data.max_patches)
    self.accounting = Accounting(  # derived metrics: bits, speech bits/s, cumulative FLOPs, tokens seen, MFU
        slots["train"], peak_flops_per_second(jax.devices()[0].device_kind, run.mesh.size, t.peak_flops_per_device),
        unit_rate=run.manifest.unit_rate, start_step=int(self.state.step), previous=read_records(workdir),
        executed_flops_per_step=slots["train_executed"])
    n_params = sum(x.size for x in jax.tree.leaves(run.setup.abstract.params))
    split = run.manifest.split("train")
    console(f"{exp.model.kind}: {n_params / 1e6:.2f}M parameters on a {dict(run.mesh.shape)} mesh; data "
            f"{run.manifest.dir} ({split.num_speech} utterances, {split.num_text} text documents)", run.lead)
    self.start = self.saved = int(self.state.step)
    self.window, self.timed_from, self.t_window = [], 0, time.time()
    self.window_real_flops = []  # per step: forward FLOPs per module on this process's real tokens
    self.params_finite = jax.jit(step_lib.all_finite)
    self.preempted = False
    every = lambda n: (lambda step: n > 0 and step % n == 0)
    self.after_each_step = [  # in this order; a preempted run stops right after its checkpoint
        (lambda step: every(t.log_every)(step) or step == t.steps, self.log),
        (lambda step: True, self.checkpoint),
        (lambda step: True, self.stop_if_preempted),
        (lambda step: every(t.eval_every)(step) and step != t.steps, self.heldout_eval),
        (every(t.benchmark_every), self.benchmark),
    ]

  def restore_or_init(self):
    """(step, state, data) restored from the workdir's newest readable checkpoint, or None and a
    freshly initialized state when it has none."""
    run, workdir = self.run, self.run.workdir
    if self.ckpt.latest_step() is None:
      self.state = run.setup.init()
      return None
    self.check_checkpoints_fit()  # refused before anything is renamed or written
    restored = self.ckpt.restore_latest_good(run.setup.abstract, run.setup.shardings, self.data)
    if restored is None:
      raise workdir_lib.WorkdirError(
          f"no checkpoint in {workdir}/checkpoints can be read (each was moved aside to <step>.unreadable); "
          f"nothing was started. Keep that run aside and start anew here with "
          f"--config.train.resume=archive_and_restart, or train in another --workdir")
    latest, self.state, self.data = restored
    console(f"resumed from {workdir}/checkpoints at step {latest}", run.lead)
    return restored

  def check_checkpoints_fit(self) -> None:
    """Refuses a workdir whose newest readable checkpoint does not fit this config (naming the
    first setting and parameter that differ); notes the settings that changed but may."""
    run = self.run
    current_shapes = state_shapes(run.setup.abstract)
    for step in sorted(self.ckpt.manager.all_steps(), reverse=True):
      try:
        saved_config, saved_shapes = self.ckpt.saved_run(step)
      except Exception:  # unreadable: restore_latest_good sets it aside and tries the one before
        continue
      defining, resumable = workdir_lib.compare_configs(saved_config or {}, self.config_record,
                                                        config_lib.default_record())
      shapes = workdir_lib.compare_shapes(saved_shapes, current_shapes)
      where = f"{run.workdir} holds a run (checkpoint {step})"
      if shapes is not None and not defining:
        continue  # same settings, other shapes: a damaged checkpoint (restore sets it aside)
      if shapes is not None:
        raise workdir_lib.WorkdirError(
            f"{where} whose parameters do not fit this config: {defining[0]}; first parameter that "
            f"differs: {shapes}. "
            f"Nothing was changed. Train in another --workdir, or keep that run aside and start anew here "
            f"with --config.train.resume=archive_and_restart")
      if defining and run.exp.train.resume != "with_changes":
        raise workdir_lib.WorkdirError(
            f"{where} trained with other settings: {'; '.join(defining)}. Nothing was changed. Train in "
            f"another --workdir, continue that run with these settings with "
            f"--config.train.resume=with_changes, or keep it aside and start anew here with "
            f"--config.train.resume=archive_and_restart")
      for change in defining + resumable:
        console(f"note: resuming with a changed setting, {change}", run.lead)
      saved_steps = (saved_config or {}).get("train", {}).get("steps")
      if saved_steps is not None and saved_steps != run.exp.train.steps:
        console(f"note: {schedule_moves(run.exp, saved_steps, step)}", run.lead)
      return

  def close(self) -> None:
    self.ckpt.close(check=False)   # after finish (checked there) or an error (already being reported)
    if self.writer is not None:
      self.writer.close()

  def heldout(self) -> dict:
    r = self.run
    return evaluate(r.setup.eval_step, self.state.params, r.manifest, r.exp, r.mesh, r.local_batch)

  def evaluate_before_training(self) -> dict | None:
    """Held-out losses before the first step; on a resume, the evaluation due at the resumed step if
    it never ran (a SIGTERM at an eval_every step stops right after the checkpoint)."""
    if self.start != 0:
      t = self.t
      due = t.eval_every > 0 and self.start % t.eval_every == 0 and self.start != t.steps
      if due and not any(r.get("step") == self.start and HELDOUT_LOSS in r for r in read_records(self.run.workdir)):
        self.heldout_eval(self.start)
      return None
    ev = self.heldout()
    self.writer.write(self.accounting({"step": 0, **ev}))
    console(f"held-out loss before training: {ev[HELDOUT_LOSS]:.4f}", self.run.lead)
    return ev

  def steps(self, stop_at: int | None) -> None:
    last = min(self.t.steps, stop_at) if stop_at is not None else self.t.steps
    model = self.run.exp.model
    for step in range(self.start + 1, last + 1):
      batch = next(self.data)
      self.state, metrics = self.run.setup.train_step(self.state, sharding.global_batch(batch, self.run.mesh))
      self.window.append(metrics)
      self.window_real_flops.append(flops_lib.real_flops(model, batch["token_segment"], batch["patch_segment"]))
      if step == self.start + 1:  # the first step compiles: keep it out of the throughput
        jax.block_until_ready(metrics)
        console(f"compiled and ran step {step} in {time.time() - self.t_window:.1f}s", self.run.lead)
        self.timed_from, self.t_window = len(self.window), time.time()
      for due, action in self.after_each_step:
        if due(step) and not self.preempted:
          action(step)
      if self.preempted:
        return

  def check_finite(self, step: int) -> None:
    first = step - len(self.window) + 1
    bad = [first + i for i, m in enumerate(jax.device_get([m["nonfinite"] for m in self.window])) if m]
    if bad:
      self.ckpt.manager.wait_until_finished()  # the last good checkpoint, complete
      good = self.ckpt.latest_step()
      raise TrainingError(
          f"non-finite loss, gradient or parameters at step {bad[0]}: the run stopped there (the update was not "
          f"applied). Last good checkpoint: {f'step {good}' if good is not None else 'none'} in "
          f"{self.run.workdir}/checkpoints. Lower optim.learning_rate or check the data, then rerun to resume.")

  def log(self, step: int) -> None:
    self.check_finite(step)
    fetched = jax.device_get(self.window)
    empty = [step - len(fetched) + 1 + i for i, m in enumerate(fetched) if m.pop("content_targets") == 0]
    if empty:
      d = self.run.exp.data
      raise TrainingError(f"step {empty[0]} had no text or speech token to predict (only row markers): rows of "
                          f"config.data.max_tokens={d.max_tokens} / max_patches={d.max_patches} hold no whole "
                          f"example of this data; make them longer")
    record = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    record.update(step=step, lr=float(fetched[-1]["lr"]), **self.real_flops_per_step())
    timed = fetched[self.timed_from:]
    if timed:
      elapsed = time.time() - self.t_window
      record.update(tokens_per_s=sum(m["real_tokens"] for m in timed) / elapsed,
                    patches_per_s=sum(m["real_patches"] for m in timed) / elapsed,
                    step_time_s=elapsed / len(timed))
    record = self.accounting(record)
    self.writer.write(record)
    console(progress_line(step, self.t.steps, record), self.run.lead)
    self.window, self.timed_from, self.t_window = [], 0, time.time()
    self.window_real_flops = []

  def real_flops_per_step(self) -> dict:
    """Train FLOPs on real tokens per step since the last log, all processes: `real_flops` and
    `real_flops_<module>` (lst_jax.flops.real_flops, 3x forward)."""
    names = list(self.window_real_flops[0])
    local = np.array([[f[m] for m in names] for f in self.window_real_flops], np.float64).mean(axis=0)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      local = np.asarray(multihost_utils.process_allgather(local)).sum(axis=0)
    per_module = {f"real_flops_{m}": 3.0 * float(v) for m, v in zip(names, local)}
    return {"real_flops": sum(per_module.values()), **per_module}

  def save(self, step: int, force: bool = False) -> None:
    self.ckpt.check_saved(step)   # an earlier save that failed in the background stops the run here
    try:
      saved = self.ckpt.save(step, self.state, self.data, self.config_record, force=force)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for a failed write
      raise self.ckpt.write_failed(step, e) from None
    if saved:
      self.saved = step

  def check_params_finite(self, step: int) -> None:
    """Never save parameters that overflowed (an update of finite loss and gradient can still give inf)."""
    if bool(self.params_finite(self.state.params)):
      return
    self.ckpt.manager.wait_until_finished()
    good = self.ckpt.latest_step()
    raise TrainingError(
        f"non-finite loss, gradient or parameters at step {step}: the parameters after it overflowed, so it "
        f"was not saved. Last good checkpoint: {f'step {good}' if good is not None else 'none'} in "
        f"{self.run.workdir}/checkpoints. Lower optim.learning_rate or check the data, then rerun to resume.")

  def checkpoint(self, step: int) -> None:
    if step % self.t.checkpoint_every == 0:
      self.check_finite(step)  # never save a state past a non-finite update
      self.check_params_finite(step)
      self.check_lock()  # never write into a workdir another run has taken over
    self.save(step)  # Orbax decides: every checkpoint_every steps

  def check_lock(self) -> None:
    lost = None
    try:
      self.lock.check()
    except workdir_lib.WorkdirError as e:
      lost = e
    try:
      _all_processes(lost is None, f"{self.run.workdir}: the run lock was taken over")
    except workdir_lib.WorkdirError as e:
      raise (lost or e) from None
    if lost:
      raise lost

  def stop_if_preempted(self, step: int) -> None:
    self.preempted = self.preemption.requested or (
        jax.process_count() > 1 and self.ckpt.manager.reached_preemption(step))

  def checked_heldout(self, step: int) -> dict:
    """The held-out losses at `step`; a non-finite one stops the run, its checkpoint set aside."""
    ev = self.heldout()
    if np.isfinite(ev[HELDOUT_LOSS]):
      return ev
    self.writer.write(self.accounting({"step": step, **ev}))
    aside = self.ckpt.set_aside(step, "diverged")
    good = self.ckpt.latest_step()
    raise TrainingError(
        f"held-out loss at step {step} is {ev[HELDOUT_LOSS]}: the model diverged"
        + (f" (its checkpoint moved aside to checkpoints/{step}.diverged)" if aside else "")
        + f". Last good checkpoint: {f'step {good}' if good is not None else 'none'} in {self.run.workdir}/"
        f"checkpoints. Lower optim.learning_rate or check the data, then rerun to resume.")

  def heldout_eval(self, step: int) -> None:
    ev = self.checked_heldout(step)
    self.writer.write(self.accounting({"step": step, **ev}))
    console(f"held-out loss at step {step}: {ev[HELDOUT_LOSS]:.4f}", self.run.lead)

  def benchmark(self, step: int) -> None:
    r = self.run
    metrics, table = self.benchmarks(self.state.params, r.setup, r.exp, r.manifest, r.mesh, r.workdir)
    self.writer.write({"step": step, **metrics})
    console(f"benchmarks at step {step}:\n{table}", r.lead)

  def finish(self, heldout_start: dict | None) -> Result:
    """Last checkpoint, and the held-out loss after training (unless preempted)."""
    workdir, lead = self.run.workdir, self.run.lead
    final_step = int(self.state.step)
    if self.window:
      self.check_finite(final_step)
    if self.saved != final_step:
      self.check_params_finite(final_step)
      self.save(final_step, force=True)
    self.ckpt.close()
    if self.preempted:
      self.writer.close()
      console(f"stopped (SIGTERM or Ctrl-C) after step {final_step}: checkpoint saved in {workdir}/checkpoints; "
              f"rerun the same command to resume", lead)
      return Result(step=final_step, heldout_start=heldout_start, heldout_end=None, preempted=True)
    heldout_end = self.checked_heldout(final_step)
    self.writer.write(self.accounting({"step": final_step, "final": True, **heldout_end}))
    self.writer.close()
    msg = f"held-out loss after step {final_step}: {heldout_end[HELDOUT_LOSS]:.4f} " \
          f"(text {heldout_end[interleaved('text_loss')]:.4f}, speech {heldout_end[interleaved('speech_loss')]:.4f})"
    first = heldout_start or next((r for r in read_records(workdir)
                                   if r.get("step") == 0 and HELDOUT_LOSS in r), None)
    if first is not None:
      msg += f"; before training: {first[HELDOUT_LOSS]:.4f}"
    console(msg, lead)
    return Result(step=final_step, heldout_start=heldout_start, heldout_end=heldout_end)
