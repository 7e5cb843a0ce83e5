"""Device mesh and logical-axis sharding rules.

Every parameter carries logical axis names (`axes` metadata, e.g. ("embed",
"mlp")); a rules table maps each logical name to mesh axes of the
("data", "fsdp", "tensor") mesh. A dimension that the mapped mesh axes do not
divide stays replicated, so small test models shard on any mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Sequence

import jax
from absl import logging
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lst_jax.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axes (None: replicated). Parameters use embed/mlp/heads/vocab/norm;
# activations use the act_* names (batch over the data-parallel axes, features whole
# between blocks, heads and vocabulary split over tensor).
DEFAULT_RULES = (
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("layers", None),
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
)

_ACTIVATIONS: contextvars.ContextVar = contextvars.ContextVar("lst_jax_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=DEFAULT_RULES):
  """While tracing inside this context, `constrain` pins activations to the mesh."""
  token = _ACTIVATIONS.set((mesh, rules))
  try:
    yield
  finally:
    _ACTIVATIONS.reset(token)


def active_mesh() -> tuple[Mesh, tuple] | None:
  """(mesh, rules) of the enclosing activation_sharding context, or None."""
  return _ACTIVATIONS.get()


def constrain(x, axes: Sequence[str | None]):
  """Sharding constraint on an activation by logical axes; identity outside activation_sharding."""
  ctx = _ACTIVATIONS.get()
  if ctx is None:
    return x
  mesh, rules = ctx
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(axes, x.shape, mesh, rules)))


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence | None = None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh; -1 on `data` takes the devices left over.

  A mesh smaller than the device count uses the first devices (with a warning).

  Axis types are explicit (Auto) since jax.make_mesh's default changed across versions.
  """
  devices = list(devices) if devices is not None else jax.devices()
  if data == -1:
    if len(devices) % (fsdp * tensor):
      raise ConfigError(f"config.mesh: the {len(devices)} devices are not divisible by fsdp x tensor = "
                        f"{fsdp} x {tensor}; set config.mesh.fsdp / config.mesh.tensor to divide them")
    data = len(devices) // (fsdp * tensor)
  need = data * fsdp * tensor
  if need > len(devices) or need < 1:
    raise ConfigError(f"config.mesh data={data} x fsdp={fsdp} x tensor={tensor} needs {need} devices, "
                      f"but {len(devices)} are available; use config.mesh.data=-1 (all devices left over) "
                      f"or a smaller mesh")
  if need < len(devices):
    logging.warning("mesh uses %d of the %d devices", need, len(devices))
    devices = devices[:need]
  try:
    return jax.make_mesh((data, fsdp, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                         devices=devices)
  except NotImplementedError as e:   # a TPU torus whose axes the mesh's sizes cannot be made of
    raise ConfigError(f"config.mesh data={data} x fsdp={fsdp} x tensor={tensor} does not map onto the "
                      f"devices' torus ({str(e).splitlines()[0][:160]}); choose axis sizes that are "
                      f"products of the slice's dimensions (e.g. fsdp 8 on a v6e-64's 8x8)") from e


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules=DEFAULT_RULES) -> PartitionSpec:
  """PartitionSpec for one array from its logical axes; undivisible dims stay replicated."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name, dim in zip(axes, shape):
    mesh_axes = table.get(name) if name is not None else None
    if isinstance(mesh_axes, str):
      mesh_axes = (mesh_axes,)
    mesh_axes = tuple(a for a in (mesh_axes or ()) if a not in used and mesh.shape[a] > 1)
    size = math.prod(mesh.shape[a] for a in mesh_axes)
    if not mesh_axes or dim % size:
      spec.append(None)
      continue
    used.update(mesh_axes)
    spec.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
  return PartitionSpec(*spec)


def param_axes(var: nnx.Variable) -> tuple:
  """A parameter's logical axes; leading dimensions its `axes` do not name are stacked
  layers (nnx.vmap over blocks, for scan over layers)."""
  axes = tuple(var.get_metadata().get("axes") or ())
  return ("layers",) * (len(var.shape) - len(axes)) + axes


def param_shardings(abstract_state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for a (possibly abstract) parameter state, from each Param's `axes`.

  The result has the state's own tree structure (each Variable holding a
  NamedSharding), so it lines up with the parameters and with optimizer state.
  """
  def one(var):
    return var.replace(NamedSharding(mesh, logical_to_spec(param_axes(var), var.shape, mesh, rules)))
  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over the data-parallel axes; everything else replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles each process's rows into global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
