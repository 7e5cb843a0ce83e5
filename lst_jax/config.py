"""Experiment configs (ml_collections) -> checked, typed settings for each part.

An experiment file in experiments/ returns a ConfigDict with sections
`model`, `data`, `optim`, `train`, `mesh`. Everything is checked here before
anything compiles: an unknown key, a value of the wrong type or a value
outside its choices raises ConfigError naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing

import ml_collections

from lst_jax import presets

from lst_jax.data import patching as patching_lib
from lst_jax.data.patching import PatchingConfig
from lst_jax.data.pipeline import PipelineConfig
from lst_jax.model.attention import IMPLEMENTATIONS
from lst_jax.model.config import DTYPES, REMAT_POLICIES, ModelConfig
from lst_jax.model.factory import MODELS
from lst_jax.train.optimizer import OptimizerConfig


class ConfigError(ValueError):
  """An experiment config is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 1000
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 3    # the last N are kept ...
  keep_every: int = 0          # ... plus every K-th step's for good (0: none)
  grad_accum_steps: int = 1    # micro-batches per optimizer step (same update, less memory)
  peak_flops_per_device: float = 0.0  # for MFU; 0: the device's dense bf16 peak if known (TPU, H100, ...)
  eval_every: int = 0          # 0: evaluate only before the first and after the last step
  eval_batches: int = 0        # 0: the whole held-out split
  benchmark_every: int = 0     # run the likelihood benchmarks (lst_jax.eval) every N steps; 0: never
  benchmark_items: int = 0     # ... on the first N items of each (0: all)
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1               # -1: all devices left over
  fsdp: int = 1
  tensor: int = 1


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dir: str = "data/demo"
  batch_size: int = 8          # global rows per step
  max_tokens: int = 768
  max_patches: int = 256
  patching: str = patching_lib.STATIC      # static | aligned | mixed | curriculum
  patch_size: int = 4                  # static p
  max_patch_len: int = 16              # aligned patches longer than this are split
  silence: str = patching_lib.SILENCE_SEPARATE
  mixed_aligned_prob: float = 0.5
  curriculum_t1: float = 1 / 3         # fractions of training
  curriculum_t2: float = 2 / 3
  interleaved_weight: float = 0.33     # mixture of document streams (normalized)
  text_weight: float = 0.67
  speech_only_weight: float = 0.0
  packing_bins: int = 8
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Experiment:
  model: ModelConfig
  data: DataConfig
  optim: OptimizerConfig
  train: TrainConfig
  mesh: MeshConfig


CHOICES = {
    ("model", "kind"): tuple(MODELS),
    ("model", "dtype"): tuple(DTYPES),
    ("model", "attention"): IMPLEMENTATIONS,
    ("model", "remat"): tuple(REMAT_POLICIES),
    ("data", "patching"): patching_lib.STRATEGIES,
    ("data", "silence"): (patching_lib.SILENCE_SEPARATE, patching_lib.SILENCE_MERGED),
}
# Top-level labels of a preset (lst_jax.presets); they name, the sections define.
LABELS = {"size": tuple(presets.SIZES), "pairing": presets.PAIRINGS}
SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimizerConfig,
            "train": TrainConfig, "mesh": MeshConfig}
POSITIVE = {("data", "batch_size"), ("data", "max_tokens"), ("data", "max_patches"), ("data", "patch_size"),
            ("data", "max_patch_len"), ("train", "steps"), ("train", "log_every"),
            ("train", "checkpoint_every"), ("train", "keep_checkpoints"), ("train", "grad_accum_steps"), ("model", "d_global"),
            ("model", "global_layers"), ("model", "global_heads"), ("model", "d_local"),
            ("model", "local_heads"), ("model", "cross_attn_k"), ("model", "window"),
            ("optim", "learning_rate")}


def _check_type(section: str, key: str, value, expected):
  name = f"config.{section}.{key}"
  if expected is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if expected is bool or isinstance(value, bool):
    ok = isinstance(value, bool) and expected is bool
  else:
    ok = isinstance(value, expected)
  if not ok:
    raise ConfigError(f"{name} must be of type {expected.__name__}, got {type(value).__name__} {value!r}")
  return value


def _section(section: str, cls, cd: ml_collections.ConfigDict, **extra):
  hints = typing.get_type_hints(cls)
  allowed = {f.name for f in dataclasses.fields(cls)} - set(extra)
  values = dict(extra)
  for key, value in cd.items():
    if key not in allowed:
      raise ConfigError(f"unknown key config.{section}.{key}; allowed keys: {', '.join(sorted(allowed))}")
    expected = hints[key]
    expected = typing.get_origin(expected) or expected
    value = _check_type(section, key, value, expected)
    choices = CHOICES.get((section, key))
    if choices is not None and value not in choices:
      raise ConfigError(f"config.{section}.{key}={value!r} is not one of {', '.join(map(repr, choices))}")
    if (section, key) in POSITIVE and not value > 0:
      raise ConfigError(f"config.{section}.{key} must be positive, got {value!r}")
    values[key] = value
  return cls(**values)


def parse(config: ml_collections.ConfigDict, vocab_size: int = 0) -> Experiment:
  """Checks a ConfigDict and returns typed sections (model.vocab_size from the dataset)."""
  unknown = set(config.keys()) - set(SECTIONS) - set(LABELS)
  if unknown:
    raise ConfigError(f"unknown config section(s) {sorted(unknown)}; allowed: {sorted(SECTIONS)} "
                      f"(and the labels {', '.join(LABELS)})")
  for label, choices in LABELS.items():
    if label in config and config[label] not in choices:
      raise ConfigError(f"config.{label}={config[label]!r} is not one of {', '.join(map(repr, choices))}")
  get = lambda name: config.get(name, ml_collections.ConfigDict())
  exp = Experiment(
      model=_section("model", ModelConfig, get("model"), vocab_size=vocab_size),
      data=_section("data", DataConfig, get("data")),
      optim=_section("optim", OptimizerConfig, get("optim"), total_steps=0),
      train=_section("train", TrainConfig, get("train")),
      mesh=_section("mesh", MeshConfig, get("mesh")))
  exp = dataclasses.replace(exp, optim=dataclasses.replace(exp.optim, total_steps=exp.train.steps))
  d, m = exp.data, exp.model
  limit = patching_config(d).longest_patch()
  if m.max_patch_len == 0:
    exp = dataclasses.replace(exp, model=dataclasses.replace(m, max_patch_len=limit))
  elif m.kind == "lst" and limit > m.max_patch_len:
    raise ConfigError(f"data patches can be {limit} tokens long but config.model.max_patch_len="
                      f"{m.max_patch_len}; raise model.max_patch_len to at least {limit}")
  if not 0 <= d.curriculum_t1 <= d.curriculum_t2 <= 1:
    raise ConfigError(f"need 0 <= config.data.curriculum_t1 <= curriculum_t2 <= 1, got "
                      f"{d.curriculum_t1}, {d.curriculum_t2}")
  if min(d.interleaved_weight, d.text_weight, d.speech_only_weight) < 0 or not (
      d.interleaved_weight + d.text_weight + d.speech_only_weight) > 0:
    raise ConfigError("config.data mixture weights must be >= 0 and not all zero")
  if d.max_patches > d.max_tokens:
    raise ConfigError(f"config.data.max_patches={d.max_patches} exceeds max_tokens={d.max_tokens}")
  if m.d_local % m.local_heads or m.d_global % m.global_heads:
    raise ConfigError("config.model.d_local / d_global must be divisible by local_heads / global_heads")
  return exp


def patching_config(d: DataConfig) -> PatchingConfig:
  return PatchingConfig(strategy=d.patching, patch_size=d.patch_size, max_patch_len=d.max_patch_len,
                        silence=d.silence, mixed_aligned_prob=d.mixed_aligned_prob,
                        curriculum_t1=d.curriculum_t1, curriculum_t2=d.curriculum_t2)


def pipeline_config(d: DataConfig, local_batch: int, total_docs: int = 0) -> PipelineConfig:
  return PipelineConfig(batch_size=local_batch, max_tokens=d.max_tokens, max_patches=d.max_patches,
                        patching=patching_config(d), interleaved_weight=d.interleaved_weight,
                        text_weight=d.text_weight, speech_only_weight=d.speech_only_weight,
                        packing_bins=d.packing_bins, seed=d.seed, total_docs=total_docs)
