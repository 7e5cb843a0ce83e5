"""What every command line of lst-jax shares: the --config flag and errors as one line, no traceback.

  _CONFIG = cli.config_flag()
  ...
  if __name__ == "__main__":
    cli.run(main)

`run` checks each `--config.KEY=...` against lst_jax.config's declaration before
absl parses the flags (so a typo gets `error: unknown key config.train.stepz (did
you mean config.train.steps?)`, not an ml_collections traceback), checks that the
experiment file exists, and turns a ConfigError or DataError raised by `main`
into `error: ...` and exit status 2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from lst_jax import config as config_lib
from lst_jax import storage
from lst_jax.config import ConfigError
from lst_jax.data.manifest import DataError

EXPERIMENTS = "experiments"


def config_flag(default: str | None = None, required: bool = True):
  """--config=experiments/X.py[:ARG] with every key overridable as --config.SECTION.KEY=VALUE."""
  holder = config_flags.DEFINE_config_file("config", default, "Experiment config file "
                                           f"({EXPERIMENTS}/NAME.py, or NAME.py:SIZE).", lock_config=True)
  if required and default is None:
    flags.mark_flag_as_required("config")
  return holder


def load_experiment(spec: str):
  """The ConfigDict of `NAME[:ARG]` (experiments/NAME.py) or `PATH.py[:ARG]`, as --config loads it."""
  path, _, arg = spec.partition(":")
  if not path.endswith(".py"):
    path = os.path.join(EXPERIMENTS, f"{path}.py")
  if not os.path.isfile(path):
    raise ConfigError(f"no experiment config {path!r}")
  module_spec = importlib.util.spec_from_file_location(f"_experiment_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def write_results(path: str, results: dict) -> None:
  """A command's figures as JSON (e.g. runs/bench.json), written whole or not at all."""
  storage.write_text(path, json.dumps(results, indent=2))
  print(f"written to {path}")


def fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _config_file(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def check_argv(argv: list[str]) -> None:
  """Raises ConfigError for a missing experiment file or an undeclared --config.KEY."""
  path = _config_file(argv)
  if path is not None:
    path = path.split(":")[0]
    if not os.path.isfile(path):
      available = sorted(f[:-3] for f in os.listdir(EXPERIMENTS) if f.endswith(".py") and not f.startswith("_")) \
          if os.path.isdir(EXPERIMENTS) else []
      raise ConfigError(f"no experiment config {path!r}" +
                        (f"; available in {EXPERIMENTS}/: {', '.join(available)}" if available else ""))
  config_lib.check_override_flags(argv)


def run(main) -> None:
  """absl's app.run(main), with config arguments checked first and config/data errors as one line."""
  try:
    check_argv(sys.argv)
  except ConfigError as e:
    fail(str(e))

  def guarded(argv):
    try:
      return main(argv)
    except (ConfigError, DataError, storage.StorageError) as e:
      fail(str(e))

  app.run(guarded)
