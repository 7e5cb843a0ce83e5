"""Orbax checkpoints: the train state, the data iterator's position and the config, together."""

from __future__ import annotations

import json

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from absl import logging

from lst_jax import storage
from lst_jax.train.step import TrainState


def state_shapes(tree) -> dict:
  """{"params/body/0/attn/q/kernel/value": (d, d), ...} of a state pytree (arrays, abstract or saved)."""
  def name(path):
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
  return {name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (a full disk, a folder that cannot be written)."""


class Checkpointer:
  """Saves every `every` steps (async); keeps the last `keep` plus every `keep_every`-th step's;
  restores into sharded targets, falling back past a checkpoint that cannot be read."""

  def __init__(self, directory: str, every: int, keep: int, keep_every: int = 0):
    self._dir = storage.absolute(directory)  # a gs:// URL goes to Orbax as it is
    self.manager = ocp.CheckpointManager(
        self._dir,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             keep_period=keep_every or None,
                                             enable_async_checkpointing=True))

  def latest_step(self) -> int | None:
    if self.manager is None:  # closed: the folder's complete checkpoints (numbered folders)
      steps = [int(n) for n in storage.listdir(self._dir) if n.isdigit()] if storage.isdir(self._dir) else []
      return max(steps, default=None)
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data, config: dict | None = None, force: bool = False) -> bool:
    """`data`: a Grain dataset iterator (each process writes its own position file), another
    iterator with get_state() (saved as JSON by the primary process), or a JSON-able dict."""
    if isinstance(data, grain.DatasetIterator):
      data_arg = grain.checkpoint.CheckpointSave(data)
    else:
      data_arg = ocp.args.JsonSave(data.get_state() if hasattr(data, "get_state") else data)
    items = dict(state=ocp.args.StandardSave(state), data=data_arg)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, abstract: TrainState, shardings: TrainState, data=None):
    """(state, data). Given an iterator `data`, it is set to its saved position and returned;
    without one, a dict saved in its place is returned (else None)."""
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    items = dict(state=ocp.args.StandardRestore(target))
    as_json = storage.exists(storage.join(self._dir, str(step), "data", "metadata"))
    if as_json:
      items["data"] = ocp.args.JsonRestore()
    elif data is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    restored = out.get("data")
    if as_json and data is not None:
      data.set_state(restored)
      restored = data
    return out.state, restored

  def saved_run(self, step: int) -> tuple[dict | None, dict]:
    """(the config saved with checkpoint `step` or None, {state path: shape}) read from its
    metadata, without restoring anything; raises if the checkpoint cannot be read."""
    directory = storage.join(self._dir, str(step))
    config = None
    config_path = storage.join(directory, "config", "metadata")
    if storage.exists(config_path):
      config = json.loads(storage.read_text(config_path))
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # orbax warns about a metadata file old checkpoints lack
    try:
      meta = ocp.StandardCheckpointer().metadata(storage.join(directory, "state")).item_metadata
    finally:
      logging.set_verbosity(verbosity)
    return config, state_shapes(meta)

  def restore_latest_good(self, abstract: TrainState, shardings: TrainState, data=None):
    """(step, state, data) of the newest checkpoint that restores, or None if there is none.

    A checkpoint that fails to restore (truncated or corrupted files, e.g. a disk
    filled mid-write) is skipped with a warning, and the one before it used; the
    unreadable one is moved aside to <step>.unreadable (kept for inspection) so the
    resumed run can save that step again."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, data = self.restore(step, abstract, shardings, data)
        return step, state, data
      except Exception as e:  # orbax/tensorstore raise many types for unreadable files
        message = f"checkpoint at step {step} cannot be restored ({type(e).__name__}: {str(e)[:300]}); " \
                  f"moved aside to {step}.unreadable, falling back to the previous one"
        logging.warning(message)
        print(f"warning: {message}", flush=True)
        if jax.process_index() == 0:
          path = storage.join(self._dir, str(step))
          storage.rename(path, path + ".unreadable")
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices(f"moved aside checkpoint {step}")
        self.manager.reload()
    return None

  def set_aside(self, step: int, why: str) -> bool:
    """Moves checkpoint `step` (if there is one) to <step>.<why>, kept for inspection but never
    restored (e.g. parameters that diverged); True if there was one."""
    if self.manager is not None:
      self.manager.wait_until_finished()
    path = storage.join(self._dir, str(step))
    found = storage.isdir(path)
    if found and jax.process_index() == 0:
      storage.rename(path, f"{path}.{why}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    if self.manager is not None:
      self.manager.reload()
    return found

  def check_saved(self, step: int) -> None:
    """CheckpointWriteError if a save (in flight or finished) failed, e.g. a full disk."""
    try:
      self.manager.check_for_errors()
    except Exception as e:  # orbax/tensorstore raise many types for a failed write
      raise self.write_failed(step, e) from None

  def write_failed(self, step: int, error: Exception) -> "CheckpointWriteError":
    import logging as py_logging
    py_logging.disable(py_logging.CRITICAL)   # the failed save's threads log it again as the run ends
    text = str(error)
    why = text.rsplit(": ", 1)[-1].split(" [")[0] if "Failed to write" in text else text.splitlines()[0][:200]
    good = max((s for s in self.manager.all_steps() if s < step), default=None) if self.manager else None
    return CheckpointWriteError(
        f"a checkpoint could not be written in {self._dir} ({why}): the run stopped rather than train on "
        f"without one. Earlier checkpoints are kept (latest complete: {f'step {good}' if good is not None else 'none'}"
        f"); free space there (or fix the folder) and rerun the same command to resume")

  def close(self, check: bool = True) -> None:
    """Waits for a save in flight (so no half-written checkpoint is left) and closes; idempotent.
    `check`: a failed save raises CheckpointWriteError (else, when already failing, it is dropped)."""
    if self.manager is None:
      return
    try:
      self.manager.wait_until_finished()
      if check:
        self.check_saved(self.manager.latest_step() or 0)
    finally:
      try:
        self.manager.close()
      except Exception:  # noqa: BLE001 - a failed save surfaces above (or was already reported)
        if check:
          raise
      self.manager = None
