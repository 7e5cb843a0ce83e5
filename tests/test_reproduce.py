"""The study driver (lst_jax.tools.reproduce): its arithmetic by hand, and the whole path on a tiny plan."""

import json
import math
import os

import pytest

from lst_jax.tools import reproduce
from tests.conftest import tiny_config


def test_flops_to_reach_interpolates_in_log_flops():
  c = {"flops": [0.0, 1e9, 1e10, 1e11], "speech_bps": [200.0, 150.0, 100.0, 80.0]}
  f, how = reproduce.flops_to_reach(c, 100.0)
  assert how == "curve" and f == pytest.approx(1e10)
  f, how = reproduce.flops_to_reach(c, 125.0)     # halfway between 150 and 100: the geometric mean
  assert how == "curve" and f == pytest.approx(math.sqrt(1e9 * 1e10))
  f, how = reproduce.flops_to_reach(c, 160.0)     # reached by the first point after step 0
  assert (f, how) == (1e9, "curve")


def test_flops_to_reach_extrapolates_the_power_law():
  # loss = 1000 * F^-0.1 exactly: 50 is reached at F = (50/1000)^-10 = 20^10.
  flops = [0.0] + [k * 1e11 for k in range(1, 9)]   # evaluated every so many steps
  c = {"flops": flops, "speech_bps": [1e9] + [1000 * f ** -0.1 for f in flops[1:]]}
  fit = reproduce.power_law(c["flops"], c["speech_bps"])
  assert fit["a"] == pytest.approx(1000, rel=1e-6) and fit["b"] == pytest.approx(0.1, rel=1e-6)
  f, how = reproduce.flops_to_reach(c, 50.0)
  assert how == "fit" and f == pytest.approx(20.0 ** 10, rel=1e-5)
  flat = {"flops": [0.0, 1.0, 2.0, 3.0], "speech_bps": [5.0, 4.0, 4.0, 4.0]}
  assert reproduce.flops_to_reach(flat, 1.0) == (None, "never")


def test_efficiency_ratio_and_intervals():
  lst = {"flops": [0.0, 1e9, 2e9], "speech_bps": [200.0, 120.0, 100.0]}
  base = {"flops": [0.0, 1e9, 2e9, 4e9], "speech_bps": [200.0, 130.0, 110.0, 100.0]}
  r = reproduce.efficiency_ratio(lst, base)
  assert r["ratio"] == pytest.approx(2.0) and r["how"] == "curve"   # the baseline needs 4e9 for 100
  m = reproduce.mean_interval([1.0, 2.0, 3.0])
  assert m["mean"] == 2.0 and m["ci95"] == pytest.approx([2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)])


def test_plan_holds_the_issue_runs():
  specs = reproduce.plan()
  names = [s.name for s in specs]
  assert len(names) == len(set(names)) == 19
  middle = [s for s in specs if s.size == reproduce.MIDDLE]
  assert {s.seed for s in middle if s.pairing == "flop_matched" and s.patching == "static"} == {0, 1, 2}
  assert {s.kind for s in middle if s.pairing == "data_matched"} == {"lst", "baseline"}
  assert any(s.patching == "curriculum" for s in middle) and any(s.window > 1 for s in middle)
  assert [s.size for s in reproduce.plan(quick=True)] == [reproduce.SIZES[0]] * 2


@pytest.mark.slow
def test_study_end_to_end_on_a_tiny_plan(dataset, tmp_path, monkeypatch):
  """Both members train, the baseline FLOP-matched; the report, results and plots are written;
  a rerun reuses every finished run."""
  def small(spec, data_dir, steps):
    c = tiny_config(data_dir, spec.kind)
    c.size, c.pairing = spec.size, spec.pairing
    c.train.update(steps=steps, eval_every=2, checkpoint_every=3, log_every=1, seed=spec.seed)
    c.data.update(max_tokens=96, max_patches=64, batch_size=4)
    c.data.patching.strategy = spec.patching if spec.kind == "lst" else "static"
    return c
  monkeypatch.setattr(reproduce, "base_config", small)
  out = str(tmp_path / "study")
  specs = reproduce.plan(("study_s",), quick=True)
  lines = []
  reproduce.study(out, dataset.dir, specs, steps=6, max_items=None, log=lines.append)
  results = json.load(open(os.path.join(out, "results.json")))
  lst, base = (results["runs"][s.name] for s in specs)
  assert base["row"]["max_tokens"] != 64                      # the FLOP-matched row length
  assert lst["real_flops"] == pytest.approx(base["real_flops"], rel=0.15)
  assert len(lst["curve"]["flops"]) >= 3 and lst["curve"]["flops"] == sorted(lst["curve"]["flops"])
  assert set(lst["real_flops_by_module"]) >= {"encoder", "global", "decoder", "head"}
  a = results["analysis"]["sizes"]["study_s"]
  pair, bc, lc = a["pairs"][0], base["curve"], lst["curve"]   # the ratio, checked against the two curves
  assert pair["target_speech_bps"] == lc["speech_bps"][-1] and pair["lst_flops"] == lc["flops"][-1]
  reached = [f for f, y in zip(bc["flops"][1:], bc["speech_bps"][1:]) if y <= pair["target_speech_bps"] and f > 0]
  if reached:   # the baseline's curve gets there: interpolated between its points, never past the first
    assert pair["how"] == "curve" and bc["flops"][0] <= pair["baseline_flops_needed"] <= reached[0]
  else:         # extrapolated (past its last point) or never
    assert pair["how"] in ("fit", "never")
    assert (pair["baseline_flops_needed"] is None) == (pair["how"] == "never")
    assert pair["how"] == "never" or pair["baseline_flops_needed"] > bc["flops"][-1]
  assert (pair["ratio"] is None) == (pair["baseline_flops_needed"] is None)
  assert pair["ratio"] is None or pair["ratio"] == pytest.approx(pair["baseline_flops_needed"] / pair["lst_flops"])
  report = open(os.path.join(out, "REPORT.md")).read()
  assert "compute-efficiency ratio" in report and "study_s/flop_matched/lst_seed0" in report
  for name in ("study_s_speech.png", "study_s_text.png"):
    assert os.path.getsize(os.path.join(out, "plots", name)) > 1000
  again = []
  reproduce.study(out, dataset.dir, specs, steps=6, max_items=None, log=again.append)
  assert sum("finished earlier" in line for line in again) == 2
  assert json.load(open(os.path.join(out, "results.json")))["runs"] == results["runs"]
