"""Commands that write a folder never destroy what they did not write, and a poorer result never
silently replaces a fuller one (issue 25: the demo builder over a dataset, export --overwrite over a run,
an evaluation with no benchmarks over a full one)."""

import json
import os

import pytest

from data_prep.corpus import demo, random_dataset
from lst_jax import storage
from lst_jax.eval import evaluate
from lst_jax.eval.benchmark_files import BenchmarkError
from lst_jax.export import export
from test_data_prep_build import TEXT_FIRST, write
from test_data_prep_build import run as build_run
from test_export import _run as export_run


def snapshot(folder) -> dict:
  """Every file under `folder` with its bytes: what a refused command must leave as it was."""
  out = {}
  for d, _, names in os.walk(folder):
    for n in names:
      with open(os.path.join(d, n), "rb") as f:
        out[os.path.relpath(os.path.join(d, n), folder)] = f.read()
  return out


@pytest.mark.parametrize("what", ["built dataset", "stray file", "foreign shard", "a file"])
def test_the_demo_builder_refuses_a_folder_it_did_not_write(what, tmp_path, capsys):
  out = tmp_path / "mine"
  if what == "built dataset":   # make train EXP=demo DATA_DIR=<a data_prep.build dataset>
    assert build_run(capsys, "--format=lst_jsonl", f"--input={write(tmp_path / 'in.jsonl', [TEXT_FIRST])}",
                     f"--output={out}", "--vocab_size=60")[0] == 0
  elif what == "stray file":
    out.mkdir()
    (out / "notes.txt").write_text("mine")
  elif what == "foreign shard":   # an interrupted demo build's names are fine, another builder's not
    (out / "train").mkdir(parents=True)
    (out / "train" / "speech-00000-of-00002.array_record").write_bytes(b"x")
    (out / "train" / "speech-1a2b3c4d-00000-of-00001.array_record").write_bytes(b"y")
  else:
    out.write_text("a file")
  before = snapshot(out) if out.is_dir() else out.read_text()
  capsys.readouterr()
  assert demo.main([f"--output={out}", "--workers=0"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Give another --output" in err, err
  assert (snapshot(out) if out.is_dir() else out.read_text()) == before


def test_the_demo_builder_accepts_its_own_leftovers(tmp_path):
  (tmp_path / "d" / "train").mkdir(parents=True)
  (tmp_path / "d" / "train" / "text-00001-of-00002.array_record.tmp").write_bytes(b"x")
  (tmp_path / "d" / "tokenizer.model").write_bytes(b"x")
  assert demo.not_ours(str(tmp_path / "d")) is None and demo.not_ours(str(tmp_path / "absent")) is None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("destroy")
  data = random_dataset.make_dataset(str(root / "data"), num_speech=8, num_text=8, num_units=40, text_vocab=60,
                                     heldout=2, seed=1)
  return data, *export_run(data, root, "baseline")


def test_export_overwrite_replaces_an_export_never_a_run_or_a_dataset(run, tmp_path):
  data, config, workdir = run
  out = str(tmp_path / "export")
  export(config, workdir, out, log=lambda _: None)
  export(config, workdir, out, overwrite=True, log=lambda _: None)   # an earlier export: replaced
  assert os.path.isfile(os.path.join(out, "model.safetensors"))
  for victim in (workdir, data.dir):
    before = snapshot(victim)
    with pytest.raises(Exception, match="replaces an earlier export only"):
      export(config, workdir, victim, overwrite=True, log=lambda _: None)
    assert snapshot(victim) == before


def test_evaluation_with_no_benchmarks_is_refused_before_anything(run, tmp_path):
  _, config, workdir = run
  (tmp_path / "empty").mkdir()
  with pytest.raises(BenchmarkError, match="no benchmark files"):
    evaluate.evaluate_checkpoint(config, workdir, benchmarks=[str(tmp_path / "empty")], log=lambda _: None)
  assert not os.path.exists(os.path.join(workdir, "eval"))


def test_a_poorer_evaluation_never_replaces_a_fuller_one(run):
  _, config, workdir = run
  full = evaluate.evaluate_checkpoint(config, workdir, log=lambda _: None)   # held-out losses
  path = storage.join(workdir, "eval", f"{full['step']}.json")
  before = open(path).read()
  notes = []
  evaluate.evaluate_checkpoint(config, workdir, heldout=False, log=notes.append)
  assert open(path).read() == before
  assert any("holds a fuller evaluation" in n for n in notes), notes
  partial = json.loads(open(path[:-5] + ".partial.json").read())
  assert "heldout_unimodal" not in partial and "heldout_unimodal" in json.loads(before)
  evaluate.evaluate_checkpoint(config, workdir, log=lambda _: None)   # as full again: replaces it
  assert json.loads(open(path).read())["step"] == full["step"]


def test_an_unwritable_eval_folder_fails_before_the_evaluation(run, tmp_path):
  """(Tests run as root, which ignores permissions: a file where the folder should be stands in.)"""
  _, config, workdir = run
  blocker = os.path.join(workdir, "eval")
  aside = os.path.exists(blocker)
  if aside:
    os.rename(blocker, blocker + ".aside")
  open(blocker, "w").close()
  try:
    with pytest.raises(storage.StorageError, match="not writable"):
      evaluate.evaluate_checkpoint(config, workdir, log=lambda _: None)
  finally:
    os.remove(blocker)
    if aside:
      os.rename(blocker + ".aside", blocker)
