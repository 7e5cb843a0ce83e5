"""The train state, its shardings, and the jitted train and eval steps.

The model is split into a static graph definition and a parameter state; the
steps are plain `jax.jit` functions of (state, batch) with explicit in/out
shardings, and the train step donates the old state.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from lst_jax import sharding
from lst_jax import vocab as vocab_lib
from lst_jax.config import ModelConfig
from lst_jax.model.factory import build_model
from lst_jax.train import losses
from lst_jax.train.optimizer import OptimizerConfig, make_optimizer, schedule


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: Any


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def abstract_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int):
  """(graphdef, abstract TrainState) without allocating any parameter."""
  graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, seed)), nnx.Param)
  opt_state = jax.eval_shape(optimizer.init, params)
  return graphdef, TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=opt_state)


def state_shardings(abstract: TrainState, optimizer: optax.GradientTransformation, mesh: Mesh, rules):
  """Parameters by their logical axes; optimizer moments like their parameters; scalars replicated."""
  params = sharding.param_shardings(abstract.params, mesh, rules)
  rep = sharding.replicated(mesh)
  opt = optax.tree_map_params(optimizer, lambda _, s: s, abstract.opt_state, params,
                              transform_non_params=lambda _: rep, is_leaf=_is_var)
  return TrainState(step=rep, params=params, opt_state=opt)


def init_state(model_cfg: ModelConfig, optimizer, shardings: TrainState, seed: int) -> TrainState:
  """Initializes parameters directly into their shardings (never whole on one host)."""
  def init():
    params = nnx.state(build_model(model_cfg, seed), nnx.Param)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
  return jax.jit(init, out_shardings=shardings)()


def make_loss_fn(graphdef, vocab: vocab_lib.Vocab, mesh: Mesh | None = None, rules=sharding.DEFAULT_RULES):
  """loss_fn(params, batch) -> (mean loss over all targets of the global batch, loss sums).

  With a mesh, key activations are pinned to it by their logical axes while tracing."""
  def loss_fn(params, batch):
    with sharding.activation_sharding(mesh, rules) if mesh is not None else contextlib.nullcontext():
      # copy=True: fresh Variables at this trace level. Merged in place, the Variables of a
      # micro-batch scan's closure are of an outer trace, and remat or scanned layers inside
      # refuse to update them (TraceContextError).
      sums = losses.loss_sums(nnx.merge(graphdef, params, copy=True)(batch), batch, vocab)
    return losses.mean_losses(sums)["loss"], sums
  return loss_fn


def patch_statistics(batch, vocab: vocab_lib.Vocab) -> dict:
  """Speech patches in the batch: how many were aligned, their mean length, tokens truncated."""
  first_token = jnp.take_along_axis(batch["tokens"], batch["patch_first"], axis=1)
  speech = vocab.is_speech(first_token) & (batch["patch_segment"] > 0)
  n = jnp.maximum(jnp.sum(speech), 1).astype(jnp.float32)
  return {"aligned_patch_share": jnp.sum(speech & (batch["patch_aligned"] > 0)) / n,
          "mean_speech_patch_len": jnp.sum(jnp.where(speech, batch["patch_len"], 0)) / n,
          "truncated_tokens": jnp.sum(batch["truncated_tokens"]).astype(jnp.float32)}


def make_train_step(graphdef, optimizer, vocab: vocab_lib.Vocab, shardings: TrainState, mesh: Mesh,
                    lr_schedule: optax.Schedule, accum_steps: int = 1):
  """jit(step)(state, batch) -> (state, metrics): one AdamW update on the global batch.

  With accum_steps > 1 the batch is cut into that many micro-batches (every
  device keeps its share of rows in each), run one after another under a scan,
  and their summed gradients divided by the whole batch's target count: the
  same update as one big batch, in a fraction of the activation memory.
  A non-finite loss or gradient leaves the state as it was and sets
  metrics["nonfinite"] (the loop stops the run on it; it also checks the parameters
  before each checkpoint, with `all_finite`, outside this step's memory plan).
  """
  loss_fn = make_loss_fn(graphdef, vocab, mesh)
  sum_loss = lambda params, batch: (lambda out: (out[1]["all_nll"], out[1]))(loss_fn(params, batch))

  def gradients(params, batch):
    if accum_steps == 1:
      (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
      return sums, grads
    rows = batch["tokens"].shape[0]
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape((rows // accum_steps, accum_steps) + x.shape[1:]), 0, 1),
                         batch)

    def one(carry, mb):
      mb = {k: sharding.constrain(v, ("act_batch",) + (None,) * (v.ndim - 1)) for k, v in mb.items()}
      (_, sums), g = jax.value_and_grad(sum_loss, has_aux=True)(params, mb)
      return jax.tree.map(jnp.add, carry, (sums, g)), None

    zero_sums = jax.eval_shape(lambda: sum_loss(params, jax.tree.map(lambda x: x[0], micro))[1])
    init = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), (zero_sums, params))
    with sharding.activation_sharding(mesh):
      (sums, grads), _ = jax.lax.scan(one, init, micro)
    return sums, jax.tree.map(lambda g: g / jnp.maximum(sums["all_count"], 1.0), grads)

  def step(state: TrainState, batch):
    sums, grads = gradients(state.params, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    means, grad_norm = losses.mean_losses(sums), optax.tree.norm(grads)
    finite = jnp.isfinite(means["loss"]) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    metrics = {**means, "grad_norm": grad_norm, "nonfinite": (~finite).astype(jnp.float32),
               "lr": lr_schedule(state.step), "target_tokens": sums["all_count"],
               "content_targets": sums["text_count"] + sums["speech_count"],
               **token_counts(batch, vocab), **patch_statistics(batch, vocab)}
    return TrainState(step=state.step + 1, params=keep(params, state.params),
                      opt_state=keep(opt_state, state.opt_state)), metrics

  rep = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, rep), donate_argnums=0)


def all_finite(tree) -> jax.Array:
  """Whether every element of every leaf is finite (a norm would overflow on large finite values)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def token_counts(batch, vocab: vocab_lib.Vocab) -> dict:
  """Real (non-padding) positions of the batch: tokens, text pieces, speech units, patches."""
  real = batch["token_segment"] > 0
  tokens = batch["tokens"]
  text = real & vocab.is_text(tokens)
  count = lambda m: jnp.sum(m).astype(jnp.float32)
  return {"real_tokens": count(real), "real_text_tokens": count(text),
          "real_speech_tokens": count(real & vocab.is_speech(tokens)),
          "real_patches": count(batch["patch_segment"] > 0)}


def make_eval_step(graphdef, vocab: vocab_lib.Vocab, shardings: TrainState, mesh: Mesh):
  """jit(eval)(params, batch) -> loss sums and counts per modality."""
  def evaluate(params, batch):
    with sharding.activation_sharding(mesh):
      return losses.loss_sums(nnx.merge(graphdef, params)(batch), batch, vocab)
  return jax.jit(evaluate, in_shardings=(shardings.params, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything a run needs to step a model on a mesh, derived from its configs."""
  graphdef: Any
  abstract: TrainState
  shardings: TrainState
  optimizer: optax.GradientTransformation
  train_step: Any
  eval_step: Any
  model_cfg: ModelConfig
  seed: int

  def init(self) -> TrainState:
    return init_state(self.model_cfg, self.optimizer, self.shardings, self.seed)


def setup(model_cfg: ModelConfig, optim_cfg: OptimizerConfig, vocab: vocab_lib.Vocab, mesh: Mesh,
          seed: int = 0, rules=sharding.DEFAULT_RULES, accum_steps: int = 1) -> Setup:
  """Optimizer, abstract state, shardings and the jitted steps for one model on one mesh."""
  optimizer = make_optimizer(optim_cfg)
  graphdef, abstract = abstract_state(model_cfg, optimizer, seed)
  shardings = state_shardings(abstract, optimizer, mesh, rules)
  return Setup(graphdef=graphdef, abstract=abstract, shardings=shardings, optimizer=optimizer,
               train_step=make_train_step(graphdef, optimizer, vocab, shardings, mesh, schedule(optim_cfg),
                                              accum_steps),
               eval_step=make_eval_step(graphdef, vocab, shardings, mesh), model_cfg=model_cfg, seed=seed)
