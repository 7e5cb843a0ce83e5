"""Entry point: python -m lst_jax.main --config=experiments/demo.py --workdir=runs/demo

Any config value can be overridden on the command line, e.g.
--config.train.steps=100 --config.data.dir=/data/mine.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import app, flags, logging

from lst_jax import cli, distributed

# Exit codes: 2 bad config, data or workdir (nothing ran); 3 a non-finite loss stopped the run;
# 4 a shard could not be read mid-run; 5 a checkpoint could not be written (a full disk).
# Either way the last good checkpoint is kept.
EXIT_NONFINITE, EXIT_DATA, EXIT_CHECKPOINT = 3, 4, 5

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go: a path all hosts share, "
                                "or gs://bucket/path (pods).")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()  # --multihost, --coordinator_address, --num_processes, --process_id, ...


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:  # before anything runs on a JAX backend
    topology = distributed.initialize(distributed.options_from_flags())
  except distributed.DistributedError as e:
    cli.fail(str(e))
  if topology is not None and topology.process_count > 1:
    print(topology.summary(), flush=True)
  from lst_jax.data.shards import ShardError  # these import jax: after flags are parsed
  from lst_jax.eval.runner import benchmark_callback
  from lst_jax.train.checkpoint import CheckpointWriteError
  from lst_jax.train.loop import TrainingError, train
  from lst_jax.train.workdir import WorkdirError
  _quiet_failed_saves()
  try:
    train(_CONFIG.value, _WORKDIR.value, benchmarks=benchmark_callback)
  except WorkdirError as e:
    cli.fail(str(e), code=2)
  except TrainingError as e:
    cli.fail(str(e), code=EXIT_NONFINITE)
  except CheckpointWriteError as e:
    # The failed save's background threads print tracebacks while the interpreter shuts down: the
    # lock and every finished file are released above, so end the process here.
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_CHECKPOINT)
  except ShardError as e:
    cli.fail(f"{e}. Training stopped; its checkpoints are intact: rerun to resume once the data is "
             f"repaired", code=EXIT_DATA)


def _quiet_failed_saves() -> None:
  """A checkpoint that cannot be written (a full disk) is reported as one line (CheckpointWriteError);
  Orbax would also log it from its threads. (tensorstore's callbacks into Orbax's closed event loop
  still print "Event loop is closed" tracebacks from C++, which no Python hook sees.)"""
  py_logging.getLogger("asyncio").setLevel(py_logging.CRITICAL)
  logging.get_absl_handler().addFilter(
      lambda record: "orbax" not in record.pathname or record.levelno < py_logging.ERROR)


if __name__ == "__main__":
  cli.run(main)
