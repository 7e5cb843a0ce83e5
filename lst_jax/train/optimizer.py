"""AdamW with linear warmup, cosine decay and global-norm clipping (paper.md sec. 5)."""

from __future__ import annotations

import jax
import optax

from lst_jax.config import OptimizerConfig


def schedule(cfg: OptimizerConfig) -> optax.Schedule:
  warmup = min(cfg.warmup_steps, max(cfg.total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(cfg.total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.final_lr_fraction)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """Weight decay applies to matrices only, not to norm scales."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask))
