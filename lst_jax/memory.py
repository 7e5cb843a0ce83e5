"""Analytic per-device memory of the train step, beside the FLOP model (lst_jax.flops).

Why: an ahead-of-time compile (lst_jax.tools.inspect) tells what XLA plans, but
only for a device kind at hand and after minutes of compiling a large preset;
picking a per-device batch, a remat policy or an fsdp count for a pod needs the
answer in milliseconds, before any compile, and broken down by what holds it.

`estimate(exp, (data, fsdp, tensor))` -> MemoryEstimate, bytes per device of (the mesh
shape may also be a {"data", "fsdp", "tensor"} mapping or a jax Mesh):
  params       fp32 parameters, each sharded as lst_jax.sharding's rules shard it
               (counted exactly from the abstract model: nnx.eval_shape, no allocation).
  optimizer    the optax state lst_jax.train.optimizer builds (AdamW's two moments,
               sharded like the parameters, and its counters), counted exactly likewise.
  gradients    fp32, sharded like the parameters; twice that under gradient
               accumulation (the running sum and one micro-batch's gradients).
  batch        the packed input rows of the device (int32 and bool columns).
  activations  what the backward pass keeps of one micro-batch (train.grad_accum_steps
               micro-batches run one after another): each block's saved residuals under
               config.model.remat, the score blocks of attention backends that keep them,
               and what no block rematerializes (cross-attentions, gathers, norms, logits).
  transient    the largest short-lived working set on top: the recompute of one block
               (under remat), the gradient of the fp32 logits over the vocabulary and the
               softmax beside it, and the optimizer update's per-parameter temporaries.
The activation terms follow what JAX's autodiff saves (jax.ad_checkpoint's saved
residuals: tests/test_memory.py checks them against it per block and policy, and the
whole step against XLA's compiled memory_analysis on CPU); XLA's fusion then drops or
merges some of them (masks, dtype casts), so the figure is an upper guide, not a plan.

Decisions use the compilers, not this model: it is 0.79-2.22x what XLA's TPU and GPU compilers
plan for the presets (README, "Compiled for its hardware"); the LSTs on GPU are furthest off
(1.8-2.2x), the baselines within 1.3x on both compilers. `lst_jax.tools.aot` compiles each
deployment and searches the fewest micro-batches that fit; this model is kept for its breakdown
(what holds the memory) and for answers in milliseconds.

Attention backends: "reference" and "xla" (jax.nn.dot_product_attention's XLA path)
materialize fp32 [queries x keys] scores per head and keep them for the backward pass;
"cudnn" and "pallas" (flash-style kernels) keep only the output and a log-sum-exp row.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np
from jax.sharding import AbstractMesh, NamedSharding

from lst_jax import config as config_lib
from lst_jax import flops as flops_lib
from lst_jax import sharding
from lst_jax import vocab as vocab_lib
from lst_jax.data import packing
from lst_jax.model import attention as attention_lib
from lst_jax.train import step as step_lib
from lst_jax.train.optimizer import make_optimizer

GiB = 2 ** 30
# Used when the experiment has no dataset vocabulary yet (vocab_size 0).
PAPER_VOCAB_SIZE = vocab_lib.PAPER.size
FLASH_BACKENDS = attention_lib.FLASH
DEFAULT_BUDGET = 0.75                 # of device memory: room for XLA's fragmentation and the runtime


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device of one train step (see the module docstring for each term)."""
  params: int
  optimizer: int
  gradients: int
  batch: int
  activations: int
  transient: int
  micro_rows: int        # rows per device in one micro-batch
  accum_steps: int
  mesh: tuple[int, int, int]

  @property
  def total(self) -> int:
    return self.params + self.optimizer + self.gradients + self.batch + self.activations + self.transient

  @property
  def state(self) -> int:
    """What lives between steps: parameters and optimizer state."""
    return self.params + self.optimizer

  def fraction(self, device_bytes: float) -> float:
    return self.total / device_bytes

  def as_dict(self) -> dict:
    """Every field and the total (bytes), for JSON reports."""
    return {**dataclasses.asdict(self), "mesh": list(self.mesh), "total": self.total}

  def describe(self) -> str:
    g = lambda n: f"{n / GiB:.2f}"
    return (f"{g(self.total)} GiB = params {g(self.params)} + optimizer {g(self.optimizer)} + gradients "
            f"{g(self.gradients)} + batch {g(self.batch)} + activations {g(self.activations)} + transient "
            f"{g(self.transient)} ({self.micro_rows} rows per device per micro-batch x {self.accum_steps})")


def mesh_shape_of(mesh_shape) -> tuple[int, int, int]:
  """(data, fsdp, tensor) from a tuple, a {"data", "fsdp", "tensor"} mapping or a jax Mesh."""
  shape = getattr(mesh_shape, "shape", mesh_shape)
  if hasattr(shape, "keys"):
    shape = tuple(shape.get(a, 1) for a in sharding.MESH_AXES)
  data, fsdp, tensor = (int(n) for n in shape)
  return data, fsdp, tensor


def _mesh(mesh_shape) -> AbstractMesh:
  data, fsdp, tensor = mesh_shape_of(mesh_shape)
  if min(data, fsdp, tensor) < 1:
    raise ValueError(f"mesh shape (data, fsdp, tensor) must be positive, got {(data, fsdp, tensor)}")
  return AbstractMesh((data, fsdp, tensor), sharding.MESH_AXES)


def _model_cfg(exp: config_lib.Experiment) -> config_lib.ModelConfig:
  m = exp.model
  return m if m.vocab_size > 0 else dataclasses.replace(m, vocab_size=PAPER_VOCAB_SIZE)


def _shard_bytes(leaf, spec_sharding) -> int:
  shape = spec_sharding.shard_shape(leaf.shape) if leaf.shape else ()
  return int(math.prod(shape)) * np.dtype(leaf.dtype).itemsize


def state_bytes(exp: config_lib.Experiment, mesh_shape) -> tuple[int, int]:
  """(parameter, optimizer-state) bytes per device, exact: the abstract train state sharded
  as lst_jax.train.step.state_shardings shards it, on an abstract mesh of that shape."""
  return _state_bytes(_model_cfg(exp), exp.optim, mesh_shape_of(mesh_shape))


@functools.lru_cache(maxsize=64)
def _state_bytes(model_cfg, optim_cfg, mesh_shape) -> tuple[int, int]:
  mesh = _mesh(mesh_shape)
  optimizer = make_optimizer(optim_cfg)
  _, abstract = step_lib.abstract_state(model_cfg, optimizer, 0)
  shardings = step_lib.state_shardings(abstract, optimizer, mesh, sharding.DEFAULT_RULES)
  total = lambda tree, shard: sum(_shard_bytes(x, s) for x, s in zip(
      jax.tree.leaves(tree), jax.tree.leaves(shard, is_leaf=lambda s: isinstance(s, NamedSharding))))
  return total(abstract.params, shardings.params), total(abstract.opt_state, shardings.opt_state)


def batch_row_bytes(tokens: int, patches: int) -> int:
  """Bytes of one packed row (lst_jax.data.packing's schema)."""
  return sum(np.asarray(v).nbytes for v in packing.empty_row(tokens, patches).values())


# ----------------------------------------------------------------------------- activations


def _norm(elements: int, c: int) -> int:
  """RMSNorm keeps its fp32 input and normalized values and its output in the compute dtype."""
  return elements * (8 + c) if c != 4 else elements * 8


def block_residual_bytes(n: int, d: int, heads: int, mlp: int, c: int, remat: str, attention: str,
                         window: int | None = None) -> int:
  """Bytes one pre-norm block (lst_jax.model.transformer.Block) keeps for the backward pass,
  per row of n positions: JAX's saved residuals under the remat policy, with c the bytes of
  the compute dtype. Scores count the query/key pairs self_attention computes (its blocked
  layouts: lst_jax.flops.executed_pairs)."""
  if remat == "full":
    return n * c * d                # the block's input
  flash = attention in FLASH_BACKENDS
  pairs = heads * flops_lib.executed_pairs(n, window)
  if remat == "none":
    # fp32 norm copies and the q/k/v/o activations (RoPE tables, norm and softmax rows aside),
    # the three SwiGLU [n x mlp] tensors and their products.
    per_pos = (16 + 12 * c) * d if c != 4 else 36 * d
    per_pos += 6 * c * mlp + 16 + 8 * heads + 16 * (d // heads // 2)
    # Scores: fp32 logits, masked logits and probabilities, the probabilities in the compute
    # dtype and two boolean masks; a flash kernel keeps only a log-sum-exp per query and head.
    # (jax.nn.dot_product_attention's XLA path keeps one fp32 copy fewer).
    scores = 4 * heads * n if flash else pairs * ((9 + c) if attention == "xla" else (14 + c if c != 4 else 18))
    return n * per_pos + scores
  # dots / dots_no_batch: the matmul outputs (q, k, v, o, gate, up, down: 4 [n x d] and two
  # [n x mlp]); "dots" also the score and value products.
  kept = n * (4 * c * d + 2 * c * mlp)
  if remat == "dots" and not flash:
    kept += 4 * pairs + n * c * d
  return kept


def block_weight_copy_bytes(d: int, mlp: int, c: int, remat: str) -> int:
  """Without remat a block also keeps its weights cast to the compute dtype (once per step,
  whatever the rows; whole, as gathered, under fsdp)."""
  return c * (4 * d * d + 3 * d * mlp) if remat == "none" and c != 4 else 0


def _block(cfg, n: int, d: int, heads: int, window: int | None) -> int:
  return block_residual_bytes(n, d, heads, cfg.mlp_dim(d), np.dtype(cfg.dtype).itemsize, cfg.remat,
                              cfg.attention, window)


def _small_attention(queries: int, keys_per_query: int, d: int, heads: int, c: int, attention: str) -> int:
  """Cross-attention over a handful of gathered keys per query (attention._small_kv, or
  jax.nn.dot_product_attention for xla/cudnn): fp32 queries and keys, values and
  probabilities in the compute dtype, softmax rows."""
  del attention  # the few keys make every backend's softmax small; one formula for all
  return 4 * queries * d + queries * keys_per_query * heads * (15 + c)


def local_residual_bytes(cfg: config_lib.ModelConfig, tokens: int, patches: int) -> int:
  """Bytes the LST's local modules keep per row outside their blocks (no remat applies to them):
  embedding, patch gathers and max-pool, encoder and decoder cross-attentions (W = 1 paths:
  each patch gathers patch_gather_width tokens, each token the k vectors of one patch) with
  their norms and projections, the final norm. Windowed cross-attention (encoder_window or
  decoder_window > 1) is counted as W = 1: its key spans are not modelled."""
  c, d, k = np.dtype(cfg.dtype).itemsize, cfg.d_local, cfg.cross_attn_k
  heads, width = cfg.local_heads, max(cfg.patch_gather_width, 1)
  total = tokens * (c * d + 4)                                     # embedding output, token ids
  enc = cfg.encoder_layers
  if enc:
    # The first layer's gathered tokens for the max-pool (two copies, the mask), pooled, queries.
    total += patches * (2 * c * width * d + width * d + c * d + c * k * d)
  for _ in range(enc):
    total += _norm(patches * k * d, c) + _norm(tokens * d, c)      # q_norm, kv_norm
    total += c * tokens * d                                        # the projected keys
    total += 4 * patches * width * d + c * patches * width * d     # fp32 keys, values per query
    total += _small_attention(patches * k, width, d, heads, c, cfg.attention) + c * patches * k * d
  total += c * patches * cfg.d_global + patches * 4               # to_global input and output
  total += c * patches * k * d                                    # from_global
  for _ in range(cfg.decoder_layers):
    total += _norm(tokens * d, c) + _norm(patches * k * d, c)      # q_norm, kv_norm
    total += 4 * tokens * k * d + c * tokens * k * d               # fp32 keys, values per token
    total += _small_attention(tokens, k, d, heads, c, cfg.attention) + c * tokens * d
  total += _norm(tokens * d, c)                                    # final norm
  return total


def activation_bytes(cfg: config_lib.ModelConfig, tokens: int, patches: int) -> dict[str, int]:
  """Saved residuals of one row, by part: "blocks" (every transformer block), "other" (what
  no remat covers: local cross-attention, gathers, norms, head input), "logits" (the fp32
  [tokens x vocab] log-softmax the loss keeps), and "recompute" (one block's full residuals,
  rebuilt at once in the backward pass under a remat policy; 0 without one); and, once per
  step rather than per row, "weights" (block_weight_copy_bytes of every block)."""
  if cfg.kind == "lst":
    g_n = patches
    local = [(tokens, cfg.d_local, cfg.local_heads, cfg.window)] * (cfg.encoder_layers + cfg.decoder_layers)
    other = local_residual_bytes(cfg, tokens, patches)
    head_n, head_d = tokens, cfg.d_local
  else:
    g_n, local = tokens, []
    c = np.dtype(cfg.dtype).itemsize
    other = tokens * (c * cfg.d_global + 4)                        # embedding output, token ids
    head_n, head_d = tokens, cfg.d_global
  c = np.dtype(cfg.dtype).itemsize
  shapes = [(g_n, cfg.d_global, cfg.global_heads, None)] * cfg.global_layers + local
  blocks = sum(_block(cfg, *s) for s in shapes)
  other += _norm(g_n * cfg.d_global, c) + c * head_n * head_d       # global final norm, head input
  recompute = 0
  if cfg.remat != "none":
    none = dataclasses.replace(cfg, remat="none")
    recompute = max(_block(none, *s) for s in set(shapes))
  weights = sum(block_weight_copy_bytes(s[1], cfg.mlp_dim(s[1]), c, cfg.remat) for s in shapes)
  return {"blocks": blocks, "other": other, "weights": weights, "logits": head_n * (4 * cfg.vocab_size + 9),
          "recompute": recompute}


# ----------------------------------------------------------------------------- the estimate


def rows_per_device(exp: config_lib.Experiment, mesh_shape) -> int:
  """Rows of the global batch one device holds: the batch is split over data x fsdp."""
  data, fsdp, _ = mesh_shape_of(mesh_shape)
  return -(-exp.data.batch_size // (data * fsdp))


def estimate(exp: config_lib.Experiment, mesh_shape, accum_steps: int | None = None) -> MemoryEstimate:
  """Bytes per device of the experiment's train step on a (data, fsdp, tensor) mesh, with
  train.grad_accum_steps micro-batches (or `accum_steps`). A vocab_size of 0 (no dataset
  read yet) counts the paper's vocabulary. Tensor parallelism is taken to split the
  activations and logits evenly (an approximation: the rules split heads and vocabulary)."""
  mesh_shape = mesh_shape_of(mesh_shape)
  cfg = _model_cfg(exp)
  accum = accum_steps or exp.train.grad_accum_steps
  rows = rows_per_device(exp, mesh_shape)
  micro = -(-rows // accum)
  tensor = mesh_shape[2]
  params, optimizer = state_bytes(exp, mesh_shape)
  d = exp.data
  tokens, patches = (d.max_tokens, d.max_patches) if cfg.kind == "lst" else (d.max_tokens, 0)
  act = activation_bytes(cfg, tokens, patches)
  per_row = act["blocks"] + act["other"] + act["logits"]
  activations = (micro * per_row + act["weights"]) // tensor
  # The loss's backward pass holds the fp32 logits' gradient beside the kept log-softmax,
  # plus one block's recompute; the optimizer update a parameter-sized temporary.
  logits_work = micro * 4 * tokens * cfg.vocab_size // tensor
  transient = max(logits_work, micro * act["recompute"] // tensor) + params
  gradients = params * (2 if accum > 1 else 1)
  return MemoryEstimate(params=params, optimizer=optimizer, gradients=gradients,
                        batch=rows * batch_row_bytes(d.max_tokens, d.max_patches), activations=activations,
                        transient=transient, micro_rows=micro, accum_steps=accum, mesh=mesh_shape)


def as_dict(est: MemoryEstimate | None) -> dict | None:
  """est.as_dict(), passing None through (a report that has no estimate)."""
  return None if est is None else est.as_dict()


def fits(exp: config_lib.Experiment, mesh_shape, device_bytes: float, budget: float = DEFAULT_BUDGET,
         accum_steps: int | None = None) -> bool:
  """Whether the step's estimate stays within `budget` of the device's memory."""
  return estimate(exp, mesh_shape, accum_steps).total <= budget * device_bytes
