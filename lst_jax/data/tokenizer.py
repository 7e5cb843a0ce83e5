"""Text tokenizer: loading a dataset's SentencePiece `.model` and encoding words with it.

No BOS/EOS/PAD pieces: the model's shared vocabulary (lst_jax/vocab.py) owns
the special ids, and the text ids are this model's piece ids (unk = 0). Words
are encoded one at a time (as sentence-initial "▁word"), so a word's tokens do
not depend on its neighbours and every word gets at least one id. Here in
lst_jax because evaluation tokenizes benchmark text with the dataset's model;
training one is data_prep's job (data_prep/tokenizer_training.py).
"""

from __future__ import annotations

from typing import Sequence

import sentencepiece as spm

from lst_jax import storage

MODEL = "tokenizer.model"
UNK_ID = 0


def load(path_or_model: str | bytes) -> spm.SentencePieceProcessor:
  """Loads a `.model` file (local path or gs:// URL) or serialized model (bytes)."""
  if isinstance(path_or_model, bytes):
    return spm.SentencePieceProcessor(model_proto=path_or_model)
  if not storage.isfile(path_or_model):
    raise FileNotFoundError(f"no SentencePiece model at {path_or_model!r}")
  return spm.SentencePieceProcessor(model_proto=storage.read_bytes(path_or_model))


def encode_words(sp: spm.SentencePieceProcessor, words: Sequence[str]) -> list[list[int]]:
  """Token ids per word; a word that would encode to nothing becomes [unk]."""
  ids = sp.encode(list(words), out_type=int) if words else []
  return [w if w else [sp.unk_id()] for w in ids]
