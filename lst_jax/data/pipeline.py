"""The Grain input pipeline: ArrayRecord shards -> packed, fixed-shape batches.

  ArrayRecordDataSource -> MapDataset (per-process slice, shuffle, repeat)
  -> mix utterances and text-only documents -> interleave + patch (a random map:
  the draw is a pure function of seed and element index, so each epoch draws
  anew and a restored iterator replays exactly) -> first-fit packing into
  [T] tokens and [P] patches -> finalize_row -> batch.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from lst_jax import vocab as vocab_lib
from lst_jax.data import interleave as interleave_lib
from lst_jax.data import packing, patching, records
from lst_jax.data.manifest import Manifest


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int = 8                 # rows per batch on this process
  max_tokens: int = 768               # T
  max_patches: int = 256              # P
  patching: str = patching.STATIC
  patch_size: int = 4                 # static p
  max_patch_len: int = 4              # aligned segments longer than this are split
  speech_weight: float = 0.33         # share of interleaved utterances in the mixture
  text_weight: float = 0.67           # share of text-only documents
  packing_bins: int = 8
  seed: int = 0
  interleave: interleave_lib.InterleaveConfig = interleave_lib.InterleaveConfig()


class MakeDocument(grain.transforms.RandomMap):
  """Record bytes -> per-document packing features (interleaved and patched)."""

  def __init__(self, vocab: vocab_lib.Vocab, cfg: PipelineConfig, strategy: str):
    self.vocab, self.cfg, self.strategy = vocab, cfg, strategy

  def random_map(self, element: bytes, rng: np.random.Generator) -> dict:
    seq = interleave_lib.interleave(records.decode(element), self.vocab, rng, self.cfg.interleave)
    if self.strategy == patching.STATIC:
      starts = patching.static_patch_starts(seq.is_speech, self.cfg.patch_size)
    elif self.strategy == patching.ALIGNED:
      starts = patching.aligned_patch_starts(seq.is_speech, seq.align_start, self.cfg.max_patch_len)
    else:
      raise ValueError(f"unknown patching strategy {self.strategy!r}")
    features, _ = packing.document_features(seq.tokens, starts, self.cfg.max_tokens, self.cfg.max_patches)
    return features


class FinalizeRow(grain.transforms.Map):

  def __init__(self, max_patches: int):
    self.max_patches = max_patches

  def map(self, element: dict) -> dict:
    return packing.finalize_row(element, self.max_patches)


def vocab_of(manifest: Manifest) -> vocab_lib.Vocab:
  return vocab_lib.Vocab(text_size=manifest.text_vocab_size, num_units=manifest.num_units)


def _source(paths, process_index: int, process_count: int) -> grain.MapDataset | None:
  if not paths:
    return None
  return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(list(paths)))[process_index::process_count]


def _pack(ds: grain.IterDataset, cfg: PipelineConfig, shuffle_bins: bool) -> grain.IterDataset:
  t, p = cfg.max_tokens, cfg.max_patches
  length = {"tokens": t, "targets": t, "patch_start": t, "patch_len": p}
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=length, num_packing_bins=cfg.packing_bins, seed=cfg.seed, shuffle_bins=shuffle_bins)
  return ds.map(FinalizeRow(p))


def train_dataset(manifest: Manifest, cfg: PipelineConfig, split: str = "train",
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """An infinite stream of batches (dicts of numpy arrays [batch_size, ...])."""
  s = manifest.split(split)
  parts, weights = [], []
  for paths, weight in ((s.speech, cfg.speech_weight), (s.text, cfg.text_weight)):
    src = _source(paths, process_index, process_count)
    if src is not None and weight > 0:
      parts.append(src.shuffle(seed=cfg.seed + len(parts)).repeat())
      weights.append(weight)
  if not parts:
    raise ValueError(f"split {split!r} of {manifest.dir} has no data with positive mixture weight")
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
  ds = ds.random_map(MakeDocument(vocab_of(manifest), cfg, cfg.patching), seed=cfg.seed)
  ds = _pack(ds.to_iter_dataset(), cfg, shuffle_bins=True)
  return ds.batch(cfg.batch_size, drop_remainder=True)


def eval_batches(manifest: Manifest, cfg: PipelineConfig, split: str = "heldout",
                 process_index: int = 0, process_count: int = 1, max_batches: int | None = None):
  """Every document of a split once, statically patched, with one fixed draw; the
  last batch is padded with empty rows (padding carries no loss)."""
  s = manifest.split(split)
  srcs = [x for x in (_source(s.speech, process_index, process_count),
                      _source(s.text, process_index, process_count)) if x is not None]
  if not srcs:
    raise ValueError(f"split {split!r} of {manifest.dir} is empty")
  ds = grain.MapDataset.concatenate(srcs) if len(srcs) > 1 else srcs[0]
  ds = ds.random_map(MakeDocument(vocab_of(manifest), cfg, patching.STATIC), seed=cfg.seed + 7919)
  rows = _pack(ds.to_iter_dataset(), cfg, shuffle_bins=False)
  batch, produced = [], 0
  for row in rows:
    batch.append(row)
    if len(batch) == cfg.batch_size:
      yield _stack(batch)
      batch, produced = [], produced + 1
      if max_batches is not None and produced >= max_batches:
        return
  if batch:
    batch += [packing.empty_row(cfg.max_tokens, cfg.max_patches)] * (cfg.batch_size - len(batch))
    yield _stack(batch)


def _stack(rows: list[dict]) -> dict:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
