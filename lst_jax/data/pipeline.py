"""The Grain input pipeline: ArrayRecord shards -> packed, fixed-shape batches.

  Shards (ArrayRecord files, records decoded) -> MapDataset (per-process slice, shuffle, repeat), one
  stream each for interleaved utterances, text-only documents and speech-only
  utterances -> weighted mix -> document (interleave + patch; every random
  choice is a pure function of the seed and the element's index in the stream,
  and training progress is that index over the run's documents, so each epoch
  draws anew and a restored iterator replays exactly) -> first-fit packing into
  [T] tokens and [P] patches -> finalize_row -> batch.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from lst_jax import vocab as vocab_lib
from lst_jax.config import DataConfig, PatchingConfig
from lst_jax.data import interleave as interleave_lib
from lst_jax.data import packing, patching, records
from lst_jax.data.manifest import DataError, Manifest
from lst_jax.data.rng import DocRng
from lst_jax.data.shards import Shards

INTERLEAVED, TEXT_ONLY, SPEECH_ONLY = "interleaved", "text", "speech_only"


class Tag(grain.transforms.Map):
  """Marks which stream an element came from, before the streams are mixed."""

  def __init__(self, stream: str):
    self.stream = stream

  def map(self, element: records.Record) -> tuple[str, records.Record]:
    return self.stream, element


class MakeDocument(grain.transforms.MapWithIndex):
  """(stream, record) at stream index i -> per-document packing features."""

  def __init__(self, vocab: vocab_lib.Vocab, cfg: DataConfig, patch_cfg: PatchingConfig, seed: int,
               total_docs: int = 0):
    self.vocab, self.cfg, self.patch_cfg, self.seed, self.total_docs = vocab, cfg, patch_cfg, seed, total_docs

  def map_with_index(self, index: int, element: tuple[str, records.Record]) -> dict:
    stream, record = element
    rng = DocRng(self.seed, index)
    seq = interleave_lib.interleave(record, self.vocab, rng, self.cfg.interleave,
                                    speech_only=stream == SPEECH_ONLY)
    progress = min(1.0, index / self.total_docs) if self.total_docs else 0.0
    starts, aligned = patching.document_patch_starts(seq, self.patch_cfg, progress, rng)
    features, _ = packing.document_features(seq.tokens, starts, self.cfg.max_tokens, self.cfg.max_patches,
                                            aligned=aligned)
    return features


def vocab_of(manifest: Manifest) -> vocab_lib.Vocab:
  return vocab_lib.Vocab(text_size=manifest.text_vocab_size, num_units=manifest.num_units)


def _source(manifest: Manifest, paths, process_index: int, process_count: int) -> grain.MapDataset | None:
  """This process's slice of the records in `paths` (decoded; a damaged one raises ShardError)."""
  source = Shards(paths, manifest.shard_records, manifest.limits) if paths else None
  if source is None or len(source) == 0:
    return None
  return grain.MapDataset.source(source)[process_index::process_count]


def documents(manifest: Manifest, cfg: DataConfig, split: str = "train", process_index: int = 0,
              process_count: int = 1, total_docs: int = 0) -> grain.MapDataset:
  """The infinite, shuffled, mixed stream of per-document features (before packing)."""
  s = manifest.split(split)
  streams = ((INTERLEAVED, s.speech, cfg.interleaved_weight), (TEXT_ONLY, s.text, cfg.text_weight),
             (SPEECH_ONLY, s.speech, cfg.speech_only_weight))
  parts, weights = [], []
  for i, (stream, paths, weight) in enumerate(streams):
    src = _source(manifest, paths, process_index, process_count)
    if src is not None and weight > 0:
      parts.append(src.shuffle(seed=cfg.seed + 1 + i).repeat().map(Tag(stream)))
      weights.append(weight)
  if not parts:
    raise DataError(f"split {split!r} of {manifest.dir} has no data in a stream with positive mixture "
                     f"weight (interleaved {cfg.interleaved_weight}, text {cfg.text_weight}, "
                     f"speech-only {cfg.speech_only_weight})")
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
  return ds.map_with_index(MakeDocument(vocab_of(manifest), cfg, cfg.patching, cfg.seed, total_docs))


def train_dataset(manifest: Manifest, cfg: DataConfig, batch_size: int, split: str = "train",
                  process_index: int = 0, process_count: int = 1, total_docs: int = 0) -> grain.IterDataset:
  """An infinite stream of batches (dicts of numpy arrays [batch_size, ...]; batch_size rows of this
  process). `total_docs`: documents this process reads over the whole run (curriculum progress)."""
  ds = documents(manifest, cfg, split, process_index, process_count, total_docs).to_iter_dataset()
  return _rows(ds, cfg, shuffle_bins=True).batch(batch_size, drop_remainder=True)


def _rows(docs: grain.IterDataset, cfg: DataConfig, shuffle_bins: bool) -> grain.IterDataset:
  return packing.pack_rows(docs, cfg.max_tokens, cfg.max_patches, cfg.packing_bins, cfg.seed, shuffle_bins)


def docs_per_batch(manifest: Manifest, cfg: DataConfig, batch_size: int, batches: int = 8) -> float:
  """Documents one batch holds, measured on the first batches of a fixed draw with half the
  documents aligned (the curriculum's midpoint): turns documents read into training progress."""
  probe = dataclasses.replace(cfg, patching=dataclasses.replace(
      cfg.patching, strategy=patching.MIXED, mixed_aligned_prob=0.5))
  it = iter(train_dataset(manifest, probe, batch_size))
  rows = [next(it) for _ in range(batches)]
  docs = sum(len(np.unique(seg[seg > 0])) for b in rows for seg in b["token_segment"])
  return docs / batches


def total_documents(manifest: Manifest, cfg: DataConfig, batch_size: int, steps: int) -> int:
  """Documents a run of `steps` batches reads (0 when its patching does not depend on progress)."""
  if not patching.uses_progress(cfg.patching):
    return 0
  return int(docs_per_batch(manifest, cfg, batch_size) * steps)


def eval_batches(manifest: Manifest, cfg: DataConfig, batch_size: int, split: str = "heldout",
                 process_index: int = 0, process_count: int = 1, max_batches: int | None = None):
  """Every document of a split once, statically patched, with one fixed draw; the
  last batch is padded with empty rows (padding carries no loss)."""
  s = manifest.split(split)
  srcs = [src.map(Tag(stream)) for stream, paths in ((INTERLEAVED, s.speech), (TEXT_ONLY, s.text))
          if (src := _source(manifest, paths, process_index, process_count)) is not None]
  if not srcs:
    raise DataError(f"split {split!r} of {manifest.dir} is empty: nothing to evaluate on")
  ds = grain.MapDataset.concatenate(srcs) if len(srcs) > 1 else srcs[0]
  inference = patching.for_inference(cfg.patching)
  ds = ds.map_with_index(MakeDocument(vocab_of(manifest), cfg, inference, cfg.seed + 7919))
  rows = _rows(ds.to_iter_dataset(), cfg, shuffle_bins=False)
  batch, produced = [], 0
  for row in rows:
    batch.append(row)
    if len(batch) == batch_size:
      yield packing.stack(batch)
      batch, produced = [], produced + 1
      if max_batches is not None and produced >= max_batches:
        return
  if batch:
    batch += [packing.empty_row(cfg.max_tokens, cfg.max_patches)] * (batch_size - len(batch))
    yield packing.stack(batch)


def empty_batch(cfg: DataConfig, batch_size: int) -> dict:
  """A batch of all-padding rows (no loss): evens out evaluation steps across processes."""
  return packing.stack([packing.empty_row(cfg.max_tokens, cfg.max_patches)] * batch_size)
