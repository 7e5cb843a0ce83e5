"""Analytic FLOP model of the LST and the baseline, per module (paper.md sec. 2 and 5).

Counts matrix multiplies only: a [m x k] @ [k x n] product is 2*m*n*k FLOPs;
norms, RoPE, softmax, masks and the optimizer update are left out (they are
elementwise and small next to the matmuls at real widths). The embedding
lookup is free. Training is taken as 3x the forward pass (the backward pass
computes two matmuls, input and weight gradients, for each forward one).

Every module has three numbers, all forward FLOPs for the whole batch:
  "forward": what the maths needs. Attention counts only the query/key pairs
    the mask allows, assuming one document per row (packing several documents
    only removes pairs): causal ~n(n+1)/2 per row, windowed a band of `window`
    keys; patch pooling attends to the tokens of each patch's encoder_window patches.
  "dense": what a dense implementation executes: full [n x n] score matrices
    whatever the mask, and all `patch_gather_width` gathered key slots of every patch.
  "executed": what lst_jax.model executes today: as "dense", except that
    self-attention over more than one block of queries runs in query blocks
    over only the key blocks they can reach (lst_jax.model.attention.self_attention).
Cross-attention projects keys and values once per token / patch vector (as
the model does) in all three.

Unlike the paper, which leaves the local encoder and decoder out of its
accounting, the totals count every module; "global_only" is the paper-style
number (the global transformer alone).
"""

from __future__ import annotations

import functools

import numpy as np

from lst_jax.model import attention
from lst_jax.model.cross_attention import CROSS_BLOCK
from lst_jax.config import ModelConfig

# Module names, in the order data flows through them.
LST_MODULES = ("embed", "encoder", "encoder_cross", "to_global", "global", "decoder_cross", "decoder", "head")
BASELINE_MODULES = ("embed", "global", "head")
ATTENTION_BLOCK = 128  # query block of lst_jax.model.attention.self_attention's windowed path


def matmul(m: int, n: int, k: int) -> int:
  """FLOPs of an [m x k] @ [k x n] product."""
  return 2 * m * n * k


def attended_pairs(n: int, window: int | None = None) -> int:
  """Query/key pairs a causal mask (optionally a sliding window) allows in one row of n."""
  w = n if window is None else min(window, n)
  return w * (w + 1) // 2 + (n - w) * w


def executed_pairs(n: int, window: int | None = None, block: int = ATTENTION_BLOCK) -> int:
  """Query/key pairs lst_jax.model.attention.self_attention computes in one row of n (same rule)."""
  if n <= block:
    return n * n
  if window is not None:
    keys_per_block = (-(-(window - 1) // block) + 1) * block
    if 2 * keys_per_block <= n:
      return -(-n // block) * block * keys_per_block
  block = max(block, -(-n // attention.MAX_CAUSAL_BLOCKS))
  total = 0
  for i in range(-(-n // block)):
    lo, hi = attention.causal_key_range(i, block, n, window)
    total += (hi - i * block) * (hi - lo)
  return total


KINDS = ("forward", "dense", "executed")


def _module(forward: int, dense: int | None = None, executed: int | None = None) -> dict:
  dense = forward if dense is None else dense
  executed = dense if executed is None else executed
  return {"forward": int(forward), "dense": int(dense), "executed": int(executed)}


def _add(*modules: dict) -> dict:
  return {k: sum(m[k] for m in modules) for k in KINDS}


def block_flops(rows: int, n: int, d: int, mlp: int, window: int | None = None) -> dict:
  """One pre-norm block over [rows, n, d]: q/k/v/o projections, scores and values, SwiGLU."""
  proj = 4 * matmul(rows * n, d, d) + 3 * matmul(rows * n, mlp, d)
  # Scores q.k and the weighted sum of values: 2*d FLOPs each per pair (all heads together).
  attn = lambda pairs: 2 * 2 * d * rows * pairs
  return _module(proj + attn(attended_pairs(n, window)), proj + attn(n * n),
                 proj + attn(executed_pairs(n, window)))


def stack_flops(layers: int, rows: int, n: int, d: int, mlp: int, window: int | None = None) -> dict:
  one = block_flops(rows, n, d, mlp, window)
  return {k: layers * v for k, v in one.items()}


def windowed_keys(tokens: int, patches: int, window: int) -> int:
  """Query/key pairs of a cross-attention window of `window` patches, causal, over one row:
  tokens per patch x sum over patches p of min(window, p + 1) (= tokens when window = 1)."""
  if patches <= 0:
    return 0
  return tokens * attended_pairs(patches, window) // patches


def patch_cross_flops(cfg: ModelConfig, rows: int, tokens: int, patches: int) -> dict:
  """Encoder pooling: max-pool -> k queries per patch, then per layer k queries over the tokens
  of the patch's window (its own patch and the encoder_window - 1 before it)."""
  d, k, slots, w = cfg.d_local, cfg.cross_attn_k, cfg.patch_gather_width, cfg.encoder_window
  pool = matmul(rows * patches, k * d, d)
  # q and o for the k queries of every patch, k and v once per token.
  proj = lambda queries: 2 * matmul(rows * queries * k, d, d) + 2 * matmul(rows * tokens, d, d)
  # Needed: patch p's k queries over the tokens of min(W, p + 1) patches, tokens/patches each
  # (W = 1: each token is a key of exactly one patch).
  needed = proj(patches) + 2 * 2 * d * rows * k * windowed_keys(tokens, patches, w)
  if w == 1:  # every gathered slot of every patch
    dense = proj(patches) + 2 * 2 * d * rows * patches * k * slots
  else:       # lst_jax.model.cross_attention.windowed_cross_attend: blocks of patches over a span of tokens
    width = min(tokens, (CROSS_BLOCK + w - 1) * slots)
    queries = patches if width >= tokens else -(-patches // CROSS_BLOCK) * CROSS_BLOCK
    dense = proj(queries) + 2 * 2 * d * rows * queries * k * width
  return _module(pool + cfg.encoder_layers * needed, pool + cfg.encoder_layers * dense)


def token_cross_flops(cfg: ModelConfig, rows: int, tokens: int, patches: int) -> dict:
  """Decoder: global outputs -> k vectors per patch, then per layer each token over the k vectors
  of the decoder_window patches before its target's patch."""
  d, k, w = cfg.d_local, cfg.cross_attn_k, cfg.decoder_window
  from_global = matmul(rows * patches, k * d, cfg.d_global)
  # q and o per token, k and v once per patch vector, scores and values over the keys per token.
  layer = lambda queries, keys: (2 * matmul(rows * queries, d, d) + 2 * matmul(rows * patches * k, d, d)
                                 + 2 * 2 * d * rows * queries * keys)
  needed = layer(tokens, 0) + 2 * 2 * d * rows * k * windowed_keys(tokens, patches, w)
  if w == 1:  # each token gathers the k vectors of one patch
    executed = needed
  else:       # lst_jax.model.cross_attention.windowed_cross_attend: blocks of tokens over a span of patches
    width = min(patches, CROSS_BLOCK + w)
    queries = tokens if width >= patches else -(-tokens // CROSS_BLOCK) * CROSS_BLOCK
    executed = layer(queries, width * k)
  return _module(from_global + cfg.decoder_layers * needed, from_global + cfg.decoder_layers * executed)


def lst_flops(cfg: ModelConfig, rows: int, tokens: int, patches: int) -> dict:
  """Forward FLOPs per module of the LST on [rows, tokens] tokens and [rows, patches] patches."""
  d, g = cfg.d_local, cfg.d_global
  return {
      "embed": _module(0),
      "encoder": stack_flops(cfg.encoder_layers, rows, tokens, d, cfg.mlp_dim(d), cfg.window),
      "encoder_cross": patch_cross_flops(cfg, rows, tokens, patches),
      "to_global": _module(matmul(rows * patches, g, cfg.cross_attn_k * d)),
      "global": stack_flops(cfg.global_layers, rows, patches, g, cfg.mlp_dim(g)),
      "decoder_cross": token_cross_flops(cfg, rows, tokens, patches),
      "decoder": stack_flops(cfg.decoder_layers, rows, tokens, d, cfg.mlp_dim(d), cfg.window),
      "head": _module(matmul(rows * tokens, cfg.vocab_size, d)),
  }


def baseline_flops(cfg: ModelConfig, rows: int, tokens: int) -> dict:
  """Forward FLOPs per module of the baseline: the global transformer over all tokens."""
  g = cfg.d_global
  return {
      "embed": _module(0),
      "global": stack_flops(cfg.global_layers, rows, tokens, g, cfg.mlp_dim(g)),
      "head": _module(matmul(rows * tokens, cfg.vocab_size, g)),
  }


def model_flops(cfg: ModelConfig, rows: int, tokens: int, patches: int = 0) -> dict:
  """Per-module forward FLOPs and totals for one batch; `patches` is ignored by the baseline.

  Returns {"modules": {name: {"forward", "dense", "executed"}}, "forward", "dense",
  "executed", "train" (= 3 x forward), "train_dense", "train_executed" (3 x each),
  "global_only" (paper-style: the global transformer's forward FLOPs only)}.
  Recomputation under rematerialization is not counted (as in MFU).
  """
  if cfg.kind == "lst":
    modules = lst_flops(cfg, rows, tokens, patches)
  elif cfg.kind == "baseline":
    modules = baseline_flops(cfg, rows, tokens)
  else:
    raise ValueError(f"unknown model kind {cfg.kind!r}")
  total = _add(*modules.values())
  return {"modules": modules, **total, "train": 3 * total["forward"], "train_dense": 3 * total["dense"],
          "train_executed": 3 * total["executed"], "global_only": modules["global"]["forward"]}


def speech_flops_per_second(cfg: ModelConfig, tokens: int, patch_size: int = 4, *, unit_rate: float) -> dict:
  """Forward FLOPs per second of audio on speech-only rows of `tokens` units at `unit_rate` units per
  second (the data's: manifest.unit_rate; no default, so no rate is assumed).

  The LST sees one patch per `patch_size` units (static patching); the baseline
  one position per unit. Mode tokens are ignored.
  """
  patches = -(-tokens // patch_size)
  f = model_flops(cfg, 1, tokens, patches)
  seconds = tokens / unit_rate
  return {k: f[k] / seconds for k in KINDS + ("global_only",)}


@functools.lru_cache(maxsize=65536)
def _document_forward(cfg: ModelConfig, tokens: int, patches: int) -> tuple[int, ...]:
  modules = model_flops(cfg, 1, tokens, patches)["modules"]
  return tuple(modules[m]["forward"] for m in modules)


def real_flops(cfg: ModelConfig, token_segment_BT, patch_segment_BP) -> dict[str, int]:
  """Forward FLOPs per module spent on one batch's real tokens: every packed document counted
  as a row of its own (its tokens and its patches; attention stays inside a document), padding
  slots not at all. Numpy segment ids [B, T] and [B, P] (0 = padding), as lst_jax.data.packing
  lays them out; training is 3x these.

  This is what a compute-matched comparison should equalize: the slot counts (`model_flops` on
  max_tokens/max_patches) charge the LST for the padding of rows its patch cap filled first.
  """
  names = LST_MODULES if cfg.kind == "lst" else BASELINE_MODULES
  total = [0] * len(names)
  tokens_BT, patches_BP = np.asarray(token_segment_BT), np.asarray(patch_segment_BP)
  width = int(max(tokens_BT.max(initial=0), patches_BP.max(initial=0))) + 1
  for row_t, row_p in zip(tokens_BT, patches_BP):
    per_doc_t, per_doc_p = np.bincount(row_t, minlength=width), np.bincount(row_p, minlength=width)
    for n_t, n_p in zip(per_doc_t[1:].tolist(), per_doc_p[1:].tolist()):
      if n_t:
        for i, f in enumerate(_document_forward(cfg, n_t, n_p)):
          total[i] += f
  return dict(zip(names, total))
