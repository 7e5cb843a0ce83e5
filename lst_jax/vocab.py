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

  def is_speech(self, ids) -> np.ndarray:
    """True for speech-unit ids (not the speech mode token)."""
    return np.asarray(ids) >= self.unit_offset

  def is_text(self, ids) -> np.ndarray:
    """True for text-piece ids (not specials or mode tokens)."""
    ids = np.asarray(ids)
    return (ids >= NUM_SPECIAL) & (ids < self.text_mode)
