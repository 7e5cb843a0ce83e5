"""Small building blocks. Parameters are fp32 and carry logical axis names
(`axes` metadata) that `lst_jax.sharding` maps onto the device mesh; compute
runs in `dtype` (bf16 or fp32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def param(rngs: nnx.Rngs, shape, axes, stddev: float | None = None, value: float | None = None) -> nnx.Param:
  """An fp32 parameter: normal(stddev) or a constant, tagged with logical axes."""
  if value is not None:
    x = jnp.full(shape, value, jnp.float32)
  else:
    x = stddev * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(x, axes=tuple(axes))


class Linear(nnx.Module):
  """y = x @ W, no bias (as in Llama-style models)."""

  def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], *, rngs: nnx.Rngs,
               dtype=jnp.float32, stddev: float | None = None):
    self.kernel = param(rngs, (d_in, d_out), axes, stddev if stddev is not None else d_in ** -0.5)
    self.dtype = dtype

  def __call__(self, x):
    return jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))


def fused_dot(x, *linears: Linear) -> list:
  """[x @ W for W in linears] as one matmul over the kernels stacked on a new middle axis
  (one product, and one transposed-operand gradient, instead of several: cheaper on CPU).
  The parameters stay separate, so layouts, shardings and checkpoints are unchanged."""
  dt = linears[0].dtype
  w = jnp.stack([l.kernel[...] for l in linears], axis=1).astype(dt)     # [d_in, n, d_out]
  y = jnp.einsum("...d,dnf->...nf", x.astype(dt), w)
  return [y[..., i, :] for i in range(len(linears))]


class Embed(nnx.Module):

  def __init__(self, vocab: int, dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.table = param(rngs, (vocab, dim), ("vocab", "embed"), stddev=1.0)
    self.dtype = dtype

  def __call__(self, ids):
    return jnp.take(self.table[...], ids, axis=0).astype(self.dtype)


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, *, rngs: nnx.Rngs, eps: float = 1e-5):
    self.scale = param(rngs, (dim,), ("norm",), value=1.0)
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...]).astype(x.dtype)


class SwiGLU(nnx.Module):

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32):
    self.gate = Linear(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.up = Linear(dim, hidden, ("embed", "mlp"), rngs=rngs, dtype=dtype)
    self.down = Linear(hidden, dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)

  def __call__(self, x):
    gate, up = fused_dot(x, self.gate, self.up)
    return self.down(jax.nn.silu(gate) * up)


def rope(x_BTNH, pos_BT, theta: float):
  """Rotary position embedding (rotate-half form) at integer positions."""
  h = x_BTNH.shape[-1]
  freq = theta ** (-jnp.arange(0, h // 2, dtype=jnp.float32) * 2.0 / h)
  angle_BTI = pos_BT[..., None].astype(jnp.float32) * freq
  sin, cos = jnp.sin(angle_BTI)[:, :, None, :], jnp.cos(angle_BTI)[:, :, None, :]
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)
