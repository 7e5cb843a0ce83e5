"""Metrics: one JSON line per logged step in <workdir>/metrics.jsonl, the same scalars as
TensorBoard event files next to it (`tensorboard --logdir=runs` shows every run), and a
console line with throughput and ETA.

Held-out figures come in two kinds, measured differently, and each has one name (below):
`heldout_interleaved_*` from the training loop, `heldout_unimodal_*` from the evaluation runner.

Derived metrics (`Accounting`, added to each record before it is written):
  text_bits_per_token        text nats per token / ln 2
  speech_bits_per_unit       speech nats per unit / ln 2
  speech_bits_per_second     speech nats per unit * the data's unit rate (manifest.unit_rate) / ln 2:
                             bits per second of audio
  (and heldout_interleaved_* versions of the three on the loop's evaluation records)
  cumulative_flops           model FLOPs so far counted on the rows' slots (max_tokens, max_patches,
                             padding included): train FLOPs per step * step
  cumulative_executed_flops  the same for what the model executes (dense scores, gather slots)
  cumulative_real_flops      train FLOPs on real tokens so far (lst_jax.flops.real_flops: each
                             document on its own, padding free), and cumulative_real_flops_<module>;
                             the number compute-matched comparisons equalize
  tokens_seen                real (non-padding) tokens trained on so far (and text_tokens_seen,
                             speech_tokens_seen when the step reports real_text/speech_tokens)
  flops_per_s, mfu           model FLOPs per second, and their share of the devices' peak FLOP/s
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Iterable

from lst_jax import storage

LN2 = math.log(2.0)
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------------- held-out names

# The two held-out measurements, one name each, spelled here only (metrics.jsonl keys, TensorBoard
# tags heldout/interleaved_* and heldout/unimodal_*, the eval JSON's section):
#
# heldout_interleaved_<q>: the training loop's (lst_jax.train.loop.evaluate, every eval_every steps and
#   at the end). Every held-out document once as training draws it (an utterance interleaved with its
#   transcript, a text document as text; pipeline.eval_batches), statically patched and packed several
#   to a row; <q> = loss, text_loss, speech_loss (nats per target token of all / each modality over the
#   split, interleaved text spans and units included), target_tokens, and the bits Accounting derives.
# heldout_unimodal_<q>: the evaluation runner's (lst_jax.eval.runner, make eval, benchmark_every).
#   Each held-out document alone and in one modality: an utterance as `BOS <s> units EOS` scored on its
#   units, a text document as `BOS <t> text EOS` scored on its text; <q> = text_bits_per_token,
#   speech_bits_per_unit, speech_bits_per_second, text_tokens, speech_units, ... (runner's docstring).
#   The eval JSON holds them as its "heldout_unimodal" section, flattened here as heldout_unimodal_<q>.
INTERLEAVED = "heldout_interleaved"
UNIMODAL = "heldout_unimodal"


def interleaved(quantity: str) -> str:
  """Record key of the training loop's held-out `quantity`: interleaved("loss") = "heldout_interleaved_loss"."""
  return f"{INTERLEAVED}_{quantity}"


def unimodal(quantity: str) -> str:
  """Record key of the evaluation runner's held-out `quantity` (documents alone, one modality each)."""
  return f"{UNIMODAL}_{quantity}"


_OLD = "heldout"  # before these names: the loop logged heldout_<q>, the runner heldout/<q> (eval JSON: "heldout")


def renamed(record: dict) -> dict:
  """`record` (a metrics.jsonl record, or an eval JSON) with the held-out keys of earlier runs given
  today's names, in the same order: heldout_<q> -> heldout_interleaved_<q>, heldout/<q> ->
  heldout_unimodal_<q>, an eval JSON's "heldout" section -> "heldout_unimodal". Others unchanged."""
  def new(key: str) -> str:
    if key == _OLD:
      return UNIMODAL
    if key.startswith(_OLD + "/"):
      return unimodal(key[len(_OLD) + 1:])
    if key.startswith(_OLD + "_") and not key.startswith((INTERLEAVED, UNIMODAL)):
      return interleaved(key[len(_OLD) + 1:])
    return key
  return {new(k): v for k, v in record.items()}


# ---------------------------------------------------------------------------- derived metrics

def bits(nats: float) -> float:
  """Nats -> bits."""
  return nats / LN2


def speech_bits_per_second(speech_nats_per_unit: float, unit_rate: float) -> float:
  """Bits per second of audio from the speech loss (nats per unit) at `unit_rate` units per second
  (the data's: manifest.unit_rate). The one place nats per unit become bits per second."""
  return bits(speech_nats_per_unit) * unit_rate


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_s: float) -> float:
  """Model FLOPs utilization: FLOPs per step / seconds per step / peak FLOP/s (all devices)."""
  return flops_per_step / step_time_s / peak_flops_per_s


# Dense bf16 peak FLOP/s per JAX device, by device_kind substring (first match wins; TPU
# v2/v3 show each core as a device, later TPUs one device per chip).
PEAK_FLOPS_PER_DEVICE = (
    ("TPU v2", 22.5e12), ("TPU v3", 61.5e12), ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("TPU v6e", 918e12), ("TPU7x", 2307e12),
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12), ("A10G", 70e12),
)


def peak_flops_per_second(device_kind: str, num_devices: int, per_device: float = 0.0) -> float | None:
  """Peak FLOP/s of `num_devices` devices: `per_device` if given (> 0), else the table's
  dense bf16 figure for `device_kind` (jax.devices()[0].device_kind); None when unknown (CPU)."""
  if per_device and per_device > 0:
    return per_device * num_devices
  for name, peak in PEAK_FLOPS_PER_DEVICE:
    if name.lower() in device_kind.lower():
      return peak * num_devices
  return None


def _bits_of(record: dict, key, unit_rate: float | None) -> dict:
  """Bits from the nats of `record`; `key` names a quantity (str -> str: as is, or `interleaved`)."""
  out = {}
  if key("text_loss") in record:
    out[key("text_bits_per_token")] = bits(record[key("text_loss")])
  if key("speech_loss") in record:
    out[key("speech_bits_per_unit")] = bits(record[key("speech_loss")])
    if unit_rate is not None:
      out[key("speech_bits_per_second")] = speech_bits_per_second(record[key("speech_loss")], unit_rate)
  return out


SEEN = (("tokens_seen", "real_tokens"), ("text_tokens_seen", "real_text_tokens"),
        ("speech_tokens_seen", "real_speech_tokens"))
_REAL = "cumulative_real_flops"  # and cumulative_real_flops_<module>, summed like SEEN


class Accounting:
  """Adds the derived metrics to each record, in the order the loop writes them.

  flops_per_step: model FLOPs of one optimizer step on the global batch
    (lst_jax.flops.model_flops(cfg, batch_size, max_tokens, max_patches)["train"]).
  peak_flops_per_s: all devices together (peak_flops_per_second); None: no MFU.
  unit_rate: speech units per second of audio of the run's data (manifest.unit_rate); None: no
    speech_bits_per_second.
  start_step, previous: on resume, the step restored and the records already written
    (read_records(workdir)); tokens_seen continues from the last record at or before it.
  """

  def __init__(self, flops_per_step: float, peak_flops_per_s: float | None = None,
               unit_rate: float | None = None, start_step: int = 0, previous: Iterable[dict] = (),
               executed_flops_per_step: float | None = None):
    self.flops_per_step = float(flops_per_step)
    self.executed_flops_per_step = executed_flops_per_step
    self.peak = peak_flops_per_s
    self.unit_rate = unit_rate
    self.last_step = start_step
    self.seen = {}  # "tokens_seen", "text_tokens_seen", ... -> count so far
    for r in previous:
      if r.get("step", 0) <= start_step:
        self.seen.update({k: float(v) for k, v in r.items() if k in dict(SEEN) or k.startswith(_REAL)})

  def __call__(self, record: dict) -> dict:
    out = dict(record)
    step = int(record["step"])
    if "real_tokens" in record and step > self.last_step:  # means per step over the steps since the last log
      sources = dict(SEEN, **{"cumulative_" + k: k for k in record if k.startswith("real_flops")})
      for key, per_step in sources.items():
        if per_step in record:
          self.seen[key] = self.seen.get(key, 0.0) + float(record[per_step]) * (step - self.last_step)
      self.last_step = step
    out.update(_bits_of(record, lambda q: q, self.unit_rate))
    out.update(_bits_of(record, interleaved, self.unit_rate))
    out["cumulative_flops"] = self.flops_per_step * step
    if self.executed_flops_per_step is not None:
      out["cumulative_executed_flops"] = float(self.executed_flops_per_step) * step
    out["tokens_seen"] = self.seen.get("tokens_seen", 0.0)
    out.update({k: v for k, v in self.seen.items() if k != "tokens_seen"})
    if record.get("step_time_s"):
      out["flops_per_s"] = self.flops_per_step / record["step_time_s"]
      if self.peak:
        out["mfu"] = mfu(self.flops_per_step, record["step_time_s"], self.peak)
    return out


def cumulative_tokens(records: Iterable[dict]) -> dict[int, float]:
  """step -> real tokens trained on up to it, from the logged per-step means (`real_tokens`)
  of training records (for runs written before `tokens_seen` existed)."""
  out, total, last = {0: 0.0}, 0.0, 0
  for r in sorted((r for r in records if "real_tokens" in r and "loss" in r), key=lambda r: r["step"]):
    if r["step"] > last:
      total += float(r["real_tokens"]) * (r["step"] - last)
      last = r["step"]
      out[last] = total
  return out


# ---------------------------------------------------------------------------- writing

def tb_tag(key: str) -> str:
  """TensorBoard tag of a record key: grouped as heldout/, train/, perf/, progress/, patches/; the
  held-out ones are their key with one "/": heldout/interleaved_<q> and heldout/unimodal_<q>."""
  for kind in (INTERLEAVED, UNIMODAL):
    if key.startswith(kind + "_"):
      group, name = kind.split("_", 1)
      return f"{group}/{name}{key[len(kind):]}"
  if key in ("tokens_per_s", "patches_per_s", "step_time_s", "flops_per_s", "mfu"):
    return "perf/" + key
  if key in ("cumulative_flops", "cumulative_executed_flops", "tokens_seen", "text_tokens_seen",
             "speech_tokens_seen") or key.startswith("cumulative_real_flops"):
    return "progress/" + key
  if key.startswith("real_flops"):
    return "flops/" + key
  if key in ("aligned_patch_share", "mean_speech_patch_len", "real_patches", "real_tokens", "real_text_tokens",
             "real_speech_tokens", "target_tokens", "truncated_tokens"):
    return "batch/" + key
  return "train/" + key


NOT_SCALARS = ("step", "time", "final")


class MetricsWriter:
  """Appends records to <workdir>/metrics.jsonl and writes their numbers as TensorBoard
  scalars (event files in <workdir>), on the lead process only (`enabled`).

  Each record is on storage when `write` returns: appended and flushed locally; on gs://
  (objects cannot be appended to) the whole file is uploaded again, one atomic object write.

  resume_step: the step a resumed run restarts from; records of a previous attempt past it,
  and its "final" evaluation, are dropped from metrics.jsonl (they are about to be logged
  again: the file reads as one uninterrupted run) and TensorBoard hides that attempt's later
  events (purge_step).
  """

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True,
               resume_step: int | None = None):
    self.enabled = enabled
    self.path = storage.join(workdir, METRICS_FILE)
    self._file = None
    self._lines = None  # on object storage: every line written, uploaded whole at each write
    self._tb = None
    if not enabled:
      return
    storage.makedirs(workdir)
    kept = _drop_after(self.path, resume_step) if resume_step is not None else None
    if storage.is_url(self.path):
      self._lines = kept if kept is not None else \
          [line for line, _ in _parse(self.path)] if storage.exists(self.path) else []
    else:
      self._file = open(self.path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(logdir=workdir, purge_step=None if resume_step is None else resume_step + 1,
                               flush_secs=30)

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, str)) else v)
             for k, v in record.items()}
    now = round(time.time(), 3)
    line = json.dumps({"time": now, **clean}) + "\n"
    if self._lines is not None:
      self._lines.append(line)
      storage.write_text(self.path, "".join(self._lines))
    else:
      self._file.write(line)
      self._file.flush()
    if self._tb is not None and "step" in clean:
      for k, v in clean.items():
        if k in NOT_SCALARS or isinstance(v, (bool, str)) or not isinstance(v, (int, float)) \
            or not math.isfinite(v):
          continue
        self._tb.add_scalar(tb_tag(k), v, global_step=int(clean["step"]), walltime=now)
      self._tb.flush()

  def close(self) -> None:
    if self._file:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _parse(path: str) -> list[tuple[str, dict]]:
  """(line, record) pairs; a last line cut short by a killed process is skipped."""
  lines = [line for line in storage.read_text(path).splitlines(keepends=True) if line.strip()]
  out = []
  for i, line in enumerate(lines):
    try:
      out.append((line if line.endswith("\n") else line + "\n", json.loads(line)))
    except json.JSONDecodeError:
      if i != len(lines) - 1:
        raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
  return out


def _drop_after(path: str, step: int) -> list[str]:
  """Drops records past `step` (and a "final" one) from the file; returns the lines kept (held-out
  keys of an earlier version's records renamed: the file reads as one run under today's names)."""
  if not storage.exists(path):
    return []
  keep = [line if renamed(r) == r else json.dumps(renamed(r)) + "\n"
          for line, r in _parse(path) if r.get("step", 0) <= step and not r.get("final")]
  storage.write_text(path, "".join(keep))
  return keep


def read_records(workdir: str) -> list[dict]:
  """Every record written so far to <workdir>/metrics.jsonl (empty if none); held-out keys of runs
  logged by an earlier version come renamed (`renamed`), so a resume, compare or plot reads them."""
  path = storage.join(workdir, METRICS_FILE)
  if not storage.exists(path):
    return []
  return [renamed(r) for _, r in _parse(path)]


# ---------------------------------------------------------------------------- console

def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_flops(flops: float) -> str:
  for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
    if flops >= scale:
      return f"{flops / scale:.3g}{unit}"
  return f"{flops:.3g}"


def progress_line(step: int, total: int, m: dict) -> str:
  """One console line; throughput and ETA appear once a step has been timed, MFU and FLOPs
  when the record has them."""
  line = (f"step {step:>6}/{total} | loss {m['loss']:.3f} (text {m['text_loss']:.3f}, "
          f"speech {m['speech_loss']:.3f}) | lr {m['lr']:.2e}")
  if "tokens_per_s" in m:
    line += f" | {m['tokens_per_s']:,.0f} tok/s"
    if "mfu" in m:
      line += f" | MFU {100 * m['mfu']:.1f}%"
    line += f" | ETA {format_duration(m['step_time_s'] * (total - step))}"
  if "cumulative_flops" in m:
    line += f" | {format_flops(m['cumulative_flops'])}FLOP"
  return line


def console(line: str, enabled: bool = True) -> None:
  if enabled:
    print(line, file=sys.stdout, flush=True)
