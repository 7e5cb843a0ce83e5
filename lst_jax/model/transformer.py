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
    q, k, v = self.queries_keys_values(x_BTD, pos_BT)
    return self.output(attn.self_attention(q, k, v, segment_BT, window, self.implementation))

  def queries_keys_values(self, x_XD, pos_X):
    """Queries, keys and values [..., N, H] of states x at positions pos (RoPE applied to q, k);
    shared by the training forward and cached decoding (lst_jax.decode.cache)."""
    split = lambda y: y.reshape(y.shape[:-1] + (self.heads, self.head_dim))
    q, k, v = fused_dot(x_XD, self.q, self.k, self.v)
    return rope(split(q), pos_X, self.rope_theta), rope(split(k), pos_X, self.rope_theta), split(v)

  def output(self, out_XNH):
    """[..., D]: the heads' outputs [..., N, H] projected back to the model width."""
    return self.o(out_XNH.reshape(out_XNH.shape[:-2] + (self.heads * self.head_dim,)))


class Block(nnx.Module):

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               rope_theta: float = 1e4, implementation: str = "reference"):
    self.attn_norm = RMSNorm(dim, rngs=rngs)
    self.attn = SelfAttention(dim, heads, rngs=rngs, dtype=dtype, rope_theta=rope_theta,
                              implementation=implementation)
    self.mlp_norm = RMSNorm(dim, rngs=rngs)
    self.mlp = SwiGLU(dim, mlp_dim, rngs=rngs, dtype=dtype)

  def __call__(self, x_BTD, pos_BT, segment_BT, window: int | None = None):
    return self.around(x_BTD, lambda y: self.attn(y, pos_BT, segment_BT, window))

  def around(self, x_XD, attend):
    """The block around its self-attention `attend(normed x)`: pre-norm attention then SwiGLU,
    each added to the residual stream (training runs a row, cached decoding one position)."""
    x_XD = x_XD + attend(self.attn_norm(x_XD))
    return x_XD + self.mlp(self.mlp_norm(x_XD))


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
      return self.norm(nnx.scan(one, in_axes=(0, nnx.Carry), out_axes=nnx.Carry)(self.blocks, x_BTD))
    return self.over_blocks(x_BTD, lambda i, block, x: one(block, x))

  def over_blocks(self, x_XD, run_block_i):
    """The unscanned stack: `run_block_i(i, block, x)` per layer, then the final norm (the training
    forward over rows, cached decoding over one position per row)."""
    if self.scan_layers:
      raise ValueError("a scanned stack runs under nnx.scan; unstack its layers first "
                       "(lst_jax.decode.cache.unstack_layers)")
    for i, block in enumerate(self.blocks):
      x_XD = run_block_i(i, block, x_XD)
    return self.norm(x_XD)
