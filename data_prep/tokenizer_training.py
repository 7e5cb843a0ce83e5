"""Training the text tokenizer: a SentencePiece BPE model on the corpus's transcripts.

The model has no BOS/EOS/PAD pieces and unk = 0 (see lst_jax.data.tokenizer,
which loads a model and encodes words with it, here and in evaluation).
"""

from __future__ import annotations

import io
import os
from typing import Iterable

import sentencepiece as spm

from lst_jax.data.tokenizer import MODEL, UNK_ID


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
