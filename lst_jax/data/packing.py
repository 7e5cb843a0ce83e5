"""Fixed-shape rows: the one row schema, and the one packer of documents into rows.

A document enters packing as per-token features (tokens, targets, patch_start)
and per-patch features (patch_len). Grain's first-fit packer places whole
documents so that both caps hold; `finalize_row` then derives the index maps
the model needs. A document longer than either cap is truncated first (the
one documented loss, counted in `truncated_tokens`). Training, held-out
evaluation and benchmark scoring all make their rows with `pack_rows`; every
inference path (scoring, decoding, benchmarks) turns a token sequence into a
document with `inference_document` (static patches, cut to both caps).

The row schema (what the model reads; numpy int32 unless said):
  [T] tokens, targets, loss_mask (bool), token_segment (document in the row, 0 = padding),
      token_pos, token_patch (patch index in the row; padding points at patch 0)
  [P] patch_segment, patch_pos, patch_len, patch_first (first token of each patch),
      patch_aligned (patch of an aligned-patched document)
  []  truncated_tokens (tokens cut from this row's documents to fit the caps)
"""

from __future__ import annotations

import grain
import numpy as np

from lst_jax import vocab as vocab_lib
from lst_jax.data import patching

TOKEN_FEATURES = ("tokens", "targets", "patch_start", "truncated")   # per document, before packing
PATCH_FEATURES = ("patch_len", "patch_aligned")
ROW_TOKEN_FIELDS = ("tokens", "targets", "loss_mask", "token_segment", "token_pos", "token_patch")
ROW_PATCH_FIELDS = ("patch_segment", "patch_pos", "patch_len", "patch_first", "patch_aligned")


def _segments(feature: str) -> str:
  """Grain's packer adds, per packed feature, the document (1.., 0 = padding) of each slot ..."""
  return f"{feature}_segment_ids"


def _positions(feature: str) -> str:
  """... and the slot's position inside its document."""
  return f"{feature}_positions"


class FinalizeRow(grain.transforms.Map):

  def __init__(self, max_patches: int, carry: tuple[str, ...] = ()):
    self.max_patches, self.carry = max_patches, carry

  def map(self, element: dict) -> dict:
    row = finalize_row(element, self.max_patches)
    row.update({k: element[k] for k in self.carry})
    return row


def pack_rows(documents: grain.IterDataset, max_tokens: int, max_patches: int, bins: int, seed: int,
              shuffle_bins: bool, carry_token_features: tuple[str, ...] = ()) -> grain.IterDataset:
  """Documents (document_features dicts) -> rows of the schema above, first fit into `bins` open rows.

  `carry_token_features`: extra per-token document features laid into the row as they are
  (e.g. which scored sequence a target belongs to)."""
  token_keys = TOKEN_FEATURES + tuple(carry_token_features)
  length = {**dict.fromkeys(token_keys, max_tokens), **dict.fromkeys(PATCH_FEATURES, max_patches)}
  rows = grain.experimental.FirstFitPackIterDataset(
      documents, length_struct=length, num_packing_bins=bins, seed=seed, shuffle_bins=shuffle_bins)
  return rows.map(FinalizeRow(max_patches, tuple(carry_token_features)))


def stack(rows: list[dict]) -> dict:
  """Rows -> a batch: each field stacked along a new leading axis."""
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def save_batches(path: str, batches: list[dict]) -> None:
  """Batches of packed rows to one .npz (fields named "<batch>/<field>"), e.g. to time the same
  batches in another process."""
  np.savez(path, **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})


def load_batches(path: str) -> list[dict]:
  """save_batches' batches, in order."""
  out: dict[int, dict] = {}
  with np.load(path) as f:
    for name in f.files:
      i, k = name.split("/", 1)
      out.setdefault(int(i), {})[k] = f[name]
  return [out[i] for i in sorted(out)]


def document_features(tokens: np.ndarray, starts: np.ndarray, max_tokens: int, max_patches: int,
                      aligned: bool = False) -> tuple[dict, int]:
  """Per-document features for the packer, truncated to fit; returns (features, tokens cut).

  targets[t] = tokens[t + 1] (PAD where there is no next token, which also masks
  the loss); a truncated document loses its last target as well, so no target
  ever lies outside the row. `truncated` holds the number of tokens cut at the
  document's first token (0 elsewhere); `patch_aligned` marks aligned patching.
  """
  n = len(tokens)
  keep = fitting_length(starts, max_tokens, max_patches)
  targets = np.empty(keep, np.int32)
  targets[:-1] = tokens[1:keep]
  targets[-1] = vocab_lib.PAD
  truncated = np.zeros(keep, np.int32)
  truncated[0] = n - keep
  lengths = patching.patch_lengths(starts[:keep])
  feats = {"tokens": tokens[:keep], "targets": targets, "patch_start": starts[:keep].astype(np.int32),
           "truncated": truncated, "patch_len": lengths,
           "patch_aligned": (np.ones if aligned else np.zeros)(len(lengths), np.int32)}
  return feats, n - keep


def fitting_length(starts: np.ndarray, max_tokens: int, max_patches: int) -> int:
  """How many leading tokens of a document with these patch starts fit [max_tokens] tokens and
  [max_patches] patches."""
  n = len(starts)
  if n <= max_tokens and starts.sum() <= max_patches:
    return n
  return int(min(n, max_tokens, np.searchsorted(np.cumsum(starts), max_patches, side="right")))


def inference_document(tokens, vocab: vocab_lib.Vocab, patch_size: int, max_tokens: int,
                       max_patches: int) -> tuple[dict, int]:
  """A token sequence as every inference path reads it (scoring, decoding, benchmarks):
  patched as inference patches (patching.inference_starts) and cut at the end to fit both
  caps; returns (document_features, tokens cut)."""
  tokens = np.asarray(tokens, np.int32)
  return document_features(tokens, patching.inference_starts(vocab.is_speech(tokens), patch_size), max_tokens,
                           max_patches)


def inference_row(tokens, vocab: vocab_lib.Vocab, patch_size: int, max_tokens: int, max_patches: int) -> dict:
  """A row holding `tokens` as its only document (inference_document), the rest padding: what a
  from-scratch forward of a decoded sequence or an exported model's check reads. Raises
  ValueError when the sequence does not fit whole."""
  features, cut = inference_document(tokens, vocab, patch_size, max_tokens, max_patches)
  if cut:
    raise ValueError(f"{len(tokens)} tokens do not fit a row of {max_tokens} tokens / {max_patches} patches "
                     f"({cut} would be cut)")
  return single_document_row(features, max_tokens, max_patches)


def finalize_row(packed: dict, max_patches: int) -> dict:
  """Turns one packed row (Grain's packer output) into the row schema above."""
  starts = packed["patch_start"].astype(bool)
  token_segment = packed[_segments("tokens")].astype(np.int32)
  token_patch = np.cumsum(starts).astype(np.int32) - 1
  token_patch = np.where(token_segment > 0, token_patch, 0)
  first = np.flatnonzero(starts).astype(np.int32)
  patch_first = np.zeros(max_patches, np.int32)
  patch_first[:len(first)] = first
  return {
      "tokens": packed["tokens"].astype(np.int32),
      "targets": packed["targets"].astype(np.int32),
      "loss_mask": (packed["targets"] != vocab_lib.PAD) & (token_segment > 0),
      "token_segment": token_segment,
      "token_pos": packed[_positions("tokens")].astype(np.int32),
      "token_patch": token_patch,
      "patch_segment": packed[_segments("patch_len")].astype(np.int32),
      "patch_pos": packed[_positions("patch_len")].astype(np.int32),
      "patch_len": packed["patch_len"].astype(np.int32),
      "patch_first": patch_first,
      "patch_aligned": packed["patch_aligned"].astype(np.int32),
      "truncated_tokens": np.int32(packed["truncated"].sum()),
  }


def single_document_row(features: dict, max_tokens: int, max_patches: int) -> dict:
  """One document's features (document_features) alone in a row, the rest padding: what a
  from-scratch forward of a decoded sequence reads."""
  n, m = len(features["tokens"]), len(features["patch_len"])
  pad = lambda x, size: np.pad(np.asarray(x, np.int32), (0, size - len(x)))
  packed = {k: pad(features[k], max_tokens) for k in TOKEN_FEATURES}
  packed.update({k: pad(features[k], max_patches) for k in PATCH_FEATURES})
  packed.update({_segments("tokens"): pad(np.ones(n), max_tokens), _positions("tokens"): pad(np.arange(n), max_tokens),
                 _segments("patch_len"): pad(np.ones(m), max_patches),
                 _positions("patch_len"): pad(np.arange(m), max_patches)})
  return finalize_row(packed, max_patches)


def empty_row(max_tokens: int, max_patches: int) -> dict:
  """An all-padding row (pads the last batch of a finite evaluation stream)."""
  packed = {k: np.zeros(max_tokens, np.int32) for k in
            TOKEN_FEATURES + (_segments("tokens"), _positions("tokens"))}
  packed.update({k: np.zeros(max_patches, np.int32) for k in
                 PATCH_FEATURES + (_segments("patch_len"), _positions("patch_len"))})
  return finalize_row(packed, max_patches)
