"""The Grain input pipeline: ArrayRecord shards -> packed, fixed-shape batches.

  ArrayRecordDataSource -> MapDataset (per-process slice, shuffle, repeat), one
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
from lst_jax.data import interleave as interleave_lib
from lst_jax.data import packing, patching, records
from lst_jax.data.manifest import Manifest
from lst_jax.data.rng import DocRng

INTERLEAVED, TEXT_ONLY, SPEECH_ONLY = "interleaved", "text", "speech_only"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int = 8                 # rows per batch on this process
  max_tokens: int = 768               # T
  max_patches: int = 256              # P
  patching: patching.PatchingConfig = patching.PatchingConfig()
  # Mixture of document streams (normalized): the paper's 33% interleaved, 67% text.
  interleaved_weight: float = 0.33
  text_weight: float = 0.67
  speech_only_weight: float = 0.0
  packing_bins: int = 8
  seed: int = 0
  total_docs: int = 0                 # documents this process reads over the whole run (curriculum)
  interleave: interleave_lib.InterleaveConfig = interleave_lib.InterleaveConfig()


class Tag(grain.transforms.Map):
  """Marks which stream an element came from, before the streams are mixed."""

  def __init__(self, stream: str):
    self.stream = stream

  def map(self, element: bytes) -> tuple[str, bytes]:
    return self.stream, element


class MakeDocument(grain.transforms.MapWithIndex):
  """(stream, record bytes) at stream index i -> per-document packing features."""

  def __init__(self, vocab: vocab_lib.Vocab, cfg: PipelineConfig, patch_cfg: patching.PatchingConfig,
               seed: int):
    self.vocab, self.cfg, self.patch_cfg, self.seed = vocab, cfg, patch_cfg, seed

  def map_with_index(self, index: int, element: tuple[str, bytes]) -> dict:
    stream, raw = element
    rng = DocRng(self.seed, index)
    seq = interleave_lib.interleave(records.decode(raw), self.vocab, rng, self.cfg.interleave,
                                    speech_only=stream == SPEECH_ONLY)
    progress = min(1.0, index / self.cfg.total_docs) if self.cfg.total_docs else 0.0
    starts, aligned = patching.document_patch_starts(seq, self.patch_cfg, progress, rng)
    features, _ = packing.document_features(seq.tokens, starts, self.cfg.max_tokens, self.cfg.max_patches,
                                            aligned=aligned)
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
  length = {**{k: t for k in packing.TOKEN_FEATURES}, **{k: p for k in packing.PATCH_FEATURES}}
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=length, num_packing_bins=cfg.packing_bins, seed=cfg.seed, shuffle_bins=shuffle_bins)
  return ds.map(FinalizeRow(p))


def documents(manifest: Manifest, cfg: PipelineConfig, split: str = "train", process_index: int = 0,
              process_count: int = 1) -> grain.MapDataset:
  """The infinite, shuffled, mixed stream of per-document features (before packing)."""
  s = manifest.split(split)
  streams = ((INTERLEAVED, s.speech, cfg.interleaved_weight), (TEXT_ONLY, s.text, cfg.text_weight),
             (SPEECH_ONLY, s.speech, cfg.speech_only_weight))
  parts, weights = [], []
  for i, (stream, paths, weight) in enumerate(streams):
    src = _source(paths, process_index, process_count)
    if src is not None and weight > 0:
      parts.append(src.shuffle(seed=cfg.seed + 1 + i).repeat().map(Tag(stream)))
      weights.append(weight)
  if not parts:
    raise ValueError(f"split {split!r} of {manifest.dir} has no data in a stream with positive mixture "
                     f"weight (interleaved {cfg.interleaved_weight}, text {cfg.text_weight}, "
                     f"speech-only {cfg.speech_only_weight})")
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
  return ds.map_with_index(MakeDocument(vocab_of(manifest), cfg, cfg.patching, cfg.seed))


def train_dataset(manifest: Manifest, cfg: PipelineConfig, split: str = "train",
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """An infinite stream of batches (dicts of numpy arrays [batch_size, ...])."""
  ds = documents(manifest, cfg, split, process_index, process_count).to_iter_dataset()
  return _pack(ds, cfg, shuffle_bins=True).batch(cfg.batch_size, drop_remainder=True)


def docs_per_batch(manifest: Manifest, cfg: PipelineConfig, batches: int = 8) -> float:
  """Documents one batch holds, measured on the first batches of a fixed draw with half the
  documents aligned (the curriculum's midpoint): turns documents read into training progress."""
  probe = dataclasses.replace(cfg, total_docs=0, patching=dataclasses.replace(
      cfg.patching, strategy=patching.MIXED, mixed_aligned_prob=0.5))
  it = iter(train_dataset(manifest, probe))
  rows = [next(it) for _ in range(batches)]
  docs = sum(len(np.unique(seg[seg > 0])) for b in rows for seg in b["token_segment"])
  return docs / batches


def eval_batches(manifest: Manifest, cfg: PipelineConfig, split: str = "heldout",
                 process_index: int = 0, process_count: int = 1, max_batches: int | None = None):
  """Every document of a split once, statically patched, with one fixed draw; the
  last batch is padded with empty rows (padding carries no loss)."""
  s = manifest.split(split)
  srcs = [src.map(Tag(stream)) for stream, paths in ((INTERLEAVED, s.speech), (TEXT_ONLY, s.text))
          if (src := _source(paths, process_index, process_count)) is not None]
  if not srcs:
    raise ValueError(f"split {split!r} of {manifest.dir} is empty")
  ds = grain.MapDataset.concatenate(srcs) if len(srcs) > 1 else srcs[0]
  static = patching.PatchingConfig(strategy=patching.STATIC, patch_size=cfg.patching.patch_size)
  ds = ds.map_with_index(MakeDocument(vocab_of(manifest), cfg, static, cfg.seed + 7919))
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


def empty_batch(cfg: PipelineConfig) -> dict:
  """A batch of all-padding rows (no loss): evens out evaluation steps across processes."""
  return _stack([packing.empty_row(cfg.max_tokens, cfg.max_patches)] * cfg.batch_size)
