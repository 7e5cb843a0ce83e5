"""Text tokenizer: a SentencePiece BPE model, trained here or loaded from the user's `.model`.

No BOS/EOS/PAD pieces: the model's shared vocabulary (lst_jax/vocab.py) owns
the special ids, and the text ids are this model's piece ids (unk = 0). Words
are encoded one at a time (as sentence-initial "▁word"), so a word's tokens do
not depend on its neighbours and every word gets at least one id.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import sentencepiece as spm

MODEL = "tokenizer.model"
UNK_ID = 0


def train(lines: Iterable[str], vocab_size: int = 1000) -> bytes:
  """Trains a BPE model on `lines` (one sentence or document each); returns the serialized model.

  `vocab_size` is an upper bound (hard_vocab_limit off) so tiny corpora still
  train; read the real size from the loaded model. One thread, no shuffling:
  deterministic.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(list(lines)), model_writer=model, model_type="bpe",
      vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
      bos_id=-1, eos_id=-1, pad_id=-1, unk_id=UNK_ID, num_threads=1,
      input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=1 << 16,
      minloglevel=2)
  return model.getvalue()


def save(model: bytes, directory: str) -> str:
  """Writes <directory>/tokenizer.model atomically; returns its path."""
  path = os.path.join(directory, MODEL)
  with open(path + ".tmp", "wb") as f:
    f.write(model)
  os.replace(path + ".tmp", path)
  return path


def load(path_or_model: str | bytes) -> spm.SentencePieceProcessor:
  """Loads a `.model` file (path) or serialized model (bytes)."""
  if isinstance(path_or_model, bytes):
    return spm.SentencePieceProcessor(model_proto=path_or_model)
  if not os.path.isfile(path_or_model):
    raise FileNotFoundError(f"no SentencePiece model at {path_or_model!r}")
  return spm.SentencePieceProcessor(model_file=path_or_model)


def encode_words(sp: spm.SentencePieceProcessor, words: Sequence[str]) -> list[list[int]]:
  """Token ids per word; a word that would encode to nothing becomes [unk]."""
  ids = sp.encode(list(words), out_type=int) if words else []
  return [w if w else [sp.unk_id()] for w in ids]
