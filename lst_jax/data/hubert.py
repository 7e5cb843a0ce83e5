"""Audio -> HuBERT hidden states of one layer, from the user's Hugging Face-format checkpoint.

The checkpoint is a folder as published on the hub (config.json + model.safetensors
or pytorch_model.bin, e.g. the 25 Hz multilingual HuBERT `slprl/mhubert-base-25hz`
that TWIST, Spirit LM and slamkit use); it is run with transformers' HubertModel,
never downloaded (`local_files_only`). torch and transformers are imported only
when a model is loaded, so reading provenance stays cheap.

Frames: the conv stack's strides give the hop (16 kHz input: 320 -> 50 Hz, 640 ->
25 Hz). Each waveform is zero-padded by half the receptive field's overhang on
either side, so frame i is centred on [i * hop, (i + 1) * hop) and an utterance of
S samples has ceil(S / hop) frames, the built-in quantizer's convention (word
spans use it). Waveforms are normalized (zero mean, unit variance) only for
models whose conv stack uses layer norm, as fairseq trained them (HuBERT large);
base models, the 25 Hz mHuBERT among them, take the raw waveform.

Batches hold waveforms of one padded length only: the base models' group norm
spans the whole utterance, so padding inside a batch would change the units.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Callable, Sequence

import numpy as np

from lst_jax.data.manifest import DataError, sha256_file

SAMPLE_RATE = 16000
CONFIG = "config.json"
# Files that decide the hidden states: the config and the weights (sharded or not).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
_OPTIONAL = ("preprocessor_config.json",)
BATCH_SAMPLES = 16000 * 160  # samples per forward pass (160 s of audio)
PROGRESS_S = 15.0


class HubertError(DataError):
  """The checkpoint folder, its config or the layer cannot be used; the message names the folder."""


def read_config(directory: str) -> dict:
  """config.json of a checkpoint folder (no torch needed)."""
  path = os.path.join(directory, CONFIG)
  if not os.path.isdir(directory):
    raise HubertError(f"--hubert={directory}: not a folder (a Hugging Face HuBERT: {CONFIG} + model.safetensors)")
  if not os.path.isfile(path):
    raise HubertError(f"--hubert={directory}: no {CONFIG} (a Hugging Face HuBERT folder has {CONFIG} and "
                      f"model.safetensors)")
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise HubertError(f"{path}: unreadable ({e})") from None
  for key in ("conv_stride", "conv_kernel", "num_hidden_layers", "hidden_size"):
    if key not in config:
      raise HubertError(f"{path}: no {key!r}; not a HuBERT/wav2vec2 config")
  return config


def geometry(config: dict) -> tuple[int, int]:
  """(hop, receptive field) in 16 kHz samples of the conv feature encoder."""
  hop, field = 1, 1
  for kernel, stride in zip(config["conv_kernel"], config["conv_stride"]):
    field += (int(kernel) - 1) * hop
    hop *= int(stride)
  return hop, field


def frame_rate(config: dict) -> float:
  return SAMPLE_RATE / geometry(config)[0]


def normalizes(config: dict) -> bool:
  """fairseq trained layer-norm conv stacks (HuBERT large) on normalized waveforms, base ones on raw."""
  return config.get("feat_extract_norm", "group") == "layer"


def checkpoint_files(directory: str) -> list[str]:
  names = sorted(n for n in os.listdir(directory) if n.endswith(_WEIGHT_SUFFIXES) or n in _OPTIONAL)
  if not any(n.endswith((".safetensors", ".bin")) for n in names):
    raise HubertError(f"--hubert={directory}: no weights (model.safetensors or pytorch_model.bin)")
  return [CONFIG] + names


def checkpoint_sha256(directory: str) -> tuple[str, dict[str, str]]:
  """(one hash of the config and weight files, each file's sha256): what the units depend on."""
  files = {name: sha256_file(os.path.join(directory, name)) for name in checkpoint_files(directory)}
  joined = "".join(f"{name}\0{sha}\n" for name, sha in sorted(files.items()))
  return hashlib.sha256(joined.encode()).hexdigest(), files


def check_layer(config: dict, layer: int, directory: str) -> None:
  if not 0 <= layer <= int(config["num_hidden_layers"]):
    raise HubertError(f"--layer={layer}: {directory} has layers 0..{config['num_hidden_layers']} "
                      f"(hidden_states[0] is the encoder's input)")


def num_frames(num_samples: int, hop: int) -> int:
  return max(1, math.ceil(num_samples / hop))


def pad(wave: np.ndarray, hop: int, field: int) -> np.ndarray:
  """Zero-pads so the conv stack gives ceil(S / hop) frames, frame i centred on [i * hop, (i + 1) * hop)."""
  frames = num_frames(len(wave), hop)
  left = (field - hop) // 2
  total = (frames - 1) * hop + field
  return np.pad(np.asarray(wave, np.float32), (left, max(0, total - left - len(wave))))[:total]


class Hubert:
  """A loaded checkpoint that turns 16 kHz waveforms into hidden_states[layer], [F, E] each."""

  def __init__(self, directory: str, layer: int, device: str | None = None):
    import torch  # lazily: only builds and evaluations that use HuBERT pay for it
    from transformers import HubertModel
    self.config = read_config(directory)
    check_layer(self.config, layer, directory)
    self.directory, self.layer = directory, layer
    self.hop, self.field = geometry(self.config)
    self.normalize = normalizes(self.config)
    self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
      model = HubertModel.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as e:
      raise HubertError(f"--hubert={directory}: transformers cannot load it as a HubertModel ({e})") from None
    # Layers past `layer` do not change hidden_states[layer]: drop them.
    keep = min(layer + 1, len(model.encoder.layers))
    model.encoder.layers = model.encoder.layers[:keep]
    self.model = model.to(self.device).eval()

  def features(self, waves: Sequence[np.ndarray], log: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """16 kHz waveforms -> float32 [ceil(S / hop), D] each, in order; batched by equal padded length."""
    import torch
    padded = [pad(self._normalized(w), self.hop, self.field) for w in waves]
    out: list = [None] * len(padded)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(padded):
      groups.setdefault(len(p), []).append(i)
    start = last = time.time()
    done = 0
    for length, members in sorted(groups.items()):
      per_batch = max(1, BATCH_SAMPLES // length)
      for lo in range(0, len(members), per_batch):
        batch = members[lo:lo + per_batch]
        x = torch.from_numpy(np.stack([padded[i] for i in batch])).to(self.device)
        with torch.inference_mode():
          hidden = self.model(x, output_hidden_states=True).hidden_states[self.layer]
        for i, h in zip(batch, hidden.float().cpu().numpy()):
          out[i] = h[:num_frames(len(waves[i]), self.hop)]
        done += len(batch)
        if log and time.time() - last >= PROGRESS_S:
          last = time.time()
          log(f"hubert: {done}/{len(waves)} utterances, {time.time() - start:.0f} s")
    return out

  def _normalized(self, wave: np.ndarray) -> np.ndarray:
    w = np.asarray(wave, np.float32)
    if not self.normalize or not len(w):
      return w
    return (w - w.mean()) / np.sqrt(w.var() + 1e-7)
