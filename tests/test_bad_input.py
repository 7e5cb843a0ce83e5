"""Bad input to data_prep.build and benchmark files, damaged shards, and dead build workers (issue 11).

Every refusal names the file and line (or record), exits 2 without a traceback, and
--on_error=skip drops exactly the bad records, lists them with their ids, and keeps
every good record.
"""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from data_prep.maintenance import merge, stats, verify
from data_prep.formats import lst_jsonl
from lst_jax.data.manifest import DataError, load_manifest
from lst_jax.eval import benchmark_files
from test_data_prep_build import official, run, write  # tests/ is on sys.path (pytest's rootdir)

SEP = lst_jsonl.SEP
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ids(out_dir, split="train", kind="speech"):
  paths = getattr(load_manifest(str(out_dir)).split(split), kind)
  return [r.id for r in stats.read_records(paths)]


def utterances(n, prefix="u", offset=0):
  return [official(f"TEXT w{i + offset}", f"HUBERT {i % 7} {(i + offset) % 11}", "TEXT [SIL]", "HUBERT 3",
                   file_id=f"{prefix}{i}") for i in range(n)]


def manifest_line(id_, units):
  return json.dumps({"id": id_, "transcript": "a b", "words": [
      {"word": "a", "start": 0.0, "end": 0.04}, {"word": "b", "start": 0.04, "end": 0.08}],
      "units": units, "unit_rate": 25.0})


GOOD = {"lst_jsonl": [official("TEXT good", "HUBERT 1 2", file_id="g1"),
                      official("TEXT fine", "HUBERT 3", file_id="g2")],
        "manifest": [manifest_line("g1", [1, 2]), manifest_line("g2", [3, 4])]}
UTF16 = official("TEXT a", "HUBERT 1", file_id="b").encode("utf-16-le")

# name: (format, the bad line, message, the bad record's id in the skip report)
LINE_CASES = {
    "unit_with_underscore": ("lst_jsonl", official("TEXT a", "HUBERT 1_2", file_id="b"),
                             "segment 2: '1_2' is not a unit id (a plain decimal integer)", "b"),
    "unit_of_20_digits": ("lst_jsonl", official("TEXT a", "HUBERT 1 12345678901234567890", file_id="b"),
                          "segment 2: unit id 12345678901234567890 is outside the codebook's [0, 501)", "b"),
    "unit_of_5000_digits": ("lst_jsonl", official("TEXT a", "HUBERT " + "9" * 5000, file_id="b"),
                           "is outside the codebook's [0, 501)", "b"),
    "unit_zero_padded_too_big": ("lst_jsonl", official("TEXT a", "HUBERT 000000501", file_id="b"),
                                 "unit id 000000501 is outside the codebook's [0, 501)", "b"),
    "unit_arabic_digit": ("lst_jsonl", official("TEXT a", "HUBERT \u0661", file_id="b"),
                          "'\u0661' is not a unit id", "b"),
    "unit_negative": ("lst_jsonl", official("TEXT a", "HUBERT -3", file_id="b"), "'-3' is not a unit id", "b"),
    "unit_plus_sign": ("lst_jsonl", official("TEXT a", "HUBERT +3", file_id="b"), "'+3' is not a unit id", "b"),
    "unit_float": ("lst_jsonl", official("TEXT a", "HUBERT 3.0", file_id="b"), "'3.0' is not a unit id", "b"),
    "missing_interleaved": ("lst_jsonl", json.dumps({"file_id": "b"}), "missing field 'interleaved'", "b"),
    "missing_file_id": ("lst_jsonl", json.dumps({"interleaved": SEP + "TEXT a" + SEP + "HUBERT 1"}),
                        "missing field 'file_id'", None),
    "null_interleaved": ("lst_jsonl", json.dumps({"file_id": "b", "interleaved": None}),
                         "\"interleaved\" must be a string, got NoneType", "b"),
    "utf16_line": ("lst_jsonl", UTF16, "UTF-16 text (NUL bytes between characters), not UTF-8", None),
    "nul_byte": ("lst_jsonl", official("TEXT ab", "HUBERT 1", file_id="b").encode().replace(b"ab", b"a\0b"),
                 "binary data (NUL byte at column", None),
    "duplicate_id": ("lst_jsonl", official("TEXT again", "HUBERT 5", file_id="g1"),
                     "duplicate record id 'g1' (first at {file}:1)", "g1"),
    "manifest_unit_of_20_digits": ("manifest", manifest_line("b", [1, 12345678901234567890]),
                                   "unit id 12345678901234567890 is outside the codebook's [0, 500)", "b"),
    "manifest_unit_of_5000_digits": ("manifest", manifest_line("b", [1, 2]).replace("2]", "9" * 5000 + "]"),
                                     "unusable JSON: Exceeds the limit (4300 digits)", None),
    "manifest_unit_as_string": ("manifest", manifest_line("b", [1, "1_2"]), "\"units\": '1_2' is not a unit id",
                                "b"),
    "manifest_unit_float": ("manifest", manifest_line("b", [1, 2.0]), "\"units\": 2.0 is not a unit id", "b"),
    "manifest_unit_bool": ("manifest", manifest_line("b", [True, 2]), "\"units\": True is not a unit id", "b"),
    "manifest_duplicate_id": ("manifest", manifest_line("g1", [5, 6]), "duplicate record id 'g1' (first at {file}:1)",
                              "g1"),
    "manifest_utf16_line": ("manifest", manifest_line("b", [1]).encode("utf-16-le"), "UTF-16 text", None),
}


@pytest.mark.parametrize("mode", ["fail", "skip"])
@pytest.mark.parametrize("case", sorted(LINE_CASES))
def test_bad_line(case, mode, tmp_path, capsys):
  fmt, bad, message, record = LINE_CASES[case]
  good = GOOD[fmt]
  src = write(tmp_path / "in.jsonl", [good[0], bad, good[1]])
  message = message.format(file=src)
  out = tmp_path / "ds"
  rc, log, err = run(capsys, f"--format={fmt}", f"--input={src}", f"--output={out}", f"--on_error={mode}",
                     "--vocab_size=40")
  if mode == "fail":
    assert rc == 2, log
    assert err.startswith(f"error: {src}:2: ") and message in err and "Traceback" not in err, err
    assert not os.path.exists(out / "manifest.json")
    return
  assert rc == 0, err
  assert "1 skipped" in log
  assert sorted(ids(out)) == ["g1", "g2"]  # nothing else lost
  report = [json.loads(l) for l in open(out / "train.errors.jsonl")]
  assert len(report) == 1, report
  assert (report[0]["file"], report[0]["line"], report[0]["record"]) == (src, 2, record)
  assert message in report[0]["error"]


TEXT_CASES = {  # name: (bad file's bytes, message)
    "text_utf16_bom": ("one doc\n\nanother\n".encode("utf-16"), "UTF-16 text (byte-order mark 0xff 0xfe"),
    "text_utf16_no_bom": ("one doc here\n".encode("utf-16-le"), "UTF-16 text (NUL bytes between characters)"),
    "text_binary": (b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0", "binary data (NUL byte at column 8)"),
    "text_latin1": ("caf\xe9\n".encode("latin-1"), "not valid UTF-8 (byte 0xe9 at column 4)"),
}


@pytest.mark.parametrize("mode", ["fail", "skip"])
@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_bad_text_file(case, mode, tmp_path, capsys):
  data, message = TEXT_CASES[case]
  folder = tmp_path / "docs"
  write(folder / "a.txt", ["good doc", "", "fine one here"])
  (folder / "b.txt").write_bytes(data)
  bad = str(folder / "b.txt")
  out = tmp_path / "ds"
  rc, log, err = run(capsys, "--format=text", f"--input={folder}", f"--output={out}", f"--on_error={mode}",
                     "--vocab_size=30")
  if mode == "fail":
    assert rc == 2 and err.startswith(f"error: {bad}:1: ") and message in err, err
    return
  assert rc == 0, err
  assert ids(out, kind="text") == [f"{folder / 'a.txt'}:1", f"{folder / 'a.txt'}:3"]
  report = [json.loads(l) for l in open(out / "train.errors.jsonl")]
  assert report and all(r["file"] == bad and message.split(" (")[0] in r["error"] for r in report)
  assert report[0]["record"] == f"{bad}:1"


# -- the dataset as a whole: inputs added twice, ids across builds, split overlap -----------------

def _build(capsys, src, out, *extra):
  return run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--vocab_size=40", *extra)


def test_same_input_added_twice_is_refused(tmp_path, capsys):
  src = write(tmp_path / "a.jsonl", utterances(5))
  copy = write(tmp_path / "copy" / "a.jsonl", utterances(5))
  out = tmp_path / "ds"
  assert _build(capsys, src, out)[0] == 0
  before = json.load(open(out / "manifest.json"))
  for mode in ("fail", "skip"):
    rc, _, err = _build(capsys, copy, out, f"--on_error={mode}")
    assert rc == 2 and err.startswith(f"error: {copy}: already in the dataset: all its 5 records are in "
                                      f"split 'train', added from {src}"), err
  assert json.load(open(out / "manifest.json")) == before
  rc, log, err = _build(capsys, src, out)  # the same path again is a rebuild, not an addition
  assert rc == 0 and "(1 reused)" in log and len(ids(out)) == 5, err


def test_same_text_added_twice_is_refused(tmp_path, capsys):
  docs = ["first document here", "", "second one", "", "and a third"]
  a, b = write(tmp_path / "a.txt", docs), write(tmp_path / "b" / "a.txt", docs)
  out = tmp_path / "ds"
  assert run(capsys, "--format=text", f"--input={a}", f"--output={out}", "--vocab_size=30")[0] == 0
  rc, _, err = run(capsys, "--format=text", f"--input={b}", f"--output={out}")
  assert rc == 2 and err.startswith(f"error: {b}: already in the dataset: all its 3 records"), err
  assert len(ids(out, kind="text")) == 3


def test_duplicate_id_across_builds(tmp_path, capsys):
  out = tmp_path / "ds"
  assert _build(capsys, write(tmp_path / "a.jsonl", utterances(3)), out)[0] == 0
  second = write(tmp_path / "b.jsonl", utterances(3, "v", 5)[:2] + [utterances(3, "u", 9)[1]])
  rc, _, err = _build(capsys, second, out)
  assert rc == 2 and err.startswith(f"error: {second}:3: duplicate record id 'u1': the dataset already has it"
                                    f" (split 'train', from {tmp_path / 'a.jsonl'})"), err
  rc, log, err = _build(capsys, second, out, "--on_error=skip")
  assert rc == 0 and "1 skipped" in log, err
  assert sorted(ids(out)) == ["u0", "u1", "u2", "v0", "v1"]
  report = [json.loads(l) for l in open(out / "train.errors.jsonl")]
  assert [(r["line"], r["record"]) for r in report] == [(3, "u1")]
  assert verify.verify(str(out), lambda _: None) == 0  # the rewritten shard's checksum is in the manifest


def test_train_heldout_overlap_refused_or_counted(tmp_path, capsys):
  out = tmp_path / "ds"
  train = write(tmp_path / "train.jsonl", utterances(4))
  assert _build(capsys, train, out)[0] == 0
  # The same file as held-out: refused by id.
  rc, _, err = _build(capsys, train, out, "--split=heldout")
  assert rc == 2 and err.startswith(f"error: {train}:1: record 'u0' is also in split 'train' (same id"), err
  assert "--allow_overlap" in err
  # Other ids, one utterance the same as a train one: refused by content.
  held = write(tmp_path / "held.jsonl", utterances(2, "h", 20) + [utterances(4)[2].replace('"u2"', '"h9"')])
  rc, _, err = _build(capsys, held, out, "--split=heldout")
  assert rc == 2 and err.startswith(f"error: {held}:3: record 'h9' is also in split 'train' (same content as "
                                    f"record 'u2'"), err
  rc, log, err = _build(capsys, held, out, "--split=heldout", "--on_error=skip")
  assert rc == 0 and ids(out, "heldout") == ["h0", "h1"] and "1 skipped" in log, err
  # --allow_overlap keeps it and counts it.
  rc, log, err = _build(capsys, held, out, "--split=heldout", "--allow_overlap")
  assert rc == 0, err
  m = json.load(open(out / "manifest.json"))
  assert ids(out, "heldout") == ["h0", "h1", "h9"] and m["splits"]["heldout"]["overlap"] == 1
  assert [b["overlap"] for b in m["builds"] if b["split"] == "heldout"] == [{"train": 1}]


# -- benchmark files -----------------------------------------------------------------------------

BENCH_ITEM = {"id": "a", "prompt": {"units": [1, 2]}, "candidates": [{"units": [3]}, {"units": [4]}], "label": 0}
BENCH_CASES = {
    "units_of_20_digits": (json.dumps({**BENCH_ITEM, "prompt": {"units": [1, 12345678901234567890]}}).encode(),
                           "prompt.units: id 12345678901234567890 is outside any vocabulary or codebook"),
    "text_ids_huge": (json.dumps({**BENCH_ITEM, "prompt": {"text_ids": [2**40]}}).encode(),
                      "prompt.text_ids: id 1099511627776 is outside"),
    "units_of_5000_digits": (json.dumps(BENCH_ITEM).replace("[3]", "[" + "9" * 5000 + "]").encode(),
                             "not valid JSON (Exceeds the limit (4300 digits)"),
    "utf16": (json.dumps(BENCH_ITEM).encode("utf-16"), "UTF-16 text (byte-order mark 0xff 0xfe at the start"),
    "nul": (json.dumps(BENCH_ITEM).encode() + b"\0", "binary data (NUL byte at column"),
    "latin1": (json.dumps({**BENCH_ITEM, "id": "caf\xe9"}, ensure_ascii=False).encode("latin-1"),
               "not valid UTF-8 (byte 0xe9"),
}


@pytest.mark.parametrize("case", sorted(BENCH_CASES))
def test_bad_benchmark_file(case, tmp_path):
  data, message = BENCH_CASES[case]
  path = tmp_path / "bench.jsonl"
  path.write_bytes(data + b"\n")
  with pytest.raises(benchmark_files.BenchmarkError) as e:
    benchmark_files.load_benchmark(str(path))
  assert str(e.value).startswith(f"{path}:1: ") and message in str(e.value), str(e.value)


# -- shard integrity -----------------------------------------------------------------------------

def _dataset(tmp_path, capsys, n=9, shard_size=3):
  out = tmp_path / "ds"
  src = write(tmp_path / "in.jsonl", utterances(n))
  assert _build(capsys, src, out, f"--shard_size={shard_size}")[0] == 0
  return out, src


def test_manifest_lists_every_shard_checksum_and_verify_finds_damage(tmp_path, capsys):
  out, _ = _dataset(tmp_path, capsys)
  m = json.load(open(out / "manifest.json"))
  assert sorted(m["shards"]) == sorted(m["splits"]["train"]["speech"]) and len(m["shards"]) == 3
  for name, info in m["shards"].items():
    assert set(info) == {"records", "bytes", "sha256"} and info["records"] == 3
    assert info["bytes"] == os.path.getsize(out / name)
  assert verify.main([str(out)]) == 0
  assert "all good" in capsys.readouterr().out
  damaged = out / sorted(m["shards"])[1]
  data = bytearray(damaged.read_bytes())
  for k in range(200, 216):  # in the first chunk (the file is padded to 128 KiB)
    data[k] ^= 0xFF
  damaged.write_bytes(bytes(data))
  assert verify.main([str(out)]) == 1
  lines = capsys.readouterr().out.splitlines()
  bad = [l for l in lines if l.startswith(str(out / "train"))]
  assert len(bad) == 1 and bad[0].startswith(f"{damaged}: sha256 ") and "damaged" in bad[0], lines
  # stats names the damaged shard in one line (no traceback).
  p = subprocess.run([sys.executable, "-m", "data_prep.maintenance.stats", str(out)], capture_output=True, text=True,
                     cwd=REPO)
  assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
  assert p.stderr.startswith(f"error: {damaged}: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_verify_missing_truncated_and_usage(tmp_path, capsys):
  out, _ = _dataset(tmp_path, capsys)
  names = sorted(json.load(open(out / "manifest.json"))["shards"])
  os.remove(out / names[0])
  with open(out / names[2], "r+b") as f:
    f.truncate(20)
  assert verify.main([str(out)]) == 1
  text = capsys.readouterr().out
  assert f"{out / names[0]}: missing" in text and f"{out / names[2]}: 20 bytes, the manifest says" in text
  assert verify.main([str(tmp_path / "nothing")]) == 2
  assert "error: " in capsys.readouterr().err


def test_verify_names_the_record_that_does_not_decode(tmp_path, capsys):
  out, _ = _dataset(tmp_path, capsys, n=3)
  from data_prep import shards
  name = sorted(json.load(open(out / "manifest.json"))["shards"])[0]
  payloads = [b"not a record"] * 3
  shards.write_shard(str(out / name), payloads)
  m = json.load(open(out / "manifest.json"))
  m["shards"][name] = shards.shard_info(str(out / name))  # checksum fine, records bad
  json.dump(m, open(out / "manifest.json", "w"))
  assert verify.main([str(out)]) == 1
  assert f"{out / name}: record 0: does not decode" in capsys.readouterr().out


def test_merge_carries_shard_checksums(tmp_path, capsys):
  a, _ = _dataset(tmp_path / "a", capsys, n=4, shard_size=2)
  b = tmp_path / "b" / "ds"
  assert run(capsys, "--format=lst_jsonl", f"--input={write(tmp_path / 'b' / 'in.jsonl', utterances(3, 'v', 3))}",
             f"--output={b}", f"--tokenizer={a / 'tokenizer.model'}")[0] == 0
  assert merge.main([f"--inputs={a},{b}", f"--output={tmp_path / 'c'}"]) == 0
  m = json.load(open(tmp_path / "c" / "manifest.json"))
  assert len(m["shards"]) == 3 and sorted(m["shards"]) == sorted(m["splits"]["train"]["speech"])
  assert verify.main([str(tmp_path / "c")]) == 0


# -- a dead worker ends the build ----------------------------------------------------------------

@pytest.mark.slow
def test_dead_worker_ends_the_build_naming_its_shard_and_rerun_reuses_finished(tmp_path):
  src = write(tmp_path / "in.jsonl", utterances(12))
  out = tmp_path / "ds"
  argv = [sys.executable, "-m", "data_prep.build", "--format=lst_jsonl", f"--input={src}", f"--output={out}",
          "--vocab_size=40", "--shard_size=3", "--workers=2"]
  victim = "00002-of-00004"
  start = time.time()
  p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120,
                     env={**os.environ, "LST_DATA_PREP_FAULT": f"kill:{victim}"})
  assert p.returncode == 1 and time.time() - start < 60, p.stderr
  assert "Traceback" not in p.stderr and p.stderr.startswith("error: worker process "), p.stderr
  assert "while converting shard train/speech-" in p.stderr and victim in p.stderr, p.stderr
  assert not os.path.exists(out / "manifest.json")
  finished = [f for f in os.listdir(out / "train") if f.endswith(".array_record")]
  assert finished and not any(victim in f for f in finished)
  p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
  assert p.returncode == 0, p.stderr
  assert f"4 shard(s) ({len(finished)} reused)" in p.stdout, p.stdout
  assert sorted(ids(out)) == sorted(f"u{i}" for i in range(12))


@pytest.mark.parametrize("data,message", [
    ("hello there".encode("utf-16"), "UTF-16 text (byte-order mark 0xff 0xfe at the start of the file)"),
    (b"hello\0there", "binary data (NUL byte at column 6)")])
def test_audio_transcript_utf16_or_binary(data, message, tmp_path, capsys):
  folder = tmp_path / "audio"
  folder.mkdir()
  (folder / "x.wav").write_bytes(b"RIFF")  # never read: the transcript is refused first
  (folder / "x.txt").write_bytes(data)
  rc, _, err = run(capsys, "--format=audio", f"--input={folder}", f"--output={tmp_path / 'ds'}")
  assert rc == 2 and err.startswith(f"error: {folder / 'x.txt'}:1: {message}"), err


@pytest.mark.parametrize("check", [test_same_input_added_twice_is_refused, test_duplicate_id_across_builds,
                                   test_train_heldout_overlap_refused_or_counted])
def test_dataset_checks_give_the_same_answers_in_many_buckets(check, tmp_path, capsys, monkeypatch):
  """The checks group records by id, then by content, in hash buckets (one worker's memory each): with a
  bucket per record or two the same records are refused with the same messages."""
  from data_prep.build import dataset_checks
  monkeypatch.setattr(dataset_checks, "RECORDS_PER_BUCKET", 2)
  check(tmp_path, capsys)


def test_symbolic_links_are_followed_once(tmp_path, capsys):
  """A text folder holding a link to itself (a loop) and a second link to one of its files: each
  document is read once, not once per path."""
  folder = tmp_path / "docs"
  (folder / "sub").mkdir(parents=True)
  (folder / "a.txt").write_text("alpha beta gamma\n\ndelta epsilon\n")
  (folder / "sub" / "b.txt").write_text("zeta eta theta\n")
  os.symlink(folder, folder / "sub" / "loop")
  os.symlink(folder / "a.txt", folder / "again.txt")
  rc, log, err = run(capsys, "--format=text", f"--input={folder}", f"--output={tmp_path / 'ds'}", "--vocab_size=30")
  assert rc == 0, err
  assert f"{folder}: 3 entries" in log and "3 text records from 3 entries" in log, log


def test_an_utterance_over_an_hour_is_refused(tmp_path, capsys):
  units = " ".join(["1"] * (3600 * 25 + 25))
  src = write(tmp_path / "in.jsonl", [official("TEXT long", f"HUBERT {units}", file_id="long")])
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={tmp_path / 'ds'}", "--vocab_size=30")
  assert rc == 2 and err.startswith(f"error: {src}:1:") and "1.0 h of speech in one utterance; at most 1 h" in err, err


def test_an_output_inside_the_input_folder_is_refused(tmp_path, capsys):
  folder = tmp_path / "docs"
  folder.mkdir()
  (folder / "a.txt").write_text("alpha beta\n")
  rc, _, err = run(capsys, "--format=text", f"--input={folder}", f"--output={folder / 'ds'}")
  assert rc == 2 and err.startswith(f"error: --output={folder / 'ds'} is inside --input={folder}"), err
  assert not (folder / "ds").exists()


def small_dataset(tmp_path) -> str:
  """A dataset with a real tokenizer and codebook (files its manifest names, with their hashes)."""
  from data_prep.corpus import random_dataset
  return random_dataset.make_dataset(str(tmp_path / "data"), num_speech=4, num_text=4, num_units=40, text_vocab=60,
                                     heldout=2, seed=0, listenable=True).dir


@pytest.mark.parametrize("field,value,message", [
    ("tokenizer.path", "../../../etc/passwd", "tokenizer.path '../../../etc/passwd' leaves the dataset folder"),
    ("tokenizer.path", "/etc/passwd", "tokenizer.path '/etc/passwd' leaves the dataset folder"),
    ("units.codebook", "sub/../../x.npy", "units.codebook 'sub/../../x.npy' leaves the dataset folder"),
    ("tokenizer.sha256", "", "tokenizer.sha256 is '', not a sha256: the file's hash is required"),
    ("units.codebook_sha256", None, "units.codebook_sha256 is None, not a sha256")])
def test_a_manifest_names_only_files_inside_its_dataset_with_their_hashes(field, value, message, tmp_path):
  data = small_dataset(tmp_path)
  path = os.path.join(data, "manifest.json")
  with open(path) as f:
    raw = json.load(f)
  entry, key = field.split(".")
  raw[entry][key] = value
  with open(path, "w") as f:
    json.dump(raw, f)
  with pytest.raises(DataError, match=re.escape(message)):
    load_manifest(data)


def test_a_swapped_tokenizer_is_refused_where_text_is_read(tmp_path):
  data = small_dataset(tmp_path)
  manifest = load_manifest(data)
  assert manifest.load_tokenizer().get_piece_size() == manifest.text_vocab_size
  model = os.path.join(data, "tokenizer.model")
  with open(model, "r+b") as f:   # same size, other bytes (as another model of one size would be)
    f.seek(100)
    f.write(b"\x00" * 4)
  changed = "differs from the manifest's .*the tokenizer changed since the dataset was built"
  with pytest.raises(DataError, match=changed):
    load_manifest(data).load_tokenizer()


def test_a_full_disk_while_shards_are_written_is_one_line_and_leaves_no_partial_shard(tmp_path):
  """A file-size limit (EFBIG) stands in for a full disk: the shard's write fails, the build says so in
  one line (exit 2), and no temporary shard is left behind."""
  import resource
  import signal

  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))
  src = write(tmp_path / "in.jsonl", utterances(6000))
  tok = tmp_path / "tok.model"
  from data_prep import tokenizer_training
  tok.write_bytes(tokenizer_training.train([f"w{i} TEXT" for i in range(50)] * 10, vocab_size=40))
  out = tmp_path / "ds"
  p = subprocess.run([sys.executable, "-m", "data_prep.build", "--format=lst_jsonl", f"--input={src}",
                      f"--output={out}", f"--tokenizer={tok}", "--workers=0"], capture_output=True, text=True,
                     cwd=REPO, timeout=300, preexec_fn=limit)
  assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
  assert "could not be written" in p.stderr and "File too large" in p.stderr, p.stderr
  assert not [f for f in os.listdir(out / "train") if f.endswith(".tmp")] and not (out / "manifest.json").exists()


def test_a_paragraph_longer_than_sentencepieces_limit_still_trains_a_tokenizer(tmp_path, capsys):
  """SentencePiece skips sentences over 64 KB, and fails when that is all of them: the training text is
  cut at word boundaries instead (the records keep the whole paragraph)."""
  from data_prep import tokenizer_training
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abcdefghij"), 6)) for _ in range(12000)]   # one 84 KB paragraph
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "a.txt").write_text(" ".join(words) + "\n")
  rc, log, err = run(capsys, "--format=text", f"--input={tmp_path / 'docs'}", f"--output={tmp_path / 'ds'}",
                     "--vocab_size=40")
  assert rc == 0 and "1 text records from 1 entries, 12000 words" in log, err
  pieces = tokenizer_training.sentences(" ".join(words))
  assert len(pieces) == 2 and " ".join(pieces) == " ".join(words)
  assert all(len(p.encode()) <= tokenizer_training.MAX_SENTENCE_BYTES for p in pieces)
