"""Fixed-shape rows: pack several documents into [T] tokens and [P] patches.

A document enters packing as per-token features (tokens, targets, patch_start)
and one per-patch feature (patch_len). Grain's first-fit packer places whole
documents so that both caps hold; `finalize_row` then derives the index maps
the model needs. A document longer than either cap is truncated first (the
one documented loss, counted in `truncated_tokens`).
"""

from __future__ import annotations

import numpy as np

from lst_jax import vocab as vocab_lib
from lst_jax.data import patching

TOKEN_FEATURES = ("tokens", "targets", "patch_start", "truncated")
PATCH_FEATURES = ("patch_len", "patch_aligned")


def document_features(tokens: np.ndarray, starts: np.ndarray, max_tokens: int, max_patches: int,
                      aligned: bool = False) -> tuple[dict, int]:
  """Per-document features for the packer, truncated to fit; returns (features, tokens cut).

  targets[t] = tokens[t + 1] (PAD where there is no next token, which also masks
  the loss); a truncated document loses its last target as well, so no target
  ever lies outside the row. `truncated` holds the number of tokens cut at the
  document's first token (0 elsewhere); `patch_aligned` marks aligned patching.
  """
  n = len(tokens)
  keep = n
  if n > max_tokens or starts.sum() > max_patches:
    patches_upto = np.cumsum(starts)
    keep = int(min(n, max_tokens, np.searchsorted(patches_upto, max_patches, side="right")))
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


def finalize_row(packed: dict, max_patches: int) -> dict:
  """Turns one packed row into the model's inputs (all int32 / bool numpy).

  tokens, targets [T]; loss_mask [T] (a real target exists);
  token_segment [T] (document id in the row, 0 = padding); token_pos [T];
  token_patch [T] (patch index in the row; padding points at patch 0);
  patch_segment, patch_pos, patch_len [P]; patch_first [P] (first token of each patch);
  patch_aligned [P] (patch of an aligned-patched document); truncated_tokens (tokens cut
  from this row's documents to fit the caps).
  """
  starts = packed["patch_start"].astype(bool)
  token_segment = packed["tokens_segment_ids"].astype(np.int32)
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
      "token_pos": packed["tokens_positions"].astype(np.int32),
      "token_patch": token_patch,
      "patch_segment": packed["patch_len_segment_ids"].astype(np.int32),
      "patch_pos": packed["patch_len_positions"].astype(np.int32),
      "patch_len": packed["patch_len"].astype(np.int32),
      "patch_first": patch_first,
      "patch_aligned": packed["patch_aligned"].astype(np.int32),
      "truncated_tokens": np.int32(packed["truncated"].sum()),
  }


def empty_row(max_tokens: int, max_patches: int) -> dict:
  """An all-padding row (pads the last batch of a finite evaluation stream)."""
  packed = {k: np.zeros(max_tokens, np.int32) for k in
            TOKEN_FEATURES + ("tokens_segment_ids", "tokens_positions")}
  packed.update({k: np.zeros(max_patches, np.int32) for k in
                 PATCH_FEATURES + ("patch_len_segment_ids", "patch_len_positions")})
  return finalize_row(packed, max_patches)
