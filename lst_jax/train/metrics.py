"""Metrics: one JSON line per logged step in <workdir>/metrics.jsonl, and a console line."""

from __future__ import annotations

import json
import os
import sys
import time


class MetricsWriter:

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = open(self.path, "a") if enabled else None

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, str)) else v)
             for k, v in record.items()}
    self._file.write(json.dumps({"time": round(time.time(), 3), **clean}) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self._file:
      self._file.close()


def read_records(workdir: str) -> list[dict]:
  """Every record written so far to <workdir>/metrics.jsonl (empty if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, total: int, m: dict) -> str:
  """One console line; throughput and ETA appear once a step has been timed."""
  line = (f"step {step:>6}/{total} | loss {m['loss']:.3f} (text {m['text_loss']:.3f}, "
          f"speech {m['speech_loss']:.3f}) | lr {m['lr']:.2e}")
  if "tokens_per_s" in m:
    line += f" | {m['tokens_per_s']:,.0f} tok/s | ETA {format_duration(m['step_time_s'] * (total - step))}"
  return line


def console(line: str, enabled: bool = True) -> None:
  if enabled:
    print(line, file=sys.stdout, flush=True)
