"""Entry point: python -m lst_jax.main --config=experiments/demo.py --workdir=runs/demo

Any config value can be overridden on the command line, e.g.
--config.train.steps=100 --config.data.dir=/data/mine.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lst_jax import distributed
from lst_jax.config import ConfigError
from lst_jax.data.manifest import DataError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()  # --multihost, --coordinator_address, --num_processes, --process_id, ...


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  config_file = config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]  # path[:size]
  if not os.path.isfile(config_file):
    available = sorted(f for f in os.listdir("experiments") if f.endswith(".py") and not f.startswith("_")) \
        if os.path.isdir("experiments") else []
    print(f"error: no experiment config {config_file!r}; available in experiments/: {', '.join(available)}",
          file=sys.stderr)
    sys.exit(2)
  try:  # before anything runs on a JAX backend
    topology = distributed.initialize(distributed.options_from_flags())
  except distributed.DistributedError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if topology is not None and topology.process_count > 1:
    print(topology.summary(), flush=True)
  from lst_jax.train.loop import TrainingError, train  # imports jax: after flags are parsed
  try:
    train(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except TrainingError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
