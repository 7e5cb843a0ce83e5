"""What the two members of a pair actually read and spend per step, and the real-FLOP pairing.

The presets fix row shapes (lst_jax.presets); what a row holds depends on the
data. `measure` reads a member's first training batches through the real
pipeline and counts, per step: text and speech tokens, real patches, train
FLOPs on real tokens (lst_jax.flops.real_flops) and on the rows' slots.
`match_flops` sets the baseline's row length so that its real FLOPs per step
equal the LST's (the "flop_matched" pairing); the paper's "compute_matched"
equalizes global positions instead, which charges nothing for the LST's local
modules and everything for padding.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from lst_jax import config as config_lib
from lst_jax import flops as flops_lib
from lst_jax.data import datasets, pipeline

ROW_UNIT = 8  # the baseline's matched row length is a multiple of this


@dataclasses.dataclass(frozen=True)
class Reading:
  """Means per step over the measured batches."""
  text_tokens: float
  speech_tokens: float
  real_tokens: float
  real_patches: float
  real_flops: float          # train (3x forward) FLOPs on real tokens
  slot_flops: float          # train FLOPs counted on every row slot (padding included)
  global_positions: int      # rows x the global transformer's row length

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def measure(config, batches: int = 16) -> Reading:
  """Counts a member's first `batches` training batches (as training reads them, one process)."""
  manifest = datasets.open_datasets(config.data.dir)
  vocab = pipeline.vocab_of(manifest)
  exp = config_lib.parse(config, vocab_size=vocab.size)
  d = exp.data
  total_docs = pipeline.total_documents(manifest, d, d.batch_size, exp.train.steps)
  it = pipeline.train_dataset(manifest, d, d.batch_size, "train", 0, 1, total_docs)
  sums = np.zeros(5)
  for batch in itertools.islice(iter(it), batches):
    tokens, real = batch["tokens"], batch["token_segment"] > 0
    text = real & vocab.is_text(tokens)
    speech = real & vocab.is_speech(tokens)
    flops = sum(flops_lib.real_flops(exp.model, batch["token_segment"], batch["patch_segment"]).values())
    sums += [text.sum(), speech.sum(), real.sum(), (batch["patch_segment"] > 0).sum(), 3 * flops]
  means = sums / batches
  global_len = d.max_patches if exp.model.kind == "lst" else d.max_tokens
  slots = flops_lib.model_flops(exp.model, d.batch_size, d.max_tokens, d.max_patches)["train"]
  return Reading(*(float(x) for x in means), slot_flops=float(slots), global_positions=d.batch_size * global_len)


def set_row_length(config, length: int):
  """The baseline reads rows of `length` tokens (one position per token)."""
  c = config.copy_and_resolve_references()
  c.data.max_tokens = c.data.max_patches = int(length)
  return c


def match_flops(lst_config, baseline_config, batches: int = 16, tolerance: float = 0.02,
                max_rounds: int = 8):
  """The baseline config whose real train FLOPs per step are within `tolerance` of the LST's
  (its row length searched in steps of ROW_UNIT), and both members' readings."""
  target = measure(lst_config, batches)
  length = baseline_config.data.max_tokens
  tried: dict[int, Reading] = {}
  for _ in range(max_rounds):
    tried[length] = measure(set_row_length(baseline_config, length), batches)
    ratio = tried[length].real_flops / target.real_flops
    if abs(ratio - 1) <= tolerance:
      break
    below = [n for n in tried if tried[n].real_flops < target.real_flops]
    above = [n for n in tried if tried[n].real_flops >= target.real_flops]
    guess = int(round(length / ratio / ROW_UNIT)) * ROW_UNIT
    if below and above:  # keep the guess inside the bracket
      guess = min(max(guess, max(below) + ROW_UNIT), min(above) - ROW_UNIT) if min(above) - max(below) > \
          ROW_UNIT else min(above)
    if guess in tried:
      break
    length = max(ROW_UNIT, guess)
  best = min(tried, key=lambda n: abs(tried[n].real_flops / target.real_flops - 1))
  return set_row_length(baseline_config, best), {"lst": target, "baseline": tried[best]}
