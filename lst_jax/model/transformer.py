"""Pre-norm transformer blocks (RMSNorm, RoPE self-attention, SwiGLU) and stacks of them.

Used by the global latent transformer, the baseline, and the local encoder and
decoder layers; only the mask and RoPE theta differ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lst_jax.model import attention as attn
from lst_jax.model.layers import Linear, RMSNorm, SwiGLU, fused_dot, rope
from lst_jax.sharding import constrain

# What each block keeps for the backward pass, by config.model.remat (the rest is recomputed).
REMAT_POLICIES = {
    "none": None,                                                     # keep everything
    "full": jax.checkpoint_policies.nothing_saveable,                 # keep only block inputs
    "dots": jax.checkpoint_policies.checkpoint_dots,                  # keep matmul outputs
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # ... but not attention's
}


class SelfAttention(nnx.Module):

  def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               rope_theta: float = 1e4, implementation: str = "reference"):
    if dim % heads:
      raise ValueError(f"model dim {dim} is not divisible by {heads} heads")
    self.heads, self.head_dim = heads, dim // heads
    self.q = Linear(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.k = Linear(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.v = Linear(dim, dim, ("embed", "heads"), rngs=rngs, dtype=dtype)
    self.o = Linear(dim, dim, ("heads", "embed"), rngs=rngs, dtype=dtype)
    self.rope_theta, self.implementation = rope_theta, implementation

  def __call__(self, x_BTD, pos_BT, segment_BT, window: int | None = None):
    split = lambda y: y.reshape(y.shape[:-1] + (self.heads, self.head_dim))
    q, k, v = fused_dot(x_BTD, self.q, self.k, self.v)
    q, k = rope(split(q), pos_BT, self.rope_theta), rope(split(k), pos_BT, self.rope_theta)
    out_BTNH = attn.self_attention(q, k, split(v), segment_BT, window, self.implementation)
    return self.o(out_BTNH.reshape(x_BTD.shape))


class Block(nnx.Module):

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               rope_theta: float = 1e4, implementation: str = "reference"):
    self.attn_norm = RMSNorm(dim, rngs=rngs)
    self.attn = SelfAttention(dim, heads, rngs=rngs, dtype=dtype, rope_theta=rope_theta,
                              implementation=implementation)
    self.mlp_norm = RMSNorm(dim, rngs=rngs)
    self.mlp = SwiGLU(dim, mlp_dim, rngs=rngs, dtype=dtype)

  def __call__(self, x_BTD, pos_BT, segment_BT, window: int | None = None):
    x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), pos_BT, segment_BT, window)
    return x_BTD + self.mlp(self.mlp_norm(x_BTD))


def run_block(block: Block, x_BTD, pos_BT, segment_BT, window: int | None = None, remat: str = "none"):
  """One block, rematerialized by the named policy (REMAT_POLICIES)."""
  if remat == "none":
    return block(x_BTD, pos_BT, segment_BT, window)
  call = nnx.remat(lambda b, x, p, s: b(x, p, s, window), policy=REMAT_POLICIES[remat])
  return call(block, x_BTD, pos_BT, segment_BT)


class Transformer(nnx.Module):
  """A stack of blocks with a final norm: the global latent transformer, or the baseline's body.

  With `scan_layers` the blocks' parameters are stacked on a leading "layers" axis
  and run under one scan: compile time and program size stop growing with depth
  (what deep presets need); the unrolled loop lets XLA fuse across layers, which is
  a little faster for shallow CPU-sized models.
  """

  def __init__(self, dim: int, heads: int, layers: int, mlp_dim: int, *, rngs: nnx.Rngs,
               dtype=jnp.float32, rope_theta: float = 5e5, implementation: str = "reference",
               remat: str = "none", scan_layers: bool = False):
    make = lambda r: Block(dim, heads, mlp_dim, rngs=r, dtype=dtype, rope_theta=rope_theta,
                           implementation=implementation)
    if scan_layers:
      self.blocks = nnx.split_rngs(splits=layers)(nnx.vmap(make, in_axes=0, out_axes=0))(rngs)
    else:
      self.blocks = nnx.List([make(rngs) for _ in range(layers)])
    self.norm = RMSNorm(dim, rngs=rngs)
    self.remat, self.scan_layers = remat, scan_layers

  def __call__(self, x_BTD, pos_BT, segment_BT):
    def one(block, x):
      x = run_block(block, x, pos_BT, segment_BT, remat=self.remat)
      return constrain(x, ("act_batch", "act_length", "act_embed"))

    if self.scan_layers:
      x_BTD = nnx.scan(one, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(self.blocks, x_BTD)
    else:
      for block in self.blocks:
        x_BTD = one(block, x_BTD)
    return self.norm(x_BTD)
