"""One token sequence as a training row: what a from-scratch forward of a decoded prefix reads."""

from __future__ import annotations

import numpy as np

from lst_jax import vocab as vocab_lib
from lst_jax.data import packing, patching


def document_row(tokens, vocab: vocab_lib.Vocab, patch_size: int, max_tokens: int, max_patches: int) -> dict:
  """A row (lst_jax.data.packing's schema) holding `tokens` as one document, statically patched
  as at inference; the rest padding."""
  tokens = np.asarray(tokens, np.int32)
  starts = patching.static_patch_starts(vocab.is_speech(tokens), patch_size)
  if len(tokens) > max_tokens or starts.sum() > max_patches:
    raise ValueError(f"{len(tokens)} tokens / {starts.sum()} patches do not fit a row of "
                     f"{max_tokens} / {max_patches}")
  features, _ = packing.document_features(tokens, starts, max_tokens, max_patches)
  return packing.single_document_row(features, max_tokens, max_patches)
