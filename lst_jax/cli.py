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
import os
import re
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
  storage.write_json(path, results)
  print(f"written to {path}")


def fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def bounded(name: str, low: float | None = None, high: float | None = None, open_low: bool = False) -> None:
  """A float flag that must be a finite number within [low, high] ((low, high] with open_low): NaN passes
  absl's own bounds, so this is checked as a validator."""
  import math

  def ok(value) -> bool:
    if value is None:
      return True
    return math.isfinite(value) and (low is None or value > low or (value == low and not open_low)) and (
        high is None or value <= high)
  where = f"{'(' if open_low else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
  flags.register_validator(name, ok, message=f"--{name} must be a finite number in {where}")


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


_EXCEPTION_NAME = re.compile(r"^[\w.]*(Error|Exception): ")


def _first_line(message: str) -> str:
  """An absl flag error as one line: a config loader's embedded traceback reduced to its last line."""
  if "Traceback (most recent call last)" not in message:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())
  flag = message.split(": Error whilst parsing")[0].split("\n")[0]
  last = [line for line in message.splitlines() if line.strip()][-1].strip()
  return f"{flag}: {_EXCEPTION_NAME.sub('', last)}"


def _out_of_memory(message: str) -> str:
  """XLA's RESOURCE_EXHAUSTED message cut to its first line."""
  line = next((line for line in message.splitlines() if "RESOURCE_EXHAUSTED" in line), message)
  return line.split("RESOURCE_EXHAUSTED:", 1)[-1].strip()[:300]


def run(main) -> None:
  """absl's app.run(main), with config arguments checked first and config/data errors as one line."""
  try:
    check_argv(sys.argv)
  except ConfigError as e:
    fail(str(e))

  def parse(argv):  # absl's own parser prints "FATAL Flags parsing error" and a usage hint, exit 1
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(_first_line(str(e)))

  def guarded(argv):
    try:
      return main(argv)
    except (ConfigError, DataError, storage.StorageError) as e:
      fail(str(e))
    except KeyboardInterrupt:
      fail("interrupted (Ctrl-C)", code=130)
    except Exception as e:  # noqa: BLE001 - only device memory is turned into a line; the rest re-raised
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      fail(f"the accelerator ran out of memory ({_out_of_memory(str(e))}): lower config.data.batch_size, raise "
           f"config.train.grad_accum_steps, set config.model.remat, or shorten the rows; `python -m "
           f"lst_jax.tools.inspect` prints the memory a config needs")

  app.run(guarded, flags_parser=parse)
