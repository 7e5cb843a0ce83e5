"""`make reproduce`: the LST-vs-baseline study at CPU scale, as a report.

  python -m lst_jax.tools.reproduce [--out=runs/reproduce] [--data_dir=data/study] [--quick]
      [--sizes=study_s,...] [--steps=N] [--seeds=3]

Trains every run of the plan below in its own workdir under <out>/runs/ (a rerun
resumes an unfinished run and skips a finished one, benchmarks included), then
writes <out>/REPORT.md, <out>/results.json and <out>/plots/*.png.

The plan (`plan`): LST vs baseline, FLOP-matched (the baseline's row length set
so that its train FLOPs on real tokens per step equal the LST's,
lst_jax.tools.pairing), static patching, at every size; at the middle size
also more seeds of both, the data-matched pair, curriculum patching, and the
reference's cross-attention windows (512 patches each way). --quick: the
smallest size, one seed, the FLOP-matched pair only, fewer steps.

What the report holds, per run: held-out text bits per token and speech bits
per second of audio against train FLOPs on real tokens (curves of both models
overlaid), and the built-in benchmarks (data_prep.benchmarks.builtin) in all four
directions with 95% intervals. Per size: the compute-efficiency ratio, i.e.
the real FLOPs the baseline needs to reach the LST's final held-out speech
bits/s (read off its curve, interpolated in log FLOPs; from its power-law fit
when its curve never gets there) over the LST's, and power-law fits
loss = a * FLOPs^-b of both models' held-out curves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from lst_jax import cli, presets, storage

SIZES = ("study_s", "study_m", "study_l")
MIDDLE = "study_m"
REFERENCE_WINDOW = 512   # the reference's cross-attention windows (lst.yaml), in patches
QUICK_STEPS = 150
EXTRAPOLATE_AT_MOST = 100   # a power law read beyond 100x the FLOPs it was fitted on is not a result
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}   # two-sided 95% Student t by sample size


@dataclasses.dataclass(frozen=True)
class Spec:
  """One run of the study."""
  size: str
  kind: str                    # "lst" or "baseline"
  pairing: str = "flop_matched"
  seed: int = 0
  patching: str = "static"
  window: int = 1              # both cross-attention windows, in patches (LST only)
  # Diagnostics (None = the size's): learning rate; LST only: local width, static patch size.
  d_local: int | None = None
  learning_rate: float | None = None
  patch_size: int | None = None

  @property
  def name(self) -> str:
    extra = "" if self.patching == "static" else f"_{self.patching}"
    extra += "" if self.window == 1 else f"_window{self.window}"
    extra += "" if self.d_local is None else f"_local{self.d_local}"
    extra += "" if self.learning_rate is None else f"_lr{self.learning_rate:g}"
    extra += "" if self.patch_size is None else f"_p{self.patch_size}"
    return f"{self.size}/{self.pairing}/{self.kind}{extra}_seed{self.seed}"

  @property
  def diagnostic(self) -> bool:
    return (self.d_local, self.learning_rate, self.patch_size) != (None, None, None)


def plan(sizes=SIZES, seeds: int = 3, quick: bool = False) -> list[Spec]:
  """Every run of the study, cheapest first (so a partial study already answers something): the
  largest size last."""
  pair = lambda size, **kw: [Spec(size, k, **kw) for k in ("lst", "baseline")]
  if quick:
    return pair(sizes[0])
  middle = MIDDLE if MIDDLE in sizes else sizes[len(sizes) // 2]
  small = presets.SIZES[sizes[0]]
  runs = pair(sizes[0])
  # Why (not): at the smallest size, the LST with a local width equal to the global one, with half
  # and twice the learning rate, with patches of 2, and the baseline at twice the learning rate
  # (each against that size's baseline).
  lr = small.learning_rate
  runs += [Spec(sizes[0], "lst", d_local=small.d_global), Spec(sizes[0], "lst", learning_rate=lr / 2),
           Spec(sizes[0], "lst", learning_rate=lr * 2), Spec(sizes[0], "lst", patch_size=2),
           Spec(sizes[0], "baseline", learning_rate=lr * 2)]
  # Every size's pair before the middle size's other seeds and variants (the scaling question first).
  runs += [r for size in sizes[1:] for r in pair(size)]
  runs += [r for s in range(1, seeds) for r in pair(middle, seed=s)]
  runs += pair(middle, pairing="data_matched")
  runs += [Spec(middle, "lst", patching="curriculum"), Spec(middle, "lst", window=REFERENCE_WINDOW)]
  return runs


# ---------------------------------------------------------------------------- configs

def base_config(spec: Spec, data_dir: str, steps: int | None):
  c = presets.experiment(spec.kind, spec.size, "compute_matched" if spec.pairing == "flop_matched" else spec.pairing)
  c.pairing = spec.pairing
  c.data.dir = data_dir
  c.train.seed = c.data.seed = spec.seed
  if steps:
    size = presets.SIZES[spec.size]
    c.train.update(steps=steps, eval_every=max(1, steps // 8), checkpoint_every=max(1, steps // 6),
                   log_every=max(1, min(size.log_every, steps // 12)))
    c.optim.warmup_steps = max(1, steps // 10)
  if spec.learning_rate is not None:
    c.optim.learning_rate = spec.learning_rate
  if spec.kind == "lst":
    c.data.patching.strategy = spec.patching
    if spec.window != 1:
      c.model.encoder_window = c.model.decoder_window = spec.window
    if spec.d_local is not None:
      c.model.d_local = spec.d_local
    if spec.patch_size is not None:
      c.data.patching.patch_size = spec.patch_size
  return c


def run_config(spec: Spec, data_dir: str, steps: int | None, out: str):
  """The run's full config; a FLOP-matched baseline gets the row length measured for its size
  (once, cached in <out>/pairing/<size>.json with both members' per-step readings)."""
  c = base_config(spec, data_dir, steps)
  if spec.kind != "baseline" or spec.pairing != "flop_matched":
    return c
  path = os.path.join(out, "pairing", f"{spec.size}.json")
  cached = _read_json(path)
  if cached is None or cached.get("data_dir") != data_dir:
    from lst_jax.tools import pairing
    lst = base_config(dataclasses.replace(spec, kind="lst", seed=0), data_dir, steps)
    matched, readings = pairing.match_flops(lst, base_config(dataclasses.replace(spec, seed=0), data_dir, steps))
    cached = {"data_dir": data_dir, "baseline_row_length": int(matched.data.max_tokens),
              "per_step": {k: r.as_dict() for k, r in readings.items()}}
    _write_json(path, cached)
  c.data.max_tokens = c.data.max_patches = cached["baseline_row_length"]
  return c


# ---------------------------------------------------------------------------- running

def finished(workdir: str) -> bool:
  from lst_jax.train.metrics import read_records
  return os.path.exists(os.path.join(workdir, "metrics.jsonl")) and any(
      r.get("final") for r in read_records(workdir))


def train(spec: Spec, config, workdir: str, log=print) -> str:
  """Trains (or resumes) unless finished; returns what happened."""
  if finished(workdir):
    return "finished earlier"
  from lst_jax.train import loop
  t0 = time.time()
  log(f"== {spec.name}: training in {workdir}")
  loop.train(config, workdir)
  return f"trained in {time.time() - t0:.0f} s"


def benchmark(config, workdir: str, max_items: int | None, log=print) -> dict:
  """The final checkpoint's benchmark result (cached in <workdir>/eval/<step>.json)."""
  from lst_jax.eval import evaluate
  from lst_jax.train.metrics import read_records
  step = max(r["step"] for r in read_records(workdir) if r.get("final"))
  path = os.path.join(workdir, "eval", f"{step}.json")
  cached = _read_json(path)
  if cached is not None:
    return cached
  return evaluate.evaluate_checkpoint(config, workdir, step, heldout=False, max_items=max_items,
                                      log=lambda line: None)


# ---------------------------------------------------------------------------- analysis

def curve(workdir: str) -> dict:
  """Held-out points of a run (the loop's heldout_interleaved_*): real train FLOPs, speech bits/s, text
  bits/token (by step)."""
  from lst_jax.train.metrics import interleaved, read_records
  speech, text = interleaved("speech_bits_per_second"), interleaved("text_bits_per_token")
  last = {}
  for r in read_records(workdir):
    if speech in r and "cumulative_real_flops" in r:
      last[int(r["step"])] = r
  steps = sorted(last)
  return {"step": steps, "flops": [float(last[s]["cumulative_real_flops"]) for s in steps],
          "speech_bps": [float(last[s][speech]) for s in steps],
          "text_bpt": [float(last[s][text]) for s in steps]}


def power_law(flops, loss, skip_fraction: float = 0.25) -> dict | None:
  """loss = a * F^-b fitted in log-log space on the points past the first `skip_fraction` of FLOPs."""
  f, y = np.asarray(flops, float), np.asarray(loss, float)
  keep = (f > skip_fraction * f.max()) & (y > 0)
  if keep.sum() < 2:
    return None
  slope, intercept = np.polyfit(np.log(f[keep]), np.log(y[keep]), 1)
  return {"a": float(math.exp(intercept)), "b": float(-slope), "points": int(keep.sum())}


def flops_to_reach(c: dict, target: float, key: str = "speech_bps") -> tuple[float | None, str]:
  """Real FLOPs at which curve `c` first reaches `target` (interpolated in log FLOPs), and how
  it was found: "curve", "fit" (its power law extrapolated, at most EXTRAPOLATE_AT_MOST times
  its last FLOPs), or "never" (no fit, or farther than that)."""
  f, y = c["flops"], c[key]
  for i in range(1, len(f)):
    if y[i] <= target and f[i] > 0:
      if i == 1 or f[i - 1] <= 0 or y[i - 1] == y[i]:
        return f[i], "curve"
      w = (y[i - 1] - target) / (y[i - 1] - y[i])
      return float(math.exp(math.log(f[i - 1]) + w * (math.log(f[i]) - math.log(f[i - 1])))), "curve"
  fit = power_law(f, y)
  if fit is None or fit["b"] <= 1e-6:
    return None, "never"
  log_needed = (math.log(fit["a"]) - math.log(target)) / fit["b"]
  if not log_needed < math.log(max(f)) + math.log(EXTRAPOLATE_AT_MOST):
    return None, "never"
  return float(math.exp(log_needed)), "fit"


def efficiency_ratio(lst: dict, base: dict) -> dict:
  """Baseline FLOPs to reach the LST's final held-out speech bits/s, over the LST's FLOPs."""
  target, spent = lst["speech_bps"][-1], lst["flops"][-1]
  needed, how = flops_to_reach(base, target)
  return {"ratio": None if needed is None else needed / spent, "how": how, "target_speech_bps": target,
          "lst_flops": spent, "baseline_flops_needed": needed}


def mean_interval(values) -> dict:
  v = np.asarray([x for x in values if x is not None], float)
  if len(v) == 0:
    return {"mean": None, "ci95": None, "n": 0}
  if len(v) == 1:
    return {"mean": float(v[0]), "ci95": None, "n": 1}
  half = T95.get(len(v), 1.96) * v.std(ddof=1) / math.sqrt(len(v))
  return {"mean": float(v.mean()), "ci95": [float(v.mean() - half), float(v.mean() + half)], "n": len(v)}


def summarize(spec: Spec, config, workdir: str, bench: dict | None) -> dict:
  from lst_jax.train.metrics import interleaved, read_records
  final = next(r for r in reversed(read_records(workdir)) if r.get("final"))
  modules = {k[len("cumulative_real_flops_"):]: v for k, v in final.items()
             if k.startswith("cumulative_real_flops_")}
  local = sum(v for k, v in modules.items() if k not in ("global", "embed"))
  out = {"spec": dataclasses.asdict(spec), "name": spec.name, "workdir": workdir, "steps": final["step"],
         "speech_bps": final[interleaved("speech_bits_per_second")],
         "text_bpt": final[interleaved("text_bits_per_token")],
         "real_flops": final.get("cumulative_real_flops"), "slot_flops": final.get("cumulative_flops"),
         "executed_flops": final.get("cumulative_executed_flops"),
         "real_flops_by_module": modules,
         "non_global_share": local / final["cumulative_real_flops"] if final.get("cumulative_real_flops") else None,
         "text_tokens": final.get("text_tokens_seen"), "speech_tokens": final.get("speech_tokens_seen"),
         "row": {"max_tokens": config.data.max_tokens, "max_patches": config.data.max_patches},
         "curve": curve(workdir)}
  if bench is not None:
    out["benchmarks"] = {name: {d: {"acc": r["acc_mean"], "ci95": r["ci_mean"], "n": r["n"], "chance": r["chance"]}
                                for d, r in dirs.items()} for name, dirs in bench.get("benchmarks", {}).items()}
  return out


def analyse(results: dict[str, dict], specs: list[Spec]) -> dict:
  """Per size: efficiency ratios (per seed pair) and power-law fits; the middle size's variants."""
  by = {s.name: results[s.name] for s in specs if s.name in results}
  find = lambda **kw: [by[s.name] for s in specs if s.name in by and all(
      getattr(s, k) == v for k, v in kw.items())]
  sizes = {}
  for size in dict.fromkeys(s.size for s in specs):
    pairs = []
    for seed in sorted({s.seed for s in specs if s.size == size}):
      lst = find(size=size, kind="lst", seed=seed, pairing="flop_matched", patching="static", window=1,
                 diagnostic=False)
      base = find(size=size, kind="baseline", seed=seed, pairing="flop_matched", diagnostic=False)
      if lst and base:
        pairs.append({"seed": seed, **efficiency_ratio(lst[0]["curve"], base[0]["curve"]),
                      "lst_speech_bps": lst[0]["speech_bps"], "baseline_speech_bps": base[0]["speech_bps"],
                      "lst_text_bpt": lst[0]["text_bpt"], "baseline_text_bpt": base[0]["text_bpt"],
                      "real_flops_ratio": lst[0]["real_flops"] / base[0]["real_flops"]})
    if not pairs:
      continue
    fits = {}
    for kind in ("lst", "baseline"):
      run = find(size=size, kind=kind, seed=0, pairing="flop_matched", patching="static", window=1,
                 diagnostic=False)
      if run:
        c = run[0]["curve"]
        fits[kind] = {"speech_bps": power_law(c["flops"], c["speech_bps"]),
                      "text_bpt": power_law(c["flops"], c["text_bpt"])}
    sizes[size] = {"pairs": pairs, "fits": fits,
                   "ratio": mean_interval([p["ratio"] for p in pairs]),
                   **{f"{k}_{m}": mean_interval([p[f"{k}_{m}"] for p in pairs])
                      for k in ("lst", "baseline") for m in ("speech_bps", "text_bpt")}}
  variants = []
  for s in specs:
    is_headline = s.pairing == "flop_matched" and s.patching == "static" and s.window == 1 and not s.diagnostic
    if is_headline or s.name not in by or (s.kind == "baseline" and not s.diagnostic):
      continue
    base = find(size=s.size, kind="baseline", seed=0, pairing=s.pairing, diagnostic=False)
    if not base:
      continue
    r, b = by[s.name], base[0]
    variants.append({"run": s.name, "against": b["name"], **efficiency_ratio(r["curve"], b["curve"]),
                     "speech_bps": r["speech_bps"], "baseline_speech_bps": b["speech_bps"],
                     "text_bpt": r["text_bpt"], "baseline_text_bpt": b["text_bpt"],
                     "real_flops_ratio": r["real_flops"] / b["real_flops"],
                     "speech_tokens_ratio": r["speech_tokens"] / max(b["speech_tokens"], 1),
                     "text_tokens_ratio": r["text_tokens"] / max(b["text_tokens"], 1),
                     "non_global_share": r["non_global_share"]})
  return {"sizes": sizes, "variants": variants}


# ---------------------------------------------------------------------------- report

def _fmt(x, spec="{:.3f}"):
  return "-" if x is None else spec.format(x)


def _mi(m: dict, spec="{:.3f}") -> str:
  if m["mean"] is None:
    return "-"
  if m["ci95"] is None:
    return _fmt(m["mean"], spec)
  return f"{_fmt(m['mean'], spec)} [{_fmt(m['ci95'][0], spec)}, {_fmt(m['ci95'][1], spec)}]"


def report(results: dict, analysis: dict, specs: list[Spec], meta: dict) -> str:
  from lst_jax.train.metrics import interleaved
  lines = ["# LST vs baseline at CPU scale (make reproduce)", "",
           f"Generated by `python -m lst_jax.tools.reproduce` on {meta['date']} from the code as shipped "
           f"({meta['commit']}); data {meta['data_dir']} ({meta['data']}). "
           f"{len(results)} of {len(specs)} planned runs finished; study wall time {meta['wall']}.", "",
           "Compute is train FLOPs on real tokens (lst_jax.flops.real_flops: every module of each model, "
           "each packed document on its own, padding free). FLOP-matched: the baseline's row length is set "
           "so that its real FLOPs per step equal the LST's (same steps, rows, optimizer and schedule). "
           f"Held-out: the training loop's {interleaved('*')} figures (held-out documents drawn and packed "
           "as in training). Speech: bits per second of audio (at the data's unit rate); text: bits per token "
           "(lower is better). Intervals are 95% (Student t over seeds; Wilson over benchmark items).", "",
           "## Headline: compute-efficiency ratio", "",
           "Baseline real FLOPs needed to reach the LST's final held-out speech bits/s, over the LST's "
           "real FLOPs (> 1: the LST is more compute-efficient on speech).", "",
           "| size | global | LST speech b/s | baseline speech b/s | LST text b/tok | baseline text b/tok "
           "| efficiency ratio | read from | LST/baseline real FLOPs |",
           "|---|---|---|---|---|---|---|---|---|"]
  for size, a in analysis["sizes"].items():
    s = presets.SIZES[size]
    how = ", ".join(sorted({p["how"] for p in a["pairs"]}))
    flops_ratio = np.mean([p["real_flops_ratio"] for p in a["pairs"]])
    lines.append(f"| {size} (seeds: {len(a['pairs'])}) | {s.global_layers}x{s.d_global}, local {s.d_local} "
                 f"| {_mi(a['lst_speech_bps'], '{:.2f}')} | {_mi(a['baseline_speech_bps'], '{:.2f}')} "
                 f"| {_mi(a['lst_text_bpt'])} | {_mi(a['baseline_text_bpt'])} | {_mi(a['ratio'], '{:.2f}')} "
                 f"| {how} | {flops_ratio:.3f} |")
  lines += ["", "## Variants and diagnostics (each run against its size's seed-0 baseline of the same pairing)",
            "", "| run | speech b/s (baseline) | text b/tok (baseline) | efficiency ratio | LST/baseline "
            "real FLOPs | speech units read | text tokens read | non-global share |",
            "|---|---|---|---|---|---|---|---|"]
  for v in analysis.get("variants", []):
    lines.append(f"| {v['run']} | {v['speech_bps']:.2f} ({v['baseline_speech_bps']:.2f}) | {v['text_bpt']:.3f} "
                 f"({v['baseline_text_bpt']:.3f}) | {_fmt(v['ratio'], '{:.2f}')} ({v['how']}) "
                 f"| {v['real_flops_ratio']:.3f} | {v['speech_tokens_ratio']:.3f}x | {v['text_tokens_ratio']:.3f}x "
                 f"| {_fmt(v['non_global_share'], '{:.2f}')} |")
  lines += ["", "## Every run", "",
            "| run | steps | row (tokens/patches) | real FLOPs | slot FLOPs | non-global share | text tokens "
            "| speech units | speech b/s | text b/tok |", "|---|---|---|---|---|---|---|---|---|---|"]
  for spec in specs:
    r = results.get(spec.name)
    if r is None:
      lines.append(f"| {spec.name} | not run | | | | | | | | |")
      continue
    lines.append(f"| {spec.name} | {r['steps']} | {r['row']['max_tokens']}/{r['row']['max_patches']} "
                 f"| {_fmt(r['real_flops'], '{:.3g}')} | {_fmt(r['slot_flops'], '{:.3g}')} "
                 f"| {_fmt(r['non_global_share'], '{:.2f}')} | {_fmt(r['text_tokens'], '{:,.0f}')} "
                 f"| {_fmt(r['speech_tokens'], '{:,.0f}')} | {r['speech_bps']:.2f} | {r['text_bpt']:.3f} |")
  lines += ["", "## Power-law fits of held-out loss against real FLOPs (loss = a * F^-b)", "",
            "| size | model | speech b/s: a, b | text b/tok: a, b |", "|---|---|---|---|"]
  for size, a in analysis["sizes"].items():
    for kind, fit in a["fits"].items():
      show = lambda f: "-" if f is None else f"{f['a']:.3g}, {f['b']:.4f}"
      lines.append(f"| {size} | {kind} | {show(fit['speech_bps'])} | {show(fit['text_bpt'])} |")
  lines += ["", "## Benchmarks (final checkpoints, accuracy with mean log-likelihood per candidate token)", ""]
  names = sorted({n for r in results.values() for n in r.get("benchmarks", {})})
  dirs = ("S->S", "T->T", "S->T", "T->S")
  if names:
    lines += ["| run | " + " | ".join(f"{n} {d}" for n in names for d in dirs) + " |",
              "|---|" + "---|" * (len(names) * len(dirs))]
    for spec in specs:
      r = results.get(spec.name)
      if r is None or "benchmarks" not in r:
        continue
      cells = []
      for n in names:
        for d in dirs:
          b = r["benchmarks"].get(n, {}).get(d)
          cells.append("-" if b is None else f"{b['acc']:.3f} [{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}]")
      lines.append(f"| {spec.name} | " + " | ".join(cells) + " |")
    chance = {n: next(iter(next(r for r in results.values() if n in r.get("benchmarks", {}))["benchmarks"][n]
                           .values()))["chance"] for n in names}
    lines += ["", "Chance: " + ", ".join(f"{n} {c:.2f}" for n, c in chance.items()) + "."]
  lines += ["", "## Plots", "", "plots/<size>_speech.png and plots/<size>_text.png: held-out curves against "
            "real train FLOPs, LST and baseline overlaid (every seed; the middle size's variants too).", ""]
  return "\n".join(lines)


def plots(results: dict, specs: list[Spec], out: str) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(os.path.join(out, "plots"), exist_ok=True)
  written = []
  for size in dict.fromkeys(s.size for s in specs):
    runs = [s for s in specs if s.size == size and s.name in results]
    if not runs:
      continue
    for key, label in (("speech_bps", "held-out interleaved speech bits per second"),
                       ("text_bpt", "held-out interleaved text bits per token")):
      fig, ax = plt.subplots(figsize=(7, 4.5))
      for s in runs:
        c = results[s.name]["curve"]
        pts = [(f, y) for f, y in zip(c["flops"], c[key]) if f > 0]
        if not pts:
          continue
        variant = s.name.split("/", 1)[1]
        color = "tab:blue" if s.kind == "lst" else "tab:orange"
        headline = s.pairing == "flop_matched" and s.patching == "static" and s.window == 1
        style = "--" if s.diagnostic else "-" if headline else ":"   # dashed: diagnostics; dotted: variants
        ax.plot(*zip(*pts), style, color=color, marker="o", markersize=3, alpha=1.0 if s.seed == 0 else 0.5,
                label=variant)
      ax.set_xscale("log")
      ax.set_xlabel("train FLOPs on real tokens")
      ax.set_ylabel(label)
      ax.set_title(f"{size}: LST (blue) vs baseline (orange); dashed: diagnostics, dotted: variants")
      ax.legend(fontsize=7)
      ax.grid(alpha=0.3)
      path = os.path.join(out, "plots", f"{size}_{key.split('_')[0]}.png")
      fig.tight_layout()
      fig.savefig(path, dpi=110)
      plt.close(fig)
      written.append(path)
  return written


# ---------------------------------------------------------------------------- driver

def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(storage.absolute(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(path + ".tmp", path)


def _commit() -> str:
  import subprocess
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown commit"


def study(out: str, data_dir: str, specs: list[Spec], steps: int | None, max_items: int | None,
          log=print, jobs: int = 1, child_args: tuple[str, ...] = ()) -> dict:
  """Runs (or reuses) every run, then writes results.json, REPORT.md and the plots (after every
  run, so a partial study already reports). jobs > 1: that many runs at a time, each in a
  single-threaded child process (`child_args` are this command's flags)."""
  from lst_jax.data import datasets
  t0 = time.time()
  manifest = datasets.open_datasets(data_dir)
  configs = {s.name: run_config(s, data_dir, steps, out) for s in specs}  # FLOP matching, in this process
  results, done = {}, 0
  analysis = None

  def finish(spec: Spec, what: str) -> None:
    nonlocal done, analysis
    workdir = os.path.join(out, "runs", spec.name)
    if not finished(workdir):   # preempted (SIGTERM): its checkpoint resumes it on the next run
      log(f"{spec.name}: stopped before its last step; rerun to resume it")
      return
    bench = benchmark(configs[spec.name], workdir, max_items, log)
    results[spec.name] = r = summarize(spec, configs[spec.name], workdir, bench)
    done += 1
    log(f"[{done}/{len(specs)}] {spec.name}: {what}; held-out speech {r['speech_bps']:.2f} bits/s, text "
        f"{r['text_bpt']:.3f} bits/token, {r['real_flops']:.3g} real FLOPs ({time.time() - t0:.0f} s so far)")
    analysis = write_outputs(out, results, specs, manifest, data_dir, t0)

  if jobs <= 1:
    for spec in specs:
      finish(spec, train(spec, configs[spec.name], os.path.join(out, "runs", spec.name), log))
  else:
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
      futures = {pool.submit(_run_child, spec, out, child_args, log): spec for spec in specs}
      for future in concurrent.futures.as_completed(futures):
        finish(futures[future], future.result())
  log(f"wrote {out}/REPORT.md, results.json and plots/")
  return {"results": results, "analysis": analysis}


SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _run_child(spec: Spec, out: str, child_args: tuple[str, ...], log) -> str:
  """Trains and benchmarks one run in a single-threaded child process (log: <workdir>/train.log)."""
  import subprocess
  workdir = os.path.join(out, "runs", spec.name)
  if finished(workdir) and os.path.isdir(os.path.join(workdir, "eval")):
    return "finished earlier"
  os.makedirs(workdir, exist_ok=True)
  env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip())
  log(f"== {spec.name}: training in {workdir} (child process, log in train.log)")
  t0 = time.time()
  with open(os.path.join(workdir, "train.log"), "a") as f:
    rc = subprocess.run([sys.executable, "-m", "lst_jax.tools.reproduce", *child_args, f"--only={spec.name}",
                         "--jobs=1"], stdout=f, stderr=subprocess.STDOUT, env=env).returncode
  if rc != 0:
    raise RuntimeError(f"{spec.name} failed (exit {rc}); see {workdir}/train.log")
  return f"trained in {time.time() - t0:.0f} s"


def write_outputs(out: str, results: dict, specs: list[Spec], manifest, data_dir: str, t0: float) -> dict:
  analysis = analyse(results, specs)
  train_split = manifest.split("train")
  meta = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "data_dir": data_dir,
          "data": f"{train_split.num_speech} training utterances, {train_split.num_text} text documents",
          "wall": f"{time.time() - t0:.0f} s (this invocation; finished runs are reused)"}
  _write_json(os.path.join(out, "results.json"), {"meta": meta, "plan": [s.name for s in specs],
                                                  "runs": results, "analysis": analysis})
  plots(results, specs, out)
  with open(os.path.join(out, "REPORT.md.tmp"), "w") as f:
    f.write(report(results, analysis, specs, meta))
  os.replace(os.path.join(out, "REPORT.md.tmp"), os.path.join(out, "REPORT.md"))
  return analysis


def define_flags() -> None:
  """Flags of the command line only (importing this module for its functions defines none)."""
  flags.DEFINE_string("out", "runs/reproduce", "Where the runs, REPORT.md, results.json and plots go.")
  flags.DEFINE_string("data_dir", "data/study", "The study corpus (python -m data_prep.corpus.demo --corpus=study).")
  flags.DEFINE_bool("quick", False, f"Smallest size, one seed, {QUICK_STEPS} steps: the whole path, fast.")
  flags.DEFINE_list("sizes", list(SIZES), "Sizes (lst_jax.presets), smallest first.")
  flags.DEFINE_integer("seeds", 3, "Seeds of both models at the middle size.")
  flags.DEFINE_integer("steps", None, f"Steps of every run (default: the size's; --quick: {QUICK_STEPS}).")
  flags.DEFINE_integer("max_items", None, "Benchmark items per benchmark (default: all).")
  flags.DEFINE_integer("jobs", 1, "Runs at a time, each a single-threaded process (small models use two "
                       "cores better as two runs than as one).")
  flags.DEFINE_string("only", None, "Train and benchmark this one run of the plan (what --jobs starts).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)   # not orbax's read-only checkpoint notes
  f = flags.FLAGS
  bad = [s for s in f.sizes if s not in presets.SIZES]
  if bad:
    cli.fail(f"unknown size(s) {bad}; choose from {', '.join(presets.SIZES)}")
  specs = plan(tuple(f.sizes), f.seeds, f.quick)
  steps = f.steps or (QUICK_STEPS if f.quick else None)
  if f.only:
    spec = next((s for s in specs if s.name == f.only), None)
    if spec is None:
      cli.fail(f"--only={f.only} is not a run of this plan")
    config, workdir = run_config(spec, f.data_dir, steps, f.out), os.path.join(f.out, "runs", spec.name)
    train(spec, config, workdir)
    if finished(workdir):   # not when preempted
      benchmark(config, workdir, f.max_items)
    return
  child_args = tuple(a for a in sys.argv[1:] if not a.startswith(("--jobs", "--only")))
  study(f.out, f.data_dir, specs, steps, f.max_items, jobs=f.jobs, child_args=child_args)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
