"""Builds the model an experiment names."""

from __future__ import annotations

from flax import nnx

from lst_jax.model.baseline import Baseline
from lst_jax.config import ModelConfig
from lst_jax.model.lst import LST

MODELS = {model.kind: model for model in (LST, Baseline)}


def build_model(cfg: ModelConfig, seed: int = 0) -> nnx.Module:
  if cfg.kind not in MODELS:
    raise ValueError(f"unknown model kind {cfg.kind!r}; choose from {sorted(MODELS)}")
  if cfg.vocab_size <= 0:
    raise ValueError("model vocab_size must be set (from the dataset's vocabulary)")
  return MODELS[cfg.kind](cfg, rngs=nnx.Rngs(seed))
