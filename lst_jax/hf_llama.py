"""The baseline as a Hugging Face Llama directory (LlamaForCausalLM), for transformers, vLLM,
lm-eval-harness and the like.

The baseline (lst_jax/model/baseline.py) is a Llama: pre-norm RMSNorm blocks (eps 1e-5, scale
only), rotate-half RoPE, softmax attention scaled by head_dim**-0.5 with as many key/value heads
as query heads, a SwiGLU MLP, no biases, an unscaled embedding and an untied head. The
conversion is therefore exact: kernels [in, out] become torch weights [out, in]; q and k need no
row permutation (our RoPE already rotates halves, as transformers' does, not interleaved pairs);
the settings transformers would default differently are written explicitly (rms_norm_eps
1e-5, not 1e-6; rope_theta; tie_word_embeddings false). A scanned stack (scan_layers) is
unstacked into one tensor per layer. The LST (local encoder, patching, decoder) has no Llama
form and is refused.

The tokenizer becomes a `tokenizers` tokenizer.json whose ids are exactly ours: specials,
the SentencePiece pieces (BPE merges and normalizer rebuilt from the .model, as transformers'
SpmConverter does), the mode tokens and one token per speech unit ("<unit_17>").
"""

from __future__ import annotations

import os

import numpy as np

from lst_jax import storage
from lst_jax import vocab as vocab_lib
from lst_jax.config import ConfigError, ModelConfig

WEIGHTS = "model.safetensors"
RMS_NORM_EPS = 1e-5   # lst_jax.model.layers.RMSNorm's default, which every block uses
SPECIAL_NAMES = ("<pad>", "<bos>", "<eos>")   # ids 0, 1, 2 (lst_jax/vocab.py)
TEXT_MODE, SPEECH_MODE = "<text>", "<speech>"
UNIT_FORMAT = "<unit_{}>"
SP_COPY = "sentencepiece.model"   # not "tokenizer.model": transformers would rebuild its own tokenizer from that


def check_llama(cfg: ModelConfig) -> None:
  """Raises ConfigError naming what of `cfg` a LlamaConfig cannot express."""
  if cfg.kind != "baseline":
    raise ConfigError(f"a {cfg.kind!r} model has no Hugging Face Llama form (its local encoder, patching "
                      f"and local decoder are not a Llama); only config.model.kind='baseline' exports as "
                      f"hf_llama (export the {cfg.kind} with --format=lst_jax)")
  head_dim = cfg.d_global // cfg.global_heads
  if head_dim % 2:
    raise ConfigError(f"head dim {head_dim} is odd: RoPE needs an even head dim")


def token_names(vocab: vocab_lib.Vocab, pieces: list[str]) -> list[str]:
  """The string of every id (index = id): specials, SentencePiece pieces, mode tokens, units."""
  if len(pieces) != vocab.text_size:
    raise ConfigError(f"the SentencePiece model has {len(pieces)} pieces, the vocabulary {vocab.text_size}")
  names = (list(SPECIAL_NAMES) + list(pieces) + [TEXT_MODE, SPEECH_MODE] +
           [UNIT_FORMAT.format(u) for u in range(vocab.num_units)])
  seen = {}
  for i, name in enumerate(names):
    if name in seen:
      raise ConfigError(f"token {name!r} would have two ids ({seen[name]} and {i}): the SentencePiece model "
                        f"has a piece that collides with lst_jax's special tokens")
    seen[name] = i
  return names


def llama_config(cfg: ModelConfig, vocab: vocab_lib.Vocab, max_positions: int) -> dict:
  """transformers' LlamaConfig as config.json."""
  check_llama(cfg)
  return {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": vocab.size, "hidden_size": cfg.d_global, "intermediate_size": cfg.mlp_dim(cfg.d_global),
      "num_hidden_layers": cfg.global_layers, "num_attention_heads": cfg.global_heads,
      "num_key_value_heads": cfg.global_heads, "head_dim": cfg.d_global // cfg.global_heads,
      "hidden_act": "silu", "rms_norm_eps": RMS_NORM_EPS,
      "rope_theta": float(cfg.rope_theta),   # transformers 4.x reads this ...
      "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)},   # ... 5.x this
      "max_position_embeddings": int(max_positions), "tie_word_embeddings": False,
      "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "pretraining_tp": 1,
      "initializer_range": 0.02, "use_cache": True,
      "bos_token_id": vocab_lib.BOS, "eos_token_id": vocab_lib.EOS, "pad_token_id": vocab_lib.PAD,
      "torch_dtype": "float32", "dtype": "float32",
  }


_BLOCK = {"attn_norm.scale": ("input_layernorm.weight", False),
          "attn.q.kernel": ("self_attn.q_proj.weight", True), "attn.k.kernel": ("self_attn.k_proj.weight", True),
          "attn.v.kernel": ("self_attn.v_proj.weight", True), "attn.o.kernel": ("self_attn.o_proj.weight", True),
          "mlp_norm.scale": ("post_attention_layernorm.weight", False),
          "mlp.gate.kernel": ("mlp.gate_proj.weight", True), "mlp.up.kernel": ("mlp.up_proj.weight", True),
          "mlp.down.kernel": ("mlp.down_proj.weight", True)}
_TOP = {"embed.table": ("model.embed_tokens.weight", False), "body.norm.scale": ("model.norm.weight", False),
        "head.kernel": ("lm_head.weight", True)}


def llama_state_dict(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
  """Our parameters (lst_jax.pretrained names) as LlamaForCausalLM's state dict (weights [out, in])."""
  check_llama(cfg)
  out, used = {}, set()
  put = lambda name, x, transpose: out.__setitem__(name, np.ascontiguousarray((x.T if transpose else x), np.float32))
  for ours, (theirs, transpose) in _TOP.items():
    put(theirs, tensors[ours], transpose)
    used.add(ours)
  for ours, (theirs, transpose) in _BLOCK.items():
    for i in range(cfg.global_layers):
      name = f"body.blocks.{ours}" if cfg.scan_layers else f"body.blocks.{i}.{ours}"
      x = tensors[name][i] if cfg.scan_layers else tensors[name]
      put(f"model.layers.{i}.{theirs}", x, transpose)
      used.add(name)
  left = sorted(set(tensors) - used)
  if left:   # e.g. a bias or a q/k norm added to the model later: Llama has no place for it
    raise ConfigError(f"parameter {left[0]} has no Llama counterpart; the baseline no longer is a Llama")
  return out


def _sp_proto(path: str):
  # transformers' copy of the schema: sentencepiece's own module is generated for protobuf 7, and
  # apache-beam (data_prep) holds protobuf at 6.
  from transformers.utils import sentencepiece_model_pb2_new as sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  with open(path, "rb") as f:
    proto.ParseFromString(f.read())
  return proto


def build_tokenizer(sp_model: str, vocab: vocab_lib.Vocab):
  """A `tokenizers.Tokenizer` with our ids, encoding text as the SentencePiece model does.

  Every token lives in the BPE model's vocabulary at its id (the specials, mode and unit tokens
  too, so they keep their ids; tokenizers would renumber tokens that are only "added") and is
  also registered as an added token, so "<speech><unit_3>" in a string becomes two ids. As in
  training (each word encoded as "▁word"), text after a mode token gets the dummy prefix.
  """
  try:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    proto = _sp_proto(sp_model)
  except ImportError as e:
    raise ConfigError(f"the hf_llama tokenizer needs the tokenizers and protobuf packages ({e}); install "
                      f"lst-jax[hf]") from None
  if proto.trainer_spec.model_type != 2:   # sentencepiece_model.proto: 1 unigram, 2 bpe
    raise ConfigError(f"{sp_model} is not a BPE SentencePiece model (type {proto.trainer_spec.model_type}); "
                      f"the tokenizer.json export supports BPE models (data_prep's)")
  pieces = [p.piece for p in proto.pieces]
  names = token_names(vocab, pieces)
  ids = {name: i for i, name in enumerate(names)}
  # BPE merges ranked as SentencePiece merges: higher-scored (normal, type 1) pieces first.
  normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == 1}
  ranked = sorted((-score, i, piece[:k], piece[k:]) for piece, (score, i) in normal.items()
                  for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
  unk = proto.pieces[proto.trainer_spec.unk_id].piece
  tok = Tokenizer(BPE(vocab=ids, merges=[(a, b) for _, _, a, b in ranked], unk_token=unk, fuse_unk=True,
                      byte_fallback=proto.trainer_spec.byte_fallback))
  spec = proto.normalizer_spec
  norm = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
  if spec.remove_extra_whitespaces:
    norm += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
  if spec.escape_whitespaces:
    norm.append(normalizers.Replace(" ", "▁"))
  if spec.add_dummy_prefix:
    norm.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))   # Metaspace skips a prefix SentencePiece adds
  tok.normalizer = normalizers.Sequence(norm)
  if spec.add_dummy_prefix:
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
  tok.decoder = decoders.Sequence(
      [decoders.Replace("▁", " ")] + ([decoders.ByteFallback()] if proto.trainer_spec.byte_fallback else []) +
      [decoders.Fuse()] + ([decoders.Strip(content=" ", left=1)] if spec.add_dummy_prefix else []))
  control = [p.piece for p in proto.pieces if p.type == 3]        # whole, never split (as SentencePiece)
  user_defined = [p.piece for p in proto.pieces if p.type == 4]
  tok.add_special_tokens([AddedToken(n, special=True, normalized=False)
                          for n in list(SPECIAL_NAMES) + control + [TEXT_MODE, SPEECH_MODE]])
  tok.add_tokens([AddedToken(n, special=False, normalized=False)
                  for n in user_defined + [UNIT_FORMAT.format(u) for u in range(vocab.num_units)]])
  bos = SPECIAL_NAMES[vocab_lib.BOS]
  tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                     special_tokens=[(bos, vocab_lib.BOS)])
  for name, i in ids.items():   # an added token that silently got another id would shift every unit
    if tok.token_to_id(name) != i:
      raise ConfigError(f"tokenizer.json would give {name!r} id {tok.token_to_id(name)}, not {i}")
  return tok


def tokenizer_config(vocab: vocab_lib.Vocab, max_positions: int) -> dict:
  pad, bos, eos = (SPECIAL_NAMES[i] for i in (vocab_lib.PAD, vocab_lib.BOS, vocab_lib.EOS))
  return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos, "pad_token": pad,
          "add_bos_token": True, "add_eos_token": False, "model_max_length": int(max_positions),
          "clean_up_tokenization_spaces": False, "extra_special_tokens": [TEXT_MODE, SPEECH_MODE]}


def save_hf_llama(directory: str, cfg: ModelConfig, tensors: dict[str, np.ndarray], vocab: vocab_lib.Vocab,
                  max_positions: int, sp_model: str | None) -> list[str]:
  """Writes config.json, generation_config.json, model.safetensors and (given the SentencePiece
  model) tokenizer.json, tokenizer_config.json and a copy of the .model; returns the files."""
  from safetensors.numpy import save_file
  config = llama_config(cfg, vocab, max_positions)
  state = llama_state_dict(tensors, cfg)
  tok = build_tokenizer(sp_model, vocab) if sp_model else None
  os.makedirs(directory, exist_ok=True)
  written = []

  def dump(name, obj):
    storage.write_json(os.path.join(directory, name), obj)
    written.append(name)

  dump("config.json", config)
  dump("generation_config.json", {"bos_token_id": vocab_lib.BOS, "eos_token_id": vocab_lib.EOS,
                                  "pad_token_id": vocab_lib.PAD})
  save_file(state, os.path.join(directory, WEIGHTS), metadata={"format": "pt"})
  os.chmod(os.path.join(directory, WEIGHTS), 0o644)   # safetensors writes it private
  written.append(WEIGHTS)
  if tok is not None:
    tok.save(os.path.join(directory, "tokenizer.json"))
    dump("tokenizer_config.json", tokenizer_config(vocab, max_positions))
    dump("special_tokens_map.json", {k: v for k, v in tokenizer_config(vocab, max_positions).items()
                                     if k in ("bos_token", "eos_token", "pad_token")})
    written.append("tokenizer.json")
  return written

