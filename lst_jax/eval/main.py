"""Evaluates a checkpoint on likelihood benchmarks (S->S, T->T, S->T, T->S) and held-out losses.

  python -m lst_jax.eval.main --config=experiments/demo.py --workdir=runs/demo [--step=N]
      [--benchmarks=FILE_OR_DIR,...] [--directions=S->S,T->T] [--config.KEY=VALUE ...]

Restores the latest checkpoint of <workdir> (or --step), scores every benchmark
(default: <data dir>/benchmarks/*.jsonl; build the demo's with
`python -m data_prep.benchmarks --data_dir=data/demo`), prints a table and writes
<workdir>/eval/<step>.json (and the per-item scores to <step>.scores.jsonl).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (checkpoints/, data_provenance.json).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_BENCHMARKS = flags.DEFINE_list("benchmarks", None, "Benchmark JSONL files or directories "
                                "(default: <data dir>/benchmarks/).")
_DIRECTIONS = flags.DEFINE_list("directions", None, "Only these directions (default: all a benchmark gives).")
_OUTPUT = flags.DEFINE_string("output", None, "Result file (default: <workdir>/eval/<step>.json).")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", None, "Row length in tokens (default: config.data.max_tokens).")
_MAX_PATCHES = flags.DEFINE_integer("max_patches", None, "Row length in patches (default: config.data.max_patches).")
_MAX_ITEMS = flags.DEFINE_integer("max_items", None, "Only the first N items of each benchmark (a quick look).")
_NO_HELDOUT = flags.DEFINE_bool("no_heldout", False, "Skip the held-out losses.")
flags.mark_flags_as_required(["config", "workdir"])


def evaluate_checkpoint(config, workdir: str, step: int | None = None, benchmarks=None, directions=None,
                        output: str | None = None, heldout: bool = True, max_tokens: int | None = None,
                        max_patches: int | None = None, max_items: int | None = None, log=print) -> dict:
  """Restores <workdir>'s checkpoint `step` (default latest), evaluates it, writes and returns the result."""
  import json

  import jax

  from lst_jax import config as config_lib
  from lst_jax import sharding
  from lst_jax.data import datasets, pipeline
  from lst_jax.data.manifest import DataError
  from lst_jax.eval import checkpoint as ckpt_lib
  from lst_jax.eval import runner as runner_lib
  from lst_jax.train import step as step_lib

  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  datasets.check_run_provenance(workdir, manifest, record=False)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = ckpt_lib.available_steps(ckpt_dir)
  if not steps:
    raise DataError(f"{workdir!r} has no checkpoints (looked in {ckpt_dir}); train first")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise DataError(f"{ckpt_dir} has no checkpoint for step {step}; available: {', '.join(map(str, steps))}")
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  setup = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed)
  try:
    params = ckpt_lib.restore_params(ckpt_dir, step, setup.abstract, setup.shardings)
  except (ValueError, TypeError, KeyError) as e:   # orbax names the first parameter that does not fit
    raise DataError(f"checkpoint {step} in {ckpt_dir} does not fit the {exp.model.kind} model this config "
                    f"describes (was it trained with another config?): {str(e).splitlines()[0][:300]}") from None
  extra = {k: v for k, v in (("max_tokens", max_tokens), ("max_patches", max_patches)) if v is not None}
  if benchmarks is None and not runner_lib.default_paths(manifest):
    log(f"note: no benchmarks under {manifest.dir}/{runner_lib.BENCHMARK_DIR}/ (build the demo's with "
        f"`python -m data_prep.benchmarks --data_dir={manifest.dir}`); held-out losses only")
  runner = runner_lib.BenchmarkRunner.from_setup(setup, exp, manifest, mesh, paths=benchmarks, workdir=workdir,
                                                 heldout=heldout, directions=directions, max_items=max_items,
                                                 **extra)
  result = runner(params, with_scores=True)
  scores = result.pop("scores")
  result = {"step": int(step), "workdir": workdir, "model": exp.model.kind, "data": manifest.dir,
            "row_shape": {"max_tokens": runner.scorer.max_tokens, "max_patches": runner.scorer.max_patches,
                     "patching": f"static p={exp.data.patch_size}"}, **result}
  lead = jax.process_index() == 0
  if lead:
    output = output or os.path.join(workdir, "eval", f"{step}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".tmp", "w") as f:
      json.dump(result, f, indent=2)
    os.replace(output + ".tmp", output)
    base = output[:-5] if output.endswith(".json") else output
    with open(base + ".scores.jsonl", "w") as f:
      for s in scores:
        f.write(json.dumps(s) + "\n")
    log(f"{exp.model.kind} at step {step} ({workdir}); ranked by log-likelihood of each candidate given the prompt")
    log(runner_lib.format_table(result))
    log(f"wrote {output} ({result['seconds']:.1f} s)")
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)   # not the read-only checkpoint notes of orbax
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  if not os.path.isfile(config_file):
    print(f"error: no experiment config {config_file!r}", file=sys.stderr)
    sys.exit(2)
  from lst_jax.config import ConfigError
  from lst_jax.data.manifest import DataError
  from lst_jax.eval.benchmark import DIRECTIONS
  directions = _DIRECTIONS.value
  if directions:
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
      print(f"error: unknown direction(s) {bad}; choose from {', '.join(DIRECTIONS)}", file=sys.stderr)
      sys.exit(2)
  try:
    evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value, benchmarks=_BENCHMARKS.value,
                        directions=directions, output=_OUTPUT.value, heldout=not _NO_HELDOUT.value,
                        max_tokens=_MAX_TOKENS.value, max_patches=_MAX_PATCHES.value, max_items=_MAX_ITEMS.value)
  except (ConfigError, DataError) as e:   # BenchmarkError is a DataError
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
