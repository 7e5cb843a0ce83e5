"""HuBERT units back to audio with the user's unit HiFi-GAN (`--vocoder=DIR`), like HuBERT units in.

Supported layout: the CodeHiFiGAN generator of fairseq
(fairseq/models/text_to_speech/codehifigan.py + hifigan.py, trained with
facebookresearch/speech-resynthesis) and its copy in textlesslib
(textless/vocoders/hifigan/). DIR is a local folder holding
  - the JSON config: `config.json`, or the folder's only `*.json` (textlesslib
    names it e.g. `hifigan_lj_mhubert_base_25hz_config.json`); the generator
    reads resblock, upsample_rates, upsample_kernel_sizes, upsample_initial_channel,
    resblock_kernel_sizes, resblock_dilation_sizes, num_embeddings, embedding_dim,
    model_in_dim, optional dur_predictor_params, multispkr / num_speakers,
    multistyle / num_styles, sampling_rate;
  - the generator checkpoint: a torch file {"generator": state_dict} named `g_<step>`
    (the highest step wins, as hifi-gan's scan_checkpoint picks), `generator.pt`,
    `model.pt`, or the folder's only `*.pt` / `*.pth` / `*.ckpt`. Convolutions
    saved with weight norm (`weight_g` / `weight_v`, as fairseq saves them), with
    torch's newer parametrizations (`parametrizations.weight.original0/1`) or
    with the norm removed (`weight`) all load;
  - for multi-speaker / multi-style models, optionally `speakers.txt` / `styles.txt`
    (one name a line, textlesslib's Expresso layout) so a speaker can be named.
speechbrain's UnitHIFIGAN (hyperparams.yaml + generator.ckpt) is not supported:
its generator differs (inference padding, multi-layer token pooling, its own conv
wrappers) and its hyperparams need hyperpyyaml.

The generator runs in PyTorch (inference, no dropout), written here from the
published code and checked against an independent module copy of it
(tests/test_unit_hifigan.py): unit embedding -> [optional duration prediction
on deduplicated units] -> [speaker / style embedding, repeated over time,
concatenated] -> conv_pre -> per upsampling stage: leaky ReLU(0.1), transposed
conv, mean of the stage's residual blocks -> leaky ReLU(0.01) -> conv_post -> tanh.
Models that need f0 input (`f0`) or a speaker-embedding vector (`embedder_params`)
are refused. Each unit becomes prod(upsample_rates) samples at the config's
sampling_rate, so the units' rate is sampling_rate / prod(upsample_rates); the
waveform comes back at 16 kHz (resampled if the checkpoint's rate differs).

Which datasets: those whose manifest units are HuBERT + k-means units
(`quantizer: "hubert-kmeans"`, lst_jax.data.quantizers) or units the user gave
(`source: "user"`, e.g. the official LST JSONL's HUBERT segments). The vocoder
must have exactly the dataset's unit count (its embedding rows) and give the
dataset's frame rate; the built-in log-mel k-means units have their own vocoder
(lst_jax.data.vocoder) and are refused, as are text-only datasets. Nothing is
downloaded. A vocoder is trained on one HuBERT + k-means: the count and rate are
checked, but that it is the dataset's own k-means is the user's to ensure (the
published configs do not record the k-means).

Public checkpoints (all 16 kHz; code of fairseq and textlesslib is MIT-licensed,
the weights are published there with no separate license):
  25 Hz, 500 units: mHuBERT-25Hz layer 11 km500 (TWIST; textlesslib
    "mhubert-base-25hz-kmeans-500-hifigan", LJSpeech voice), the units of this
    project's README (`slprl/mhubert-base-25hz` + mhubert_base_25hz_cp_mls_cv_sp_fisher_L11_km500.bin):
      https://dl.fbaipublicfiles.com/textless_nlp/twist/speech_tokenizer/hifigan_lj_mhubert_base_25hz.pt
      https://dl.fbaipublicfiles.com/textless_nlp/twist/speech_tokenizer/hifigan_lj_mhubert_base_25hz_config.json
  50 Hz, 1000 units: mHuBERT (VoxPopuli en/es/fr) layer 11 km1000 (fairseq textless S2ST), voices
    LJSpeech (en), CSS10 (es, fr):
      https://dl.fbaipublicfiles.com/fairseq/speech_to_speech/vocoder/code_hifigan/
        mhubert_vp_en_es_fr_it3_400k_layer11_km1000_{lj,es_css10,fr_css10}/{g_00500000,config.json}
  50 Hz, 100 units: HuBERT base LibriSpeech layer 6 km100, LJSpeech voice, with a duration predictor:
      https://dl.fbaipublicfiles.com/fairseq/speech_to_speech/vocoder/code_hifigan/hubert_base_100_lj/
        {g_00500000,config.json}
  50 Hz, 500 / 2000 units, speaker + style conditioned (Expresso + LJ + VCTK voices; the Expresso
    data is CC BY-NC 4.0): textlesslib's Expresso vocoders, e.g.
      https://dl.fbaipublicfiles.com/textless_nlp/expresso/checkpoints/
        hifigan_expresso_lj_vctk_hubert_base_ls960_L9_km500/{generator.pt,config.json,speakers.txt,styles.txt}
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Sequence

import numpy as np

from lst_jax.data.manifest import DataError
from lst_jax.data.quantizers import HUBERT_KMEANS

SAMPLE_RATE = 16000          # what synthesize returns (the built-in vocoder's and the recognizer's rate)
LRELU_SLOPE = 0.1
_CHECKPOINT_NAMES = ("generator.pt", "model.pt")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_REQUIRED = ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock_kernel_sizes",
             "resblock_dilation_sizes", "num_embeddings", "embedding_dim")
_RATE_TOLERANCE = 1e-6


class UnitVocoderError(DataError):
  """The vocoder folder, its files, or their fit to the dataset's units; one line naming the file."""


# -- files and config (no torch) ------------------------------------------------------------------

def find_files(directory: str) -> tuple[str, str]:
  """(config path, checkpoint path) of a CodeHiFiGAN folder; UnitVocoderError naming what is missing."""
  flag = f"--vocoder={directory}"
  if not os.path.isdir(directory):
    raise UnitVocoderError(f"{flag}: not a folder (a unit HiFi-GAN folder holds config.json and the generator "
                           f"checkpoint, e.g. g_00500000)")
  names = sorted(n for n in os.listdir(directory) if os.path.isfile(os.path.join(directory, n)))
  if "config.json" in names:
    config = "config.json"
  else:
    jsons = [n for n in names if n.endswith(".json")]
    if len(jsons) != 1:
      raise UnitVocoderError(f"{flag}: no config.json" + (f" and several .json files ({', '.join(jsons)}): "
                                                          f"name the config config.json" if jsons else
                                                          " (the CodeHiFiGAN config that comes with the generator)"))
    config = jsons[0]
  steps = [n for n in names if re.fullmatch(r"g_\d+", n)]
  if steps:
    checkpoint = max(steps, key=lambda n: int(n[2:]))
  elif any(n in names for n in _CHECKPOINT_NAMES):
    checkpoint = next(n for n in _CHECKPOINT_NAMES if n in names)
  else:
    others = [n for n in names if n.endswith(_CHECKPOINT_SUFFIXES)]
    if len(others) != 1:
      raise UnitVocoderError(f"{flag}: no generator checkpoint" + (
          f" but several candidates ({', '.join(others)}): keep one, or name it generator.pt" if others else
          " (g_00500000, generator.pt, model.pt or one *.pt next to the config)"))
    checkpoint = others[0]
  return os.path.join(directory, config), os.path.join(directory, checkpoint)


def read_config(directory: str) -> dict:
  """The folder's CodeHiFiGAN config, checked for what this generator implements."""
  path, _ = find_files(directory)
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UnitVocoderError(f"{path}: unreadable ({e})") from None
  if not isinstance(config, dict):
    raise UnitVocoderError(f"{path}: not a JSON object; not a CodeHiFiGAN config")
  missing = [k for k in _REQUIRED if k not in config]
  if missing:
    raise UnitVocoderError(f"{path}: no {missing[0]!r}; not a CodeHiFiGAN (unit HiFi-GAN) config")
  try:
    _check_config(config, path)
  except (TypeError, ValueError) as e:
    if isinstance(e, UnitVocoderError):
      raise
    raise UnitVocoderError(f"{path}: malformed ({e})") from None
  return config


def _check_config(c: dict, path: str) -> None:
  if c.get("f0"):
    raise UnitVocoderError(f"{path}: an f0-conditioned vocoder (\"f0\": true) needs pitch input that unit "
                           f"sequences lack; use a units-only CodeHiFiGAN")
  if c.get("embedder_params"):
    raise UnitVocoderError(f"{path}: conditioned on a speaker-embedding vector (\"embedder_params\"), which "
                           f"this loader does not compute; use a units-only or speaker-id CodeHiFiGAN")
  if str(c.get("resblock", "1")) != "1":
    raise UnitVocoderError(f"{path}: resblock {c['resblock']!r}; fairseq's CodeHiFiGAN has only ResBlock \"1\"")
  rates, kernels = [int(u) for u in c["upsample_rates"]], [int(k) for k in c["upsample_kernel_sizes"]]
  if not rates or len(rates) != len(kernels):
    raise UnitVocoderError(f"{path}: {len(rates)} upsample_rates but {len(kernels)} upsample_kernel_sizes")
  for u, k in zip(rates, kernels):
    if u < 1 or k < u or (k - u) % 2:
      raise UnitVocoderError(f"{path}: upsampling stage (rate {u}, kernel {k}) does not give exactly {u} samples "
                             f"per input frame (needs kernel >= rate and kernel - rate even)")
  if len(c["resblock_kernel_sizes"]) != len(c["resblock_dilation_sizes"]) or not c["resblock_kernel_sizes"]:
    raise UnitVocoderError(f"{path}: resblock_kernel_sizes and resblock_dilation_sizes differ in length")
  for d in c["resblock_dilation_sizes"]:
    if len(d) != 3:
      raise UnitVocoderError(f"{path}: resblock dilations {d}; fairseq's ResBlock takes three")
  if int(c["upsample_initial_channel"]) % 2 ** len(rates):
    raise UnitVocoderError(f"{path}: upsample_initial_channel {c['upsample_initial_channel']} does not halve "
                           f"{len(rates)} times")
  if int(c.get("sampling_rate", SAMPLE_RATE)) <= 0:
    raise UnitVocoderError(f"{path}: sampling_rate {c['sampling_rate']}")
  dur = c.get("dur_predictor_params")
  if dur:
    for key in ("encoder_embed_dim", "var_pred_hidden_dim", "var_pred_kernel_size"):
      if key not in dur:
        raise UnitVocoderError(f"{path}: dur_predictor_params has no {key!r}")
    if int(dur["var_pred_kernel_size"]) != 3:
      raise UnitVocoderError(f"{path}: duration predictor kernel {dur['var_pred_kernel_size']}; fairseq's pads "
                             f"its second conv by 1, so only kernel 3 keeps one duration per unit")
  expected = input_dim(c)
  if int(c.get("model_in_dim", 80)) != expected:
    raise UnitVocoderError(f"{path}: model_in_dim {c.get('model_in_dim', 80)}, but the unit embedding"
                           f"{' + speaker' if c.get('multispkr') else ''}{' + style' if c.get('multistyle') else ''}"
                           f" give {expected} channels")


def input_dim(config: dict) -> int:
  e = int(config["embedding_dim"])
  return e * (1 + bool(config.get("multispkr")) + bool(config.get("multistyle")))


def hop(config: dict) -> int:
  """Samples per unit at the config's sampling rate: the product of the upsampling rates."""
  return int(np.prod([int(u) for u in config["upsample_rates"]]))


def native_rate(config: dict) -> int:
  return int(config.get("sampling_rate", SAMPLE_RATE))


def unit_rate(config: dict) -> float:
  """Units per second the generator expects: sampling_rate / hop (320 at 16 kHz: 50 Hz; 640: 25 Hz)."""
  return native_rate(config) / hop(config)


def check_units(config: dict, units: dict, directory: str) -> None:
  """Refuses (UnitVocoderError, one line) a vocoder whose unit count, unit rate or kind of units does not
  fit the dataset's manifest "units" entry. Needs only the config (no torch)."""
  flag = f"--vocoder={directory}"
  source, quantizer = units.get("source"), units.get("quantizer")
  if source is None and quantizer is not None:
    source = "quantizer"   # manifests written before "source" existed
  if source == "none" or not units.get("num_units"):
    raise UnitVocoderError(f"{flag}: the dataset has no speech units (text only), so there is nothing to voice")
  if source == "quantizer" and quantizer != HUBERT_KMEANS:
    raise UnitVocoderError(f"{flag}: the dataset's units come from the built-in {quantizer or 'log-mel k-means'} "
                           f"quantizer, not from a HuBERT; they have their own vocoder (leave --vocoder out)")
  if source not in ("quantizer", "user"):
    raise UnitVocoderError(f"{flag}: the dataset's units come from {source!r}, not from HuBERT + k-means")
  k, want = int(config["num_embeddings"]), int(units["num_units"])
  if k != want:
    raise UnitVocoderError(f"{flag}: the vocoder has {k} unit embeddings but the dataset has {want} units; "
                           f"it was trained on another k-means")
  got, rate = unit_rate(config), float(units.get("frame_rate", 0.0))
  if abs(got - rate) > _RATE_TOLERANCE:
    raise UnitVocoderError(f"{flag}: the vocoder expects {got:g} Hz units ({native_rate(config)} Hz / "
                           f"{hop(config)} samples per unit) but the dataset's units are {rate:g} Hz")


# -- weights --------------------------------------------------------------------------------------

def _load_state(path: str) -> dict:
  import torch
  try:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 -- any unreadable file is one line naming it
    raise UnitVocoderError(f"{path}: not a torch checkpoint that loads with weights_only=True "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
  if isinstance(ckpt, dict) and isinstance(ckpt.get("generator"), dict):
    state = ckpt["generator"]
  elif isinstance(ckpt, dict) and "dict.weight" in ckpt:
    state = ckpt
  else:
    raise UnitVocoderError(f"{path}: no \"generator\" state dict (fairseq/textlesslib save {{\"generator\": ...}})")
  state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
  return state


def _norm_weight(v, g):
  """weight_norm's weight (dim 0, the layout fairseq's weight_norm(Conv1d / ConvTranspose1d) saves)."""
  import torch
  if g.dim() == v.dim() and g.shape[0] == v.shape[0] and g[0].numel() == 1:
    fused = getattr(torch, "_weight_norm", None)   # what torch's weight_norm itself computes
    if fused is not None:
      return fused(v, g, 0)
    return v * (g / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1))))
  return v * (g / v.norm())   # weight_norm(dim=None): one scalar g


class _Weights:
  """The state dict's tensors by name, weight-normed weights materialized; every name read is recorded."""

  def __init__(self, state: dict, path: str):
    self.state, self.path, self.used = state, path, set()

  def get(self, name: str, shape: tuple | None = None):
    import torch
    if name not in self.state:
      raise UnitVocoderError(f"{self.path}: no {name!r} in the generator; it does not fit its config")
    self.used.add(name)
    t = self.state[name]
    if not isinstance(t, torch.Tensor):
      raise UnitVocoderError(f"{self.path}: {name!r} is not a tensor")
    t = t.float()
    if shape is not None and tuple(t.shape) != tuple(shape):
      raise UnitVocoderError(f"{self.path}: {name} has shape {tuple(t.shape)}, its config gives {tuple(shape)}")
    return t

  def conv(self, prefix: str, shape: tuple, transposed: bool = False):
    """(weight, bias) of a (weight-normed) conv: plain, weight_g/weight_v, or parametrizations. Weight
    shapes are torch's: [out, in, k], transposed [in, out, k]."""
    s = self.state
    if f"{prefix}.weight_v" in s:
      v, g = self.get(f"{prefix}.weight_v", shape), self.get(f"{prefix}.weight_g")
      w = _norm_weight(v, g)
    elif f"{prefix}.parametrizations.weight.original1" in s:
      v = self.get(f"{prefix}.parametrizations.weight.original1", shape)
      w = _norm_weight(v, self.get(f"{prefix}.parametrizations.weight.original0"))
    else:
      w = self.get(f"{prefix}.weight", shape)
    return w, self.get(f"{prefix}.bias", (shape[1] if transposed else shape[0],))


class _Generator:
  """CodeHiFiGAN's generator as plain tensors and torch.nn.functional calls (inference only)."""

  def __init__(self, config: dict, state: dict, path: str, device: str):
    import torch
    c, w = config, _Weights(state, path)
    e, ch = int(c["embedding_dim"]), int(c["upsample_initial_channel"])
    self.embedding = w.get("dict.weight")
    if self.embedding.dim() != 2 or self.embedding.shape[1] != e:
      raise UnitVocoderError(f"{path}: dict.weight has shape {tuple(self.embedding.shape)}, its config gives "
                             f"[{c['num_embeddings']}, {e}]")
    if self.embedding.shape[0] != int(c["num_embeddings"]):
      raise UnitVocoderError(f"{path}: {self.embedding.shape[0]} unit embeddings, its config says "
                             f"num_embeddings {c['num_embeddings']}")
    self.speakers = w.get("spkr.weight", (int(c.get("num_speakers", 200)), e)) if c.get("multispkr") else None
    self.styles = w.get("style.weight", (int(c.get("num_styles", 100)), e)) if c.get("multistyle") else None
    self.dur = None
    if c.get("dur_predictor_params"):
      p = c["dur_predictor_params"]
      hid, k = int(p["var_pred_hidden_dim"]), int(p["var_pred_kernel_size"])
      if int(p["encoder_embed_dim"]) != e:
        raise UnitVocoderError(f"{path}: the duration predictor reads {p['encoder_embed_dim']} channels, the unit "
                               f"embedding has {e}")
      self.dur = {"conv1": (w.get("dur_predictor.conv1.0.weight", (hid, e, k)),
                            w.get("dur_predictor.conv1.0.bias", (hid,))),
                  "ln1": (w.get("dur_predictor.ln1.weight", (hid,)), w.get("dur_predictor.ln1.bias", (hid,))),
                  "conv2": (w.get("dur_predictor.conv2.0.weight", (hid, hid, k)),
                            w.get("dur_predictor.conv2.0.bias", (hid,))),
                  "ln2": (w.get("dur_predictor.ln2.weight", (hid,)), w.get("dur_predictor.ln2.bias", (hid,))),
                  "proj": (w.get("dur_predictor.proj.weight", (1, hid)), w.get("dur_predictor.proj.bias", (1,))),
                  "kernel": k}
    self.pre = w.conv("conv_pre", (ch, input_dim(c), 7))
    self.ups, self.blocks = [], []
    kernels, dilations = [int(k) for k in c["resblock_kernel_sizes"]], c["resblock_dilation_sizes"]
    self.num_kernels = len(kernels)
    for i, (u, k) in enumerate(zip(c["upsample_rates"], c["upsample_kernel_sizes"])):
      u, k, cin, cout = int(u), int(k), ch // 2 ** i, ch // 2 ** (i + 1)
      self.ups.append((*w.conv(f"ups.{i}", (cin, cout, k), transposed=True), u, (k - u) // 2))
      for j, (rk, ds) in enumerate(zip(kernels, dilations)):
        b = i * self.num_kernels + j
        self.blocks.append([(*w.conv(f"resblocks.{b}.convs1.{n}", (cout, cout, rk)), int(d),
                             *w.conv(f"resblocks.{b}.convs2.{n}", (cout, cout, rk))) for n, d in enumerate(ds)])
    self.post = w.conv("conv_post", (1, ch // 2 ** len(c["upsample_rates"]), 7))
    extra = sorted(set(state) - w.used)
    if extra:
      raise UnitVocoderError(f"{path}: {len(extra)} generator tensors its config does not use (e.g. {extra[0]!r}); "
                             f"the config is not this checkpoint's")
    self.device = torch.device(device)
    for name, value in list(vars(self).items()):
      setattr(self, name, _to(value, self.device))

  def durations(self, x):
    """[1, E, T] embedded units -> [T] repeats (fairseq: clamp(round(exp(log d) - 1), min=1))."""
    import torch
    import torch.nn.functional as F
    d = self.dur
    h = F.relu(F.conv1d(x, *d["conv1"], padding=(d["kernel"] - 1) // 2)).transpose(1, 2)
    h = F.layer_norm(h, h.shape[-1:], *d["ln1"])
    h = F.relu(F.conv1d(h.transpose(1, 2), *d["conv2"], padding=1)).transpose(1, 2)
    h = F.layer_norm(h, h.shape[-1:], *d["ln2"])
    log_d = F.linear(h, *d["proj"])[0, :, 0]
    return torch.clamp(torch.round(torch.exp(log_d) - 1).long(), min=1)

  def __call__(self, codes, dur_prediction: bool, speaker: int, style: int):
    import torch
    import torch.nn.functional as F
    x = F.embedding(codes[None], self.embedding).transpose(1, 2)         # [1, E, T]
    if dur_prediction:
      x = torch.repeat_interleave(x, self.durations(x), dim=2)
    cond = [x]
    for table, index in ((self.speakers, speaker), (self.styles, style)):
      if table is not None:
        cond.append(table[index][None, :, None].expand(1, -1, x.shape[-1]))
    x = F.conv1d(torch.cat(cond, dim=1), *self.pre, padding=3)
    for i, (w, b, u, pad) in enumerate(self.ups):
      x = F.conv_transpose1d(F.leaky_relu(x, LRELU_SLOPE), w, b, stride=u, padding=pad)
      xs = None
      for block in self.blocks[i * self.num_kernels:(i + 1) * self.num_kernels]:
        y = x
        for w1, b1, d, w2, b2 in block:
          t = F.conv1d(F.leaky_relu(y, LRELU_SLOPE), w1, b1, dilation=d, padding=(w1.shape[-1] * d - d) // 2)
          t = F.conv1d(F.leaky_relu(t, LRELU_SLOPE), w2, b2, padding=(w2.shape[-1] - 1) // 2)
          y = t + y
        xs = y if xs is None else xs + y
      x = xs / self.num_kernels
    x = F.conv1d(F.leaky_relu(x), *self.post, padding=3)   # default slope 0.01 here, as the published code
    return torch.tanh(x)[0, 0]


def _to(value, device):
  import torch
  if isinstance(value, torch.Tensor):
    return value.to(device)
  if isinstance(value, (list, tuple)):
    return type(value)(_to(v, device) for v in value)
  if isinstance(value, dict):
    return {k: _to(v, device) for k, v in value.items()}
  return value


# -- the vocoder ----------------------------------------------------------------------------------

def _names(directory: str, filename: str) -> list[str] | None:
  path = os.path.join(directory, filename)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


class UnitVocoder:
  """A loaded CodeHiFiGAN: [F] unit ids -> float32 waveform at 16 kHz (.sample_rate)."""

  sample_rate = SAMPLE_RATE

  def __init__(self, directory: str, units: dict | None = None, device: str | None = None,
               speaker: int | str = 0, style: int | str = 0):
    import torch
    self.directory = directory
    self.config = read_config(directory)
    self.config_path, self.checkpoint_path = find_files(directory)
    if units is not None:
      check_units(self.config, units, directory)
    self.num_units, self.hop = int(self.config["num_embeddings"]), hop(self.config)
    self.native_rate, self.frame_rate = native_rate(self.config), unit_rate(self.config)
    self.has_duration_predictor = bool(self.config.get("dur_predictor_params"))
    self.speaker = self._index(speaker, "multispkr", "num_speakers", 200, "speakers.txt", "speaker")
    self.style = self._index(style, "multistyle", "num_styles", 100, "styles.txt", "style")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    self.generator = _Generator(self.config, _load_state(self.checkpoint_path), self.checkpoint_path, device)

  def _index(self, value, key, count_key, default, names_file, what) -> int:
    if not self.config.get(key):
      return 0
    count = int(self.config.get(count_key, default))
    if isinstance(value, str) and not value.lstrip("-").isdigit():
      names = _names(self.directory, names_file)
      if names is None or value not in names:
        raise UnitVocoderError(f"--vocoder={self.directory}: no {what} {value!r}" + (
            f" in {names_file} (it has {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else
            f" (no {names_file} names them; give the {what}'s number)"))
      value = names.index(value)
    value = int(value)
    if not 0 <= value < count:
      raise UnitVocoderError(f"--vocoder={self.directory}: {what} {value} is outside [0, {count})")
    return value

  def describe(self) -> str:
    extra = "".join(f", {w} {i}" for w, i, k in (("speaker", self.speaker, "multispkr"),
                                                   ("style", self.style, "multistyle")) if self.config.get(k))
    return (f"unit HiFi-GAN {self.checkpoint_path} ({self.num_units} units at {self.frame_rate:g} Hz, "
            f"{self.native_rate} Hz audio{', duration predictor' if self.has_duration_predictor else ''}{extra})")

  def synthesize(self, units: Sequence[int] | np.ndarray, dur_prediction: bool = False) -> np.ndarray:
    """[F] unit ids -> float32 waveform at 16 kHz: F * hop samples at the checkpoint's rate (resampled to
    16 kHz when that differs). dur_prediction: deduplicate runs of equal units first and let the
    duration predictor give each its length (fairseq's --dur-prediction); off, the units keep their timing."""
    import torch
    units = np.asarray(units, np.int64).reshape(-1)
    if units.size and (units.min() < 0 or units.max() >= self.num_units):
      raise ValueError(f"unit ids must lie in [0, {self.num_units}); got {units.min()}..{units.max()}")
    if dur_prediction and not self.has_duration_predictor:
      raise UnitVocoderError(f"{self.config_path}: no dur_predictor_params; this vocoder cannot predict durations")
    if units.size == 0:
      return np.zeros(0, np.float32)
    if dur_prediction:
      units = units[np.r_[True, units[1:] != units[:-1]]]
    codes = torch.from_numpy(units).to(self.generator.device)
    with torch.inference_mode():
      wave = self.generator(codes, dur_prediction, self.speaker, self.style).float().cpu().numpy()
    if self.native_rate != SAMPLE_RATE:
      from lst_jax.data import audio
      wave = audio.resample(wave, self.native_rate, SAMPLE_RATE)
    return wave.astype(np.float32, copy=False)

  def __call__(self, units) -> tuple[np.ndarray, int]:
    """(waveform, sample rate): the built-in vocoder's interface (lst_jax.data.vocoder.Vocoder)."""
    return self.synthesize(units), self.sample_rate

  units_to_wave = __call__


def load(directory: str, units: dict | None = None, device: str | None = None, speaker: int | str = 0,
         style: int | str = 0) -> UnitVocoder:
  """The unit HiFi-GAN in `directory`, checked against a dataset's manifest "units" entry (when given)
  before its weights are read; UnitVocoderError (a DataError, one line) if it does not fit."""
  return UnitVocoder(directory, units, device, speaker, style)


def check(directory: str, units: dict) -> dict:
  """The cheap check for argument parsing: files present, config implemented, units fit (no torch). The config."""
  config = read_config(directory)
  check_units(config, units, directory)
  return config


def expected_samples(num_units: int, config: dict) -> int:
  """Samples synthesize returns for num_units units (without duration prediction)."""
  n = num_units * hop(config)
  rate = native_rate(config)
  return n if rate == SAMPLE_RATE else math.ceil(n * SAMPLE_RATE / rate)
