"""Paper presets: every experiment parses at every size, pairs hold their pairing invariants,
bad choices fail before anything compiles with the key and the allowed values named."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from lst_jax import config as config_lib
from lst_jax import memory
from lst_jax import presets
from lst_jax.tools import compare
from lst_jax.train import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 32000 + 5 + 501


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_experiment_file_parses_and_documents_its_run_command():
  for path in sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))):
    name = os.path.basename(path)[:-3]
    module = _load(name)
    assert "python -m lst_jax.main" in module.__doc__ or "make train" in module.__doc__, name
    config_lib.parse(module.get_config(), VOCAB)


@pytest.mark.parametrize("size", list(presets.SIZES))
@pytest.mark.parametrize("pairing", presets.PAIRINGS)
def test_pairs_hold_their_invariants(size, pairing):
  lst = config_lib.parse(compare.member_config("lst", pairing, size), VOCAB)
  base = config_lib.parse(compare.member_config("baseline", pairing, size), VOCAB)
  assert (lst.model.kind, base.model.kind) == ("lst", "baseline")
  assert (lst.train.steps, lst.data.batch_size, lst.optim) == (base.train.steps, base.data.batch_size, base.optim)
  assert lst.model.kind == "lst" and base.model.kind == "baseline"
  assert (lst.model.d_global, lst.model.global_layers) == (base.model.d_global, base.model.global_layers)
  assert (lst.data.interleaved_weight, lst.data.text_weight) == (base.data.interleaved_weight, base.data.text_weight)
  assert (lst.optim.b1, lst.optim.b2, lst.optim.weight_decay, lst.optim.clip_norm) == (0.9, 0.95, 0.1, 1.0)
  if not size.startswith(("demo", "study")):  # the paper's recipe; demo and study: static, speech-heavy
    assert lst.data.patching.strategy == "curriculum"
    assert (lst.data.interleaved_weight, lst.data.text_weight) == (0.33, 0.67)
  if pairing in ("compute_matched", "flop_matched"):  # same global positions (flop_matched: until measured)
    assert base.data.max_tokens == lst.data.max_patches and lst.data.max_tokens > lst.data.max_patches
  else:  # the same packed rows (data_matched: no patch cap below the token cap, which would truncate)
    assert (base.data.max_tokens, base.data.max_patches) == (lst.data.max_tokens, lst.data.max_patches)


def test_the_demo_preset_is_the_documented_demo():
  demo = config_lib.parse(_load("demo").get_config(), VOCAB)
  m, d = demo.model, demo.data
  assert (m.d_global, m.global_layers, m.d_local, m.encoder_layers, m.decoder_layers) == (256, 4, 128, 1, 2)
  assert (d.batch_size, d.max_tokens, d.max_patches, d.patching.strategy, d.patching.patch_size) == \
      (8, 384, 256, "static", 4)
  assert (demo.train.steps, demo.optim.learning_rate, d.interleaved_weight) == (300, 2e-3, 0.67)


def test_paper_sizes_match_the_paper():
  one_b = config_lib.parse(_load("lst_compute_matched").get_config("1b"), VOCAB)
  assert (one_b.model.d_global, one_b.model.global_layers, one_b.model.decoder_layers) == (2048, 25, 9)
  assert one_b.data.batch_size * one_b.data.max_patches == 128 * 4096  # 0.5M global positions per step
  assert one_b.data.max_tokens == 12288 and one_b.optim.learning_rate == 4e-4
  assert one_b.optim.warmup_steps == 2000 and one_b.model.scan_layers and one_b.model.remat == "full"


def test_bad_size_and_labels_are_clear():
  with pytest.raises(config_lib.ConfigError, match=r"unknown size 'huge'; choose from demo, tiny"):
    presets.experiment("lst", "huge")
  with pytest.raises(config_lib.ConfigError, match=r"config.pairing is a name for reports and must be a string"):
    config_lib.parse({"pairing": 3}, VOCAB)


def test_bad_override_names_the_key_and_the_allowed_values(tmp_path):
  r = subprocess.run([sys.executable, "-m", "lst_jax.main", "--config=experiments/lst_compute_matched.py:tiny",
                      f"--workdir={tmp_path}", "--config.data.patching.strategy=sometimes"], cwd=REPO,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert ("config.data.patching.strategy='sometimes' is not one of 'static', 'aligned', 'mixed', 'curriculum'"
          in r.stderr)


def test_compare_table_reads_the_runs_records():
  # The records as the loop writes them: bits derived by Accounting at the data's unit rate (50 Hz here).
  acc = metrics.Accounting(flops_per_step=1.0, unit_rate=50.0)
  record = lambda flops, text: {**acc({"step": 10, "final": True, "heldout_interleaved_loss": 2.0,
                                       "heldout_interleaved_text_loss": text, "heldout_interleaved_speech_loss": 1.0}),
                                "cumulative_flops": flops, "text_tokens_seen": 100.0, "speech_tokens_seen": 300.0}
  lst = compare.summarize([{"step": 0, "heldout_interleaved_loss": 9.0}, record(2e12, 2.0)])
  base = compare.summarize([record(1e12, 3.0)])
  assert lst["flops"] == 2e12
  assert lst["heldout_interleaved_speech_bits_per_second"] == pytest.approx(50 / 0.6931471805599453)
  table = compare.format_table("compute_matched", "tiny", {"lst": lst, "baseline": base})
  assert "2.000e+12" in table and "1.000e+12" in table and "4.328" in table  # 3 nats = 4.328 bits
  assert "72.1" in table                                                      # 1 nat/unit at 50 Hz, in bits/s
  # A run logged before the held-out names (heldout_*) reads the same (metrics.read_records renames).
  old = [metrics.renamed({k.replace("heldout_interleaved_", "heldout_"): v for k, v in record(2e12, 2.0).items()})]
  assert compare.summarize(old) == lst


@pytest.mark.parametrize("size", [s for s, v in presets.SIZES.items() if not v.accelerator])
def test_every_cpu_size_fits_its_hardware(size):
  """Each CPU size names this machine, and lst_jax.memory's estimate of both members' train step
  on it (the paper's 32,506-entry vocabulary, the preset's remat, attention and micro-batches)
  stays within 75% of its memory. (Accelerator deployments are held to it by XLA's own plans:
  make aot, tests/test_aot.py.)"""
  s = presets.SIZES[size]
  hw = s.hardware
  assert (hw.device, hw.memory_bytes, hw.devices) == ("this 2-core CPU machine", 24 * 2 ** 30, 1)
  for kind in ("lst", "baseline"):
    exp = config_lib.parse(presets.experiment(kind, size), VOCAB)
    assert exp.train.grad_accum_steps == s.grad_accum
    rows = exp.data.batch_size // (s.mesh_shape()[0] * s.mesh_shape()[1])
    assert rows * s.mesh_shape()[0] * s.mesh_shape()[1] == exp.data.batch_size and rows % s.grad_accum == 0
    est = memory.estimate(exp, s.mesh_shape())
    assert est.fraction(hw.memory_bytes) <= 0.75, (kind, est.describe())


_TRACED = ["demo", "tiny"] + [f"{s}@{d.target}" for s, v in presets.SIZES.items() for d in v.deployments]


@pytest.mark.parametrize("size", _TRACED)
@pytest.mark.parametrize("kind", ["lst", "baseline"])
def test_every_preset_train_step_traces_and_lowers_with_its_own_settings(size, kind):
  """Every deployment's own accumulation, remat policy, scanned layers and mesh, traced and lowered
  on this machine's 8 CPU devices (no compile): accumulation under remat and scan once failed
  here, before any device was reached. cuDNN cannot be traced without a GPU's cuDNN, so the GPU
  deployments trace with `xla` here (tests/test_aot.py compiles cuDNN for H100s)."""
  import jax
  from lst_jax import sharding
  from lst_jax.tools import programs
  c = presets.experiment(kind, size)
  if c.model.attention == "cudnn":
    c.model.attention = "xla"
  exp = config_lib.parse(c, VOCAB)
  mesh = sharding.make_mesh(-1, min(exp.mesh.fsdp, len(jax.devices())), 1)
  run, batch = programs.train_programs(exp, programs.DEFAULT_VOCAB, mesh)
  lowered = run.train_step.trace(run.abstract, batch).lower()
  assert "stablehlo" in lowered.as_text()[:20000]
  if exp.train.grad_accum_steps > 1:
    assert "stablehlo.while" in lowered.as_text()   # the micro-batch scan
