"""Command-line values that make no sense are one `error:` line and exit 2, before anything runs:
counts that would slice from the end, NaN sampling settings, unknown preset sizes (issue 25)."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module,arg,message", [
    ("lst_jax.generate", "--num=-1", "error: flag --num=-1: -1 is not a positive integer"),
    ("lst_jax.generate", "--temperature=nan", "error: flag --temperature=nan: --temperature must be a finite number"),
    ("lst_jax.eval.main", "--max_items=-4", "error: flag --max_items=-4: -4 is not a positive integer"),
    ("lst_jax.main", "--config=experiments/demo.py:nope",
     "error: flag --config=experiments/demo.py:nope: unknown size 'nope'; choose from demo, tiny")])
def test_a_senseless_flag_is_one_line(module, arg, message, tmp_path):
  argv = [sys.executable, "-m", module, f"--workdir={tmp_path / 'run'}"]
  if not arg.startswith("--config="):
    argv.append("--config=experiments/demo.py")
  r = subprocess.run(argv + [arg], cwd=REPO, capture_output=True, text=True, timeout=120,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 2 and r.stderr.startswith(message) and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert not (tmp_path / "run").exists()
