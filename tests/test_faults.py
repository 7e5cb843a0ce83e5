"""Faults a pod run meets: SIGKILL, SIGTERM (preemption), an unreadable checkpoint, a
non-finite loss, a workdir that holds another run or is in use, a damaged shard; and
gradient accumulation, which must not change the update."""

import glob
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax.data import pipeline
from lst_jax.train import step as step_lib
from lst_jax.train.loop import TrainingError, train
from lst_jax.train.metrics import read_records
from lst_jax.train.workdir import RunLock, WorkdirError, compare_configs, compare_shapes
from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = {"time", "tokens_per_s", "patches_per_s", "step_time_s", "flops_per_s", "mfu"}


def _config_file(tmp_path, config) -> str:
  path = tmp_path / "exp.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")
  return str(path)


def _start(config_file: str, workdir: str) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=")  # + the test run's XLA cache
  return subprocess.Popen([sys.executable, "-m", "lst_jax.main", f"--config={config_file}",
                           f"--workdir={workdir}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_step(proc: subprocess.Popen, workdir: str, step: int, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(r.get("step", 0) >= step and "loss" in r for r in read_records(workdir)):
      return
    assert proc.poll() is None, f"run ended before step {step}:\n{proc.stdout.read()}"
    time.sleep(0.05)
  raise AssertionError(f"no step {step} within {timeout}s")


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def _long_config(config):
  config.train.steps = 24
  config.train.log_every = 1
  config.train.checkpoint_every = 4
  return config


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(config, tmp_path):
  """kill -9 mid-run, rerun the same command: metrics.jsonl equals an uninterrupted run's
  (every logged loss, held-out loss and statistic, bit for bit), throughput aside."""
  config = _long_config(config)
  cfg = _config_file(tmp_path, config)
  full = _start(cfg, str(tmp_path / "full"))  # the same command, never interrupted
  assert full.wait(timeout=600) == 0
  workdir = str(tmp_path / "killed")
  proc = _start(cfg, workdir)
  _wait_for_step(proc, workdir, 9)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not any(r.get("final") for r in read_records(workdir)), "killed before its end"
  proc = _start(cfg, workdir)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  assert "resumed from" in out
  assert _without_timing(read_records(workdir)) == _without_timing(read_records(str(tmp_path / "full")))


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes(config, tmp_path):
  config = _long_config(config)
  config.train.checkpoint_every = 1000  # only the preemption save can produce a late checkpoint
  workdir = str(tmp_path / "run")
  cfg = _config_file(tmp_path, config)
  proc = _start(cfg, workdir)
  _wait_for_step(proc, workdir, 3)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert "stopped (SIGTERM or Ctrl-C)" in out and "Traceback" not in out
  saved = [int(os.path.basename(p)) for p in glob.glob(f"{workdir}/checkpoints/*") if os.path.basename(p).isdigit()]
  assert 3 <= max(saved) < 24
  proc = _start(cfg, workdir)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0 and f"resumed from {workdir}/checkpoints at step {max(saved)}" in out, out
  assert read_records(workdir)[-1]["final"] and read_records(workdir)[-1]["step"] == 24


@pytest.mark.slow
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(config, tmp_path, capsys):
  config.train.steps = 6
  full = train(config, str(tmp_path / "full"))
  workdir = str(tmp_path / "run")
  train(config, workdir, stop_at=4)  # checkpoints at steps 2 and 4
  files = [f for f in glob.glob(f"{workdir}/checkpoints/4/state/**/*", recursive=True) if os.path.isfile(f)]
  assert files
  for f in files:  # a disk that filled mid-write
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 3)
  capsys.readouterr()
  resumed = train(config, workdir)
  out = capsys.readouterr().out
  assert "warning: checkpoint at step 4 cannot be restored" in out
  assert f"resumed from {workdir}/checkpoints at step 2" in out
  assert os.path.isdir(f"{workdir}/checkpoints/4.unreadable")  # kept for inspection, not deleted
  assert resumed.step == 6 and resumed.heldout_end == full.heldout_end


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_good_checkpoint(config, tmp_path):
  config.optim.learning_rate = 1e30  # the first update blows the parameters up
  config.optim.warmup_steps = 0
  config.train.log_every = 1
  config.train.checkpoint_every = 1
  workdir = str(tmp_path / "run")
  with pytest.raises(TrainingError, match=r"non-finite loss, gradient or parameters at step (\d+).*"
                                          r"Last good checkpoint: "
                                          r"step \d+") as err:
    train(config, workdir)
  bad = int(err.value.args[0].split("at step ")[1].split(":")[0])
  from lst_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(f"{workdir}/checkpoints", 1, 2)
  assert ckpt.latest_step() == bad - 1
  vocab = pipeline.vocab_of(pipeline_manifest(config))
  exp = config_lib.parse(config, vocab.size)
  run = step_lib.setup(exp.model, exp.optim, vocab, sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
  state, _ = ckpt.restore(bad - 1, run.abstract, run.shardings)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  ckpt.close()


def pipeline_manifest(config):
  from lst_jax.data import datasets
  return datasets.open_datasets(config.data.dir)


@pytest.mark.slow
@pytest.mark.parametrize("remat,scan", [("none", False), ("full", True), ("dots", False)])
def test_gradient_accumulation_gives_the_same_update(dataset, config, remat, scan, accum=4):
  """Micro-batches under a scan give one big batch's update, also with rematerialized blocks and
  scanned layers (the 420m/7b presets' setting, which once failed to trace)."""
  config.optim.warmup_steps = 0
  config.model.remat, config.model.scan_layers = remat, scan
  vocab = pipeline.vocab_of(dataset)
  exp = config_lib.parse(config, vocab.size)
  batch = next(iter(pipeline.train_dataset(dataset, exp.data, 8)))
  results = []
  for steps in (1, accum):
    mesh = sharding.make_mesh(2, 1, 1, devices=jax.devices()[:2])
    run = step_lib.setup(exp.model, exp.optim, vocab, mesh, accum_steps=steps)
    state, metrics = run.train_step(run.init(), sharding.global_batch(batch, mesh))
    results.append(jax.device_get((state.params, metrics)))
  (p1, m1), (pk, mk) = results
  for key in ("loss", "text_loss", "speech_loss", "target_tokens", "real_tokens"):
    np.testing.assert_allclose(mk[key], m1[key], rtol=1e-5)
  np.testing.assert_allclose(mk["grad_norm"], m1["grad_norm"], rtol=1e-4)
  chex.assert_trees_all_close(pk, p1, atol=2e-4)


def test_metrics_count_text_and_speech_tokens():
  """Counted by hand: with 60 text pieces and 40 units, ids 3..62 are text, 63/64 the mode
  tokens, 65..104 units; BOS 1, EOS 2 and padding (segment 0) count as neither."""
  from lst_jax import vocab as vocab_lib
  batch = {"tokens": np.array([[1, 63, 3, 62, 64, 65, 104, 2],      # text 3, 62; units 65, 104
                               [1, 64, 70, 2, 1, 63, 20, 80]]),     # unit 70; text 20; 80 is padding
           "token_segment": np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 2, 2, 2, 0]]),
           "patch_segment": np.array([[1, 1, 2, 0], [1, 2, 0, 0]])}
  counts = jax.device_get(step_lib.token_counts(batch, vocab_lib.Vocab(text_size=60, num_units=40)))
  assert {k: float(v) for k, v in counts.items()} == {"real_tokens": 15, "real_text_tokens": 3,
                                                      "real_speech_tokens": 3, "real_patches": 5}


# ---------------------------------------------------------------------------- resume never discards work

def _snapshot(workdir: str) -> dict:
  """Every file under the workdir with its size (what a refused rerun must leave untouched)."""
  return {os.path.relpath(p, workdir): os.path.getsize(p)
          for p in glob.glob(f"{workdir}/**/*", recursive=True) if os.path.isfile(p) and not p.endswith("run.lock")}


def _two_step_config(dataset):
  config = tiny_config(dataset.dir)
  config.train.update(steps=2, checkpoint_every=2)
  return config


@pytest.fixture(scope="module")
def _trained_once(dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("two_step") / "run")
  train(_two_step_config(dataset), workdir)
  return workdir


@pytest.fixture
def two_step_run(dataset, _trained_once, tmp_path):
  """A workdir holding a run of 2 steps (a checkpoint at step 2; a copy of one trained run), and its config."""
  import shutil
  workdir = str(tmp_path / "run")
  shutil.copytree(_trained_once, workdir)
  return _two_step_config(dataset), workdir


@pytest.mark.slow
def test_changed_model_is_refused_before_anything_moves(two_step_run):
  config, workdir = two_step_run
  before = _snapshot(workdir)
  config.model.d_global = 32
  config.train.steps = 4
  with pytest.raises(WorkdirError) as e:
    train(config, workdir)
  message = str(e.value)
  assert "whose parameters do not fit this config: config.model.d_global: 64 there, 32 here" in message
  assert "first parameter that differs: " in message and "(64," in message and "(32," in message
  assert "--config.train.resume=archive_and_restart" in message
  assert _snapshot(workdir) == before   # nothing renamed, deleted or written


@pytest.mark.slow
def test_changed_settings_need_an_explicit_choice(two_step_run):
  config, workdir = two_step_run
  before = _snapshot(workdir)
  config.optim.learning_rate = 1e-3
  config.train.steps = 4                      # may change on resume: not a reason to refuse
  with pytest.raises(WorkdirError, match=r"trained with other settings: config\.optim\.learning_rate: "
                                         r"0\.003 there, 0\.001 here\. Nothing was changed"):
    train(config, workdir)
  assert _snapshot(workdir) == before
  config.train.resume = "with_changes"
  result = train(config, workdir)
  steps = [r["step"] for r in read_records(workdir) if "loss" in r]
  assert result.step == 4 and steps == sorted(set(steps)) and steps[-1] == 4


@pytest.mark.slow
def test_a_resume_names_what_a_changed_step_count_does_to_the_schedule(two_step_run, capsys):
  config, workdir = two_step_run
  config.train.steps = 8
  capsys.readouterr()
  train(config, workdir)
  out = capsys.readouterr().out
  assert "note: resuming with a changed setting, config.train.steps: 2 there, 8 here" in out
  assert "note: the learning-rate schedule spans train.steps, so at step 2 the rate goes from " in out, out


@pytest.mark.slow
def test_a_setting_the_saved_run_predates_counts_as_changed_from_its_default(two_step_run):
  """A checkpoint written before a setting existed ran at that setting's default: another value now is
  a change to refuse, not a silent resume."""
  import json
  config, workdir = two_step_run
  saved = f"{workdir}/checkpoints/2/config/metadata"
  with open(saved) as f:
    record = json.load(f)
  del record["data"]["seed"]   # as an older version wrote it
  with open(saved, "w") as f:
    json.dump(record, f)
  config.data.seed = 5
  with pytest.raises(WorkdirError, match=r"config\.data\.seed: absent there \(a run before the setting existed, "
                                         r"so its default 0\), 5 here"):
    train(config, workdir)


@pytest.mark.slow
def test_archive_and_restart_keeps_the_old_run(two_step_run):
  config, workdir = two_step_run
  old_records = read_records(workdir)
  config.model.d_global = 32
  config.train.resume = "archive_and_restart"
  train(config, workdir)
  (previous,) = glob.glob(f"{workdir}/previous/*")
  assert "2" in os.listdir(f"{previous}/checkpoints")
  assert read_records(previous) == old_records
  new = read_records(workdir)
  assert [r["step"] for r in new if "heldout_interleaved_loss" in r] == [0, 2]   # one run per metrics.jsonl
  assert new != old_records


@pytest.mark.slow
def test_no_readable_checkpoint_stops_instead_of_starting_over(two_step_run):
  config, workdir = two_step_run
  records = read_records(workdir)
  for f in glob.glob(f"{workdir}/checkpoints/*/state/**/*", recursive=True):   # every checkpoint
    if os.path.isfile(f):
      with open(f, "r+b") as fh:
        fh.truncate(os.path.getsize(f) // 3)
  config.train.steps = 4
  with pytest.raises(WorkdirError, match=r"no checkpoint in .* can be read .* nothing was started"):
    train(config, workdir)
  assert os.path.isdir(f"{workdir}/checkpoints/2.unreadable")   # set aside, kept
  assert read_records(workdir) == records                          # no second run began


def test_a_second_training_on_the_workdir_is_refused(config, tmp_path):
  workdir = str(tmp_path / "run")
  holder = RunLock(workdir)
  holder.acquire()
  try:
    with pytest.raises(WorkdirError, match=rf"is in use by another training run \(.*\"pid\": {os.getpid()}"):
      train(config, workdir)
  finally:
    holder.release()
  assert not os.path.exists(f"{workdir}/metrics.jsonl")


def test_workdir_comparisons():
  saved = {"model": {"d_global": 64, "attention": "reference"}, "train": {"steps": 2}}
  current = {"model": {"d_global": 64, "attention": "xla"}, "train": {"steps": 4}}
  assert compare_configs(saved, current) == (
      [], ["config.model.attention: 'reference' there, 'xla' here", "config.train.steps: 2 there, 4 here"])
  defaults = {"data": {"seed": 0}, "model": {"d_global": 512}}
  assert compare_configs({"train": {"steps": 2}}, {"train": {"steps": 2}, "data": {"seed": 5}}, defaults) == (
      ["config.data.seed: absent there (a run before the setting existed, so its default 0), 5 here"], [])
  assert compare_configs({"train": {"steps": 2}}, {"train": {"steps": 2}, "data": {"seed": 0}}, defaults) == ([], [])
  assert compare_shapes({"a": (2, 3), "b": (4,)}, {"a": (2, 3), "b": (4,)}) is None
  assert compare_shapes({"a": (2, 3)}, {"a": (2, 4)}) == "a: (2, 3) there, (2, 4) here"
  assert compare_shapes({"a": (2,)}, {"a": (2,), "c": (1,)}) == "c: absent there, (1,) here"


# ---------------------------------------------------------------------------- a damaged shard mid-run

def test_a_damaged_shard_is_named_with_the_record(dataset, tmp_path):
  import shutil
  from lst_jax.data.shards import ShardError, Shards
  shard = dataset.split("train").speech[0]
  copy = str(tmp_path / "train" / os.path.basename(shard))
  os.makedirs(os.path.dirname(copy))
  shutil.copy(shard, copy)
  assert len(Shards([copy])) == len(Shards([shard]))
  with open(copy, "r+b") as f:
    size = os.path.getsize(copy)
    f.seek(size // 4)
    flipped = bytes((b ^ 0x5A) for b in f.read(size // 2))
    f.seek(size // 4)
    f.write(flipped)
  assert os.path.getsize(copy) == os.path.getsize(shard)
  with pytest.raises(ShardError, match=rf"{copy}: (record \d+ cannot be read|cannot be opened)"):
    source = Shards([copy])
    [source[i] for i in range(len(source))]
  with pytest.raises(ShardError, match=r"records, the manifest says 999"):
    Shards([shard], {shard: 999})


@pytest.mark.slow
def test_training_stops_cleanly_on_a_damaged_shard(config, tmp_path):
  import shutil
  data = str(tmp_path / "data")
  shutil.copytree(config.data.dir, data)
  config.data.dir = data
  config.train.update(steps=2, checkpoint_every=2)
  workdir = str(tmp_path / "run")
  train(config, workdir)
  for shard in glob.glob(f"{data}/train/*.array_record"):
    with open(shard, "r+b") as f:
      size = os.path.getsize(shard)
      f.seek(64)
      flipped = bytes((b ^ 0x5A) for b in f.read(size - 128))
      f.seek(64)
      f.write(flipped)   # same size: only the content is wrong
  config.train.steps = 6
  r = subprocess.run([sys.executable, "-m", "lst_jax.main", f"--config={_config_file(tmp_path, config)}",
                      f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {data}/train/") and ".array_record" in last and "data_prep.maintenance.verify" in last
  assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stdout + r.stderr
  assert "2" in os.listdir(f"{workdir}/checkpoints") and not glob.glob(f"{workdir}/checkpoints/*tmp*")


def test_mesh_larger_than_the_devices_is_one_line(config, tmp_path):
  config.mesh.data = 64
  r = subprocess.run([sys.executable, "-m", "lst_jax.main", f"--config={_config_file(tmp_path, config)}",
                      f"--workdir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith(
      "error: config.mesh data=64 x fsdp=1 x tensor=1 needs 64 devices, but ")


def test_an_empty_split_and_deep_provenance_differences_are_named(tmp_path):
  from data_prep.corpus import random_dataset
  from lst_jax.config import DataConfig
  from lst_jax.data import provenance
  from lst_jax.data.manifest import DataError
  empty = random_dataset.make_dataset(str(tmp_path / "empty"), num_speech=0, num_text=0, heldout=2)
  with pytest.raises(DataError, match=r"split 'train' of .*empty has no data in a stream with positive mixture"):
    next(iter(pipeline.train_dataset(empty, DataConfig(), 2)))
  features = {"n_mels": 40, "hop_ms": 40.0, "note": "x" * 200}
  a = {"tokenizer": {"sha256": "t", "vocab_size": 9},
       "units": {"source": "quantizer", "quantizer": "q", "num_units": 5, "features": features}}
  b = {**a, "units": {**a["units"], "features": {**features, "n_mels": 80}}}
  with pytest.raises(DataError, match=r"^A and B differ in units\.features\.n_mels: 40 vs 80;"):
    provenance.check_compatible(a, b, "A", "B")


@pytest.mark.slow
def test_a_checkpoint_whose_held_out_loss_is_not_finite_is_set_aside(config, tmp_path):
  """Parameters blown up to large finite values pass the step's guard but give a NaN held-out loss:
  the run stops with one error naming the last good checkpoint, and the diverged one is moved aside
  (kept, never restored), so a rerun or an export starts from a good one."""
  import shutil

  import orbax.checkpoint as ocp

  from lst_jax.train.checkpoint import Checkpointer
  config.train.steps = 2
  config.train.checkpoint_every = 1
  workdir = str(tmp_path / "run")
  train(config, workdir)
  vocab = pipeline.vocab_of(pipeline_manifest(config))
  exp = config_lib.parse(config, vocab.size)
  run = step_lib.setup(exp.model, exp.optim, vocab, sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
  ckpt = Checkpointer(f"{workdir}/checkpoints", 1, 3)
  state, _ = ckpt.restore(2, run.abstract, run.shardings)
  ckpt.close()
  blown = step_lib.TrainState(step=state.step + 1, params=jax.tree.map(lambda x: x * 1e30, state.params),
                              opt_state=state.opt_state)
  shutil.copytree(f"{workdir}/checkpoints/2", f"{workdir}/checkpoints/3")   # its data position and config
  shutil.rmtree(f"{workdir}/checkpoints/3/state")
  saver = ocp.StandardCheckpointer()
  saver.save(f"{workdir}/checkpoints/3/state", blown)
  saver.wait_until_finished()
  config.train.steps = 3
  with pytest.raises(TrainingError, match=r"held-out loss at step 3 is nan: the model diverged \(its checkpoint "
                                          r"moved aside to checkpoints/3.diverged\). Last good checkpoint: step 2"):
    train(config, workdir)
  assert os.path.isdir(f"{workdir}/checkpoints/3.diverged")
  assert Checkpointer(f"{workdir}/checkpoints", 1, 3).latest_step() == 2


def test_ids_past_the_manifests_sizes_stop_training_and_fail_verify(config, tmp_path, capsys):
  """A manifest whose units.num_units was lowered after the build (the shards hold ids up to 39):
  training stops at the first such record, naming it, instead of a NaN loss; verify says which."""
  import json
  import shutil

  from data_prep.maintenance import verify
  from lst_jax.data.shards import ShardError
  data = str(tmp_path / "data")
  shutil.copytree(config.data.dir, data)
  with open(f"{data}/manifest.json") as f:
    manifest = json.load(f)
  manifest["units"]["num_units"] = 8
  with open(f"{data}/manifest.json", "w") as f:
    json.dump(manifest, f)
  config.data.dir = data
  config.train.steps = 2
  with pytest.raises(ShardError, match=r"\.array_record: record \d+: record '.*': unit id outside the codebook's "
                                       r"\[0, 8\), but the manifest says units.num_units=8.*disagree"):
    train(config, str(tmp_path / "run"))
  assert verify.main([data]) == 1
  out = capsys.readouterr().out
  assert "unit id outside the codebook's [0, 8) (the manifest's units.num_units=8" in out and "all good" not in out


def test_rows_too_short_for_any_word_stop_the_run(config, tmp_path):
  """max_tokens=2: rows hold only markers, so the loss would read as learned; the run says why it stops."""
  config.data.update(max_tokens=2, max_patches=2)
  config.train.update(steps=2, log_every=1)
  with pytest.raises(TrainingError, match=r"step 1 had no text or speech token to predict .*max_tokens=2"):
    train(config, str(tmp_path / "run"))


@pytest.mark.slow
def test_a_sigterm_at_an_evaluation_step_evaluates_on_resume(config, tmp_path):
  """SIGTERM lands during step 3 (sent by a benchmark callback), so the run stops after step 4's
  checkpoint, before step 4's held-out evaluation; the resumed run evaluates step 4 first."""
  config.train.update(steps=6, eval_every=4, benchmark_every=3, checkpoint_every=2, log_every=2)

  def sigterm_at_3(params, setup, exp, manifest, mesh, workdir):
    os.kill(os.getpid(), signal.SIGTERM)
    return {}, ""
  full = str(tmp_path / "full")
  train(config, full, benchmarks=lambda *a: ({}, ""))
  workdir = str(tmp_path / "run")
  assert train(config, workdir, benchmarks=sigterm_at_3).preempted
  assert not [r for r in read_records(workdir) if r.get("step") == 4 and "heldout_interleaved_loss" in r]
  train(config, workdir, benchmarks=lambda *a: ({}, ""))
  held = lambda w: [(r["step"], round(r["heldout_interleaved_loss"], 5)) for r in read_records(w)
                    if "heldout_interleaved_loss" in r and not r.get("final")]
  assert held(workdir) == held(full) and [s for s, _ in held(full)] == [0, 4]


def test_ctrl_c_saves_a_checkpoint_like_sigterm(config, tmp_path, capsys):
  config.train.update(steps=6, benchmark_every=2, checkpoint_every=6, eval_every=0)

  def ctrl_c(params, setup, exp, manifest, mesh, workdir):
    os.kill(os.getpid(), signal.SIGINT)
    return {}, ""
  workdir = str(tmp_path / "run")
  before = signal.getsignal(signal.SIGINT)   # Python's default_int_handler; SIG_IGN under nohup or `cmd &`
  result = train(config, workdir, benchmarks=ctrl_c)
  out = capsys.readouterr().out
  assert result.preempted and result.step == 3 and "interrupted (Ctrl-C): saving a checkpoint" in out
  assert "3" in os.listdir(f"{workdir}/checkpoints")
  assert signal.getsignal(signal.SIGINT) is before   # restored after the run


def test_a_workdir_that_is_a_file_or_a_truncated_provenance_is_one_line(config, tmp_path, two_step_run):
  from lst_jax.data.manifest import DataError
  (tmp_path / "afile").write_text("x")
  with pytest.raises(WorkdirError, match="is a file, not a folder"):
    train(config, str(tmp_path / "afile"))
  with pytest.raises(WorkdirError, match=r"holds a dataset \(manifest.json\), not a run"):
    train(config, config.data.dir)
  config, workdir = two_step_run
  path = f"{workdir}/data_provenance.json"
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text[:len(text) // 2])
  config.train.steps = 4
  with pytest.raises(DataError, match=r"data_provenance.json: unreadable \(.*cut short\?\)"):
    train(config, workdir)


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_stops_the_run(config, tmp_path):
  """A full disk, simulated by a file-size limit (EFBIG) that the checkpoint's data files exceed: the run
  stops at its next checkpoint call with one error line and exit 5, instead of training on without
  checkpoints; nothing half-written is left as a checkpoint."""
  import resource

  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
  config.train.update(steps=8, checkpoint_every=2, log_every=1)
  workdir = str(tmp_path / "run")
  r = subprocess.run([sys.executable, "-m", "lst_jax.main", f"--config={_config_file(tmp_path, config)}",
                      f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=600,
                     preexec_fn=limit, env=dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type="))
  assert r.returncode == 5, r.stdout[-2000:] + r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: a checkpoint could not be written in {workdir}/checkpoints (File too large): "
                         f"the run stopped"), last
  assert "step      8/8" not in r.stdout and "held-out loss after step" not in r.stdout
  assert not [d for d in os.listdir(f"{workdir}/checkpoints") if d.isdigit()]
