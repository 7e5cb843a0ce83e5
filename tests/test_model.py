"""Model shapes, dtypes and causality (by perturbation) for LST and the baseline."""

import contextlib
import io
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from lst_jax import config as config_lib
from lst_jax import flops
from lst_jax.data import pipeline
from lst_jax.model import attention as attn
from lst_jax.model.decoder import context_patch
from lst_jax.model.factory import build_model

SLOW = pytest.mark.slow  # over ~5 s: left to the full run


def _setup(dataset, config, kind, dtype="float32"):
  config.model.kind = kind
  config.model.dtype = dtype
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  batch = next(iter(pipeline.train_dataset(dataset, exp.data, 4)))
  return build_model(exp.model, seed=0), batch, vocab


@pytest.mark.parametrize("kind", [pytest.param("lst", marks=SLOW), "baseline"])  # an LST compiles in ~10 s
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logits_shape_and_dtype(dataset, config, kind, dtype):
  model, batch, vocab = _setup(dataset, config, kind, dtype)
  logits = nnx.jit(lambda m, b: m(b))(model, batch)
  chex.assert_shape(logits, (4, 128, vocab.size))
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite(logits)
  params = nnx.state(model, nnx.Param)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def _positions_to_probe(batch, vocab, row):
  """Token positions to perturb in a row: speech tokens inside patches (first, middle,
  last of a patch), text tokens, and mode tokens."""
  seg, tokens, tp = batch["token_segment"][row], batch["tokens"][row], batch["token_patch"][row]
  real = np.flatnonzero(seg > 0)
  speech = [t for t in real if tokens[t] >= vocab.unit_offset]
  picks = set(speech[:: max(1, len(speech) // 6)][:6])
  picks |= {t for t in real if vocab.text_mode <= tokens[t] <= vocab.speech_mode}
  picks |= set([t for t in real if 3 <= tokens[t] < vocab.text_mode][:3])
  # a speech token that is not the first of its patch (pooling sees the whole patch)
  picks |= set([t for t in speech[1:] if tp[t] == tp[t - 1]][:3])
  return sorted(int(t) for t in picks if t > 0)[:14]


@pytest.mark.parametrize("kind", [pytest.param("lst", marks=SLOW), "baseline"])
def test_causality_by_perturbation(dataset, config, kind):
  """Changing token t moves no prediction of a target at or before t (the logits at
  positions < t), nor any prediction of another document; it does move later ones."""
  model, batch, vocab = _setup(dataset, config, kind)
  forward = nnx.jit(lambda m, b: m(b))
  base = np.asarray(forward(model, batch))
  row = int(np.argmax((batch["tokens"] >= vocab.unit_offset).sum(-1)))  # the most speech
  probes = _positions_to_probe(batch, vocab, row)
  assert len(probes) >= 6
  rng = np.random.default_rng(0)
  moved_later = 0
  for t in probes:
    tokens = batch["tokens"].copy()
    old = tokens[row, t]
    lo, hi = (vocab.unit_offset, vocab.size) if old >= vocab.unit_offset else (3, vocab.text_mode)
    tokens[row, t] = lo + (old - lo + 1 + rng.integers(0, hi - lo - 1)) % (hi - lo)
    out = np.asarray(forward(model, {**batch, "tokens": tokens}))
    diff = np.abs(out - base).max(-1)
    seg = batch["token_segment"][row]
    np.testing.assert_allclose(diff[row, :t], 0, atol=1e-6, err_msg=f"{kind}: token {t} leaked backwards")
    other = seg != seg[t]
    np.testing.assert_allclose(diff[row][other], 0, atol=1e-6, err_msg=f"{kind}: leaked across documents")
    np.testing.assert_allclose(np.delete(diff, row, axis=0), 0, atol=1e-6, err_msg=f"{kind}: leaked across rows")
    moved_later += bool(diff[row, t] > 1e-4)
  assert moved_later == len(probes), "perturbations must change the prediction at their own position"


def test_context_patch_points_before_target_patch():
  token_patch = jnp.array([[0, 1, 2, 2, 2, 3, 4, 0, 1, 1, 0, 0]])
  segment = jnp.array([[1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 0, 0]])
  ctx = context_patch(token_patch, segment)
  # token t reads patch(t+1) - 1; the last token of a document reads its own patch - 1.
  assert ctx.tolist() == [[0, 1, 1, 1, 2, 3, 3, 0, 0, 0, 0, 0]]


def test_attention_backends_agree_on_packed_padded_batch():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 16, 2, 8)), jnp.float32) for _ in range(3))
  seg = jnp.array([[1] * 6 + [2] * 7 + [0] * 3, [1] * 16])
  for window in (None, 4):
    mask = attn.document_causal_mask(seg, window)
    ref = attn.attention(q, k, v, mask, "reference")
    xla = attn.attention(q, k, v, mask, "xla")
    np.testing.assert_allclose(np.asarray(ref), np.asarray(xla), atol=1e-5)
    assert np.all(np.asarray(ref)[0, 13:] == 0)  # padding queries give zeros
    # brute force: softmax over allowed keys only
    for b, t in [(0, 3), (0, 9), (1, 15)]:
      allowed = np.asarray(mask[b, t])
      logits = np.einsum("nh,knh->nk", q[b, t], k[b]) / np.sqrt(8)
      logits[:, ~allowed] = -np.inf
      p = np.exp(logits - logits.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      np.testing.assert_allclose(np.asarray(ref[b, t]), np.einsum("nk,knh->nh", p, v[b]), atol=1e-5)


def _score_pairs(fn, q, k, v) -> int:
  """Query/key pairs fn's traced program scores per row and head: the sizes of the outputs
  of its products that contract the head dimension (q.k), over batch rows and heads."""
  rows, _, heads, head_dim = q.shape

  def count(jaxpr):
    total = 0
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        (contracted, _), _ = eqn.params["dimension_numbers"]
        if [eqn.invars[0].aval.shape[d] for d in contracted] == [head_dim]:
          total += eqn.outvars[0].aval.size
      for p in eqn.params.values():
        if isinstance(p, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
          total += count(getattr(p, "jaxpr", p))
    return total

  pairs, rest = divmod(count(jax.make_jaxpr(fn)(q, k, v).jaxpr), rows * heads)
  assert rest == 0
  return pairs


# Query/key pairs per row and head, by hand, for each layout of attention.self_attention.
# Windowed: ceil(t / block) query blocks x (ceil((window - 1) / block) + 1) key blocks.
# Causal: query block i sees keys [lo, hi), hi = min(block (i + 1), t), lo its window's first
# key rounded down to a block; more than 16 blocks widen them (300 in 16s: blocks of 19).
PAIRS = [
    (100, None, 128, 100 * 100),                                         # one dense block
    (300, 64, 32, 10 * 32 * 96), (512, 100, 64, 8 * 64 * 192),           # windowed
    (200, None, 64, 64 * (64 + 128 + 192) + 8 * 200),                    # causal, ragged last block
    (300, 200, 64, 64 * (64 + 128 + 192 + 256) + 44 * 300),              # query 256 reaches key 57
    (96, 50, 32, 32 * (32 + 64 + 96)),                                   # query 64 reaches key 15
    (256, 512, 32, 32 * 32 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8)),           # window over the whole row
    (300, None, 16, 19 * 19 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 + 12 + 13 + 14 + 15) + 15 * 300),
]


@pytest.mark.parametrize("t,window,block,pairs", PAIRS)
def test_attention_scores_exactly_the_pairs_counted(t, window, block, pairs):
  """The traced program scores the pairs worked out by hand, which the FLOP model counts."""
  q = jax.ShapeDtypeStruct((2, t, 2, 8), jnp.float32)
  seg = jnp.ones((2, t), jnp.int32)
  fn = lambda q, k, v: attn.self_attention(q, k, v, seg, window, block=block)
  assert _score_pairs(fn, q, q, q) == flops.executed_pairs(t, window, block) == pairs


@pytest.mark.slow
@pytest.mark.parametrize("t,window,block", [(300, 64, 32), (512, 100, 64), (256, 512, 32)])
def test_blocked_window_attention_matches_dense(t, window, block):
  """Long local attention runs in blocks (no [T x T] mask); it must equal the dense masked
  reference on packed, padded rows."""
  rng = np.random.default_rng(t)
  q, k, v = (jnp.asarray(rng.normal(size=(2, t, 2, 8)), jnp.float32) for _ in range(3))
  seg = np.zeros((2, t), np.int32)
  seg[0, :t // 3], seg[0, t // 3:t - 7] = 1, 2   # two documents, then padding
  seg[1, :] = 1
  seg = jnp.asarray(seg)
  dense = attn.attention(q, k, v, attn.document_causal_mask(seg, window))
  blocked = attn._blocked_window_attention(q, k, v, seg, window, "reference", block)
  np.testing.assert_allclose(np.asarray(blocked), np.asarray(dense), atol=1e-5)
  via_entry = attn.self_attention(q, k, v, seg, window, block=block)
  np.testing.assert_allclose(np.asarray(via_entry), np.asarray(dense), atol=1e-5)


@pytest.mark.parametrize("t,window,block", [pytest.param(200, None, 64, marks=SLOW),
                                            pytest.param(300, 200, 64, marks=SLOW), (96, 50, 32),
                                            pytest.param(300, None, 16, marks=SLOW)])
def test_causal_block_attention_matches_dense(t, window, block):
  """Causal rows too short for the windowed layout skip the upper triangle of blocks (including
  a ragged last block and, at 300 tokens in blocks of 16, blocks widened to stay within
  MAX_CAUSAL_BLOCKS);
  values and gradients equal the dense masked reference on packed, padded rows."""
  rng = np.random.default_rng(t)
  q, k, v = (jnp.asarray(rng.normal(size=(2, t, 2, 8)), jnp.float32) for _ in range(3))
  seg = np.zeros((2, t), np.int32)
  seg[0, :t // 3], seg[0, t // 3:t - 7] = 1, 2
  seg[1, :] = 1
  seg = jnp.asarray(seg)
  dense_fn = jax.jit(lambda q, k, v: attn.attention(q, k, v, attn.document_causal_mask(seg, window)))
  block_fn = jax.jit(lambda q, k, v: attn.self_attention(q, k, v, seg, window, block=block))
  np.testing.assert_allclose(np.asarray(block_fn(q, k, v)), np.asarray(dense_fn(q, k, v)), atol=1e-5)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  for g_block, g_dense in zip(jax.jit(jax.grad(loss(block_fn), (0, 1, 2)))(q, k, v),
                              jax.jit(jax.grad(loss(dense_fn), (0, 1, 2)))(q, k, v)):
    np.testing.assert_allclose(np.asarray(g_block), np.asarray(g_dense), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["full"])
def test_remat_and_xla_attention_keep_the_numbers(dataset, config, remat):
  """Rematerialization and the jax.nn.dot_product_attention backend change how, not what."""
  from lst_jax.train import step as step_lib
  vocab = pipeline.vocab_of(dataset)
  batch = None
  grads = []
  for change in ({}, {"remat": remat}, {"attention": "xla"}):
    for k, v in change.items():
      config.model[k] = v
    model, made, _ = _setup(dataset, config, "lst")
    batch = made if batch is None else batch
    graphdef, params = nnx.split(model, nnx.Param)
    loss_fn = step_lib.make_loss_fn(graphdef, vocab)
    grads.append(jax.jit(jax.grad(lambda p: loss_fn(p, batch)[0]))(params))
    config.model.remat, config.model.attention = "none", "reference"
  chex.assert_trees_all_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(grads[2], grads[0], atol=1e-5, rtol=1e-3)


# What a block saves for the backward pass under each policy, as (op, file) of each residual
# made inside lst_jax.model; the rest is recomputed. "none" saves everything needed.
SAVED = {
    "full": set(),                                                                  # the block's inputs only
    "dots": {("dot_general", "layers.py"), ("dot_general", "attention.py")},   # projections, q.k and p.v
    "dots_no_batch": {("dot_general", "layers.py")},                           # projections only
}


def _saved_in_model(fn, *args) -> set:
  """(op, file) of each residual fn's gradient saves that is made inside lst_jax.model."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    print_saved_residuals(fn, *args)
  return {re.search(r"output of (.+?) from .*/lst_jax/model/(\w+\.py)", line).groups()
          for line in out.getvalue().splitlines() if "/lst_jax/model/" in line}


def _remat_block():
  """A block and its loss under each remat policy (rows of 24 > attention.SMALL_KV: attention
  runs as matmuls)."""
  from lst_jax.model.transformer import Block, run_block
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 24, 32)), jnp.float32)
  pos, seg = jnp.tile(jnp.arange(24), (2, 1)), jnp.asarray([[1] * 10 + [2] * 14, [1] * 20 + [0] * 4])
  graphdef, params = nnx.split(Block(32, 2, 48, rngs=nnx.Rngs(0)))
  losses = {remat: lambda p, x, remat=remat: jnp.sum(jnp.sin(run_block(nnx.merge(graphdef, p), x, pos, seg,
                                                                       None, remat)))
            for remat in config_lib.REMAT_POLICIES}
  return losses, params, x


def test_remat_policies_save_what_they_name():
  losses, params, x = _remat_block()
  assert tuple(losses) == ("none", *SAVED)
  saved = {remat: _saved_in_model(loss, params, x) for remat, loss in losses.items()}
  for remat in SAVED:
    assert saved[remat] == SAVED[remat], remat
  assert {("rsqrt", "layers.py"), ("exp", "attention.py")} <= saved["none"]  # norms' and softmax's too


@pytest.mark.slow
def test_remat_policies_keep_the_numbers():
  """Every policy gives a block the loss and gradients of "none" (one program: one compile)."""
  losses, params, x = _remat_block()
  grads = jax.jit(lambda p, x: {remat: jax.value_and_grad(loss, argnums=(0, 1))(p, x)
                                for remat, loss in losses.items()})(params, x)
  for remat in SAVED:   # fp32 sums reassociate when recomputed: the tolerance of the test above
    chex.assert_trees_all_close(grads[remat], grads["none"], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["none", "full"])
def test_scan_over_layers_matches_the_unrolled_stack(remat):
  """Scanned blocks (parameters stacked on a leading layers axis) compute what the unrolled
  loop computes with the same parameters: outputs and parameter gradients."""
  from lst_jax.model.transformer import Transformer
  layers, dim = 3, 32
  unrolled = Transformer(dim, 4, layers, 64, rngs=nnx.Rngs(0), remat=remat)
  scanned = Transformer(dim, 4, layers, 64, rngs=nnx.Rngs(1), remat=remat, scan_layers=True)
  per_layer = [nnx.state(b, nnx.Param) for b in unrolled.blocks]
  nnx.update(scanned.blocks, jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer))
  nnx.update(scanned.norm, nnx.state(unrolled.norm, nnx.Param))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 24, dim)), jnp.float32)
  seg = jnp.asarray([[1] * 10 + [2] * 10 + [0] * 4, [1] * 24])
  pos = jnp.asarray([list(range(10)) * 2 + [0] * 4, list(range(24))])
  chex.assert_trees_all_close(scanned(x, pos, seg), unrolled(x, pos, seg), atol=1e-5)
  loss = lambda m: jnp.sum(jnp.sin(m(x, pos, seg)))
  g_unrolled, g_scanned = nnx.grad(loss)(unrolled), nnx.grad(loss)(scanned)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[g_unrolled["blocks"][i] for i in range(layers)])
  chex.assert_trees_all_close(jax.tree.leaves(g_scanned["blocks"]), jax.tree.leaves(stacked), atol=1e-4)
  # the program really loops: one while loop instead of `layers` copies of the block
  graphdef, params = nnx.split(scanned)
  jaxpr = str(jax.make_jaxpr(lambda p, x: nnx.merge(graphdef, p)(x, pos, seg))(params, x))
  assert "scan" in jaxpr or "while" in jaxpr


@pytest.mark.slow
@pytest.mark.parametrize("window", [None, 100])
def test_pallas_splash_self_attention_matches_reference(window):
  """The TPU splash-attention backend (Pallas interpret mode off TPU) equals the masked reference
  on packed, padded rows, values and gradients, also split over a 4-device batch mesh."""
  from lst_jax import sharding
  rng = np.random.default_rng(1)
  t = 200  # not a multiple of the kernel's block: padded inside
  q, k, v = (jnp.asarray(rng.normal(size=(4, t, 2, 16)), jnp.float32) for _ in range(3))
  seg = np.zeros((4, t), np.int32)
  seg[0, :70], seg[0, 70:190] = 1, 2
  seg[1:, :] = 1
  seg = jnp.asarray(seg)
  ref_fn = lambda q, k, v: attn.attention(q, k, v, attn.document_causal_mask(seg, window))
  splash_fn = lambda q, k, v: attn.self_attention(q, k, v, seg, window, implementation="pallas")
  np.testing.assert_allclose(np.asarray(splash_fn(q, k, v)), np.asarray(ref_fn(q, k, v)), atol=1e-5)
  assert np.all(np.asarray(splash_fn(q, k, v))[0, 190:] == 0)  # padding queries give zeros
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  for g_s, g_r in zip(jax.jit(jax.grad(loss(splash_fn), (0, 1, 2)))(q, k, v),
                      jax.jit(jax.grad(loss(ref_fn), (0, 1, 2)))(q, k, v)):
    np.testing.assert_allclose(np.asarray(g_s), np.asarray(g_r), atol=1e-4)
  mesh = sharding.make_mesh(2, 2, 1, devices=jax.devices()[:4])

  @jax.jit
  def sharded(q, k, v):
    with sharding.activation_sharding(mesh):
      return splash_fn(q, k, v)
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  out = sharded(*(jax.device_put(x, rows) for x in (q, k, v)))
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref_fn(q, k, v)), atol=1e-5)


# Cross-attention windows (config.model.encoder_window / decoder_window).

def _window_setup(dataset, config, window, monkeypatch, block=None):
  """The tiny LST with both cross-attention windows = `window` on a 4-row batch of 256 tokens /
  96 patches (2-4 documents a row, text and speech, padding); `block` shrinks the query block of
  the windowed path so that it runs in blocks over gathered spans."""
  from lst_jax.model import cross_attention
  if block is not None:
    monkeypatch.setattr(cross_attention, "CROSS_BLOCK", block)
  config.data.update(max_tokens=256, max_patches=96)
  config.model.update(encoder_window=window, decoder_window=window)
  return _setup(dataset, config, "lst")


def _dense_cross(cross, x_BQD, kv_BSD, mask_BQS):
  """Plain masked softmax attention of x over kv, with cross's parameters: one dense [Q x S]
  score matrix per row; a query without keys gets zeros."""
  q, k, v = (cross._split(y) for y in (cross.q(cross.q_norm(x_BQD)), cross.k(cross.kv_norm(kv_BSD)),
                                       cross.v(cross.kv_norm(kv_BSD))))
  logits = jnp.einsum("bqnh,bsnh->bnqs", q, k) / np.sqrt(q.shape[-1])
  probs = jax.nn.softmax(jnp.where(mask_BQS[:, None], logits, -jnp.inf), axis=-1)
  probs = jnp.where(mask_BQS[:, None].any(-1, keepdims=True), probs, 0.0)
  return cross.o(jnp.einsum("bnqs,bsnh->bqnh", probs, v).reshape(x_BQD.shape))


def _dense_reference(model, batch, window):
  """The LST forward with both cross-attentions as dense masked [P x T] / [T x P] attention:
  patch p's queries see the tokens of patches p-W+1 .. p of its document; token t sees the
  k vectors of patches c-W+1 .. c of its document, c = context_patch(t). Returns (patch vectors
  [B, P, d_global], logits [B, T, V])."""
  from lst_jax.model.transformer import run_block
  enc, dec, cfg = model.encoder, model.decoder, model.encoder.cfg
  tp, ts, ps = (jnp.asarray(batch[k]) for k in ("token_patch", "token_segment", "patch_segment"))
  b, p = ps.shape
  kk = cfg.cross_attn_k
  patch_idx = jnp.arange(p)
  same_doc_PT = (ps[:, :, None] == ts[:, None, :]) & (ps[:, :, None] > 0)
  own_BPT = same_doc_PT & (tp[:, None, :] == patch_idx[None, :, None])
  delta_BPT = patch_idx[None, :, None] - tp[:, None, :]
  enc_mask_BPT = same_doc_PT & (delta_BPT >= 0) & (delta_BPT < window)
  h = enc.embed(batch["tokens"])
  queries = None
  for layer, cross in zip(enc.layers, enc.cross):
    h = run_block(layer, h, batch["token_pos"], batch["token_segment"], cfg.window, cfg.remat)
    if queries is None:
      pooled = jnp.max(jnp.where(own_BPT[..., None], h[:, None], -jnp.inf), axis=2)
      pooled = jnp.where(own_BPT.any(-1)[..., None], pooled, 0)
      queries = enc.pool_to_queries(pooled).reshape(b, p * kk, cfg.d_local)
    queries = queries + _dense_cross(cross, queries, h, jnp.repeat(enc_mask_BPT, kk, axis=1))
  patches = enc.to_global(queries.reshape(b, p, kk * cfg.d_local))
  global_ = model.latent(patches, batch["patch_pos"], batch["patch_segment"])
  kv = dec.from_global(global_).reshape(b, p * kk, cfg.d_local)
  ctx = context_patch(tp, ts)
  delta_BTP = ctx[:, :, None] - patch_idx[None, None, :]
  dec_mask_BTP = same_doc_PT.transpose(0, 2, 1) & (delta_BTP >= 0) & (delta_BTP < window)
  for cross, layer in zip(dec.cross, dec.layers):
    h = h + _dense_cross(cross, h, kv, jnp.repeat(dec_mask_BTP, kk, axis=2))
    h = run_block(layer, h, batch["token_pos"], batch["token_segment"], cfg.window, cfg.remat)
  return patches, dec.head(dec.norm(h)).astype(jnp.float32)


@pytest.mark.parametrize("window,block", [(1, None), (3, None), (3, 8), (96, None)])
def test_cross_attention_windows_match_dense_reference(dataset, config, monkeypatch, window, block):
  """Patch vectors and logits equal a dense masked [P x T] / [T x P] reference: W = 1 (the
  gathered path: own patch / one context patch), W = 3 over the whole row and in blocks of 8
  queries over gathered spans, and W >= P (96 patch slots)."""
  model, batch, _ = _window_setup(dataset, config, window, monkeypatch, block)
  seg, pseg = batch["token_segment"], batch["patch_segment"]
  assert (seg.max(1) >= 2).all() and (seg == 0).any(1).all() and (pseg == 0).any()  # packed, padded
  assert (batch["tokens"] >= pipeline.vocab_of(dataset).unit_offset).any()         # speech and text
  patches, logits = nnx.jit(lambda m, b: (m.encoder(b)[1], m(b)))(model, batch)
  ref_patches, ref_logits = nnx.jit(_dense_reference, static_argnums=2)(model, batch, window)
  chex.assert_trees_all_close(patches, ref_patches, atol=1e-5, rtol=1e-5)
  # W = 1 reads the context patch without a document check; that differs from the reference
  # only where the patch lies outside the token's document (padding: never scored).
  ctx = np.asarray(context_patch(batch["token_patch"], seg))
  comparable = (seg > 0) & (np.take_along_axis(pseg, ctx, axis=1) == seg) if window == 1 else np.ones_like(seg, bool)
  assert comparable[batch["loss_mask"]].all()
  np.testing.assert_allclose(np.asarray(logits)[comparable], np.asarray(ref_logits)[comparable],
                             atol=1e-5, rtol=1e-5)
  chex.assert_tree_all_finite(logits)


def test_windowed_cross_attention_is_causal(dataset, config, monkeypatch):
  """At W = 3 (in blocks of 8 queries), changing the tokens at and after position t moves no
  logit before t: neither the targets in patches before t's patch nor those of t's own patch
  before t; it does move the logit at t."""
  model, batch, vocab = _window_setup(dataset, config, 3, monkeypatch, block=8)
  row = int(np.argmax((batch["tokens"] >= vocab.unit_offset).sum(-1)))
  real = np.flatnonzero(batch["token_segment"][row] > 0)
  probes = [int(t) for t in real[1::max(1, len(real) // 8)][:8]]
  rng = np.random.default_rng(0)
  same = {k: np.repeat(v[row:row + 1], len(probes), axis=0) for k, v in batch.items() if v.ndim == 2}
  tokens = same["tokens"].copy()
  for i, t in enumerate(probes):   # one row per probe: tokens from t on redrawn
    tokens[i, t:] = rng.integers(3, vocab.size, size=tokens.shape[1] - t)
  forward = nnx.jit(lambda m, b: m(b))
  base, out = (np.asarray(forward(model, {**same, "tokens": x})) for x in (same["tokens"], tokens))
  diff = np.abs(out - base).max(-1)
  checked = 0
  for i, t in enumerate(probes):
    tp = batch["token_patch"][row]
    before_patch = np.flatnonzero(tp[1:t + 1] < tp[t])   # positions whose target precedes t's patch
    checked += len(before_patch)
    np.testing.assert_allclose(diff[i, before_patch], 0, atol=1e-6, err_msg=f"token {t} leaked")
    np.testing.assert_allclose(diff[i, :t], 0, atol=1e-6, err_msg=f"token {t} leaked backwards")
    assert diff[i, t] > 1e-4
  assert checked > 50


def test_windowed_cross_attention_gradients_are_finite(dataset, config, monkeypatch):
  """W = 3 in blocks of 8 (padding queries, empty windows): the loss gradient is finite, and
  reaches every cross-attention parameter."""
  from lst_jax.train import step as step_lib
  model, batch, vocab = _window_setup(dataset, config, 3, monkeypatch, block=8)
  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = step_lib.make_loss_fn(graphdef, vocab)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch)[0]))(params)
  chex.assert_tree_all_finite(grads)
  for part in (grads["encoder"]["cross"], grads["decoder"]["cross"]):
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(part))


def test_cross_flops_with_windows_by_hand():
  """W = 2, 1 row of 8 tokens and 4 patches, d_local 2, k 1, d_global 4, one layer each,
  patches of at most 2 tokens. Per query/key pair the score and the value sum cost 2*2 + 2*2 = 8.
  Encoder: pooling projection 2*4*2*2 = 32; q, o for 4 queries 2 x 2*4*2*2 = 64; k, v for 8
  tokens 2 x 2*8*2*2 = 128. Forward pairs (causal): patches 0-3 see 1, 2, 2, 2 patches of
  8/4 tokens = 14 -> 112;
  executed: the whole row (span (128 + 1) * 2 >= 8 tokens): 4 x 8 = 32 pairs -> 256.
  Decoder: from_global 2*4*2*4 = 64; q, o for 8 tokens 128; k, v for 4 patch vectors 64.
  Forward pairs: 2 tokens per patch x (1 + 2 + 2 + 2) patches x 1 vector = 14 -> 112; executed:
  whole row, 8 x 4 = 32 -> 256."""
  cfg = config_lib.ModelConfig(d_local=2, local_heads=1, d_global=4, cross_attn_k=1, encoder_layers=1,
                               decoder_layers=1, patch_gather_width=2, encoder_window=2, decoder_window=2)
  assert flops.patch_cross_flops(cfg, 1, 8, 4) == {"forward": 32 + 64 + 128 + 112,
                                                   "dense": 32 + 64 + 128 + 256, "executed": 32 + 64 + 128 + 256}
  assert flops.token_cross_flops(cfg, 1, 8, 4) == {"forward": 64 + 128 + 64 + 112,
                                                   "dense": 64 + 128 + 64 + 256, "executed": 64 + 128 + 64 + 256}


def test_fused_projections_equal_separate_products():
  from lst_jax.model.layers import Linear, fused_dot
  rngs = nnx.Rngs(0)
  a, b = Linear(16, 24, ("embed", "mlp"), rngs=rngs), Linear(16, 24, ("embed", "mlp"), rngs=rngs)
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  ya, yb = fused_dot(x, a, b)
  np.testing.assert_allclose(ya, a(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(yb, b(x), rtol=1e-5, atol=1e-5)


def test_attention_equals_a_plain_masked_softmax_and_zeroes_empty_rows():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 24, 2, 8)) for i in range(3))
  mask = jax.random.bernoulli(jax.random.key(3), 0.5, (2, 24, 24)).at[:, 0].set(False)

  def plain(q, k, v):
    s = jnp.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(8)
    p = jax.nn.softmax(jnp.where(mask[:, None], s, -jnp.inf), axis=-1)
    p = jnp.where(mask[:, None].any(-1, keepdims=True), p, 0.0)
    return jnp.einsum("bnqk,bknh->bqnh", p, v)

  ours = lambda q, k, v: attn.attention(q, k, v, mask)
  np.testing.assert_allclose(ours(q, k, v), plain(q, k, v), rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(ours(q, k, v))[:, 0])
  g = jax.random.normal(jax.random.key(4), q.shape)
  grads = lambda f: jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * g), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(grads(ours), grads(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
