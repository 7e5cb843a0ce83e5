"""The experiment recipe (paper.md sec. 4-5) at every size, in one place.

experiments/*.py are thin: each names a model kind and a pairing, takes a size
after a colon (`experiments/lst_compute_matched.py:tiny`), and this module fills
in shapes, data, optimizer, schedule and mesh on top of lst_jax.config's
defaults (so every key stays settable from the command line). Sizes:

  demo   global 4 x 256, local 128: the embedded demo (static patches, speech-heavy mix), ~10 min on 2 cores.
  tiny   global 2 x 128, local 64: trains on the demo corpus on a laptop in minutes.
  study_s, study_m, study_l  global 4 x 128, 6 x 192, 8 x 256, local half that: make reproduce.
  20m    global 12 x 384, local 192 (the 1B's proportions), CPU-sized.
  420m   global 18 x 1280, encoder/decoder 7 x 768.
  1b     global 25 x 2048, encoder 1 x 1024, decoder 9 x 1024 (the paper's headline).
  7b     global 32 x 4096, local 2048 (our Llama-7B-like choice).

CPU sizes (demo, tiny, study_*, 20m) are meant for this 2-core CPU machine (24 GiB, one
device); tests/test_presets.py holds lst_jax.memory's estimate of both members within 75% of it.
Accelerator sizes (420m, 1b, 7b) name their deployments: a TPU slice and a GPU system each
(lst_jax.targets), with the mesh's fsdp axis, the micro-batches per step and the attention
backend; the first is the default (SIZE=1b), the others are picked with an @ (SIZE=1b@v6e-64).
Their micro-batches are the fewest that XLA's own compiler for the target plans within 75% of
a device (`make aot ARGS=--search`: lst_jax.tools.aot; the matrix is in the README), not the
memory model's guess, which is 0.8-2.2x the compilers' plans.

Pairings (paper.md sec. 5), LST vs the baseline (the LST's global transformer over tokens):
  compute_matched  the paper's: same steps, rows and global positions per step: the
                   baseline's tokens per row = the LST's patches per row; the LST's
                   raw-token cap is 3x its patches (12288 for 4096). Equal global
                   positions, not equal FLOPs: the LST's local modules are free here.
  flop_matched     compute_matched, then the baseline's row length is set so that its
                   train FLOPs on real tokens per step equal the LST's (measured on the
                   data by lst_jax.tools.pairing.match_flops; the configs here carry
                   the compute_matched row until then).
  data_matched     same steps, rows and raw tokens per row for both, and the LST's
                   patch cap = its token cap, so both pack exactly the same documents
                   and read the same speech and text (the paper's 2.42/3.00 global
                   share is what the LST's patches then come to, not a cap: a cap
                   truncates text-only rows).
  same_rows        both read exactly the same packed rows (the demo's pairing): the
                   baseline's caps are the LST's, it spends a position per token.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from lst_jax import config as config_lib
from lst_jax import targets

PAIRINGS = ("compute_matched", "flop_matched", "data_matched", "same_rows")
# The experiment files (experiments/NAME.py) of each pairing's members.
PAIR_EXPERIMENTS = {"compute_matched": {"lst": "lst_compute_matched", "baseline": "baseline_compute_matched"},
                    "flop_matched": {"lst": "lst_compute_matched", "baseline": "baseline_compute_matched"},
                    "data_matched": {"lst": "lst_data_matched", "baseline": "baseline_data_matched"},
                    "same_rows": {"lst": "demo", "baseline": "demo_baseline"}}


@dataclasses.dataclass(frozen=True)
class Hardware:
  """What a size is meant to train on: lst_jax.memory sizes the step against it."""
  device: str
  memory_bytes: int       # per device
  devices: int
  why: str = ""


CPU_MACHINE = Hardware("this 2-core CPU machine", 24 * 2 ** 30, 1, "where the tests and demos run")


@dataclasses.dataclass(frozen=True)
class Deployment:
  """One accelerator system a size is compiled for (`make aot`) and trains on
  (`SIZE=1b@v5p-64`): the target (lst_jax.targets), the mesh's fsdp axis (data takes the
  devices left over), micro-batches per step, and the attention backend, chosen from what XLA's
  compiler for that target plans (README, "Compiled for its hardware")."""
  target: str
  fsdp: int
  grad_accum: int = 1
  attention: str = "xla"
  why: str = ""

  @property
  def hardware(self) -> Hardware:
    t = targets.parse(self.target)
    return Hardware(f"{t.name} ({t.spec.device_kind})", t.memory_bytes, t.devices, self.why)


@dataclasses.dataclass(frozen=True)
class Size:
  # Global latent transformer (the baseline's whole body).
  d_global: int
  global_layers: int
  global_heads: int
  # Local encoder-patcher and decoder.
  d_local: int
  local_heads: int
  encoder_layers: int
  decoder_layers: int
  # Batch: global rows per step, global positions per row (the LST's patches).
  rows: int
  positions: int
  # Schedule.
  steps: int
  warmup: int
  learning_rate: float = 4e-4
  final_lr_fraction: float = 0.01
  log_every: int = 100
  checkpoint_every: int = 1000
  eval_every: int = 5000
  eval_batches: int = 100
  # Data.
  data_dir: str = "data/lst"
  patching: str = config_lib.CURRICULUM
  interleaved_weight: float = 0.33     # the paper's mixture
  text_weight: float = 0.67
  tokens_per_position: float = 3         # the LST's raw-token cap per global position (compute_matched, same_rows)
  # Accelerator-sized: remat, XLA/cuDNN attention, scanned layers, FSDP; the first deployment is
  # the default (SIZE=1b), the others are named after an @ (SIZE=1b@v6e-64).
  accelerator: bool = True
  deployments: tuple[Deployment, ...] = ()

  def deployment(self, target: str = "") -> Deployment | None:
    """The deployment on `target` (default: the first); None for CPU sizes."""
    if not target:
      return self.deployments[0] if self.deployments else None
    for d in self.deployments:
      if d.target == target:
        return d
    known = ", ".join(d.target for d in self.deployments) or "none (a CPU size)"
    raise config_lib.ConfigError(f"no deployment of this size on {target!r}; it has: {known}")

  @property
  def hardware(self) -> Hardware:
    return self.deployments[0].hardware if self.deployments else CPU_MACHINE

  @property
  def fsdp(self) -> int:
    return self.deployments[0].fsdp if self.deployments else 1

  @property
  def grad_accum(self) -> int:
    return self.deployments[0].grad_accum if self.deployments else 1

  def mesh_shape(self) -> tuple[int, int, int]:
    """(data, fsdp, tensor) on its hardware: every device left over goes to data."""
    return self.hardware.devices // self.fsdp, self.fsdp, 1


# The LST-vs-baseline study (make reproduce) on the study corpus: local width half the global and
# three local layers, so the local modules stay a minority of the LST's FLOPs; static patches,
# speech-heavy mix, 240 steps of 8 rows x 256 global positions (CPU budget: lst_jax/tools/reproduce.py).
_STUDY = dict(encoder_layers=1, decoder_layers=2, rows=8, positions=256, steps=240, warmup=24,
              learning_rate=2e-3, final_lr_fraction=0.1, log_every=10, checkpoint_every=40, eval_every=40,
              eval_batches=0, data_dir="data/study", patching=config_lib.STATIC, interleaved_weight=0.67,
              text_weight=0.33, tokens_per_position=1.5, accelerator=False)

SIZES = {
    "demo": Size(d_global=256, global_layers=4, global_heads=4, d_local=128, local_heads=4, encoder_layers=1,
                 decoder_layers=2, rows=8, positions=256, steps=300, warmup=50, learning_rate=2e-3,
                 final_lr_fraction=0.1, log_every=10, checkpoint_every=100, eval_every=100, eval_batches=0,
                 data_dir="data/demo", patching=config_lib.STATIC, interleaved_weight=0.67, text_weight=0.33,
                 tokens_per_position=1.5, accelerator=False),
    "tiny": Size(d_global=128, global_layers=2, global_heads=4, d_local=64, local_heads=2, encoder_layers=1,
                 decoder_layers=1, rows=8, positions=128, steps=150, warmup=20, learning_rate=2e-3,
                 log_every=10, checkpoint_every=50, eval_every=50, eval_batches=0, data_dir="data/demo",
                 accelerator=False),
    "20m": Size(d_global=384, global_layers=12, global_heads=6, d_local=192, local_heads=3, encoder_layers=1,
                decoder_layers=4, rows=8, positions=512, steps=2000, warmup=200, log_every=10,
                checkpoint_every=200, eval_every=500, eval_batches=0, data_dir="data/demo", accelerator=False),
    "study_s": Size(d_global=128, global_layers=4, global_heads=2, d_local=64, local_heads=2, **_STUDY),
    "study_m": Size(d_global=192, global_layers=6, global_heads=3, d_local=96, local_heads=3, **_STUDY),
    "study_l": Size(d_global=256, global_layers=8, global_heads=4, d_local=128, local_heads=4, **_STUDY),
    "420m": Size(d_global=1280, global_layers=18, global_heads=10, d_local=768, local_heads=12, encoder_layers=7,
                 decoder_layers=7, rows=64, positions=4096, steps=200_000, warmup=2000, deployments=(
                     Deployment("h100-8", fsdp=8, grad_accum=1, attention="cudnn", why="one node, fsdp over NVLink"),
                     Deployment("v5p-16", fsdp=8, grad_accum=2, attention="pallas",
                                why="8 chips; the LST's 8 rows per chip in one pass plan 76%"))),
    "1b": Size(d_global=2048, global_layers=25, global_heads=16, d_local=1024, local_heads=16, encoder_layers=1,
               decoder_layers=9, rows=128, positions=4096, steps=200_000, warmup=2000, deployments=(
                   Deployment("h100-32", fsdp=8, grad_accum=1, attention="cudnn", why="four nodes, fsdp within each"),
                   Deployment("v5p-64", fsdp=8, grad_accum=1, attention="pallas", why="32 chips, 4 rows per chip"),
                   Deployment("v6e-64", fsdp=8, grad_accum=1, attention="pallas",
                              why="64 chips of 32 GiB (8x8: fsdp along one axis), 2 rows per chip"))),
    "7b": Size(d_global=4096, global_layers=32, global_heads=32, d_local=2048, local_heads=16, encoder_layers=1,
               decoder_layers=9, rows=256, positions=4096, steps=200_000, warmup=2000, deployments=(
                   Deployment("h100-64", fsdp=64, grad_accum=1, attention="cudnn", why="eight nodes, fsdp over all"),
                   Deployment("v5p-128", fsdp=64, grad_accum=1, attention="pallas",
                              why="64 chips, fsdp over the slice"),
                   Deployment("v6e-256", fsdp=256, grad_accum=1, attention="pallas",
                              why="256 chips of 32 GiB, fsdp over the slice, one row per chip"))),
}


def hardware_of(size: str) -> Hardware | None:
  """The hardware a size label ("1b", "1b@v6e-64") is meant for; None for an unknown size."""
  name, _, target = size.partition("@")
  if name not in SIZES:
    return None
  dep = SIZES[name].deployment(target)
  return dep.hardware if dep else CPU_MACHINE


def row_caps(kind: str, s: Size, pairing: str) -> tuple[int, int]:
  """(max_tokens, max_patches) of one member of a pair."""
  lst_tokens = int(s.tokens_per_position * s.positions)
  if pairing in ("compute_matched", "flop_matched"):
    return (lst_tokens, s.positions) if kind == "lst" else (s.positions, s.positions)
  if pairing == "data_matched":
    return s.positions, s.positions
  return lst_tokens, s.positions  # same_rows


def experiment(kind: str, size: str = "1b", pairing: str = "compute_matched") -> ml_collections.ConfigDict:
  """The full experiment config of one member (`kind` "lst" or "baseline") of a pair."""
  size_name, _, target = size.partition("@")
  if size_name not in SIZES:
    raise config_lib.ConfigError(f"unknown size {size_name!r}; choose from {', '.join(SIZES)}")
  if pairing not in PAIRINGS:
    raise config_lib.ConfigError(f"unknown pairing {pairing!r}; choose from {', '.join(PAIRINGS)}")
  if kind not in config_lib.MODEL_KINDS:
    raise config_lib.ConfigError(f"unknown model kind {kind!r}; choose from {', '.join(config_lib.MODEL_KINDS)}")
  s = SIZES[size_name]
  dep = s.deployment(target)
  max_tokens, max_patches = row_caps(kind, s, pairing)
  c = config_lib.defaults()
  c.size, c.pairing = size, pairing
  c.model.update(kind=kind, d_global=s.d_global, global_layers=s.global_layers, global_heads=s.global_heads,
                 d_local=s.d_local, local_heads=s.local_heads, encoder_layers=s.encoder_layers,
                 decoder_layers=s.decoder_layers, cross_attn_k=2, window=512, dtype="bfloat16",
                 attention=dep.attention if dep else "reference",
                 remat="full" if s.accelerator else "none", scan_layers=s.accelerator)
  c.data.update(dir=s.data_dir, batch_size=s.rows, max_tokens=max_tokens, max_patches=max_patches,
                interleaved_weight=s.interleaved_weight, text_weight=s.text_weight, packing_bins=8, seed=0)
  c.data.patching.update(strategy=s.patching if kind == "lst" else config_lib.STATIC, patch_size=4,
                         max_patch_len=16)
  c.optim.update(learning_rate=s.learning_rate, warmup_steps=s.warmup, final_lr_fraction=s.final_lr_fraction,
                 b1=0.9, b2=0.95, weight_decay=0.1, clip_norm=1.0)
  c.train.update(steps=s.steps, log_every=s.log_every, checkpoint_every=s.checkpoint_every, keep_checkpoints=3,
                 eval_every=s.eval_every, eval_batches=s.eval_batches, seed=0,
                 grad_accum_steps=dep.grad_accum if dep else 1)
  c.mesh.update(data=-1, fsdp=dep.fsdp if dep else 1, tensor=1)
  return c

