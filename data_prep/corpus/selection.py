"""Which verses are spoken, by whom, and which become text-only documents.

Speech verses come from a fixed set of books and have 8-40 words (long enough
to interleave, short enough for one utterance). Held-out speech verses are
disjoint from training speech verses; text-only training documents use other
verses only (never held-out ones, never training speech ones), a few
consecutive verses per document. Held-out verses also serve as held-out
text-only documents. Every choice is a pure function of the seed.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from data_prep.corpus.kjv import Verse

SPEECH_BOOKS = ("Ge", "Psa", "Prv", "Mat", "Luke", "John")
MIN_WORDS, MAX_WORDS = 8, 40
VERSES_PER_DOC = 4


class CorpusError(ValueError):
  """The requested counts do not fit the available verses."""


@dataclasses.dataclass(frozen=True)
class Doc:
  id: str
  words: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Corpus:
  train_speech: tuple[Verse, ...]
  heldout_speech: tuple[Verse, ...]
  train_docs: tuple[Doc, ...]
  heldout_docs: tuple[Doc, ...]

  def tokenizer_lines(self) -> list[str]:
    """The tokenizer's training text: training speech verses and training documents."""
    return ([" ".join(v.words) for v in self.train_speech] +
            [" ".join(d.words) for d in self.train_docs])


def select(verses: Sequence[Verse], num_train: int, num_heldout: int, num_docs: int,
           seed: int = 0) -> Corpus:
  """Splits `verses` (in canonical order) into the demo corpus."""
  rng = random.Random(seed)
  candidates = [v for v in verses if v.book in SPEECH_BOOKS and MIN_WORDS <= len(v.words) <= MAX_WORDS]
  if num_train + num_heldout > len(candidates):
    raise CorpusError(f"asked for {num_train} train + {num_heldout} held-out speech verses; only "
                      f"{len(candidates)} verses of {MIN_WORDS}-{MAX_WORDS} words in {SPEECH_BOOKS}")
  order = {v.ref: i for i, v in enumerate(verses)}
  picked = rng.sample(candidates, num_train + num_heldout)
  heldout = sorted(picked[:num_heldout], key=lambda v: order[v.ref])
  train = sorted(picked[num_heldout:], key=lambda v: order[v.ref])
  spoken = {v.ref for v in picked}
  rest = [v for v in verses if v.ref not in spoken]
  groups = [rest[i:i + VERSES_PER_DOC] for i in range(0, len(rest) - VERSES_PER_DOC + 1, VERSES_PER_DOC)]
  if num_docs > len(groups):
    raise CorpusError(f"asked for {num_docs} text documents; only {len(groups)} are available")
  chosen = sorted(rng.sample(range(len(groups)), num_docs))
  train_docs = tuple(_doc(groups[i]) for i in chosen)
  heldout_docs = tuple(_doc([v]) for v in heldout)
  return Corpus(tuple(train), tuple(heldout), train_docs, heldout_docs)


def _doc(verses: Sequence[Verse]) -> Doc:
  ref = verses[0].ref if len(verses) == 1 else f"{verses[0].ref}-{verses[-1].ref}"
  return Doc(id=ref, words=tuple(w for v in verses for w in v.words))
