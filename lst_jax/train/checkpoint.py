"""Orbax checkpoints of the train state together with the data iterator's position."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from lst_jax.train.step import TrainState


class Checkpointer:
  """Saves every `every` steps (async), keeps the last `keep`, restores into sharded targets."""

  def __init__(self, directory: str, every: int, keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data_state: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, step: int, abstract: TrainState, shardings: TrainState) -> tuple[TrainState, dict]:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    return out.state, out.data

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
