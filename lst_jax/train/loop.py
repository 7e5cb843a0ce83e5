"""The training loop, top to bottom: data, state (fresh or restored), steps, logs, checkpoints."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax.data import datasets, patching, pipeline
from lst_jax.train import losses, step as step_lib
from lst_jax.train.checkpoint import Checkpointer
from lst_jax.train.metrics import MetricsWriter, console, progress_line, read_records


@dataclasses.dataclass
class Result:
  step: int
  heldout_start: dict | None   # held-out losses before training (None when resumed past it)
  heldout_end: dict


def evaluate(eval_step, params, manifest, exp: config_lib.Experiment, mesh, local_batch: int) -> dict:
  """Held-out losses (nats per target token) over the held-out split, per modality."""
  pcfg = config_lib.pipeline_config(exp.data, local_batch)
  total = None
  for batch in pipeline.eval_batches(manifest, pcfg, "heldout", jax.process_index(), jax.process_count(),
                                     max_batches=exp.train.eval_batches or None):
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
  would; rerunning continues on the same schedule.
  """
  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  lead = jax.process_index() == 0
  datasets.check_run_provenance(workdir, manifest, record=lead)

  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if exp.data.batch_size % shards or exp.data.batch_size % jax.process_count():
    raise config_lib.ConfigError(
        f"config.data.batch_size={exp.data.batch_size} must be divisible by the {shards} data-parallel "
        f"devices and the {jax.process_count()} processes")
  local_batch = exp.data.batch_size // jax.process_count()

  run = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed)
  abstract, shardings, train_step, eval_step = run.abstract, run.shardings, run.train_step, run.eval_step

  pcfg = config_lib.pipeline_config(exp.data, local_batch)
  if exp.data.patching == patching.CURRICULUM:  # progress = documents read / documents of the run
    pcfg = dataclasses.replace(pcfg, total_docs=int(pipeline.docs_per_batch(manifest, pcfg) * exp.train.steps))
  data = iter(pipeline.train_dataset(manifest, pcfg, "train", jax.process_index(), jax.process_count()))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), exp.train.checkpoint_every,
                      exp.train.keep_checkpoints)
  writer = MetricsWriter(workdir, enabled=lead)
  latest = ckpt.latest_step()
  n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  if latest is not None:
    state, data_state = ckpt.restore(latest, abstract, shardings)
    data.set_state(data_state)
    console(f"resumed from {workdir}/checkpoints at step {latest}", lead)
  else:
    state = run.init()
  console(f"{exp.model.kind}: {n_params / 1e6:.2f}M parameters on a {dict(mesh.shape)} mesh; "
          f"data {manifest.dir} ({manifest.split('train').num_speech} utterances, "
          f"{manifest.split('train').num_text} text documents)", lead)

  start = int(state.step)
  heldout_start = None
  if start == 0:
    heldout_start = evaluate(eval_step, state.params, manifest, exp, mesh, local_batch)
    writer.write({"step": 0, **heldout_start})
    console(f"held-out loss before training: {heldout_start['heldout_loss']:.4f}", lead)

  window, timed_from, t_window = [], 0, time.time()
  saved, compiled = start, False
  last = min(exp.train.steps, stop_at) if stop_at is not None else exp.train.steps
  for step in range(start + 1, last + 1):
    state, metrics = train_step(state, sharding.global_batch(next(data), mesh))
    window.append(metrics)
    if not compiled:  # the first step compiles: keep it out of the throughput
      jax.block_until_ready(metrics)
      console(f"compiled and ran step {step} in {time.time() - t_window:.1f}s", lead)
      compiled, timed_from, t_window = True, len(window), time.time()
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
      writer.write(record)
      console(progress_line(step, exp.train.steps, record), lead)
      window, timed_from, t_window = [], 0, time.time()
    if ckpt.save(step, state, data.get_state()):
      saved = step
    if exp.train.eval_every and step % exp.train.eval_every == 0 and step != exp.train.steps:
      ev = evaluate(eval_step, state.params, manifest, exp, mesh, local_batch)
      writer.write({"step": step, **ev})
      console(f"held-out loss at step {step}: {ev['heldout_loss']:.4f}", lead)

  final_step = int(state.step)
  if saved != final_step:
    ckpt.save(final_step, state, data.get_state(), force=True)
  ckpt.close()
  heldout_end = evaluate(eval_step, state.params, manifest, exp, mesh, local_batch)
  writer.write({"step": final_step, "final": True, **heldout_end})
  writer.close()
  msg = f"held-out loss after step {final_step}: {heldout_end['heldout_loss']:.4f} " \
        f"(text {heldout_end['heldout_text_loss']:.4f}, speech {heldout_end['heldout_speech_loss']:.4f})"
  first = heldout_start or next((r for r in read_records(workdir)
                                 if r.get("step") == 0 and "heldout_loss" in r), None)
  if first is not None:
    msg += f"; before training: {first['heldout_loss']:.4f}"
  console(msg, lead)
  return Result(step=final_step, heldout_start=heldout_start, heldout_end=heldout_end)
