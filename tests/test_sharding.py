"""Sharding on 8 fake CPU devices: parameters follow the rules table; forward and
gradients on data, fsdp, tensor and mixed layouts match one device."""

import chex
import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax.data import pipeline
from lst_jax.train import step as step_lib


def _state(dataset, config, mesh):
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  run = step_lib.setup(exp.model, exp.optim, vocab, mesh)
  return exp, vocab, run.graphdef, run.init()


def test_logical_rules_table():
  mesh = sharding.make_mesh(2, 2, 2)
  assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
  assert sharding.logical_to_spec(("vocab", "embed"), (100, 64), mesh) == P("tensor", "fsdp")
  assert sharding.logical_to_spec(("norm",), (64,), mesh) == P(None)
  # a dimension the mesh axis does not divide stays replicated
  assert sharding.logical_to_spec(("vocab", "embed"), (101, 64), mesh) == P(None, "fsdp")
  assert sharding.logical_to_spec(("act_batch", "act_length", "act_embed"), (8, 16, 64), mesh) == \
      P(("data", "fsdp"), None, None)


@pytest.mark.parametrize("kind,scan", [pytest.param("lst", False, marks=pytest.mark.slow), ("baseline", False),
                                       pytest.param("lst", True, marks=pytest.mark.slow)])
def test_every_parameter_follows_the_rules_on_2x2x2(dataset, config, kind, scan):
  config.model.kind, config.model.scan_layers = kind, scan
  mesh = sharding.make_mesh(2, 2, 2)
  _, _, _, state = _state(dataset, config, mesh)
  checked = 0
  for path, var in jax.tree_util.tree_leaves_with_path(
      nnx.state(state.params), is_leaf=lambda x: isinstance(x, nnx.Variable)):
    axes = sharding.param_axes(var)
    assert len(axes) == var.get_value().ndim and None not in axes, path
    expected = sharding.logical_to_spec(axes, var.get_value().shape, mesh)
    assert var.get_value().sharding.spec == expected, (path, axes, var.get_value().sharding.spec)
    checked += 1
  assert checked > 10
  # The big matrices are really split: e.g. every MLP input kernel over fsdp x tensor.
  gates = [v.get_value() for p, v in jax.tree_util.tree_leaves_with_path(
      nnx.state(state.params), is_leaf=lambda x: isinstance(x, nnx.Variable)) if "gate" in str(p)]
  # (scanned global blocks have a replicated leading layers axis)
  assert gates and all(g.sharding.spec == P(*(None,) * (g.ndim - 2), "fsdp", "tensor") for g in gates)
  assert any(g.ndim == 3 for g in gates) == scan


@pytest.mark.slow
@pytest.mark.parametrize("layout", [(1, 8, 1), (1, 2, 4), (2, 2, 2)])  # data x fsdp x tensor
def test_forward_and_gradients_match_one_device(dataset, config, layout):
  exp = config_lib.parse(config, pipeline.vocab_of(dataset).size)
  batch = next(iter(pipeline.train_dataset(dataset, exp.data, 8)))
  results = []
  for mesh in (sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]), sharding.make_mesh(*layout)):
    _, vocab, graphdef, state = _state(dataset, config, mesh)
    loss_fn = step_lib.make_loss_fn(graphdef, vocab, mesh)
    (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        state.params, sharding.global_batch(batch, mesh))
    results.append((jax.device_get(loss), jax.device_get(grads)))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
  chex.assert_trees_all_close(results[1][1], results[0][1], atol=1e-6, rtol=1e-3)
