"""Model hyper-parameters, independent of the experiment-config library."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# What each transformer block keeps for the backward pass (the rest is recomputed).
REMAT_POLICIES = {
    "none": None,                                                     # keep everything
    "full": jax.checkpoint_policies.nothing_saveable,                 # keep only block inputs
    "dots": jax.checkpoint_policies.checkpoint_dots,                  # keep matmul outputs
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # ... but not attention's
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  kind: str = "lst"               # "lst" or "baseline"
  vocab_size: int = 0             # filled in from the dataset's vocabulary
  # Global latent transformer (the baseline's whole body).
  d_global: int = 256
  global_layers: int = 4
  global_heads: int = 4
  rope_theta: float = 5e5
  # Local encoder-patcher and decoder.
  d_local: int = 128
  local_heads: int = 4
  encoder_layers: int = 1
  decoder_layers: int = 2
  cross_attn_k: int = 2           # query vectors per patch
  window: int = 512               # sliding window of local self-attention, in tokens
  local_rope_theta: float = 1e4
  max_patch_len: int = 0          # longest patch the data may produce (0: from the data config)
  mlp_ratio: float = 8 / 3
  dtype: str = "float32"          # compute dtype; parameters stay fp32
  attention: str = "reference"    # see lst_jax.model.attention.IMPLEMENTATIONS
  remat: str = "none"             # rematerialize each block's activations: see REMAT_POLICIES
  scan_layers: bool = False       # global blocks stacked and run under one scan (deep models)

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  def mlp_dim(self, d: int) -> int:
    return max(32, int(round(self.mlp_ratio * d / 32)) * 32)
