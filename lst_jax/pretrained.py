"""A trained model as a self-describing directory (lst_jax's own format), and loading it back.

  <dir>/model.safetensors  fp32 parameters; each tensor is named by its nnx parameter path joined
                           with "." ("body.blocks.0.attn.q.kernel"); kernels are [in, out]. A
                           scanned stack (config.model.scan_layers) is stored as the model holds it:
                           one tensor per parameter with the layers on a leading axis
                           ("body.blocks.attn.q.kernel" [L, in, out]); config.json says which.
  <dir>/config.json        {"format": "lst_jax", "model": every ModelConfig field, "vocab": the id
                           layout (lst_jax/vocab.py), "patching": what inference patches by, ...}

`load_pretrained(dir)` rebuilds the nnx module (lst_jax.model.factory) from these two files
alone: no run directory, dataset or checkpoint library is needed. The command that writes such a
directory from a run's checkpoint is lst_jax.export.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lst_jax import config as config_lib
from lst_jax import storage
from lst_jax import vocab as vocab_lib

FORMAT = "lst_jax"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# Settings that change how the model runs, not what it computes: a loader may override them.
RUNTIME_FIELDS = ("dtype", "attention", "remat")


class PretrainedError(ValueError):
  """An export directory is missing, incomplete or does not fit the model it describes."""


def flatten_params(params) -> dict[str, np.ndarray]:
  """{"body.blocks.0.attn.q.kernel": fp32 array, ...} of an nnx parameter State (host copies)."""
  import jax
  from flax import nnx
  return {".".join(map(str, path)): np.asarray(jax.device_get(v.get_value()), np.float32)
          for path, v in nnx.to_flat_state(params)}


def vocab_layout(vocab: vocab_lib.Vocab) -> dict:
  """The id layout of the shared vocabulary, spelled out (what a reader needs to map ids)."""
  return {"size": vocab.size, "pad_id": vocab_lib.PAD, "bos_id": vocab_lib.BOS, "eos_id": vocab_lib.EOS,
          "text_offset": vocab_lib.NUM_SPECIAL, "text_size": vocab.text_size,
          "text_mode_id": vocab.text_mode, "speech_mode_id": vocab.speech_mode,
          "unit_offset": vocab.unit_offset, "num_units": vocab.num_units}


def vocab_of_layout(layout: dict) -> vocab_lib.Vocab:
  vocab = vocab_lib.Vocab(text_size=int(layout["text_size"]), num_units=int(layout["num_units"]))
  if vocab_layout(vocab) != {k: layout.get(k) for k in vocab_layout(vocab)}:
    raise PretrainedError(f"config.json vocab layout {layout} is not the one lst_jax/vocab.py builds for "
                          f"{vocab.text_size} text pieces and {vocab.num_units} units")
  return vocab


def save_pretrained(directory: str, model_cfg: config_lib.ModelConfig, params, vocab: vocab_lib.Vocab,
                    extra: dict | None = None) -> dict:
  """Writes <directory>/model.safetensors and config.json (plus `extra` keys); returns config.json's dict."""
  from safetensors.numpy import save_file
  if model_cfg.vocab_size != vocab.size:
    raise PretrainedError(f"model vocab_size {model_cfg.vocab_size} differs from the vocabulary's {vocab.size}")
  tensors = params if isinstance(params, dict) else flatten_params(params)
  os.makedirs(directory, exist_ok=True)
  save_file(tensors, os.path.join(directory, WEIGHTS), metadata={"format": "np", "producer": "lst_jax"})
  os.chmod(os.path.join(directory, WEIGHTS), 0o644)   # safetensors writes it private
  config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": dataclasses.asdict(model_cfg),
            "vocab": vocab_layout(vocab),
            "weights": {"file": WEIGHTS, "dtype": "float32", "names": "nnx parameter paths joined by '.'",
                        "kernels": "[in, out]",
                        "layers": "stacked on a leading axis (scan_layers)" if model_cfg.scan_layers
                                  else "one tensor per layer"},
            **(extra or {})}
  storage.write_json(os.path.join(directory, CONFIG), config)
  return config


def read_config(directory: str) -> tuple[config_lib.ModelConfig, vocab_lib.Vocab, dict]:
  """(model config, vocabulary, the whole config.json) of an export directory."""
  path = os.path.join(directory, CONFIG)
  if not os.path.isfile(path):
    raise PretrainedError(f"{directory!r} has no {CONFIG}: not an exported model "
                          f"(write one with `python -m lst_jax.export`)")
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise PretrainedError(f"{path}: not valid JSON ({e})") from None
  if raw.get("format") != FORMAT:
    hint = " (a Hugging Face directory: load it with transformers)" if "model_type" in raw else ""
    raise PretrainedError(f"{path}: format {raw.get('format')!r}, not {FORMAT!r}{hint}")
  if raw.get("format_version") != FORMAT_VERSION:
    raise PretrainedError(f"{path}: format version {raw.get('format_version')!r}, this lst_jax reads "
                          f"{FORMAT_VERSION}")
  try:
    vocab = vocab_of_layout(raw["vocab"])
    return model_config(raw["model"], vocab), vocab, raw
  except KeyError as e:
    raise PretrainedError(f"{path}: missing field {e}") from None


def model_config(fields: dict, vocab: vocab_lib.Vocab, **runtime) -> config_lib.ModelConfig:
  """A checked ModelConfig from config.json's "model" (derived fields included), with `runtime`
  overrides (RUNTIME_FIELDS only)."""
  bad = sorted(set(runtime) - set(RUNTIME_FIELDS))
  if bad:
    raise PretrainedError(f"cannot override {', '.join(bad)} when loading; only {', '.join(RUNTIME_FIELDS)}")
  derived = {f.name for f in dataclasses.fields(config_lib.ModelConfig) if f.metadata.get("derived")}
  if int(fields.get("vocab_size", vocab.size)) != vocab.size:
    raise PretrainedError(f"config.json: model vocab_size {fields['vocab_size']} differs from the "
                          f"vocabulary's {vocab.size}")
  user = {k: v for k, v in fields.items() if k not in derived}
  try:
    cfg = config_lib.parse({"model": {**user, **runtime}}, vocab_size=vocab.size).model
  except config_lib.ConfigError as e:
    raise PretrainedError(f"config.json: {e}") from None
  return dataclasses.replace(cfg, patch_gather_width=int(fields.get("patch_gather_width", 0)))


def load_pretrained(directory: str, **runtime):
  """The nnx model of an export directory, its parameters exactly the exported ones.

  `runtime` may override how it runs (dtype="bfloat16", attention="cudnn", remat=...), never
  what it computes. The vocabulary and the rest of config.json: `read_config(directory)`.
  """
  import jax.numpy as jnp
  from flax import nnx
  from safetensors.numpy import load_file

  from lst_jax.model.factory import build_model
  _, vocab, raw = read_config(directory)
  cfg = model_config(raw["model"], vocab, **runtime)
  path = os.path.join(directory, WEIGHTS)
  if not os.path.isfile(path):
    raise PretrainedError(f"{directory!r} has no {WEIGHTS}")
  tensors = load_file(path)
  abstract = nnx.eval_shape(lambda: build_model(cfg))
  graphdef, state = nnx.split(abstract, nnx.Param)
  flat = nnx.to_flat_state(state)
  names = [".".join(map(str, p)) for p, _ in flat]
  missing = [n for n in names if n not in tensors]
  if missing:
    raise PretrainedError(f"{path} has no tensor {missing[0]} ({len(missing)} of the model's parameters "
                          f"are missing): it does not fit the {cfg.kind} model config.json describes")
  unused = sorted(set(tensors) - set(names))
  if unused:
    raise PretrainedError(f"{path} has tensor {unused[0]}, which the {cfg.kind} model config.json describes "
                          f"does not have")
  for name, (_, variable) in zip(names, flat):
    want, got = variable.get_value(), tensors[name]
    if tuple(want.shape) != got.shape:
      raise PretrainedError(f"{path}: tensor {name} has shape {got.shape}, the model needs {tuple(want.shape)}")
    variable.set_value(jnp.asarray(got, jnp.float32))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
