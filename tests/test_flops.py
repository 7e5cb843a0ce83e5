"""The analytic FLOP model against XLA's own count of the compiled forward and gradient.

XLA's cost analysis also counts elementwise work (norms, RoPE, masks, softmax,
the loss), which the model leaves out, so XLA reads a few percent high: about
+5% at widths 32-64 with 16-dim heads, about +1% at widths 128-256 with 64-dim
heads. The model's "executed" count is compared (what lst_jax.model runs:
dense attention on short rows, blocked windowed attention on long ones).
Nothing is allocated: the functions are lowered on abstract arguments.
"""

import jax
import numpy as np
import jax.numpy as jnp
import pytest
from flax import nnx

from lst_jax import flops
from lst_jax.config import ModelConfig
from lst_jax.model.factory import build_model
from lst_jax.tools import inspect

VOCAB = 160
TINY = dict(d_global=64, global_layers=2, global_heads=4, d_local=32, local_heads=2, encoder_layers=1,
            decoder_layers=1, cross_attn_k=2, window=64, patch_gather_width=4)   # conftest's tiny_config
WIDE = dict(d_global=256, global_layers=2, global_heads=2, d_local=128, local_heads=2, encoder_layers=1,
            decoder_layers=2, cross_attn_k=2, window=64, patch_gather_width=4)


def xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


SLOW = pytest.mark.slow  # the LST's gradient takes 10-15 s to compile


@pytest.mark.parametrize("kind,dims,shape", [
    pytest.param("lst", TINY, (8, 128, 48), marks=SLOW), ("baseline", TINY, (8, 128, 48)),
    pytest.param("lst", WIDE, (2, 128, 48), marks=SLOW), ("baseline", WIDE, (2, 128, 48)),
    pytest.param("lst", WIDE, (1, 512, 128), marks=SLOW)])   # long rows: blocked windowed local attention
def test_model_matches_xla_cost_analysis(kind, dims, shape):
  cfg = ModelConfig(kind=kind, vocab_size=VOCAB, **dims)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: build_model(cfg, 0)), nnx.Param)
  batch = inspect.abstract_batch(*shape)
  forward = lambda p, b: nnx.merge(graphdef, p)(b)

  def loss(p, b):
    logp = jax.nn.log_softmax(forward(p, b))
    return -jnp.mean(jnp.take_along_axis(logp, b["targets"][..., None], axis=-1))

  model = flops.model_flops(cfg, *shape)
  fwd_ratio = xla_flops(forward, params, batch) / model["executed"]
  train_ratio = xla_flops(jax.value_and_grad(loss), params, batch) / model["train_executed"]
  print(f"{kind} {dims['d_local']}/{dims['d_global']} {shape}: XLA / model forward {fwd_ratio:.3f}, "
        f"train {train_ratio:.3f}")
  assert 1.0 <= fwd_ratio < 1.10   # XLA adds elementwise work, never fewer matmuls
  assert 1.0 <= train_ratio < 1.10


def test_attended_and_executed_pairs():
  assert flops.attended_pairs(4) == 10
  assert flops.attended_pairs(6, window=2) == 3 + 4 * 2
  assert flops.attended_pairs(3, window=8) == 6
  assert flops.attended_pairs(5, window=1) == 5
  assert flops.executed_pairs(128, window=64) == 128 * 128          # short rows stay dense
  assert flops.executed_pairs(2000, window=512) == 2048 * 640       # 16 query blocks x 5 key blocks


@pytest.mark.parametrize("kind", ["lst", "baseline"])
def test_totals_and_masking(kind):
  cfg = ModelConfig(kind=kind, vocab_size=VOCAB, **WIDE)
  f = flops.model_flops(cfg, 2, 512, 128)
  assert f["forward"] == sum(m["forward"] for m in f["modules"].values())
  assert f["dense"] == sum(m["dense"] for m in f["modules"].values())
  assert f["executed"] == sum(m["executed"] for m in f["modules"].values())
  assert f["train"] == 3 * f["forward"]
  assert all(m["forward"] <= m["executed"] <= m["dense"] for m in f["modules"].values())
  assert f["global_only"] == f["modules"]["global"]["forward"] < f["forward"]


@pytest.mark.parametrize("window, attended", [(None, 1 + 2 + 3 + 4), (2, 1 + 2 + 2 + 2)])
def test_block_flops_by_hand(window, attended):
  """One block, 1 row of 4 tokens, width 2, SwiGLU width 3, counted by hand:
  q, k, v, o projections 4 x (2*2*2) = 32 per token, SwiGLU 3 x (2*2*3) = 36 per token:
  (32 + 36) * 4 = 272; per query/key pair the score q.k and the value sum cost 2*2 + 2*2 = 8.
  "forward" counts the pairs the causal (windowed) mask allows, "dense" and "executed"
  (a row this short is one dense block) all 4 * 4 = 16."""
  assert flops.block_flops(1, 4, 2, 3, window) == {"forward": 272 + 8 * attended, "dense": 272 + 8 * 16,
                                                   "executed": 272 + 8 * 16}
  assert flops.stack_flops(3, 2, 4, 2, 3, window) == {k: 3 * 2 * v for k, v in  # linear in layers and rows
                                                      flops.block_flops(1, 4, 2, 3, window).items()}


def test_real_flops_count_each_document_and_no_padding():
  """Two documents and padding in one row: their FLOPs are two one-document rows' (attention
  stays inside a document), padding slots cost nothing, and the slot count is larger."""
  cfg = ModelConfig(kind="lst", vocab_size=VOCAB, **TINY)
  token_segment = [[1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0]]   # documents of 5 and 3 tokens, 4 pad slots
  patch_segment = [[1, 1, 1, 2, 2, 0, 0, 0]]               # 3 and 2 patches, 3 pad slots
  real = flops.real_flops(cfg, np.array(token_segment), np.array(patch_segment))
  one = lambda t, p: flops.model_flops(cfg, 1, t, p)["modules"]
  for m in flops.LST_MODULES:
    assert real[m] == one(5, 3)[m]["forward"] + one(3, 2)[m]["forward"], m
  d, g, k = TINY["d_local"], TINY["d_global"], TINY["cross_attn_k"]
  assert real["head"] == 2 * 8 * VOCAB * d                 # 8 real tokens x [d -> V]
  assert real["to_global"] == 2 * 5 * g * k * d            # 5 real patches x [k*d -> g]
  # Global attention pairs: 3*4/2 + 2*3/2 = 9, not the 5*6/2 = 15 of one 5-patch document.
  proj = 5 * (4 * 2 * g * g + 3 * 2 * g * cfg.mlp_dim(g))
  assert real["global"] == TINY["global_layers"] * (proj + 4 * g * 9)
  slots = flops.model_flops(cfg, 1, 12, 8)
  assert sum(real.values()) < slots["forward"]
  assert sum(flops.real_flops(cfg, np.zeros((2, 12), int), np.zeros((2, 8), int)).values()) == 0
  base = ModelConfig(kind="baseline", vocab_size=VOCAB, **TINY)
  assert set(flops.real_flops(base, np.array(token_segment), np.array(token_segment))) == set(
      flops.BASELINE_MODULES)
