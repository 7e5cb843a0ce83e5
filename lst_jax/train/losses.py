"""Next-token cross-entropy over the shared vocabulary, split by what the target is.

"text" targets are SentencePiece pieces, "speech" targets are speech units;
mode tokens and EOS count only in the overall loss. Sums and counts are
returned so that evaluation can add them up exactly over many batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lst_jax import vocab as vocab_lib


def loss_sums(logits_BTV, batch, vocab: vocab_lib.Vocab) -> dict:
  """Sums of per-token negative log-likelihood (nats) and token counts, per modality."""
  nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])
  mask = batch["loss_mask"]
  targets = batch["targets"]
  groups = {
      "all": mask,
      "text": mask & vocab.is_text(targets),
      "speech": mask & vocab.is_speech(targets),
  }
  out = {}
  for name, m in groups.items():
    out[f"{name}_nll"] = jnp.sum(jnp.where(m, nll_BT, 0.0))
    out[f"{name}_count"] = jnp.sum(m).astype(jnp.float32)
  return out


def mean_losses(sums: dict) -> dict:
  """loss, text_loss, speech_loss (nats per target token) from `loss_sums` totals."""
  mean = lambda name: sums[f"{name}_nll"] / jnp.maximum(sums[f"{name}_count"], 1.0)
  return {"loss": mean("all"), "text_loss": mean("text"), "speech_loss": mean("speech")}


def add(a: dict, b: dict) -> dict:
  return jax.tree.map(lambda x, y: x + y, a, b)
