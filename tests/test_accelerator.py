"""What an accelerator must get right, run on whatever platform jax sees: on CPU (make test)
the XLA backend against the reference and a train step on 8 fake devices against one; on a
GPU (make accel-check sets JAX_PLATFORMS to the accelerator) also cuDNN's fused attention,
on a TPU also Pallas splash attention, in bf16, and the device's step against the host CPU's.

The backends are the platform's: a GPU-only backend is not a case on CPU (not a skip)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax.data import pipeline
from lst_jax.model import attention as attn
from lst_jax.model.factory import build_model
from lst_jax.train import step as step_lib

PLATFORM = jax.default_backend()
BACKENDS = ["xla"] + {"gpu": ["cudnn"], "tpu": ["pallas"]}.get(PLATFORM, [])
# cuDNN's fused kernel takes bf16/fp16 only; on CPU fp32 keeps the comparison tight.
DTYPE = jnp.float32 if PLATFORM == "cpu" else jnp.bfloat16
TOL = {"atol": 1e-5, "rtol": 1e-4} if DTYPE == jnp.float32 else {"atol": 3e-2, "rtol": 3e-2}


def _packed_padded(t: int, heads: int = 4, head_dim: int = 64, seed: int = 0):
  """Two rows: three documents and padding; one document filling the row."""
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.normal(size=(2, t, heads, head_dim)), DTYPE) for _ in range(3))
  a, b = t // 3, t // 2
  seg = jnp.asarray([[1] * a + [2] * b + [3] * (t - a - b - 7) + [0] * 7, [1] * t], jnp.int32)
  return q, k, v, seg


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("t,window", [(96, None), (384, None), (384, 100)])  # one block, causal blocks, windowed
def test_self_attention_backend_matches_reference(backend, t, window):
  q, k, v, seg = _packed_padded(t)
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)

  def loss(impl):
    def f(q, k, v):
      out = attn.self_attention(q, k, v, seg, window, impl)
      return jnp.sum(out.astype(jnp.float32) * cot), out
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

  (_, ref), ref_grads = loss("reference")
  (_, out), grads = loss(backend)
  as32 = lambda x: np.asarray(x, np.float32)
  np.testing.assert_allclose(as32(out), as32(ref), **TOL)
  assert np.all(as32(out)[0, -7:] == 0)  # padding queries give zeros
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(as32(g), as32(r), **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_loss_and_gradients_match_reference_backend(dataset, config, backend):
  """The whole LST (local windowed, global causal and both cross-attentions) on a packed batch."""
  config.model.dtype = "float32" if DTYPE == jnp.float32 else "bfloat16"
  vocab = pipeline.vocab_of(dataset)
  batch = next(iter(pipeline.train_dataset(dataset, config_lib.parse(config, vocab.size).data, 8)))
  results = []
  for impl in ("reference", backend):
    config.model.attention = impl
    exp = config_lib.parse(config, vocab.size)
    graphdef, params = nnx.split(build_model(exp.model, seed=0), nnx.Param)
    loss_fn = step_lib.make_loss_fn(graphdef, vocab)
    results.append(jax.jit(jax.value_and_grad(lambda p: loss_fn(p, batch)[0]))(params))
  (loss_ref, g_ref), (loss, g) = results
  np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-5 if DTYPE == jnp.float32 else 2e-2)
  chex.assert_trees_all_close(g, g_ref, atol=1e-5 if DTYPE == jnp.float32 else 2e-2,
                              rtol=1e-3 if DTYPE == jnp.float32 else 1e-1)


def test_train_step_on_local_devices_matches_host_cpu(dataset, config):
  """Loss and gradients on a data-parallel mesh of every local device (8 fake CPUs in make test,
  the accelerator in make accel-check; fp32 matmuls in full precision, no TF32) equal one host
  CPU device's; the jitted train step on that mesh reports the same loss and updates every
  parameter."""
  config.optim.warmup_steps = 0   # a non-zero learning rate at step 0
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  batch = next(iter(pipeline.train_dataset(dataset, exp.data, 8)))
  results = []
  with jax.default_matmul_precision("float32"):
    for devices in (jax.devices("cpu")[:1], jax.local_devices()):
      mesh = sharding.make_mesh(-1, 1, 1, devices=devices)
      run = step_lib.setup(exp.model, exp.optim, vocab, mesh)
      state, gbatch = run.init(), sharding.global_batch(batch, mesh)
      loss_fn = step_lib.make_loss_fn(run.graphdef, vocab, mesh)
      (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.params, gbatch)
      results.append(jax.device_get((loss, grads)))
    before = jax.device_get(nnx.state(state.params))   # the step donates its state
    new_state, metrics = run.train_step(state, gbatch)
  (loss_cpu, grads_cpu), (loss, grads) = results
  assert np.isfinite(loss)
  np.testing.assert_allclose(loss, loss_cpu, rtol=1e-5)
  chex.assert_trees_all_close(grads, grads_cpu, atol=1e-6, rtol=1e-3)
  np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
  after = jax.device_get(nnx.state(new_state.params))
  changed = [bool(np.any(a != b)) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))]
  assert all(changed), changed
