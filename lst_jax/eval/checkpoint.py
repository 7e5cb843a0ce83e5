"""Reading a training run's checkpoints for evaluation: read-only, parameters only.

The training loop saves a Composite of `state` (TrainState: step, params, opt_state)
and `data` (the iterator position), see lst_jax/train/checkpoint.py. Evaluation
opens the directory read-only (it never deletes or writes a checkpoint, so it can
run beside a training job) and restores only the parameters, into their sharded
abstract targets; the optimizer state is never allocated.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp

from lst_jax import storage


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
