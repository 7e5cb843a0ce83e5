"""Log-likelihood of token spans under a model: sequences -> packed rows -> jitted log-probs.

A scored sequence is one document, e.g. for a candidate continuation

  BOS <x> prompt... [<y>] candidate...        (x, y: the prompt's and candidate's mode tokens;
                                                <y> only when the modality changes)

with a mask over the tokens whose log-probability counts (the candidate's own
tokens; the mode token is the same for every candidate and is not counted).
Sequences are packed first-fit (data.packing) into the model's fixed [T] token / [P] patch rows
as separate documents (the model is document-masked, so a sequence's scores do
not depend on its row-mates), patched as inference patches (packing.inference_document). The
baseline reads the same rows and ignores the patches.
The model's own forward runs under `jax.jit` with the training shardings; the
per-token log-probabilities come back to the host and are summed per sequence.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import grain
import jax
import numpy as np
import optax
from flax import nnx

from lst_jax import sharding
from lst_jax import vocab as vocab_lib
from lst_jax.data import packing, patching

PACKING_BINS = 1024   # open rows while packing scored sequences: as full as first-fit-decreasing


@dataclasses.dataclass(frozen=True)
class ScoredSequence:
  tokens: np.ndarray      # int32 [n] shared-vocabulary ids, BOS ... (no EOS unless given)
  score: np.ndarray       # bool  [n] tokens whose log-prob is summed
  truncated: int = 0      # prompt tokens dropped from the left to fit the row


class TooLong(ValueError):
  """A sequence cannot fit one row even with its whole prompt dropped."""


def mode_token(vocab: vocab_lib.Vocab, modality: str) -> int:
  return vocab.speech_mode if modality == "S" else vocab.text_mode


def continuation(vocab: vocab_lib.Vocab, prompt_ids: np.ndarray, prompt_mod: str, cand_ids: np.ndarray,
                 cand_mod: str, max_tokens: int, max_patches: int, patch_size: int) -> ScoredSequence:
  """BOS <x> prompt [<y>] candidate, scored on the candidate's tokens.

  `prompt_ids` / `cand_ids` are shared-vocabulary ids. If the sequence does not fit
  [max_tokens] tokens and [max_patches] static patches, the oldest prompt tokens are
  dropped (after BOS <x>), as a model with a finite context would; raises TooLong when
  even the candidate alone does not fit.
  """
  prompt_ids = np.asarray(prompt_ids, np.int32)
  cand_ids = np.asarray(cand_ids, np.int32)
  head = [vocab_lib.BOS, mode_token(vocab, prompt_mod)]
  middle = [mode_token(vocab, cand_mod)] if cand_mod != prompt_mod else []

  def build(drop: int) -> np.ndarray:
    return np.concatenate([np.asarray(head, np.int32), prompt_ids[drop:], np.asarray(middle, np.int32),
                           cand_ids]).astype(np.int32)

  drop = max(0, len(head) + len(prompt_ids) + len(middle) + len(cand_ids) - max_tokens)
  while True:
    if drop > len(prompt_ids):
      raise TooLong(f"a candidate of {len(cand_ids)} tokens does not fit a row of {max_tokens} tokens / "
                    f"{max_patches} patches")
    tokens = build(drop)
    excess = num_patches(tokens, vocab, patch_size) - max_patches
    if excess <= 0:
      break
    drop += excess  # one dropped token removes at most one patch
  score = np.zeros(len(tokens), bool)
  score[len(tokens) - len(cand_ids):] = True
  return ScoredSequence(tokens=tokens, score=score, truncated=drop)


def whole(vocab: vocab_lib.Vocab, tokens: np.ndarray, score: np.ndarray, max_tokens: int,
          max_patches: int, patch_size: int) -> ScoredSequence:
  """A document scored where `score` says, cut at the end to fit one row (`truncated` counts the cut)."""
  features, cut = packing.inference_document(tokens, vocab, patch_size, max_tokens, max_patches)
  kept = features["tokens"]
  return ScoredSequence(tokens=kept, score=np.asarray(score, bool)[:len(kept)], truncated=cut)


def num_patches(tokens: np.ndarray, vocab: vocab_lib.Vocab, patch_size: int) -> int:
  return int(patching.inference_starts(vocab.is_speech(tokens), patch_size).sum())


@dataclasses.dataclass(frozen=True)
class PackedRows:
  rows: list[dict]               # model inputs, one dict per row (packing.finalize_row's layout)
  owner: np.ndarray              # int32 [R, T]: sequence whose scored target sits at this position, -1: none


def pack(sequences: Sequence[ScoredSequence], vocab: vocab_lib.Vocab, max_tokens: int, max_patches: int,
         patch_size: int) -> PackedRows:
  """Whole sequences, longest first, into rows of [T] tokens and [P] patches (data.packing's packer).

  Deterministic. Position t of a row predicts targets[t] = tokens[t + 1] of the same
  sequence; owner[t] names that sequence when tokens[t + 1] is scored.
  """
  docs = []
  for i in sorted(range(len(sequences)), key=lambda i: (-len(sequences[i].tokens), i)):
    seq = sequences[i]
    f, cut = packing.inference_document(seq.tokens, vocab, patch_size, max_tokens, max_patches)
    if cut:
      raise TooLong(f"a sequence of {len(seq.tokens)} tokens / {num_patches(seq.tokens, vocab, patch_size)} "
                    f"patches exceeds the row ({max_tokens} tokens / {max_patches} patches)")
    owner = np.zeros(len(seq.tokens), np.int32)   # sequence + 1 where the target is scored, 0 elsewhere
    owner[:-1] = np.where(seq.score[1:], i + 1, 0)
    docs.append({**f, "owner": owner})
  rows = list(packing.pack_rows(grain.MapDataset.source(docs).to_iter_dataset(), max_tokens, max_patches,
                                PACKING_BINS, seed=0, shuffle_bins=False, carry_token_features=("owner",)))
  owners = [row.pop("owner") - 1 for row in rows]
  return PackedRows(rows=rows, owner=np.stack(owners) if owners else np.zeros((0, max_tokens), np.int32))


def _logprobs(graphdef, mesh, params, batch):
  with sharding.activation_sharding(mesh):
    logits_BTV = nnx.merge(graphdef, params)(batch)
  return -optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])


def make_logprob_fn(graphdef, param_shardings, mesh):
  """jit(fn)(params, batch) -> fp32 [B, T] log p(targets[t] | tokens <= t) under the model.

  One module-level function with the graph definition and mesh static, so every scorer of
  the same model, shapes and shardings (e.g. a new runner each evaluation) reuses one compile."""
  fn = jax.jit(_logprobs, static_argnums=(0, 1), in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
               out_shardings=sharding.replicated(mesh))
  return lambda params, batch: fn(graphdef, mesh, params, batch)


class Scorer:
  """Sums of log-probabilities over the scored tokens of many sequences, batched and jitted.

  `batch_size` is global rows per call (a multiple of the mesh's data-parallel devices
  and of the process count); each process feeds its own slice of every batch.
  """

  def __init__(self, graphdef, param_shardings, vocab: vocab_lib.Vocab, mesh, *, max_tokens: int,
               max_patches: int, patch_size: int, batch_size: int):
    self.vocab, self.mesh = vocab, mesh
    self.max_tokens, self.max_patches, self.patch_size = max_tokens, max_patches, patch_size
    self.batch_size = batch_size
    self.fn = make_logprob_fn(graphdef, param_shardings, mesh)

  def pack(self, sequences: Sequence[ScoredSequence]) -> PackedRows:
    return pack(sequences, self.vocab, self.max_tokens, self.max_patches, self.patch_size)

  def score_packed(self, params, packed: PackedRows, num_sequences: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of log-probs [N] in nats, scored token count [N]) per sequence."""
    b = self.batch_size
    pc, pi = jax.process_count(), jax.process_index()
    local = b // pc
    sums = np.zeros(num_sequences, np.float64)
    counts = np.bincount(packed.owner[packed.owner >= 0], minlength=num_sequences).astype(np.int64)
    empty = packing.empty_row(self.max_tokens, self.max_patches)
    for lo in range(0, len(packed.rows), b):
      rows = packed.rows[lo:lo + b]
      rows = rows + [empty] * (b - len(rows))
      mine = rows[pi * local:(pi + 1) * local]
      batch = {k: np.stack([r[k] for r in mine]) for k in mine[0]}
      lp = np.asarray(jax.device_get(self.fn(params, sharding.global_batch(batch, self.mesh))), np.float64)
      owner = packed.owner[lo:lo + b]
      lp = lp[:len(owner)]
      m = owner >= 0
      sums += np.bincount(owner[m], weights=lp[m], minlength=num_sequences)
    return sums, counts

  def score(self, params, sequences: Sequence[ScoredSequence]) -> tuple[np.ndarray, np.ndarray]:
    return self.score_packed(params, self.pack(sequences), len(sequences))
