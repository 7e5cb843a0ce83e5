"""The shared speech-text vocabulary (paper.md section 1).

Layout of ids, in order:
  0 PAD, 1 BOS, 2 EOS                      special ids
  [3, 3 + T)                               text ids (SentencePiece id + 3)
  3 + T       TEXT_MODE  "<t>"             opens every text span
  3 + T + 1   SPEECH_MODE "<s>"            opens every speech span
  [3 + T + 2, 3 + T + 2 + U)               one id per speech unit (not deduplicated)
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD, BOS, EOS = 0, 1, 2
NUM_SPECIAL = 3


@dataclasses.dataclass(frozen=True)
class Vocab:
  text_size: int   # SentencePiece pieces
  num_units: int   # speech codebook entries

  @property
  def text_mode(self) -> int:
    return NUM_SPECIAL + self.text_size

  @property
  def speech_mode(self) -> int:
    return self.text_mode + 1

  @property
  def unit_offset(self) -> int:
    return self.speech_mode + 1

  @property
  def size(self) -> int:
    return self.unit_offset + self.num_units

  def text(self, sp_ids) -> np.ndarray:
    return np.asarray(sp_ids, np.int32) + NUM_SPECIAL

  def units(self, unit_ids) -> np.ndarray:
    return np.asarray(unit_ids, np.int32) + self.unit_offset

  # The token classes below take numpy or jax arrays (also traced, under jit) and answer in kind:
  # the one definition for data preparation, training losses and decoding alike.

  def is_speech(self, ids):
    """True for speech-unit ids (not the speech mode token)."""
    return _array(ids) >= self.unit_offset

  def is_text(self, ids):
    """True for text-piece ids (not specials or mode tokens)."""
    ids = _array(ids)
    return (ids >= NUM_SPECIAL) & (ids < self.text_mode)

  def is_mode(self, ids):
    """True for the two mode tokens (<t>, <s>) that open a span."""
    ids = _array(ids)
    return (ids == self.text_mode) | (ids == self.speech_mode)


# The paper's vocabulary: Llama-2's 32,000 text pieces and 501 HuBERT units (what memory and
# compile estimates assume before a dataset is read).
PAPER = Vocab(text_size=32000, num_units=501)


def _array(ids):
  """Arrays (numpy, jax, traced) as they are; lists and scalars as numpy."""
  return ids if hasattr(ids, "shape") else np.asarray(ids)
