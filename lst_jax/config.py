"""Every setting of an experiment, declared once: sections, defaults, choices, ranges, parsing.

An experiment is `Experiment(model, data, optim, train, mesh)`; each section is
a frozen dataclass whose fields carry their default, help text and allowed
values (`setting(...)`), so the command line, the checks and the docs read the
same declaration. `defaults()` turns the declaration into an ml_collections
ConfigDict holding every key (experiment files start from it, so every key can
be overridden on the command line); `parse()` turns a ConfigDict back into
typed sections, checked before anything compiles: an unknown key, a wrong type
or a value outside its choices or range raises ConfigError naming the key.

This module sits at the bottom of the layers (see ../DESIGN.md): it imports
nothing from lst_jax, so any stage can take its own section from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing

import ml_collections


class ConfigError(ValueError):
  """An experiment config is invalid; the message names the key."""


def setting(default, help: str = "", *, choices: tuple = (), low: float | None = None,
            high: float | None = None, positive: bool = False, derived: bool = False):
  """A config field: its default and what is allowed (low/high inclusive). `derived` fields are
  filled in by parse() (from the dataset or another section), never set by the user."""
  return dataclasses.field(default=default, metadata=dict(
      help=help, choices=tuple(choices), low=low, high=high, positive=positive, derived=derived))


# Choices that the code behind them keys on (tests check that each is implemented).
MODEL_KINDS = ("lst", "baseline")
DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLEMENTATIONS = ("reference", "xla", "cudnn", "pallas")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
STATIC, ALIGNED, MIXED, CURRICULUM = "static", "aligned", "mixed", "curriculum"
PATCHING_STRATEGIES = (STATIC, ALIGNED, MIXED, CURRICULUM)
SILENCE_SEPARATE, SILENCE_MERGED = "separate", "merged"
RESUME_MODES = ("auto", "with_changes", "archive_and_restart")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  kind: str = setting("lst", "the LST, or the baseline: its global transformer over tokens", choices=MODEL_KINDS)
  vocab_size: int = setting(0, "from the dataset's vocabulary", derived=True)
  # Global latent transformer (the baseline's whole body).
  d_global: int = setting(256, "width of the global transformer", positive=True)
  global_layers: int = setting(4, positive=True)
  global_heads: int = setting(4, positive=True)
  rope_theta: float = setting(5e5, positive=True)
  # Local encoder-patcher and decoder.
  d_local: int = setting(128, "width of the local encoder and decoder", positive=True)
  local_heads: int = setting(4, positive=True)
  encoder_layers: int = setting(1, low=0)
  decoder_layers: int = setting(2, low=0)
  cross_attn_k: int = setting(2, "query vectors per patch", positive=True)
  window: int = setting(512, "sliding window of local self-attention, in tokens", positive=True)
  local_rope_theta: float = setting(1e4, positive=True)
  encoder_window: int = setting(
      1, "encoder cross-attention window W, in patches: each patch's queries attend to the tokens of "
      "its own patch and of the W-1 patches before it, in its document; 1 = its own patch only",
      positive=True)
  decoder_window: int = setting(
      1, "decoder cross-attention window W, in patches: each token attends to the k vectors of the "
      "patch before its target's patch and of the W-1 patches before that, in its document; "
      "1 = that one patch only", positive=True)
  patch_gather_width: int = setting(
      0, "tokens each patch gathers when pooled: the longest patch the data makes", derived=True)
  mlp_ratio: float = setting(8 / 3, positive=True)
  dtype: str = setting("float32", "compute dtype; parameters and optimizer state stay fp32", choices=DTYPES)
  attention: str = setting("reference", "attention backend (lst_jax.model.attention)",
                           choices=ATTENTION_IMPLEMENTATIONS)
  remat: str = setting("none", "what each block keeps for the backward pass (lst_jax.model.transformer)",
                       choices=REMAT_POLICIES)
  scan_layers: bool = setting(False, "global blocks stacked and run under one scan (deep models)")

  @property
  def compute_dtype(self):
    import jax.numpy as jnp  # noqa: PLC0415  (the config itself needs no JAX)
    return jnp.dtype(self.dtype)

  def mlp_dim(self, d: int) -> int:
    return max(32, int(round(self.mlp_ratio * d / 32)) * 32)


@dataclasses.dataclass(frozen=True)
class PatchingConfig:
  """Which speech units share a patch (paper.md sec. 3; lst_jax.data.patching)."""
  strategy: str = setting(STATIC, "static | aligned | mixed | curriculum", choices=PATCHING_STRATEGIES)
  patch_size: int = setting(4, "static p (p=4 is 160 ms of 25 Hz units)", positive=True)
  max_patch_len: int = setting(16, "aligned segments longer than this are split", positive=True)
  silence: str = setting(SILENCE_SEPARATE, "aligned: silences as their own patches, or merged into words",
                         choices=(SILENCE_SEPARATE, SILENCE_MERGED))
  mixed_aligned_prob: float = setting(0.5, "mixed: chance that a document is patched aligned", low=0, high=1)
  curriculum_t1: float = setting(1 / 3, "curriculum: all aligned before this fraction of training",
                                 low=0, high=1)
  curriculum_t2: float = setting(2 / 3, "... all static after this one", low=0, high=1)

  def longest_patch(self) -> int:
    return self.patch_size if self.strategy == STATIC else max(self.patch_size, self.max_patch_len)


@dataclasses.dataclass(frozen=True)
class InterleaveConfig:
  """How an utterance becomes alternating text and speech spans (paper.md sec. 4)."""
  text_span_words: tuple = setting((5, 30), "inclusive range of a text span's words")
  max_text_fraction: float = setting(0.6, "of the utterance's words, per text span", low=0, high=1)
  speech_to_text_ratio: float = setting(0.5, "speech span words / previous text span words", positive=True)
  min_speech_words: int = setting(2, positive=True)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dir: str = setting("data/demo", "dataset directory (data_prep's output); several: comma-separated")
  batch_size: int = setting(8, "global rows per step", positive=True)
  max_tokens: int = setting(768, "T: token slots per row", positive=True)
  max_patches: int = setting(256, "P: patch slots (global positions) per row", positive=True)
  patching: PatchingConfig = PatchingConfig()
  interleave: InterleaveConfig = InterleaveConfig()
  # Mixture of document streams (normalized): the paper's 33% interleaved, 67% text.
  interleaved_weight: float = setting(0.33, low=0)
  text_weight: float = setting(0.67, low=0)
  speech_only_weight: float = setting(0.0, low=0)
  packing_bins: int = setting(8, "open rows of the first-fit packer", positive=True)
  seed: int = setting(0)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warmup, cosine decay and global-norm clipping (paper.md sec. 5)."""
  learning_rate: float = setting(4e-4, "peak", positive=True)
  warmup_steps: int = setting(2000, low=0)
  total_steps: int = setting(200_000, "config.train.steps", derived=True)
  final_lr_fraction: float = setting(0.01, "cosine decays to this fraction of the peak", low=0, high=1)
  b1: float = setting(0.9, low=0, high=1)
  b2: float = setting(0.95, low=0, high=1)
  weight_decay: float = setting(0.1, low=0)
  clip_norm: float = setting(1.0, positive=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = setting(1000, positive=True)
  log_every: int = setting(10, positive=True)
  checkpoint_every: int = setting(100, positive=True)
  keep_checkpoints: int = setting(3, "the last N checkpoints are kept ...", positive=True)
  keep_every: int = setting(0, "... plus every K-th step's for good (0: none)", low=0)
  grad_accum_steps: int = setting(1, "micro-batches per optimizer step (same update, less memory)",
                                  positive=True)
  peak_flops_per_device: float = setting(
      0.0, "for MFU; 0: the device's dense bf16 peak if known (TPU, H100, ...)", low=0)
  eval_every: int = setting(0, "held-out loss every N steps; 0: only before the first and after the last",
                            low=0)
  eval_batches: int = setting(0, "0: the whole held-out split", low=0)
  benchmark_every: int = setting(0, "likelihood benchmarks (lst_jax.eval) every N steps; 0: never", low=0)
  benchmark_items: int = setting(0, "... on the first N items of each (0: all)", low=0)
  seed: int = setting(0)
  resume: str = setting(
      "auto", "a workdir holding a run: auto = resume it if its checkpoints fit this config, else refuse; "
      "with_changes = resume it although settings changed (its parameters must fit); "
      "archive_and_restart = move it to <workdir>/previous/<time>/ and start anew", choices=RESUME_MODES)
  lock_stale_s: float = setting(
      300.0, "a gs:// workdir's run lock not heartbeated for this many seconds may be taken over", positive=True)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = setting(-1, "-1: all devices left over", low=-1)
  fsdp: int = setting(1, positive=True)
  tensor: int = setting(1, positive=True)


@dataclasses.dataclass(frozen=True)
class Experiment:
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  optim: OptimizerConfig = OptimizerConfig()
  train: TrainConfig = TrainConfig()
  mesh: MeshConfig = MeshConfig()


SECTIONS = {f.name: f.type for f in dataclasses.fields(Experiment)}
# Top-level names an experiment may carry for reports (lst_jax.presets checks their values).
LABELS = ("size", "pairing")


def _is_section(tp) -> bool:
  return dataclasses.is_dataclass(tp)


def _hints(cls) -> dict:
  return typing.get_type_hints(cls)


def _user_fields(cls) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def _to_dict(cls) -> dict:
  hints = _hints(cls)
  out = {}
  for f in _user_fields(cls):
    out[f.name] = _to_dict(hints[f.name]) if _is_section(hints[f.name]) else f.default
  return out


def defaults() -> ml_collections.ConfigDict:
  """Every settable key with its default, as a ConfigDict (the base of every experiment file)."""
  c = ml_collections.ConfigDict(_to_dict(Experiment))
  for label in LABELS:
    c[label] = ""
  return c


def default_record() -> dict:
  """The defaults in the form a checkpoint records a config (to_dict's keys, as JSON reads back)."""
  return json.loads(json.dumps(_to_dict(Experiment)))


def keys(cls=Experiment, prefix: str = "config") -> list[str]:
  """Every settable key, dotted (config.model.kind, ...)."""
  hints, out = _hints(cls), []
  for f in _user_fields(cls):
    name = f"{prefix}.{f.name}"
    out += keys(hints[f.name], name) if _is_section(hints[f.name]) else [name]
  return out + ([f"{prefix}.{label}" for label in LABELS] if cls is Experiment else [])


def unknown_key_error(key: str) -> ConfigError:
  """`unknown key config.train.stepz (did you mean config.train.steps?)`"""
  close = difflib.get_close_matches(key, keys(), n=1, cutoff=0.6)
  hint = f" (did you mean {close[0]}?)" if close else ""
  return ConfigError(f"unknown key {key}{hint}")


def check_override_flags(argv: list[str], flag: str = "config") -> None:
  """Raises ConfigError for a `--config.KEY=...` argument whose KEY no section declares, before
  ml_collections would fail on it with a traceback."""
  known = set(keys())
  sections = {k.rsplit(".", 1)[0] for k in known}
  for arg in argv:
    if arg.startswith(f"--{flag}."):
      key = arg[2:].split("=", 1)[0]
      if key not in known and key not in sections:
        raise unknown_key_error(key)


def _check_value(name: str, value, expected, meta):
  if expected is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if expected is tuple and isinstance(value, list):
    value = tuple(value)
  if expected is bool or isinstance(value, bool):
    ok = isinstance(value, bool) and expected is bool
  else:
    ok = isinstance(value, expected)
  if not ok:
    raise ConfigError(f"{name} must be of type {expected.__name__}, got {type(value).__name__} {value!r}")
  if meta["choices"] and value not in meta["choices"]:
    raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, meta['choices']))}")
  if expected in (int, float):
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"{name} must be finite, got {value!r}")
    if meta["positive"] and not value > 0:
      raise ConfigError(f"{name} must be positive, got {value!r}")
    if meta["low"] is not None and value < meta["low"]:
      raise ConfigError(f"{name} must be >= {meta['low']}, got {value!r}")
    if meta["high"] is not None and value > meta["high"]:
      raise ConfigError(f"{name} must be <= {meta['high']}, got {value!r}")
  return value


def _section(cls, values, name: str, **derived):
  if not isinstance(values, (dict, ml_collections.ConfigDict)):
    raise ConfigError(f"{name} is a section with keys {', '.join(f.name for f in _user_fields(cls))}; "
                      f"got {type(values).__name__} {values!r} (set e.g. {name}.{_user_fields(cls)[0].name})")
  hints = _hints(cls)
  fields = {f.name: f for f in _user_fields(cls)}
  out = dict(derived)
  for key, value in values.items():
    if key not in fields:
      raise unknown_key_error(f"{name}.{key}")
    expected = typing.get_origin(hints[key]) or hints[key]
    if _is_section(expected):
      out[key] = _section(expected, value, f"{name}.{key}")
    else:
      out[key] = _check_value(f"{name}.{key}", value, expected, fields[key].metadata)
  return cls(**out)


def parse(config: ml_collections.ConfigDict | dict, vocab_size: int = 0) -> Experiment:
  """Checks a ConfigDict and returns typed sections (model.vocab_size from the dataset)."""
  for key in config.keys():
    if key not in SECTIONS and key not in LABELS:
      raise unknown_key_error(f"config.{key}")
    if key in LABELS and not isinstance(config[key], str):
      raise ConfigError(f"config.{key} is a name for reports and must be a string, got {config[key]!r}")
  get = lambda name: config[name] if name in config else {}
  data = _section(DataConfig, get("data"), "config.data")
  train = _section(TrainConfig, get("train"), "config.train")
  model = _section(ModelConfig, get("model"), "config.model", vocab_size=vocab_size,
                   patch_gather_width=data.patching.longest_patch())
  exp = Experiment(model=model, data=data,
                   optim=_section(OptimizerConfig, get("optim"), "config.optim", total_steps=train.steps),
                   train=train, mesh=_section(MeshConfig, get("mesh"), "config.mesh"))
  _check_consistency(exp)
  return exp


def _check_consistency(exp: Experiment) -> None:
  d, m, p = exp.data, exp.model, exp.data.patching
  if not p.curriculum_t1 <= p.curriculum_t2:
    raise ConfigError(f"need config.data.patching.curriculum_t1 <= curriculum_t2, got "
                      f"{p.curriculum_t1}, {p.curriculum_t2}")
  lo, hi = d.interleave.text_span_words if len(d.interleave.text_span_words) == 2 else (0, -1)
  if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
    raise ConfigError(f"config.data.interleave.text_span_words must be (min, max) words with 1 <= min <= max, "
                      f"got {d.interleave.text_span_words!r}")
  if not (d.interleaved_weight + d.text_weight + d.speech_only_weight) > 0:
    raise ConfigError("config.data mixture weights (interleaved_weight, text_weight, speech_only_weight) "
                      "are all zero")
  if d.max_patches > d.max_tokens:
    raise ConfigError(f"config.data.max_patches={d.max_patches} exceeds max_tokens={d.max_tokens}")
  if m.d_local % m.local_heads or m.d_global % m.global_heads:
    raise ConfigError("config.model.d_local / d_global must be divisible by local_heads / global_heads")
  if exp.mesh.data == 0:
    raise ConfigError("config.mesh.data must be positive, or -1 for all devices left over")


def to_dict(exp: Experiment) -> dict:
  """The settable keys of a parsed experiment (what checkpoints record)."""
  def strip(cls, obj):
    hints = _hints(cls)
    return {f.name: strip(hints[f.name], getattr(obj, f.name)) if _is_section(hints[f.name])
            else getattr(obj, f.name) for f in _user_fields(cls)}
  return strip(Experiment, exp)
