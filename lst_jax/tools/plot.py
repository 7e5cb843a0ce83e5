"""Loss curves of one run or several overlaid, as PNG files.

  python -m lst_jax.tools.plot --workdir=runs/lst[,runs/baseline,...] [--out=DIR] [--labels=a,b] [--logx]
  make plot WORKDIR=runs/lst[,runs/baseline]

Reads each <workdir>/metrics.jsonl and writes to --out (default <workdir>/plots for
one run, <their common parent>/plots for several):
  loss_vs_flops.png   loss against cumulative model FLOPs (records' cumulative_flops)
  loss_vs_tokens.png  loss against tokens trained on (tokens_seen, or summed from the
                      logged per-step real_tokens)
each with three panels: train text loss, train speech loss, held-out loss (the training
loop's heldout_interleaved_*: all targets solid, text dashed, speech dotted); losses in
nats per target token. A run whose
records carry no FLOPs (written before they were logged) is left out of the FLOPs
figure, with a warning.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
from absl import app, flags

from lst_jax import storage
from lst_jax.train.metrics import METRICS_FILE, cumulative_tokens, interleaved, read_records

_WORKDIRS = flags.DEFINE_list("workdir", None, "Run directories (comma-separated) holding metrics.jsonl.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <workdir>/plots, or <common parent>/plots).")
_LABELS = flags.DEFINE_list("labels", None, "Legend names, one per workdir (default: directory names).")
_LOGX = flags.DEFINE_boolean("logx", False, "Logarithmic x axes.")


class PlotError(ValueError):
  pass


@dataclasses.dataclass
class Run:
  label: str
  train: list[dict]       # records with a training loss, by step
  heldout: list[dict]     # the loop's held-out evaluation records (heldout_interleaved_*), by step
  x: dict                 # axis name -> (steps, values) to interpolate positions at any step


def _dedupe(records: list[dict]) -> list[dict]:
  """The last record per (kind, step): a resumed run may have logged a step twice."""
  last = {}
  for r in records:
    kind = "train" if "loss" in r else "heldout" if interleaved("loss") in r else None
    if kind is not None and "step" in r:
      last[(kind, int(r["step"]))] = r
  return [last[k] for k in sorted(last, key=lambda k: (k[1], k[0]))]


def load_run(workdir: str, label: str | None = None) -> Run:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise PlotError(f"no {METRICS_FILE} in {workdir!r}")
  records = _dedupe(read_records(workdir))
  train = [r for r in records if "loss" in r]
  heldout = [r for r in records if interleaved("loss") in r]
  if not train and not heldout:
    raise PlotError(f"{path} has no loss records")
  x = {}
  flops = sorted({int(r["step"]): float(r["cumulative_flops"]) for r in records if "cumulative_flops" in r}.items())
  if flops:
    x["flops"] = _with_origin(flops)
  tokens = sorted({int(r["step"]): float(r["tokens_seen"]) for r in records if "tokens_seen" in r}.items())
  x["tokens"] = _with_origin(tokens or sorted(cumulative_tokens(records).items()))
  return Run(label or os.path.basename(storage.normal(workdir)), train, heldout, x)


def _with_origin(pairs):
  if not pairs or pairs[0][0] != 0:
    pairs = [(0, 0.0)] + list(pairs)
  steps, values = zip(*pairs)
  return np.asarray(steps, float), np.asarray(values, float)


def position(run: Run, axis: str, steps) -> np.ndarray:
  """The run's cumulative FLOPs / tokens at `steps` (linear between logged steps, extended
  at the last logged rate past them)."""
  known_steps, known = run.x[axis]
  steps = np.asarray(steps, float)
  out = np.interp(steps, known_steps, known)
  if len(known_steps) > 1:
    rate = (known[-1] - known[-2]) / (known_steps[-1] - known_steps[-2])
    out = np.where(steps > known_steps[-1], known[-1] + rate * (steps - known_steps[-1]), out)
  return out


AXES = {"flops": ("cumulative model FLOPs", "loss_vs_flops.png"),
        "tokens": ("tokens trained on", "loss_vs_tokens.png")}
PANELS = (("train text loss", (("text_loss", "-"),), "train"),
          ("train speech loss", (("speech_loss", "-"),), "train"),
          ("held-out interleaved loss (all -, text --, speech :)",
           ((interleaved("loss"), "-"), (interleaved("text_loss"), "--"), (interleaved("speech_loss"), ":")),
           "heldout"))


def plot(runs: list[Run], out_dir: str, logx: bool = False) -> list[str]:
  """Writes one PNG per x axis (FLOPs, tokens); returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out_dir, exist_ok=True)
  written = []
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for axis, (xlabel, filename) in AXES.items():
    usable = [r for r in runs if axis in r.x]
    for r in runs:
      if axis not in r.x:
        print(f"warning: {r.label} has no {xlabel} in its records; left out of {filename}", file=sys.stderr)
    if not usable:
      continue
    fig, panels = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.3), constrained_layout=True)
    fig.suptitle(f"loss against {xlabel}: {', '.join(r.label for r in usable)}")
    for ax, (title, series, source) in zip(panels, PANELS):
      for i, run in enumerate(usable):
        records = run.train if source == "train" else run.heldout
        for j, (key, style) in enumerate(series):
          pts = [(r["step"], r[key]) for r in records if key in r and np.isfinite(r[key])]
          if not pts:
            continue
          steps, values = zip(*pts)
          xs = position(run, axis, steps)
          ax.plot(xs, values, linestyle=style, color=colors[i % len(colors)],
                  marker="o" if source == "heldout" else None, markersize=3,
                  label=run.label if j == 0 else None)
      ax.set_title(title)
      ax.set_xlabel(xlabel)
      ax.set_ylabel("nats / target token")
      if logx:
        ax.set_xscale("symlog" if axis == "flops" else "log")
      ax.grid(alpha=0.3)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    path = os.path.join(out_dir, filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def default_out(workdirs: list[str]) -> str:
  if len(workdirs) == 1:
    return os.path.join(workdirs[0], "plots")
  parent = os.path.commonpath([storage.absolute(w) for w in workdirs])
  return os.path.join(parent, "plots")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  workdirs = [w for w in (_WORKDIRS.value or []) if w]
  if not workdirs:
    raise app.UsageError("--workdir=DIR[,DIR...] is required")
  labels = _LABELS.value or [None] * len(workdirs)
  if len(labels) != len(workdirs):
    print(f"error: {len(labels)} --labels for {len(workdirs)} workdirs", file=sys.stderr)
    sys.exit(2)
  try:
    runs = [load_run(w, l) for w, l in zip(workdirs, labels)]
  except PlotError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  names = [r.label for r in runs]
  if len(set(names)) != len(names) and not _LABELS.value:
    for r, w in zip(runs, workdirs):
      r.label = storage.normal(w)
  for path in plot(runs, _OUT.value or default_out(workdirs), _LOGX.value):
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
