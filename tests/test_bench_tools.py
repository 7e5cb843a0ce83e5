"""The benchmark tools at tiny sizes, each run as its make target runs it (make bench, make
bench-generate, make bench-data), so that they cannot rot between the runs that measure: every
figure they write is a finite number, the times, rates and sizes positive, and the ratios they
report present. (The figures themselves are the README's, measured on an idle machine.)"""

import ast
import glob
import json
import math
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict:
  """One CPU device, as make runs the tools (not the suite's 8 fake ones); the suite's cheap compiles
  and XLA cache kept."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f and "ynn" not in f]
  return dict(os.environ, XLA_FLAGS=" ".join(flags + ["--xla_cpu_experimental_ynn_fusion_type="]))


def _run(*argv, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run(list(argv), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def _figures(tree, path=""):
  """(path, value) of every number in a JSON tree."""
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _figures(v, f"{path}/{k}")
  elif isinstance(tree, list):
    for i, v in enumerate(tree):
      yield from _figures(v, f"{path}/{i}")
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield path, tree


def _check_figures(result: dict, min_count: int) -> None:
  numbers = dict(_figures(result))
  assert len(numbers) >= min_count, numbers
  bad = {k: v for k, v in numbers.items() if not math.isfinite(v) or v <= 0}
  assert not bad, bad   # every figure here is a time, rate, size, count or ratio


def _make_recipe(target: str, **variables) -> list[str]:
  """The commands `make TARGET` runs (make -n), the venv setup's own left out."""
  r = subprocess.run(["make", "-n", target, *(f"{k}={v}" for k, v in variables.items())], cwd=REPO,
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  return [line for line in r.stdout.splitlines() if re.match(r"(\S*python\S* -m (data_prep|lst_jax)\.|mkdir )", line)]


@pytest.mark.slow
def test_make_bench_at_tiny_sizes(tmp_path):
  """make bench's own commands (reference-fill batches made by data_prep, then the bench reading them)
  with the tiny preset for the pair and the reference config. No scaling rows: each is one more LST
  compile (~8 s here) of the reference config's time_step, which the reference comparison runs."""
  batches, out = tmp_path / "runs" / "reference_fill.npz", tmp_path / "bench.json"
  args = f"--out={out} --steps=1 --matmul=256 --size=tiny --rows=2 --tokens=128 --reference_size=tiny --scaling="
  recipe = _make_recipe("bench", BENCH_BATCHES=batches, ARGS=args)
  assert [line.split()[:3] for line in recipe] == [
      ["mkdir", "-p", f"{batches.parent}/"], [".venv/bin/python", "-m", "data_prep.corpus.reference_fill"],
      [".venv/bin/python", "-m", "lst_jax.tools.bench"]], recipe
  assert f"--out={batches}" in recipe[1] and f"--batches={batches}" in recipe[2]
  for line in recipe:
    r = _run("bash", "-c", line.replace(".venv/bin/python", sys.executable, 1))
    assert r.returncode == 0, (line, r.stderr[-3000:])
  stdout = r.stdout
  result = json.loads(out.read_text())
  _check_figures(result, min_count=25)
  assert result["sizes"] == {"matmul": 256, "pair": "tiny", "rows": 2, "tokens": 128, "reference": "tiny"}
  for kind in ("lst_tiny", "baseline_tiny"):
    r = result[kind]
    assert {"step_s", "xla_flops", "peak_bytes", "loss", "real_tokens", "speech_units"} <= set(r), r
    assert r["speech_units"] >= 2 * 120   # speech-only rows: 2 x 128 tokens, all but BOS and <s> units
  assert result["flop_fraction_tiny"] < 10 and result["speech_speedup_tiny"] > 0
  assert 0 < result["flop_ratio_per_speech_second_1b"] < 1
  ref = result["reference_config"]
  assert ref["preset"] == "demo:tiny" and ref["rows"] == [4, 768, 256] and ref["batches"] == str(batches)
  assert 1500 <= ref["real_tokens"] <= 2400   # reference-fill batches: the 256-patch cap binds first
  assert "reference_recorded" not in result and "no comparison with its recorded time" in stdout
  assert result["scaling"] == {}
  for line in ("matmul peak (fp32 256^3)", "tiny LST train step", "speech seconds per second",
               "FLOP model, 1B shapes", "reference config (demo:tiny, fp32)", "peak step memory",
               f"written to {out}"):
    assert line in stdout, (line, stdout)


def test_bench_says_how_to_make_missing_batches(tmp_path):
  """Without the batches file, the bench says (as its one error line, before any compile) how to make it."""
  from lst_jax import storage
  from lst_jax.tools import bench
  with pytest.raises(storage.StorageError, match=r"--batches=.*none\.npz: no such file; make it with `python -m "
                                                 r"data_prep\.corpus\.reference_fill --out="):
    bench.load_reference_batches(str(tmp_path / "none.npz"))


@pytest.mark.slow
def test_make_bench_generate_at_tiny_sizes(tmp_path):
  out = tmp_path / "bench_generate.json"
  (line,) = _make_recipe("bench-generate", ARGS=f"--sizes=tiny --batch_sizes=1 --seconds=0.4 "
                                                 f"--uncached_seconds=0.2 --uncached_size=tiny --out={out}")
  r = _run("bash", "-c", line.replace(".venv/bin/python", sys.executable, 1))
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(out.read_text())
  _check_figures(result, min_count=8)
  row = result["throughput"]["tiny_batch_1"]
  assert set(row) == {"lst", "baseline", "lst_over_baseline"}
  assert row["lst_over_baseline"] == pytest.approx(row["lst"] / row["baseline"])
  c = result["cached_vs_uncached"]
  assert c["size"] == "tiny" and c["speech_seconds"] == 0.2
  assert c["speedup"] == pytest.approx(c["uncached_s"] / c["cached_s"])
  assert "tiny batch  1: speech seconds per second" in r.stdout and "tiny LST, 0.2 s of speech" in r.stdout


@pytest.mark.slow
def test_make_bench_data_at_tiny_sizes(dataset, tmp_path):
  """The loader on the suite's random dataset beside the tiny baseline's train step (the quickest to
  compile), per-document preparation of 40 utterances in every patching mode, data_prep.build of 200."""
  out = tmp_path / "bench_data.json"
  recipe = _make_recipe("bench-data", EXP="demo_baseline", SIZE="tiny", DATA_DIR=dataset.dir,
                        ARGS=f"--config.data.batch_size=2 --batches=3 --steps=1 --utterances=40 "
                             f"--build_utterances=200 --build_workers=1 --out={out}")
  assert [line.split()[2] for line in recipe] == ["data_prep.corpus.demo", "data_prep.maintenance.bench_loader"]
  assert "--config=experiments/demo_baseline.py:tiny" in recipe[1], recipe
  # The demo corpus build is make's (data/demo, minutes); the loader reads the suite's dataset instead.
  r = _run("bash", "-c", recipe[1].replace(".venv/bin/python", sys.executable, 1))
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(out.read_text())
  _check_figures(result, min_count=30)
  loader = result["loader_vs_step"]
  assert loader["loader_over_step"] == pytest.approx(loader["step_s"] / loader["loader_s_per_batch"])
  docs = result["documents"]
  assert docs["utterances"] == 40 and set(docs["modes"]) == {
      "static p=4", "aligned, silence separate", "aligned, silence merged",
      "mixed (aligned, silence separate with p=0.5)", "curriculum (aligned, silence separate, then static p=4)"}
  for m in docs["modes"].values():
    assert set(m) == {"per_epoch_utt_per_s", "per_epoch_patches_per_s", "from_string_utt_per_s",
                      "from_string_patches_per_s"}
  build = result["build"]
  assert build["utterances"] == 200 and build["workers"] == 1
  assert build["utt_per_s"] == pytest.approx(200 / build["seconds"]) and build["peak_rss_mb"] > 10
  for line in ("loader / step throughput", "train step (baseline)", "data_prep.build of 200", "curriculum",
               f"written to {out}"):
    assert line in r.stdout, (line, r.stdout)


def test_lst_jax_never_imports_or_runs_data_prep():
  """lst_jax is the training library; data_prep's commands run before it (make bench's batches
  included), never from it: no import of data_prep and no `-m data_prep.X` argument list."""
  offenders = []
  for path in glob.glob(os.path.join(REPO, "lst_jax", "**", "*.py"), recursive=True):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else
               [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else [])
      if any(re.fullmatch(r"data_prep(\.\w+)*", n) for n in names):
        offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno}")
  assert not offenders, offenders
