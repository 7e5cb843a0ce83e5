"""Training the text tokenizer: a SentencePiece BPE model on the corpus's transcripts.

The model has no BOS/EOS/PAD pieces and unk = 0 (see lst_jax.data.tokenizer,
which loads a model and encodes words with it, here and in evaluation).
"""

from __future__ import annotations

import io
import os
from typing import Iterable

import sentencepiece as spm

from lst_jax import storage
from lst_jax.data.tokenizer import MODEL, UNK_ID


MAX_SENTENCE_BYTES = 1 << 16   # SentencePiece skips longer sentences (all of them: it then fails)


def sentences(line: str) -> list[str]:
  """`line` cut at spaces into runs of whole words of at most MAX_SENTENCE_BYTES each (a paragraph of a
  long document); a single word longer than that is left out (no piece could hold it)."""
  if len(line.encode()) <= MAX_SENTENCE_BYTES:
    return [line]
  out, run, size = [], [], 0
  for word in line.split():
    n = len(word.encode()) + 1
    if n > MAX_SENTENCE_BYTES:
      continue
    if size + n > MAX_SENTENCE_BYTES:
      out.append(" ".join(run))
      run, size = [], 0
    run.append(word)
    size += n
  return out + ([" ".join(run)] if run else [])


def train(lines: Iterable[str], vocab_size: int = 1000) -> bytes:
  """Trains a BPE model on `lines` (one sentence or document each); returns the serialized model.

  `vocab_size` is an upper bound (hard_vocab_limit off) so tiny corpora still
  train; read the real size from the loaded model. One thread, no shuffling:
  deterministic.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter([piece for line in lines for piece in sentences(line)]), model_writer=model,
      model_type="bpe",
      vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
      bos_id=-1, eos_id=-1, pad_id=-1, unk_id=UNK_ID, num_threads=1,
      input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=MAX_SENTENCE_BYTES,
      minloglevel=2)
  return model.getvalue()


def save(model: bytes, directory: str) -> str:
  """Writes <directory>/tokenizer.model atomically; returns its path."""
  path = os.path.join(directory, MODEL)
  storage.write_bytes(path, model)
  return path
