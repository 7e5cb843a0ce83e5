"""Test setup: 8 fake CPU devices and cheap compiles (set before jax is imported), a small random
dataset in the real on-disk format, and a tiny experiment config."""

import os

# XLA's backend optimizations off: the suite is dominated by compiling small programs, and this
# takes ~40% off its time (measured on test_train + test_sharding: 200 s -> 123 s); values stay
# within every tolerance the tests use.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for this test run (both xdist workers and the runs
# tests start as subprocesses inherit it): the same small programs compile once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lst_jax_test_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import ml_collections  # noqa: E402,F401
import pytest  # noqa: E402

from data_prep.corpus import random_dataset  # noqa: E402
from lst_jax import config as config_lib  # noqa: E402


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
  return random_dataset.make_dataset(str(tmp_path_factory.mktemp("synthetic")), num_speech=48, num_text=48,
                                     num_units=40, text_vocab=60, heldout=8, seed=0)


def tiny_config(data_dir: str, kind: str = "lst") -> ml_collections.ConfigDict:
  """A ~0.2M-parameter experiment that compiles and steps in seconds."""
  c = config_lib.defaults()   # every key present, as in experiments/*.py
  c.model.update(kind=kind, d_global=64, global_layers=2, global_heads=4, d_local=32, local_heads=2,
                 encoder_layers=1, decoder_layers=1, cross_attn_k=2, window=64)
  c.data.update(dir=data_dir, batch_size=8, max_tokens=128, max_patches=48, interleaved_weight=0.5,
                text_weight=0.5, packing_bins=4)
  c.data.patching.patch_size = 4
  c.optim.update(learning_rate=3e-3, warmup_steps=2)
  c.train.update(steps=6, log_every=2, checkpoint_every=2, keep_checkpoints=2)
  c.mesh.update(data=1, fsdp=1, tensor=1)
  return c


@pytest.fixture
def config(dataset):
  return tiny_config(dataset.dir)


@pytest.fixture(scope="session")
def gcs():
  """A local Cloud Storage emulator with bucket gs://lst-test, its environment set in this
  process (and given to subprocesses as `gcs.env`)."""
  from lst_jax.tools.gcs_emulator import Emulator
  emulator = Emulator()
  env = emulator.start()
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  emulator.env = env
  emulator.url = emulator.bucket("lst-test")
  yield emulator
  emulator.stop()
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
