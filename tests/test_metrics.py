"""Metrics people read: derived metrics against hand computations, JSONL + TensorBoard
event files, resume, console line, and the PNG curves of lst_jax.tools.plot."""

import glob
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from lst_jax.tools import plot as plot_lib
from lst_jax.train import metrics
from lst_jax.train.metrics import Accounting, MetricsWriter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_bits_and_speech_bits_per_second():
  assert metrics.bits(math.log(2)) == pytest.approx(1.0)
  assert metrics.bits(2.0) == pytest.approx(2.0 / 0.6931471805599453)
  # 1.5 nats per unit at 25 units/s = 37.5 nats/s = 54.1 bits/s.
  assert metrics.speech_bits_per_second(1.5, 25.0) == pytest.approx(37.5 / 0.6931471805599453)
  assert metrics.speech_bits_per_second(1.5, unit_rate=50.0) == pytest.approx(75.0 / 0.6931471805599453)
  with pytest.raises(TypeError):
    metrics.speech_bits_per_second(1.5)   # no assumed unit rate: the caller gives the data's


def test_mfu_and_peak():
  # 1 TFLOP per step in 0.5 s on devices peaking at 4 TFLOP/s together: half.
  assert metrics.mfu(1e12, 0.5, 4e12) == pytest.approx(0.5)
  assert metrics.peak_flops_per_second("TPU v4", 8) == pytest.approx(8 * 275e12)
  assert metrics.peak_flops_per_second("TPU v5 lite", 4) == pytest.approx(4 * 197e12)
  assert metrics.peak_flops_per_second("TPU v5p", 1) == pytest.approx(459e12)
  assert metrics.peak_flops_per_second("NVIDIA H100 80GB HBM3", 8) == pytest.approx(8 * 989e12)
  assert metrics.peak_flops_per_second("cpu", 8) is None
  assert metrics.peak_flops_per_second("cpu", 2, per_device=1e11) == pytest.approx(2e11)


def test_accounting_hand_computed():
  acc = Accounting(flops_per_step=2e9, peak_flops_per_s=1e11, unit_rate=25.0)
  r1 = acc({"step": 2, "loss": 3.0, "text_loss": 2.0, "speech_loss": 4.0, "real_tokens": 100.0, "lr": 1e-3})
  assert r1["text_bits_per_token"] == pytest.approx(2.0 / math.log(2))
  assert r1["speech_bits_per_unit"] == pytest.approx(4.0 / math.log(2))
  assert r1["speech_bits_per_second"] == pytest.approx(4.0 * 25 / math.log(2))
  assert r1["cumulative_flops"] == 4e9
  assert r1["tokens_seen"] == 200.0                       # 100 per step over steps 1-2
  assert "text_tokens_seen" not in r1                      # the step did not report them
  assert "mfu" not in r1                                   # the first window holds the compile: not timed
  r2 = acc({"step": 4, "loss": 2.5, "text_loss": 2.0, "speech_loss": 3.0, "real_tokens": 150.0,
            "real_text_tokens": 100.0, "real_speech_tokens": 50.0, "step_time_s": 0.04, "lr": 1e-3})
  assert r2["tokens_seen"] == 500.0                       # + 150 x 2
  assert r2["text_tokens_seen"] == 200.0 and r2["speech_tokens_seen"] == 100.0  # counted from here on
  assert r2["cumulative_flops"] == 8e9
  assert r2["flops_per_s"] == pytest.approx(2e9 / 0.04)   # 50 GFLOP/s
  assert r2["mfu"] == pytest.approx(0.5)                  # of 100 GFLOP/s
  ev = acc({"step": 4, "heldout_interleaved_loss": 2.0, "heldout_interleaved_text_loss": 1.0,
            "heldout_interleaved_speech_loss": 2.0})
  assert ev["heldout_interleaved_text_bits_per_token"] == pytest.approx(1 / math.log(2))
  assert ev["heldout_interleaved_speech_bits_per_unit"] == pytest.approx(2 / math.log(2))
  assert ev["heldout_interleaved_speech_bits_per_second"] == pytest.approx(50 / math.log(2))
  assert ev["cumulative_flops"] == 8e9 and ev["tokens_seen"] == 500.0
  # Resumed at step 4 after those records: tokens continue from the record at step 4, not later ones.
  later = {"step": 6, "loss": 1.0, "text_loss": 1.0, "speech_loss": 1.0, "tokens_seen": 9999.0}
  resumed = Accounting(2e9, start_step=4, previous=[r1, r2, ev, later])
  r3 = resumed({"step": 6, "loss": 2.0, "text_loss": 2.0, "speech_loss": 2.0, "real_tokens": 10.0})
  assert r3["tokens_seen"] == 520.0 and r3["cumulative_flops"] == 12e9
  assert r3["text_tokens_seen"] == 200.0
  assert "mfu" not in resumed({"step": 8, "loss": 2.0, "text_loss": 2.0, "speech_loss": 2.0,
                               "step_time_s": 0.1})  # no peak known (CPU): no MFU


def test_cumulative_tokens():
  records = [{"step": 0, "heldout_interleaved_loss": 5.0}, {"step": 5, "loss": 4, "real_tokens": 10.0},
             {"step": 10, "loss": 3, "real_tokens": 20.0}, {"step": 12, "loss": 3, "real_tokens": 5.0}]
  assert metrics.cumulative_tokens(records) == {0: 0.0, 5: 50.0, 10: 150.0, 12: 160.0}


def _tb_scalars(workdir):
  """{tag: [(step, value)]} from the TensorBoard event files (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_writer_jsonl_and_tensorboard(tmp_path):
  w = MetricsWriter(str(tmp_path))
  w.write({"step": 0, "heldout_interleaved_loss": 5.0, "heldout_interleaved_text_loss": 5.5})
  w.write({"step": 1, "heldout_unimodal_text_bits_per_token": 7.5})
  w.write({"step": 2, "loss": np.float32(3.0), "text_loss": 2.0, "speech_loss": 4.0, "lr": 1e-3,
           "mfu": 0.25, "cumulative_flops": 4e9, "tokens_seen": 200.0, "final": True, "note": "x"})
  w.close()
  records = metrics.read_records(str(tmp_path))
  assert [r["step"] for r in records] == [0, 1, 2]
  assert records[2]["loss"] == 3.0 and isinstance(records[2]["loss"], float) and "time" in records[2]
  tb = _tb_scalars(str(tmp_path))
  assert tb["heldout/interleaved_loss"] == [(0, 5.0)] and tb["heldout/interleaved_text_loss"] == [(0, 5.5)]
  assert tb["heldout/unimodal_text_bits_per_token"] == [(1, 7.5)]
  assert tb["train/loss"] == [(2, 3.0)] and tb["train/text_loss"] == [(2, 2.0)]
  assert tb["perf/mfu"] == [(2, 0.25)] and tb["progress/cumulative_flops"] == [(2, 4e9)]
  assert tb["train/lr"][0][1] == pytest.approx(1e-3)
  assert not any(t.endswith(("/step", "/time", "/final", "/note")) for t in tb)
  # Other processes write nothing.
  other = tmp_path / "other"
  MetricsWriter(str(other), enabled=False).write({"step": 1, "loss": 1.0})
  assert not other.exists()


def test_writer_resume_drops_records_past_the_checkpoint(tmp_path):
  w = MetricsWriter(str(tmp_path))
  for step in (0, 2, 4, 6):
    w.write({"step": step, "loss": float(step)})
  w.write({"step": 4, "final": True, "heldout_interleaved_loss": 1.0})  # a finished attempt's last evaluation
  w.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 8, "lo')  # killed mid-line
  assert [r["step"] for r in metrics.read_records(str(tmp_path))] == [0, 2, 4, 6, 4]
  w = MetricsWriter(str(tmp_path), resume_step=4)
  w.write({"step": 6, "loss": 60.0})
  w.close()
  assert [(r["step"], r["loss"]) for r in metrics.read_records(str(tmp_path))] == [(0, 0), (2, 2), (4, 4), (6, 60)]
  # TensorBoard: the new attempt's step 6 replaces the old one (purge_step=5 in the second file).
  assert _tb_scalars(str(tmp_path))["train/loss"][-1] == (6, 60.0)


def test_heldout_names_one_per_quantity():
  assert metrics.interleaved("text_bits_per_token") == "heldout_interleaved_text_bits_per_token"
  assert metrics.unimodal("text_bits_per_token") == "heldout_unimodal_text_bits_per_token"
  assert metrics.tb_tag("heldout_interleaved_speech_bits_per_second") == "heldout/interleaved_speech_bits_per_second"
  assert metrics.tb_tag("heldout_unimodal_speech_units") == "heldout/unimodal_speech_units"
  # Earlier versions' names: the loop's heldout_<q>, the runner's heldout/<q> and eval JSON section.
  old = {"step": 4, "heldout_loss": 2.0, "heldout_text_bits_per_token": 1.5, "heldout/text_bits_per_token": 1.7,
         "loss": 3.0, "bench/toy/S->S/acc_sum": 0.5}
  assert metrics.renamed(old) == {"step": 4, "heldout_interleaved_loss": 2.0,
                                  "heldout_interleaved_text_bits_per_token": 1.5,
                                  "heldout_unimodal_text_bits_per_token": 1.7, "loss": 3.0,
                                  "bench/toy/S->S/acc_sum": 0.5}
  new = metrics.renamed(old)
  assert metrics.renamed(new) == new and list(new)[1] == "heldout_interleaved_loss"   # today's kept, order too
  from lst_jax.eval import evaluate
  assert evaluate.coverage({"heldout": {"text_bits_per_token": 1.0}}) == \
      evaluate.coverage({"heldout_unimodal": {"text_bits_per_token": 1.0}}) == {"heldout_unimodal": 1}


def test_run_logged_under_the_old_names_reads_and_resumes(tmp_path):
  """A metrics.jsonl written before the held-out names: read under today's names, and a resume rewrites
  the records it keeps under them (one run, one set of names)."""
  old = [{"time": 1.0, "step": 0, "heldout_loss": 5.0, "heldout_text_bits_per_token": 7.0},
         {"time": 2.0, "step": 2, "loss": 3.0},
         {"time": 3.0, "step": 2, "heldout/text_bits_per_token": 6.0},
         {"time": 4.0, "step": 4, "heldout_loss": 4.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
  records = metrics.read_records(str(tmp_path))
  assert [r["step"] for r in records if "heldout_interleaved_loss" in r] == [0, 4]
  assert records[2] == {"time": 3.0, "step": 2, "heldout_unimodal_text_bits_per_token": 6.0}
  w = MetricsWriter(str(tmp_path), tensorboard=False, resume_step=2)
  w.write({"step": 4, "heldout_interleaved_loss": 3.5})
  w.close()
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert lines[:3] == records[:3] and lines[3]["heldout_interleaved_loss"] == 3.5 and len(lines) == 4
  assert not any(k.startswith(("heldout_loss", "heldout/")) for r in lines for k in r)


def test_progress_line():
  base = {"loss": 3.0, "text_loss": 2.0, "speech_loss": 4.0, "lr": 1e-3}
  assert metrics.progress_line(2, 10, base) == \
      "step      2/10 | loss 3.000 (text 2.000, speech 4.000) | lr 1.00e-03"
  line = metrics.progress_line(4, 10, {**base, "tokens_per_s": 1234.0, "step_time_s": 30.0, "mfu": 0.412,
                                       "cumulative_flops": 8e15})
  assert line.endswith("| 1,234 tok/s | MFU 41.2% | ETA 3m00s | 8PFLOP")


def _synthetic_run(workdir, scale=1.0, with_flops=True):
  os.makedirs(workdir)
  acc = Accounting(flops_per_step=1e12 * scale)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    records = [{"step": 0, "heldout_interleaved_loss": 6.0, "heldout_interleaved_text_loss": 6.2,
                "heldout_interleaved_speech_loss": 5.8}]
    for step in range(10, 101, 10):
      records.append({"step": step, "loss": 6 - step / 40, "text_loss": 6.2 - step / 35,
                      "speech_loss": 5.8 - step / 50, "real_tokens": 1000.0, "lr": 1e-3})
      if step % 50 == 0:
        records.append({"step": step, "heldout_interleaved_loss": 6 - step / 45,
                        "heldout_interleaved_text_loss": 6.1 - step / 40,
                        "heldout_interleaved_speech_loss": 5.9 - step / 60})
    for r in records:
      r = acc(r) if with_flops else r
      f.write(json.dumps(r) + "\n")


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG_MAGIC and os.path.getsize(path) > 5000


def test_plot_positions_and_pngs(tmp_path):
  _synthetic_run(tmp_path / "lst")
  _synthetic_run(tmp_path / "baseline", scale=3.0)
  _synthetic_run(tmp_path / "old", with_flops=False)  # no FLOPs logged: tokens figure only
  runs = [plot_lib.load_run(str(tmp_path / n)) for n in ("lst", "baseline", "old")]
  assert plot_lib.position(runs[1], "flops", [0, 50, 55]).tolist() == [0, 150e12, 165e12]
  assert plot_lib.position(runs[2], "tokens", [25, 100]).tolist() == [25000.0, 100000.0]
  assert "flops" not in runs[2].x
  paths = plot_lib.plot(runs, str(tmp_path / "out"))
  assert sorted(os.path.basename(p) for p in paths) == ["loss_vs_flops.png", "loss_vs_tokens.png"]
  assert all(_is_png(p) for p in paths)


def test_plot_cli(tmp_path):
  _synthetic_run(tmp_path / "a")
  _synthetic_run(tmp_path / "b", scale=2.0)
  out = subprocess.run([sys.executable, "-m", "lst_jax.tools.plot", f"--workdir={tmp_path / 'a'},{tmp_path / 'b'}"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert out.returncode == 0, out.stderr
  for name in ("loss_vs_flops.png", "loss_vs_tokens.png"):
    assert _is_png(tmp_path / "plots" / name)            # default: the runs' common parent
  one = subprocess.run([sys.executable, "-m", "lst_jax.tools.plot", f"--workdir={tmp_path / 'a'}", "--logx"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert one.returncode == 0 and _is_png(tmp_path / "a" / "plots" / "loss_vs_tokens.png"), one.stderr
  missing = subprocess.run([sys.executable, "-m", "lst_jax.tools.plot", f"--workdir={tmp_path / 'nope'}"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
  assert missing.returncode == 2 and "no metrics.jsonl" in missing.stderr


def test_accounting_sums_real_flops_per_module_and_resumes():
  acc = Accounting(flops_per_step=2e9, executed_flops_per_step=3e9)
  r1 = acc({"step": 2, "loss": 1.0, "real_tokens": 10.0, "real_flops": 5e8, "real_flops_head": 1e8})
  assert r1["cumulative_real_flops"] == 1e9 and r1["cumulative_real_flops_head"] == 2e8  # 2 steps
  assert r1["cumulative_executed_flops"] == 6e9 and r1["cumulative_flops"] == 4e9
  r2 = acc({"step": 5, "loss": 1.0, "real_tokens": 10.0, "real_flops": 1e8, "real_flops_head": 0.0})
  assert r2["cumulative_real_flops"] == 1.3e9 and r2["cumulative_real_flops_head"] == 2e8
  resumed = Accounting(2e9, start_step=2, previous=[r1, r2])  # r2 lies past the checkpoint
  r3 = resumed({"step": 4, "loss": 1.0, "real_tokens": 10.0, "real_flops": 1e9, "real_flops_head": 1e8})
  assert r3["cumulative_real_flops"] == 3e9 and r3["cumulative_real_flops_head"] == 4e8
  assert "cumulative_executed_flops" not in r3
