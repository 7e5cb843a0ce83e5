"""A run's checkpoint read back for use (evaluation, generation, export): read-only, parameters only.

The training loop saves a Composite of `state` (TrainState: step, params, opt_state)
and `data` (the iterator position), see lst_jax/train/checkpoint.py. Here the
directory is opened read-only (nothing is deleted or written, so this can run
beside a training job) and only the parameters are restored, into their sharded
abstract targets; the optimizer state is never allocated.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from flax import nnx

from lst_jax import config as config_lib
from lst_jax import sharding, storage
from lst_jax.data import datasets, pipeline
from lst_jax.data.manifest import DataError
from lst_jax.train import step as step_lib


def restore(config, workdir: str, step: int | None = None):
  """(exp, manifest, vocab, mesh, setup, params, step) of <workdir>'s checkpoint `step` (default latest)."""
  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  try:
    storage.check_reachable(workdir, "--workdir")
  except storage.StorageError as e:
    raise DataError(str(e)) from None
  datasets.check_run_provenance(workdir, manifest, record=False)
  ckpt_dir = storage.join(workdir, "checkpoints")
  steps = available_steps(ckpt_dir)
  if not steps:
    raise DataError(f"{workdir!r} has no checkpoints (looked in {ckpt_dir}); train first")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise DataError(f"{ckpt_dir} has no checkpoint for step {step}; available: {', '.join(map(str, steps))}")
  mesh = sharding.make_mesh(exp.mesh.data, exp.mesh.fsdp, exp.mesh.tensor)
  setup = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed)
  try:
    params = restore_params(ckpt_dir, step, setup.abstract, setup.shardings)
  except (ValueError, TypeError, KeyError) as e:   # orbax names the first parameter that does not fit
    raise DataError(f"checkpoint {step} in {ckpt_dir} does not fit the {exp.model.kind} model this config "
                    f"describes (was it trained with another config?): {str(e).splitlines()[0][:300]}") from None
  return exp, manifest, vocab, mesh, setup, params, int(step)


def restore_model(config, workdir: str, step: int | None = None):
  """(model, exp, manifest, vocab, step): the checkpoint's model as an nnx module (decoding)."""
  exp, manifest, vocab, _, setup, params, step = restore(config, workdir, step)
  return nnx.merge(setup.graphdef, params), exp, manifest, vocab, step


def _manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(storage.absolute(directory), options=ocp.CheckpointManagerOptions(read_only=True))


def available_steps(directory: str) -> list[int]:
  if not storage.isdir(directory):
    return []
  manager = _manager(directory)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def restore_params(directory: str, step: int, abstract, shardings):
  """The parameters of checkpoint `step`, laid out by `shardings.params` (a TrainState of shardings)."""
  target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract.params, shardings.params)
  manager = _manager(directory)
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item={"params": target}, partial_restore=True,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(
                                         {"params": target}))))
  finally:
    manager.close()
  params = out.state["params"]
  missing = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
             if not isinstance(leaf, jax.Array)]
  if missing:   # a partial restore leaves what the checkpoint lacks abstract
    raise ValueError(f"the checkpoint has no parameter {missing[0]} ({len(missing)} of the model's "
                     f"parameters are missing)")
  return params
