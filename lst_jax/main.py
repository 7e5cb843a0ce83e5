"""Entry point: python -m lst_jax.main --config=experiments/demo.py --workdir=runs/demo

Any config value can be overridden on the command line, e.g.
--config.train.steps=100 --config.data.dir=/data/mine.
"""

from __future__ import annotations

from absl import app, flags, logging

from lst_jax import cli, distributed

# Exit codes: 2 bad config, data or workdir (nothing ran); 3 a non-finite loss stopped the run;
# 4 a shard could not be read mid-run. Either way the last good checkpoint is kept.
EXIT_NONFINITE, EXIT_DATA = 3, 4

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
  from lst_jax.train.loop import TrainingError, train
  from lst_jax.train.workdir import WorkdirError
  try:
    train(_CONFIG.value, _WORKDIR.value, benchmarks=benchmark_callback)
  except WorkdirError as e:
    cli.fail(str(e), code=2)
  except TrainingError as e:
    cli.fail(str(e), code=EXIT_NONFINITE)
  except ShardError as e:
    cli.fail(f"{e}. Training stopped; its checkpoints are intact: rerun to resume once the data is "
             f"repaired", code=EXIT_DATA)


if __name__ == "__main__":
  cli.run(main)
