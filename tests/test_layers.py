"""The import layers of ../shared/DESIGN.md hold (contracts in pyproject.toml, checked by import-linter)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
  lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  r = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
  assert "Contracts: 4 kept, 0 broken." in r.stdout


def test_the_config_loads_without_the_library_or_jax():
  code = ("import sys, lst_jax.config; "
          "print(sorted(m for m in sys.modules if m.startswith('lst_jax') or m.split('.')[0] == 'jax'))")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == "['lst_jax', 'lst_jax.config']"
