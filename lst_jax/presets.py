"""The paper's experiment recipe (paper.md sec. 4-5) at every size, in one place.

experiments/*.py are thin: each names a model kind, a size and a pairing, and
this module fills in shapes, data, optimizer, schedule and mesh. Sizes:

  tiny   global 2 x 128, local 64: trains on the demo corpus on a laptop in minutes.
  20m    global 12 x 384, local 192 (the 1B's proportions), CPU-sized.
  420m   global 18 x 1280, encoder/decoder 7 x 768.
  1b     global 25 x 2048, encoder 1 x 1024, decoder 9 x 1024 (the paper's headline).
  7b     global 32 x 4096, local 2048 (our Llama-7B-like choice).

Pairings (paper.md sec. 5), LST vs the baseline (the LST's global transformer over tokens):
  compute_matched  same steps, rows and global positions per step: the baseline's
                   tokens per row = the LST's patches per row; the LST's raw-token
                   cap is 3x its patches (12288 for 4096).
  data_matched     same steps, rows and raw tokens per row for both (the baseline's
                   row = the LST's raw-token cap), so both read the same speech and
                   text; the LST's global row is the paper's 2.42/3.00 of it.
"""

from __future__ import annotations

import dataclasses

import ml_collections

PAIRINGS = ("compute_matched", "data_matched")
DATA_MATCHED_GLOBAL_SHARE = 2.42 / 3.00  # paper.md sec. 5: LST vs baseline sequence, same data


@dataclasses.dataclass(frozen=True)
class Size:
  d_global: int
  global_layers: int
  global_heads: int
  d_local: int
  local_heads: int
  encoder_layers: int
  decoder_layers: int
  rows: int              # global batch rows
  positions: int         # global positions per row (the LST's patches)
  steps: int
  warmup: int
  fsdp: int = 1
  data_dir: str = "data/lst"
  big: bool = True       # accelerator-sized: remat, XLA/cuDNN attention, scanned layers
  log_every: int = 100
  checkpoint_every: int = 1000
  eval_every: int = 5000
  eval_batches: int = 100
  learning_rate: float = 4e-4


SIZES = {
    "tiny": Size(128, 2, 4, 64, 2, 1, 1, rows=8, positions=128, steps=150, warmup=20, data_dir="data/demo",
                 big=False, log_every=10, checkpoint_every=50, eval_every=50, eval_batches=0,
                 learning_rate=2e-3),
    "20m": Size(384, 12, 6, 192, 3, 1, 4, rows=8, positions=512, steps=2000, warmup=200, data_dir="data/demo",
                big=False, log_every=10, checkpoint_every=200, eval_every=500, eval_batches=0),
    "420m": Size(1280, 18, 10, 768, 12, 7, 7, rows=64, positions=4096, steps=200_000, warmup=2000, fsdp=8),
    "1b": Size(2048, 25, 16, 1024, 16, 1, 9, rows=128, positions=4096, steps=200_000, warmup=2000, fsdp=8),
    "7b": Size(4096, 32, 32, 2048, 16, 1, 9, rows=256, positions=4096, steps=200_000, warmup=2000, fsdp=64),
}


def _round(x: float, unit: int = 32) -> int:
  return max(unit, int(round(x / unit)) * unit)


def experiment(kind: str, size: str = "1b", pairing: str = "compute_matched") -> ml_collections.ConfigDict:
  """The full experiment config of one member (`kind` "lst" or "baseline") of a paper pair."""
  if size not in SIZES:
    raise ValueError(f"unknown size {size!r}; choose from {tuple(SIZES)}")
  if pairing not in PAIRINGS:
    raise ValueError(f"unknown pairing {pairing!r}; choose from {PAIRINGS}")
  if kind not in ("lst", "baseline"):
    raise ValueError(f"unknown model kind {kind!r}; choose from ('lst', 'baseline')")
  s = SIZES[size]
  if pairing == "compute_matched":
    lst_tokens, lst_patches, baseline_tokens = 3 * s.positions, s.positions, s.positions
  else:
    lst_tokens = baseline_tokens = s.positions
    lst_patches = _round(DATA_MATCHED_GLOBAL_SHARE * s.positions)
  c = ml_collections.ConfigDict()
  c.size, c.pairing = size, pairing
  c.model = dict(kind=kind, d_global=s.d_global, global_layers=s.global_layers, global_heads=s.global_heads,
                 dtype="bfloat16", attention="xla" if s.big else "reference",
                 remat="full" if s.big else "none", scan_layers=s.big)
  c.data = dict(dir=s.data_dir, batch_size=s.rows, interleaved_weight=0.33, text_weight=0.67,
                packing_bins=8, seed=0)
  if kind == "lst":
    c.model.update(d_local=s.d_local, local_heads=s.local_heads, encoder_layers=s.encoder_layers,
                   decoder_layers=s.decoder_layers, cross_attn_k=2, window=512)
    c.data.update(max_tokens=lst_tokens, max_patches=lst_patches, patching="curriculum", patch_size=4,
                  max_patch_len=16)
  else:
    c.data.update(max_tokens=baseline_tokens, max_patches=baseline_tokens)
  c.optim = dict(learning_rate=s.learning_rate, warmup_steps=s.warmup, final_lr_fraction=0.01,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train = dict(steps=s.steps, log_every=s.log_every, checkpoint_every=s.checkpoint_every,
                 keep_checkpoints=3, eval_every=s.eval_every, eval_batches=s.eval_batches, seed=0)
  c.mesh = dict(data=-1, fsdp=s.fsdp, tensor=1)
  return c
