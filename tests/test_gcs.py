"""Runs that live on Cloud Storage, against a local emulator (fake-gcs-server on 127.0.0.1):
the path layer, the run lock, and a tiny training on gs:// killed, resumed, evaluated, exported."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import pytest

from lst_jax import storage
from lst_jax.train import run_lock
from lst_jax.train.workdir import RunLock, WorkdirError
from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = {"time", "tokens_per_s", "patches_per_s", "step_time_s", "flops_per_s", "mfu"}


def _fresh(gcs, name: str) -> str:
  """A folder of the test bucket no other test uses."""
  return f"{gcs.url}/{name}-{os.getpid()}-{time.time_ns()}"


def test_paths_round_trip_and_urls_stay_urls(gcs, tmp_path):
  root = _fresh(gcs, "paths")
  assert storage.absolute(root) == root and storage.parent(root + "/a/b.json") == root + "/a"
  storage.write_text(storage.join(root, "a", "b.json"), '{"x": 1}')
  storage.write_bytes(storage.join(root, "a", "c.bin"), b"\0" * 5)
  assert json.loads(storage.read_text(root + "/a/b.json")) == {"x": 1}
  assert storage.isdir(root + "/a") and storage.isfile(root + "/a/b.json") and not storage.exists(root + "/nope")
  assert storage.glob(root + "/a/*.json") == [root + "/a/b.json"]
  assert storage.listdir(root + "/a") == ["b.json", "c.bin"]
  assert storage.file_sizes([root + "/a/c.bin", root + "/a/gone"], root) == {root + "/a/c.bin": 5}
  storage.rename(root + "/a", root + "/moved/a")  # a folder: copy, then delete
  assert not storage.exists(root + "/a/b.json") and storage.read_bytes(root + "/moved/a/c.bin") == b"\0" * 5
  local = tmp_path / "out"
  local.mkdir()
  (local / "f.txt").write_text("hi")
  storage.publish_dir(str(local), root + "/published")
  assert storage.read_text(root + "/published/f.txt") == "hi" and not local.exists()
  with pytest.raises(storage.StorageError, match="only local paths and gs:// URLs"):
    storage.absolute("s3://bucket/run")
  with pytest.raises(storage.StorageError, match="bucket gs://no-such-bucket does not exist"):
    storage.check_reachable("gs://no-such-bucket/run", "--workdir")
  with pytest.raises(storage.StorageError, match="cannot be appended"):
    storage.open_file(root + "/log.txt", "a")


def test_lock_refuses_a_second_run_naming_the_holder_and_is_released(gcs):
  workdir = _fresh(gcs, "lock")
  first = RunLock(workdir)
  first.acquire()
  holder = json.loads(storage.read_text(workdir + "/run.lock"))
  assert holder["pid"] == os.getpid() and holder["heartbeat"]
  with pytest.raises(WorkdirError, match=rf"in use by another training run \(.*\"pid\": {os.getpid()}.*last heartbeat"):
    RunLock(workdir).acquire()
  first.release()
  assert not storage.exists(workdir + "/run.lock")
  second = RunLock(workdir)
  second.acquire()
  second.release()


def test_heartbeats_keep_the_lock_and_a_stale_one_is_taken_over(gcs):
  workdir = _fresh(gcs, "stale")
  holder = RunLock(workdir, stale_s=1.5, heartbeat_s=0.2)
  holder.acquire()
  time.sleep(2.0)  # longer than stale_s: only the heartbeats keep it
  with pytest.raises(WorkdirError, match="in use"):
    RunLock(workdir, stale_s=1.5).acquire()
  holder._impl._stop.set()  # the holder hangs: no more heartbeats
  holder._impl._thread.join()
  time.sleep(2.0)
  taker = RunLock(workdir, stale_s=1.5)
  taker.acquire()
  assert "took over the run lock" in taker.note and "no heartbeat for" in taker.note
  holder._impl._stop.clear()
  holder._impl._heartbeat_once()  # the old holder wakes up: its next beat finds the lock taken
  with pytest.raises(WorkdirError, match="another run took the lock over"):
    holder.check()
  holder.release()  # does not delete the taker's lock
  assert json.loads(storage.read_text(workdir + "/run.lock"))["started"] == taker._impl.started
  taker.release()


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over_at_once(gcs):
  workdir = _fresh(gcs, "dead")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  storage.write_text(workdir + "/run.lock", json.dumps({"host": run_lock.socket.gethostname(), "pid": dead.pid,
                                                        "started": "2026-01-01T00:00:00+00:00"}))
  lock = RunLock(workdir)  # the default stale time: minutes away
  lock.acquire()
  assert f"its process {dead.pid} is not running on this host" in lock.note
  lock.release()


# ---------------------------------------------------------------------------- a run on gs://

def _config_file(tmp_path, config) -> str:
  path = tmp_path / "exp.py"
  path.write_text("import ml_collections\n\ndef get_config():\n"
                  f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")
  return str(path)


def _env(gcs) -> dict:
  return dict(os.environ, **gcs.env, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=")


def _start(gcs, config_file: str, workdir: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "lst_jax.main", f"--config={config_file}",
                           f"--workdir={workdir}"], cwd=REPO, env=_env(gcs), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _records(workdir: str) -> list[dict]:
  from lst_jax.train.metrics import read_records
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_records(workdir)]


@pytest.mark.slow
def test_a_run_on_gcs_killed_and_resumed_equals_a_local_run(gcs, dataset, tmp_path):
  from lst_jax.eval.evaluate import evaluate_checkpoint
  from lst_jax.train.restore import restore
  from lst_jax.export import export

  data = _fresh(gcs, "data")
  storage.upload_tree(dataset.dir, data)  # the dataset as data_prep.build --output=gs://... leaves it
  config = tiny_config(data)
  config.train.update(steps=12, log_every=1, checkpoint_every=4)
  local_config = tiny_config(dataset.dir)
  local_config.train.update(steps=12, log_every=1, checkpoint_every=4)
  local = str(tmp_path / "local")
  assert _start(gcs, _config_file(tmp_path, local_config), local).wait(timeout=600) == 0

  (tmp_path / "gcs").mkdir()
  cfg = _config_file(tmp_path / "gcs", config)
  workdir = _fresh(gcs, "run")
  proc = _start(gcs, cfg, workdir)
  deadline = time.time() + 300
  while not storage.exists(workdir + "/checkpoints/4/_CHECKPOINT_METADATA") and time.time() < deadline:
    assert proc.poll() is None, proc.stdout.read()
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert not any(r.get("final") for r in _records(workdir)), "killed before its end"
  assert storage.exists(workdir + "/run.lock")  # left behind by the killed run

  other = _start(gcs, cfg, workdir)  # the same command again: resumes (the lock's holder is dead)
  out, _ = other.communicate(timeout=600)
  assert other.returncode == 0, out
  assert "took over the run lock" in out and f"resumed from {workdir}/checkpoints" in out, out
  assert not storage.exists(workdir + "/run.lock")
  assert _records(workdir) == _records(local)  # every logged loss and statistic, bit for bit
  assert storage.glob(workdir + "/events.out.tfevents.*")

  restored_gcs = restore(config, workdir)
  restored_local = restore(local_config, local)
  assert restored_gcs[-1] == restored_local[-1] == 12
  chex.assert_trees_all_equal(restored_gcs[5], restored_local[5])

  result = evaluate_checkpoint(config, workdir, log=lambda *_: None)
  assert storage.isfile(f"{workdir}/eval/12.json") and storage.isfile(f"{workdir}/eval/12.scores.jsonl")
  assert json.loads(storage.read_text(f"{workdir}/eval/12.json"))["heldout_unimodal"] == result["heldout_unimodal"]
  export(config, workdir, str(tmp_path / "export"), log=lambda *_: None)
  exported = json.loads((tmp_path / "export" / "config.json").read_text())
  assert exported["training"]["workdir"] == workdir and exported["training"]["step"] == 12
  export(config, workdir, f"{workdir}-export", log=lambda *_: None)  # and an export onto gs:// itself
  assert storage.listdir(f"{workdir}-export") == sorted(os.listdir(tmp_path / "export"))
  assert storage.read_bytes(f"{workdir}-export/units.json") == (tmp_path / "export" / "units.json").read_bytes()
  from safetensors.numpy import load, load_file
  chex.assert_trees_all_equal(load(storage.read_bytes(f"{workdir}-export/model.safetensors")),
                              load_file(str(tmp_path / "export" / "model.safetensors")))
  assert result["step"] == 12 and result["heldout_unimodal"]


@pytest.mark.slow
def test_generate_reads_a_gcs_run_and_writes_its_samples_there(gcs, tmp_path):
  from data_prep.corpus import random_dataset
  from test_generate_cli import _save_initial_checkpoint
  from lst_jax.data import datasets
  local = random_dataset.make_dataset(str(tmp_path / "data"), num_speech=24, num_text=24, num_units=40,
                                      text_vocab=60, heldout=6, seed=1, listenable=True)
  data = _fresh(gcs, "listenable")
  storage.upload_tree(local.dir, data)
  config = tiny_config(data, kind="baseline")
  workdir = _fresh(gcs, "generate")
  _save_initial_checkpoint(config, datasets.open_datasets(data), workdir, step=2)
  r = subprocess.run([sys.executable, "-m", "lst_jax.generate", f"--config={_config_file(tmp_path, config)}",
                      f"--workdir={workdir}", "--num=1", "--seconds=1", "--text_tokens=5", "--seed=3"],
                     cwd=REPO, env=_env(gcs), capture_output=True, text=True, timeout=400)
  assert r.returncode == 0, r.stderr[-2000:]
  samples = [json.loads(line) for line in storage.read_text(f"{workdir}/samples/samples.jsonl").splitlines()]
  assert sorted(s["task"] for s in samples) == ["s2s", "s2t", "t2s", "t2t"]
  assert "<audio" in storage.read_text(f"{workdir}/samples/index.html")
  for s in samples:
    for key in ("prompt_wav", "generated_wav", "prompt_units", "generated_units"):
      if s.get(key):
        assert storage.isfile(f"{workdir}/samples/{s[key]}"), (key, s)


@pytest.mark.slow
def test_a_second_training_on_a_gcs_workdir_is_refused_naming_the_holder(gcs, dataset, tmp_path):
  workdir = _fresh(gcs, "busy")
  holder = RunLock(workdir)
  holder.acquire()
  try:
    config_file = _config_file(tmp_path, tiny_config(dataset.dir))
    proc = subprocess.run([sys.executable, "-m", "lst_jax.main", f"--config={config_file}", f"--workdir={workdir}"],
                          cwd=REPO, env=_env(gcs), capture_output=True, text=True, timeout=300)
  finally:
    holder.release()
  assert proc.returncode == 2, proc.stderr
  assert f"error: {workdir} is in use by another training run" in proc.stderr and f'"pid": {os.getpid()}' in proc.stderr
  assert "Traceback" not in proc.stderr


def test_data_prep_build_writes_a_dataset_to_gcs_and_adds_to_it(gcs, tmp_path, capsys):
  from data_prep.build import cli
  from data_prep.maintenance import stats
  from lst_jax.data.manifest import load_manifest
  from lst_jax.data.shards import Shards
  from test_data_prep_build import SILENCE_FIRST, SPEECH_FIRST, TEXT_FIRST, write
  out = _fresh(gcs, "built")
  train = write(tmp_path / "train.jsonl", [TEXT_FIRST, SPEECH_FIRST])
  held = write(tmp_path / "held.jsonl", [SILENCE_FIRST])
  # Two shards in two worker processes of the local runner: each writes its shard locally and uploads it.
  assert cli.main(["--format=lst_jsonl", f"--input={train}", f"--output={out}", "--vocab_size=60",
                     "--workers=2", "--shard_size=1"]) == 0, capsys.readouterr().err
  assert "converting 2 entries into 2 shard(s) in 2 process(es)" in capsys.readouterr().out
  # A second build adds to it without downloading it: only the tokenizer comes down; shards go straight up.
  assert cli.main(["--format=lst_jsonl", f"--input={held}", f"--output={out}", "--split=heldout",
                     "--workers=0"]) == 0, capsys.readouterr().err
  log = capsys.readouterr().out
  assert "tokenizer: reusing" in log and "download" not in log
  m = load_manifest(out)
  assert m.name == out.rsplit("/", 1)[-1] and m.tokenizer_path == f"{out}/tokenizer.model"
  assert (m.split("train").num_speech, m.split("heldout").num_speech) == (2, 1)
  assert len(m.split("train").speech) == 2 and all(p.startswith(out + "/") for p in m.split("train").speech)
  ids = [r.id for r in stats.read_records(m.split("train").speech)]  # array_record reads gs:// itself
  assert sorted(ids) == ["speech_first", "text_first"]
  assert len(Shards(m.split("heldout").speech, m.shard_records)) == 1
  assert not storage.glob(f"{out}/*.tmp*")


def test_nothing_in_the_tree_turns_a_url_into_a_local_path():
  """os.path's abspath/normpath/realpath make gs://b/x into <cwd>/gs:/b/x without an error: only
  lst_jax/storage.py may call them (its `absolute` and `normal` leave URLs alone), and on __file__."""
  import re
  offenders = []
  for top in ("lst_jax", "data_prep"):
    for root, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        path = os.path.join(root, name)
        if not name.endswith(".py") or path.endswith(os.path.join("lst_jax", "storage.py")):
          continue
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
          if re.search(r"os\.path\.(abspath|normpath|realpath)\((?!__file__\))|\.resolve\(\)", line):
            offenders.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
  assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("module,workdir,message", [
    ("lst_jax.main", "gs://no-such-bucket/run",
     "error: --workdir gs://no-such-bucket/run: bucket gs://no-such-bucket does not exist"),
    ("lst_jax.eval.main", "s3://bucket/run", "error: s3://bucket/run: only local paths and gs:// URLs are supported"),
])
def test_commands_refuse_a_workdir_they_cannot_open_in_one_line(gcs, dataset, tmp_path, module, workdir, message):
  r = subprocess.run([sys.executable, "-m", module, f"--config={_config_file(tmp_path, tiny_config(dataset.dir))}",
                      f"--workdir={workdir}"], cwd=REPO, env=_env(gcs), capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
