"""Which entries each shard holds, saved where the workers read them.

A build cuts its input's entries into chunks of --shard_size, one per shard (the
same chunks sample the tokenizer's transcripts). Each chunk's sources are packed
(data_prep/formats/spans.py) and written to a file in the build's scratch folder,
and a pipeline element carries only that file's path: Beam's local runner would
otherwise encode and buffer every element's objects in the launching process
(measured: +480 MB at the start of a 1M-utterance conversion).
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Sequence

import numpy as np

from data_prep.formats import spans as spans_lib
from lst_jax import storage


@dataclasses.dataclass(frozen=True)
class Chunk:
  index: int     # its place in the build: shard `index` holds it
  path: str      # its saved sources
  entries: int


def save(sources: Sequence, size: int, folder: str) -> list[Chunk]:
  """Cuts `sources` into runs of `size` and saves each one in `folder`."""
  chunks = []
  for index, lo in enumerate(range(0, len(sources), size)):
    run = sources[lo:lo + size]
    path = storage.join(folder, f"chunk-{index:05d}.pickle")
    storage.write_bytes(path, pickle.dumps(spans_lib.pack(run), protocol=pickle.HIGHEST_PROTOCOL))
    chunks.append(Chunk(index, path, len(run)))
  return chunks


def load(chunk: Chunk) -> tuple:
  """The sources `save` wrote for `chunk` (a file of this build's own scratch folder)."""
  return spans_lib.unpack(pickle.loads(storage.read_bytes(chunk.path)))


def sample(chunks: list[Chunk], entries: int, seed: int) -> list[Chunk]:
  """Chunks picked in a seeded random order until they hold `entries` entries, kept in input order
  (all of them when they hold fewer): the tokenizer's training text stays bounded as the corpus grows."""
  if sum(c.entries for c in chunks) <= entries:
    return list(chunks)
  picked, total = [], 0
  for i in np.random.default_rng(seed).permutation(len(chunks)):
    if total >= entries:
      break
    picked.append(int(i))
    total += chunks[i].entries
  return [chunks[i] for i in sorted(picked)]
