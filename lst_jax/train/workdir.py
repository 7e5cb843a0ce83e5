"""A run's working directory: one run at a time, and nothing of a run thrown away.

- `RunLock` (lst_jax/train/run_lock.py): the lead process holds `<workdir>/run.lock`
  while the run trains, so a second training on the same workdir is refused naming the
  holder. The hosts of one multi-host run share the workdir, so the lock belongs to
  the run: process 0 takes it and tells the others.
- `compare_configs` / `compare_shapes`: whether a workdir's checkpoint fits this config,
  checked before anything is restored, renamed or written.
- `archive_previous_run`: `--config.train.resume=archive_and_restart` moves the old
  run's files into `<workdir>/previous/<UTC time>/` instead of deleting them.
"""

from __future__ import annotations

import datetime
import json

from lst_jax import storage
from lst_jax.train.run_lock import RunLock, WorkdirError  # noqa: F401 (the workdir's errors and lock)

PREVIOUS = "previous"
# A run's files in its workdir (moved together by archive_previous_run).
RUN_FILES = ("checkpoints", "metrics.jsonl", "eval", "events.out.tfevents.*", "data_provenance.json")
# Settings that may change when a run resumes: they change neither the state nor the data stream.
RESUMABLE = ("train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
             "train.keep_every", "train.eval_every", "train.eval_batches", "train.benchmark_every",
             "train.benchmark_items", "train.peak_flops_per_device", "train.resume", "train.lock_stale_s",
             "model.attention", "model.remat", "data.dir", "mesh.data", "mesh.fsdp", "mesh.tensor")


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"model": {"kind": ...}} -> {"model.kind": ...}"""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "."))
    else:
      out[name] = list(v) if isinstance(v, tuple) else v
  return out


def compare_configs(saved: dict, current: dict, defaults: dict | None = None) -> tuple[list[str], list[str]]:
  """(run-defining settings that differ, resumable ones that differ), each as
  "config.KEY: SAVED there, CURRENT here". A key the saved config lacks (an older version of this
  code, before the key existed) ran at its default: with `defaults`, a current value other than the
  default is a change too; keys only the saved config has are skipped (removed settings)."""
  as_saved = lambda tree: flatten(json.loads(json.dumps(tree)))   # tuples read back as lists
  a, b, d = as_saved(saved), as_saved(current), as_saved(defaults or {})
  defining, resumable = [], []
  for key in b:
    if key in a:
      if a[key] == b[key]:
        continue
      change = f"config.{key}: {a[key]!r} there, {b[key]!r} here"
    elif key in d and d[key] != b[key]:
      change = f"config.{key}: absent there (a run before the setting existed, so its default {d[key]!r}), " \
               f"{b[key]!r} here"
    else:
      continue
    (resumable if key in RESUMABLE else defining).append(change)
  return defining, resumable


def compare_shapes(saved: dict, current: dict) -> str | None:
  """The first state entry (path -> shape) that differs, described; None when they fit."""
  for path in sorted(set(saved) | set(current)):
    if saved.get(path) != current.get(path):
      show = lambda s: "absent" if s is None else str(tuple(s))
      return f"{path}: {show(saved.get(path))} there, {show(current.get(path))} here"
  return None


def archive_previous_run(workdir: str) -> str | None:
  """Moves the previous run's files into <workdir>/previous/<UTC time>/; returns that folder."""
  paths = [p for pattern in RUN_FILES for p in storage.glob(storage.join(workdir, pattern))]
  if not paths:
    return None
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  target = storage.join(workdir, PREVIOUS, stamp)
  storage.makedirs(target)
  for p in paths:
    storage.rename(p, storage.join(target, p.rstrip("/").rsplit("/", 1)[-1]))
  return target
