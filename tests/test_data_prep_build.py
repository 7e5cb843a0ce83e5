"""python -m data_prep.build / stats / merge on tiny real inputs: official LST JSONL lines,
aligned manifests, WAV/FLAC trees (espeak-ng speech, real pocketsphinx alignment), plain text.
No mocks: real SentencePiece, real k-means, real ArrayRecord."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from scipy import signal

from data_prep import tokenizer_training
from data_prep.build import cli
from data_prep.corpus import tts
from data_prep.formats import lst_jsonl
from data_prep.maintenance import merge, stats
from lst_jax.data import provenance, tokenizer
from lst_jax.data.manifest import DataError, load_manifest, sha256_file

SEP = lst_jsonl.SEP
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sentences the synthesizer speaks and pocketsphinx aligns (tests need a good utterance).
SENTENCES = ["Let there be light and there was light", "The LORD is my shepherd I shall not want",
             "He maketh me to lie down in green pastures", "Thy word is a lamp unto my feet"]


def run(capsys, *argv):
  """build.main in this process, --workers=0 unless given; returns (exit code, stdout, stderr)."""
  argv = list(argv)
  if not any(a.startswith("--workers") for a in argv):
    argv.append("--workers=0")
  rc = cli.main(argv)
  out, err = capsys.readouterr()
  return rc, out, err


def records(out_dir, split="train", kind="speech"):
  m = load_manifest(str(out_dir))
  paths = getattr(m.split(split), kind)
  return [r.validate(m.num_units, m.text_vocab_size) for r in stats.read_records(paths)]


def official(*segments, file_id="u"):
  return json.dumps({"file_id": file_id, "interleaved": "".join(SEP + s for s in segments)})


def write(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines)
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


@pytest.fixture(scope="module")
def speech():
  """(wave, sample_rate) of each sentence, spoken by espeak-ng."""
  out = []
  for i, s in enumerate(SENTENCES):
    sp = tts.synthesize(s.split(), tts.TRAIN_VOICES[i % 3])
    out.append((sp.wave, sp.sample_rate))
  return out


def write_audio(path, wave, rate, target_rate=None):
  """Writes WAV/FLAC (by suffix), resampled to `target_rate` if given (e.g. 44.1 kHz)."""
  if target_rate and target_rate != rate:
    g = np.gcd(target_rate, rate)
    wave = signal.resample_poly(wave, target_rate // g, rate // g).astype(np.float32)
    rate = target_rate
  os.makedirs(os.path.dirname(path), exist_ok=True)
  soundfile.write(str(path), np.clip(wave, -1, 1), rate)
  return str(path)


def wav_with_rate(path, rate):
  """A 16-bit WAV whose header claims `rate` Hz (0 Hz cannot be written by soundfile)."""
  data = (np.sin(np.arange(3200) / 5) * 8000).astype("<i2").tobytes()
  fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
  with open(path, "wb") as f:
    f.write(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


# -- official LST JSONL ---------------------------------------------------------------------------

TEXT_FIRST = official("TEXT hello", "HUBERT 1 2 3", "TEXT [SIL]", "HUBERT 4", "TEXT world", "HUBERT 5 6",
                      "HUBERT 7", "TEXT [SIL]", "HUBERT 8 9", file_id="text_first")
SPEECH_FIRST = official("HUBERT 10 11", "TEXT café", "HUBERT 12", "TEXT au", "HUBERT 13 14 15",
                        file_id="speech_first")
SILENCE_FIRST = official("TEXT [SIL]", "HUBERT 500 0", "TEXT lait", "HUBERT 499", file_id="silence_first")
# word, its units; silence units; per utterance, in order.
EXPECTED = {
    "text_first": (["hello", "world"], [[1, 2, 3], [5, 6, 7]], [4, 8, 9], list(range(1, 10))),
    "speech_first": (["café", "au"], [[12], [13, 14, 15]], [10, 11], list(range(10, 16))),
    "silence_first": (["lait"], [[499]], [500, 0], [500, 0, 499]),
}


def test_parse_keeps_first_segment_of_speech_and_text_first_utterances():
  # The reference tokenizer strips one character too many from the leading separator and
  # loses the first segment; here the first word (text first) and first units (speech first) stay.
  words, units, spans = lst_jsonl.parse_interleaved(json.loads(TEXT_FIRST)["interleaved"], 501)
  assert words == ("hello", "world") and units.tolist() == list(range(1, 10))
  assert spans.tolist() == [[0, 3], [4, 7]]
  words, units, spans = lst_jsonl.parse_interleaved(json.loads(SPEECH_FIRST)["interleaved"], 501)
  assert words == ("café", "au") and units.tolist() == [10, 11, 12, 13, 14, 15]
  assert spans.tolist() == [[2, 3], [3, 6]]
  # No leading separator at all: the first segment still counts.
  words, units, _ = lst_jsonl.parse_interleaved("TEXT a" + SEP + "HUBERT 3", 501)
  assert words == ("a",) and units.tolist() == [3]


def test_parse_round_trips_random_utterances():
  rng = np.random.default_rng(0)
  for _ in range(200):
    w = int(rng.integers(1, 15))
    spans, pos = [], int(rng.integers(0, 3))
    for _ in range(w):
      n = int(rng.integers(1, 9))
      spans.append((pos, pos + n))
      pos += n + int(rng.integers(0, 3))
    units = rng.integers(0, 501, pos + int(rng.integers(0, 3)))
    words = [f"w{i}" for i in rng.integers(0, 50, w)]
    text = lst_jsonl.format_interleaved(words, units, spans)
    got_words, got_units, got_spans = lst_jsonl.parse_interleaved(text, 501)
    assert list(got_words) == words
    np.testing.assert_array_equal(got_units, units)
    np.testing.assert_array_equal(got_spans, spans)


def test_official_jsonl_every_word_silence_and_unit_survives(tmp_path, capsys):
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST, SPEECH_FIRST, "", SILENCE_FIRST])
  out = tmp_path / "ds"
  rc, log, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--vocab_size=60")
  assert rc == 0, err
  assert "3 speech records from 3 entries" in log
  m = load_manifest(str(out))
  assert m.units == {"source": "user", "format": "lst_jsonl", "num_units": 501, "frame_rate": 25.0}
  assert m.raw["tokenizer"]["sha256"] == sha256_file(os.path.join(out, "tokenizer.model"))
  sp = tokenizer.load(os.path.join(out, "tokenizer.model"))
  got = {r.id: r for r in records(out)}
  assert set(got) == set(EXPECTED)
  for id_, (words, word_units, silence, all_units) in EXPECTED.items():
    r = got[id_]
    assert r.units.tolist() == all_units and r.unit_rate == 25.0
    assert [sp.decode(r.text_ids[a:b].tolist()) for a, b in zip(r.word_offsets, r.word_offsets[1:])] == words
    assert [r.units[s:e].tolist() for s, e in r.word_spans] == word_units
    inside = np.zeros(len(r.units), bool)
    for s, e in r.word_spans:
      inside[s:e] = True
    assert r.units[~inside].tolist() == silence


def test_user_sentencepiece_model_is_used(tmp_path, capsys):
  user = tmp_path / "mine.model"
  user.write_bytes(tokenizer_training.train(["hello world café au lait zebra"] * 20, vocab_size=40))
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST, SPEECH_FIRST])
  out = tmp_path / "ds"
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", f"--tokenizer={user}")
  assert rc == 0, err
  m = load_manifest(str(out))
  assert m.tokenizer_sha256 == sha256_file(str(user))
  sp = tokenizer.load(str(user))
  assert m.text_vocab_size == sp.get_piece_size()
  r = {r.id: r for r in records(out)}["text_first"]
  assert r.text_ids.tolist() == [i for w in tokenizer.encode_words(sp, ["hello", "world"]) for i in w]


# -- second builds, provenance, reruns ------------------------------------------------------------

def test_second_build_adds_a_split_and_text_documents(tmp_path, capsys):
  out = tmp_path / "ds"
  train = write(tmp_path / "train.jsonl", [TEXT_FIRST, SPEECH_FIRST])
  held = write(tmp_path / "held.jsonl", [SILENCE_FIRST])
  docs = write(tmp_path / "docs" / "a.txt", ["hello world", "wrapped line", "", "", "café au lait", "  ", "x"])
  assert run(capsys, "--format=lst_jsonl", f"--input={train}", f"--output={out}", "--vocab_size=60")[0] == 0
  sha = sha256_file(os.path.join(out, "tokenizer.model"))
  rc, log, err = run(capsys, "--format=lst_jsonl", f"--input={held}", f"--output={out}", "--split=heldout")
  assert rc == 0 and "reusing" in log, err
  rc, log, err = run(capsys, "--format=text", f"--input={tmp_path / 'docs'}", f"--output={out}")
  assert rc == 0, err
  assert sha256_file(os.path.join(out, "tokenizer.model")) == sha
  m = load_manifest(str(out))
  assert (m.split("train").num_speech, m.split("train").num_text, m.split("heldout").num_speech) == (2, 3, 1)
  docs = records(out, "train", "text")
  # One document per paragraph (blank-line separated), id FILE:LINE of its first line.
  assert [d.num_words for d in docs] == [4, 3, 1]
  assert docs[0].id.endswith("a.txt:1") and docs[1].id.endswith("a.txt:5") and docs[2].id.endswith("a.txt:7")
  assert [r.id for r in records(out, "heldout")] == ["silence_first"]
  assert len(m.raw["builds"]) == 3

  # A dataset whose manifest lists shards but no builds (made by data_prep.corpus.demo): adding keeps them.
  raw = json.load(open(out / "manifest.json"))
  del raw["builds"]
  json.dump(raw, open(out / "manifest.json", "w"))
  more = write(tmp_path / "more" / "b.txt", ["one more document"])
  assert run(capsys, "--format=text", f"--input={more}", f"--output={out}")[0] == 0
  m = load_manifest(str(out))
  assert (m.split("train").num_speech, m.split("train").num_text, m.split("heldout").num_speech) == (2, 4, 1)
  assert len(records(out, "train", "speech")) == 2 and len(records(out, "train", "text")) == 4


def test_different_tokenizer_or_units_are_refused_naming_the_field(tmp_path, capsys):
  out = tmp_path / "ds"
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST])
  assert run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--vocab_size=60")[0] == 0
  other = tmp_path / "other.model"
  other.write_bytes(tokenizer_training.train(["something else entirely"] * 20, vocab_size=30))
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", f"--tokenizer={other}",
                   "--split=heldout")
  assert rc == 2 and "tokenizer.sha256" in err and sha256_file(str(other)) in err
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--num_units=1000",
                   "--split=heldout")
  assert rc == 2 and "units.num_units: 501 vs 1000" in err
  assert "heldout" not in load_manifest(str(out)).splits  # nothing was added
  # The pure check: the first differing field, both values.
  a = {"tokenizer": {"sha256": "x", "vocab_size": 10}, "units": provenance.user_units("lst_jsonl", 501, 25.0)}
  b = {**a, "units": provenance.user_units("lst_jsonl", 501, 50.0)}
  with pytest.raises(DataError, match=r"A and B differ in units.frame_rate: 25.0 vs 50.0"):
    provenance.check_compatible(a, b, "A", "B")
  provenance.check_compatible(a, {**a, "units": provenance.no_units()}, "A", "text-only")  # text fits any units


def test_rerun_skips_finished_shards(tmp_path, capsys):
  lines = [official(f"TEXT w{i}", f"HUBERT {i} {i + 1}", "TEXT [SIL]", "HUBERT 3", file_id=f"u{i}")
           for i in range(7)]
  src = write(tmp_path / "in.jsonl", lines)
  out = tmp_path / "ds"
  argv = ["--format=lst_jsonl", f"--input={src}", f"--output={out}", "--shard_size=2", "--vocab_size=40"]
  rc, log, err = run(capsys, *argv, "--workers=2")
  assert rc == 0, err
  shard_paths = [os.path.join(out, s) for s in load_manifest(str(out)).raw["splits"]["train"]["speech"]]
  assert len(shard_paths) == 4
  mtimes = {p: os.stat(p).st_mtime_ns for p in shard_paths}
  manifest_before = json.load(open(os.path.join(out, "manifest.json")))
  rc, log, err = run(capsys, *argv, "--workers=2")
  assert rc == 0 and "4 shard(s) (4 reused)" in log, err
  assert {p: os.stat(p).st_mtime_ns for p in shard_paths} == mtimes
  assert json.load(open(os.path.join(out, "manifest.json"))) == manifest_before
  # Change one entry: only its shard is rewritten.
  lines[4] = official("TEXT changed", "HUBERT 9 9", file_id="u4")
  write(tmp_path / "in.jsonl", lines)
  rc, log, err = run(capsys, *argv)
  assert rc == 0 and "(3 reused)" in log, err
  changed = [p for p in shard_paths if os.stat(p).st_mtime_ns != mtimes[p]]
  assert changed == [shard_paths[2]]
  assert [r.id for r in records(out)] == [f"u{i}" for i in range(7)]


def test_workers_journal_each_shard_and_an_old_journal_is_split_and_reused(tmp_path, capsys):
  """Each shard's journal entry (ids, digests, input lines) is written by the worker that converted it
  (the result it hands back carries counts only). A journal of the earlier layout (one JSONL file per
  input) is split into entries by the next build, which reuses every shard it covers."""
  from data_prep.build import journal, shard_job
  lines = [official(f"TEXT w{i}", f"HUBERT {i} {i + 1}", file_id=f"u{i}") for i in range(5)]
  src = write(tmp_path / "in.jsonl", lines)
  out = tmp_path / "ds"
  argv = ["--format=lst_jsonl", f"--input={src}", f"--output={out}", "--shard_size=2", "--vocab_size=40"]
  assert run(capsys, *argv, "--workers=2")[0] == 0
  build = json.load(open(out / "manifest.json"))["builds"][0]
  entries = [journal.read_entry(journal.entry_path(str(out), s, build["kind"], build["tag"])) for s in build["shards"]]
  assert [e["ids"] for e in entries] == [["u0", "u1"], ["u2", "u3"], ["u4"]]
  assert [line for e in entries for _, line in shard_job.unpack_places(e["places"])] == [1, 2, 3, 4, 5]
  legacy = out / "train" / f".{build['kind']}-{build['tag']}.journal.jsonl"
  legacy.write_text("".join(json.dumps(e) + "\n" for e in entries))
  import shutil
  shutil.rmtree(journal.directory(str(out), "train", build["kind"], build["tag"]))
  rc, log, err = run(capsys, *argv)
  assert rc == 0 and "3 shard(s) (3 reused)" in log, err
  assert not legacy.exists() and len(os.listdir(journal.directory(str(out), "train", build["kind"], build["tag"]))) == 3


def test_tokenizer_trains_on_a_seeded_sample_of_shards(tmp_path, capsys, monkeypatch):
  from data_prep.build import shard_plan, vocab
  chunks = shard_plan.save([f"s{i}" for i in range(30)], 3, str(tmp_path / "chunks"))
  assert [c.entries for c in chunks] == [3] * 10 and shard_plan.load(chunks[1]) == ("s3", "s4", "s5")
  assert shard_plan.sample(chunks, 30, seed=0) == chunks
  picked = shard_plan.sample(chunks, 7, seed=0)
  assert len(picked) == 3 and picked == sorted(picked, key=lambda c: c.index)
  assert picked == shard_plan.sample(chunks, 7, seed=0)
  assert picked != shard_plan.sample(chunks, 7, seed=1)
  monkeypatch.setattr(vocab, "TOKENIZER_SAMPLE", 4)
  lines = [official(*[seg for w in SENTENCES[i % 4].split() for seg in (f"TEXT {w}", f"HUBERT {i} 1")],
                    file_id=f"u{i}") for i in range(12)]
  src = write(tmp_path / "in.jsonl", lines)
  rc, log, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={tmp_path / 'ds'}",
                     "--shard_size=2", "--vocab_size=30")
  assert rc == 0, err
  assert "tokenizer: reading the transcripts of 4 entries (a seeded sample of 2 shards of 12 entries)" in log
  assert "training a 30-piece BPE model on 4 transcripts" in log and len(records(tmp_path / "ds")) == 12


# -- bad input ------------------------------------------------------------------------------------

def _jsonl_case(bad_line, fmt="lst_jsonl", good=None):
  def make(tmp_path, speech):
    del speech
    g = good or [official("TEXT good", "HUBERT 1 2", file_id="g1"), official("TEXT fine", "HUBERT 3", file_id="g2")]
    path = write(tmp_path / "in.jsonl", [g[0], bad_line, g[1]])
    return path, path, 2, 2
  return fmt, make


def _manifest_line(words, units=10, transcript=None, **extra):
  obj = {"id": "bad", "transcript": transcript if transcript is not None else " ".join(w[0] for w in words)}
  if words:
    obj["words"] = [{"word": w, "start": s, "end": e} for w, s, e in words]
  if units:
    obj.update(units=[1] * units, unit_rate=25.0)
  return json.dumps({**obj, **extra})


GOOD_MANIFEST = [_manifest_line([("a", 0.0, 0.2), ("b", 0.2, 0.4)]).replace('"bad"', f'"g{i}"')
                 for i in range(2)]


def _audio_tree(tmp_path, speech, n=1):
  root = tmp_path / "audio"
  for i in range(n):
    wave, rate = speech[i]
    write_audio(root / f"good{i}.wav", wave, rate)
    write(root / f"good{i}.txt", [SENTENCES[i]])
  return root


def _audio_case(make_bad):
  def make(tmp_path, speech):
    root = _audio_tree(tmp_path, speech)
    bad_file, line, extra_good = make_bad(root, speech)
    return str(root), str(bad_file), line, 1 + extra_good
  return "audio", make


def _missing_flac(root, speech):
  write_audio(root / "books" / "7-1-0001.flac", *speech[1])
  trans = write(root / "books" / "7-1.trans.txt", ["7-1-0001 " + SENTENCES[1], "7-1-0002 GONE AWAY"])
  return trans, 2, 1


def _garbage_wav(root, speech):
  (root / "junk.wav").write_bytes(b"this is not audio at all" * 10)
  write(root / "junk.txt", ["some words"])
  return root / "junk.wav", None, 0


def _rate(hz):
  def make(root, speech):
    wav_with_rate(root / "odd.wav", hz)
    write(root / "odd.txt", ["odd rate"])
    return root / "odd.wav", None, 0
  return make


def _bad_transcript(root, speech):
  write_audio(root / "latin1.wav", *speech[1])
  (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
  return root / "latin1.txt", 1, 0


def _text_case(tmp_path, speech):
  del speech
  path = tmp_path / "docs.txt"
  path.write_bytes(b"good doc\n\nfine one\nbad \xff byte here\n\nlast doc\n")
  return str(path), str(path), 4, 2


BAD = {
    "malformed_json": (*_jsonl_case('{"file_id": "b", "interleaved": '), "malformed JSON"),
    "not_an_object": (*_jsonl_case("[1, 2]"), "expected a JSON object"),
    "unknown_segment": (*_jsonl_case(official("TEXT a", "MFCC 1 2")), "unknown segment kind 'MFCC'"),
    "unit_outside_codebook": (*_jsonl_case(official("TEXT a", "HUBERT 3 501")),
                              "unit id 501 is outside the codebook's [0, 501)"),
    "not_a_unit_id": (*_jsonl_case(official("TEXT a", "HUBERT 3 x7")), "'x7' is not a unit id"),
    "word_without_units": (*_jsonl_case(official("TEXT a", "TEXT b", "HUBERT 1")), "'a' has no HUBERT units"),
    "empty_transcript": (*_jsonl_case(official("TEXT [SIL]", "HUBERT 1 2")), "no words (empty transcript)"),
    "non_utf8_jsonl": (*_jsonl_case(b'{"file_id": "b\xff", "interleaved": ""}'), "not valid UTF-8"),
    "spans_out_of_order": (*_jsonl_case(_manifest_line([("a", 0.2, 0.3), ("b", 0.0, 0.1)]), "manifest",
                                        GOOD_MANIFEST), "overlap or are out of order"),
    "spans_overlap": (*_jsonl_case(_manifest_line([("a", 0.0, 0.3), ("b", 0.2, 0.4)]), "manifest",
                                   GOOD_MANIFEST), "overlap or are out of order"),
    "spans_past_the_end": (*_jsonl_case(_manifest_line([("a", 0.0, 0.2), ("b", 0.2, 2.0)]), "manifest",
                                        GOOD_MANIFEST), "past the end of the speech (0.400 s)"),
    "span_reversed": (*_jsonl_case(_manifest_line([("a", 0.3, 0.1)]), "manifest", GOOD_MANIFEST),
                      "is before its start"),
    "manifest_empty_transcript": (*_jsonl_case(_manifest_line([], transcript="  "), "manifest", GOOD_MANIFEST),
                                  "empty transcript"),
    "units_without_times": (*_jsonl_case(_manifest_line([], transcript="a b"), "manifest", GOOD_MANIFEST),
                            "without word timings"),
    "missing_audio": (*_audio_case(_missing_flac), "7-1-0002.flac: no such file"),
    "unreadable_audio": (*_audio_case(_garbage_wav), "unreadable"),
    "sample_rate_0": (*_audio_case(_rate(0)), "unreadable"),  # libsndfile refuses a 0 Hz header
    "sample_rate_4k": (*_audio_case(_rate(4000)), "unexpected sample rate 4000 Hz"),
    "non_utf8_transcript": (*_audio_case(_bad_transcript), "not valid UTF-8"),
    "non_utf8_text": ("text", _text_case, "not valid UTF-8 (byte 0xff at column 5)"),
}


@pytest.mark.parametrize("mode", ["fail", "skip"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(case, mode, tmp_path, capsys, speech):
  fmt, make, message = BAD[case]
  src, bad_file, bad_line, good = make(tmp_path, speech)
  out = tmp_path / "ds"
  rc, log, err = run(capsys, f"--format={fmt}", f"--input={src}", f"--output={out}", f"--on_error={mode}",
                     "--vocab_size=60", *(["--num_units=8"] if fmt == "audio" else []))
  where = f"{bad_file}:{bad_line}" if bad_line else bad_file
  if mode == "fail":
    assert rc == 2, log
    assert err.startswith(f"error: {where}: ") and message in err, err
    assert not os.path.exists(out / "manifest.json")
    return
  assert rc == 0, err
  assert f"{good} {'text' if fmt == 'text' else 'speech'} records" in log and "1 skipped" in log
  kind = "text" if fmt == "text" else "speech"
  assert len(records(out, "train", kind)) == good
  report = [json.loads(l) for l in open(out / "train.errors.jsonl")]
  assert len(report) == 1 and report[0]["file"] == bad_file and report[0]["line"] == bad_line
  assert message in report[0]["error"]
  assert load_manifest(str(out)).raw["splits"]["train"]["skipped"] == 1


def test_fail_mode_rerun_does_not_hide_entries_a_skip_run_skipped(tmp_path, capsys):
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST, "{oops"])
  out = tmp_path / "ds"
  assert run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--on_error=skip")[0] == 0
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}")
  assert rc == 2 and err.startswith(f"error: {src}:2: malformed JSON")
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--on_error=skip",
                   f"--codebook={tmp_path / 'codebook.npy'}")
  assert rc == 2 and "--codebook applies to audio input" in err


def test_cli_prints_error_without_traceback(tmp_path):
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST, "{oops"])
  p = subprocess.run([sys.executable, "-m", "data_prep.build", "--format=lst_jsonl", f"--input={src}",
                      f"--output={tmp_path / 'ds'}", "--workers=0"], capture_output=True, text=True, cwd=REPO)
  assert p.returncode == 2
  assert p.stderr.startswith(f"error: {src}:2: malformed JSON") and "Traceback" not in p.stderr
  usage = subprocess.run([sys.executable, "-m", "data_prep.build", "--help"], capture_output=True, text=True,
                         cwd=REPO).stdout
  for flag in ("--format", "--input", "--output", "--split", "--on_error", "--tokenizer", "--vocab_size",
               "--num_units", "--codebook", "--shard_size", "--workers"):
    assert flag in usage


# -- audio, manifest, codebooks ----------------------------------------------------------------------

def test_audio_folder_any_rate_and_librispeech_layout(tmp_path, capsys, speech):
  root = tmp_path / "audio"
  write_audio(root / "a" / "s0.wav", *speech[0])                       # 22.05 kHz WAV
  write(root / "a" / "s0.txt", [SENTENCES[0]])
  write_audio(root / "a" / "s1.wav", *speech[1], target_rate=44100)    # 44.1 kHz WAV
  write(root / "a" / "s1.txt", [SENTENCES[1]])
  write_audio(root / "ls" / "19" / "19-198-0000.flac", *speech[2], target_rate=16000)  # LibriSpeech
  write_audio(root / "ls" / "19" / "19-198-0001.flac", *speech[3])
  write(root / "ls" / "19" / "19-198.trans.txt", [f"19-198-0000 {SENTENCES[2].upper()}",
                                                   f"19-198-0001 {SENTENCES[3].upper()}"])
  write(root / "README.txt", ["not a transcript: no audio beside it"])
  out = tmp_path / "ds"
  rc, log, err = run(capsys, "--format=audio", f"--input={root}", f"--output={out}", "--num_units=16",
                     "--vocab_size=80")
  assert rc == 0, err
  assert "4 speech records from 4 entries" in log
  m = load_manifest(str(out))
  assert m.units["source"] == "quantizer" and m.num_units == 16
  assert m.units["codebook_sha256"] == sha256_file(os.path.join(out, "codebook.npy"))
  recs = {r.id: r for r in records(out)}
  ids = [os.path.join("a", "s0"), os.path.join("a", "s1"), "19-198-0000", "19-198-0001"]
  assert sorted(recs) == sorted(ids)
  for (wave, rate), sentence, id_ in zip(speech, SENTENCES, ids):
    r = recs[id_]
    assert abs(len(r.units) - 25 * len(wave) / rate) <= 2  # 25 Hz units whatever the input rate
    assert r.num_words == len(sentence.split()) and r.word_spans[-1, 1] <= len(r.units)
  assert m.split("train").speech_hours > 0

  # A held-out split reuses the codebook (not refit); --codebook=PATH gives the same units elsewhere.
  codebook_mtime = os.stat(out / "codebook.npy").st_mtime_ns
  held = tmp_path / "held"
  write_audio(held / "h.wav", *speech[3], target_rate=44100)
  write(held / "h.txt", [SENTENCES[3]])
  rc, log, err = run(capsys, "--format=audio", f"--input={held}", f"--output={out}", "--split=heldout")
  assert rc == 0 and "reusing the directory's 16-unit codebook" in log, err
  assert os.stat(out / "codebook.npy").st_mtime_ns == codebook_mtime
  other = tmp_path / "other"
  rc, _, err = run(capsys, "--format=audio", f"--input={held}", f"--output={other}",
                   f"--codebook={out / 'codebook.npy'}", f"--tokenizer={out / 'tokenizer.model'}")
  assert rc == 0, err
  np.testing.assert_array_equal(records(other)[0].units, records(out, "heldout")[0].units)
  assert load_manifest(str(other)).units["codebook_sha256"] == m.units["codebook_sha256"]


def test_too_few_frames_for_the_units_is_a_clear_error(tmp_path, capsys, speech):
  root = _audio_tree(tmp_path, speech)
  rc, _, err = run(capsys, "--format=audio", f"--input={root}", f"--output={tmp_path / 'ds'}",
                   "--num_units=5000")
  assert rc == 2 and "needs at least 5000 frames" in err and "the audio gives" in err


def test_manifest_with_units_and_with_audio(tmp_path, capsys, speech):
  src = write(tmp_path / "units.jsonl", [json.dumps({
      "id": "m1", "transcript": "hello big world",
      "words": [{"word": "hello", "start": 0.0, "end": 0.2}, {"word": "big", "start": 0.2, "end": 0.28},
                {"word": "world", "start": 0.4, "end": 0.6}],
      "units": list(range(20)), "unit_rate": 25.0})])
  out = tmp_path / "ds"
  rc, _, err = run(capsys, "--format=manifest", f"--input={src}", f"--output={out}", "--num_units=64")
  assert rc == 0, err
  r = records(out)[0]
  assert r.word_spans.tolist() == [[0, 5], [5, 7], [10, 15]] and r.units.tolist() == list(range(20))
  assert load_manifest(str(out)).units == provenance.user_units("manifest", 64, 25.0)

  wave, rate = speech[0]
  write_audio(tmp_path / "wav" / "x.wav", wave, rate, target_rate=44100)
  dur = len(wave) / rate
  words = SENTENCES[0].split()
  times = [{"word": w, "start": dur * i / len(words), "end": dur * (i + 1) / len(words)}
           for i, w in enumerate(words)]
  src = write(tmp_path / "audio.jsonl", [
      json.dumps({"id": "given", "transcript": SENTENCES[0], "words": times, "audio": "wav/x.wav"}),
      json.dumps({"id": "aligned", "transcript": SENTENCES[0], "audio": "wav/x.wav"})])
  out = tmp_path / "ds_audio"
  rc, _, err = run(capsys, "--format=manifest", f"--input={src}", f"--output={out}", "--num_units=12")
  assert rc == 0, err
  given, aligned = records(out)
  assert given.id == "given" and aligned.id == "aligned"
  np.testing.assert_array_equal(given.units, aligned.units)  # same audio, same codebook
  step = len(given.units) / len(words)
  assert np.all(np.abs(given.word_spans[:, 0] - np.arange(len(words)) * step) <= 1)  # the given times
  assert aligned.num_words == len(words) and aligned.word_spans[-1, 1] <= len(aligned.units)


# -- stats, merge ------------------------------------------------------------------------------------

def test_stats_prints_counts_and_patch_lengths(tmp_path, capsys):
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST, SPEECH_FIRST, SILENCE_FIRST])
  out = tmp_path / "ds"
  assert run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={out}", "--vocab_size=60")[0] == 0
  write(tmp_path / "docs.txt", ["one two three", "", "four"])
  assert run(capsys, "--format=text", f"--input={tmp_path / 'docs.txt'}", f"--output={out}")[0] == 0
  assert stats.main([str(out)]) == 0
  text = capsys.readouterr().out
  assert "== train ==" in text
  lines = {l.split()[0]: l for l in text.splitlines() if l.strip()}
  assert lines["utterances"].split()[1] == "3" and f"{18 / 25 / 3600:.3f} h" in lines["utterances"]
  assert lines["units"].split()[1] == "18" and "7 silence" in lines["units"]
  assert lines["words"].split()[1] == "5"
  docs = [l.split() for l in text.splitlines() if l.strip().startswith("text documents")][0]
  assert docs[2:] == ["2", "4", "words"]
  tokens = [l.split() for l in text.splitlines() if l.strip().startswith("text tokens")][0]
  assert int(tokens[2]) == int(tokens[3]) + int(tokens[6]) and int(tokens[6]) >= 4
  row = {k: [l for l in text.splitlines() if l.strip().startswith(k)][0].split()
         for k in ("static", "aligned, silence separate", "aligned, silence merged")}
  # Units 18; static p=4 patches per utterance: 9 -> 4+4+1, 6 -> 4+2, 3 -> 3: 6 patches.
  assert row["static"][2] == "6"
  # Silence separate: words 5 + silences (text_first 2, speech_first 1, silence_first 1) = 9 patches.
  assert row["aligned, silence separate"][3] == "9" and float(row["aligned, silence separate"][4]) == 2.0
  # Silence merged: one patch per word.
  assert row["aligned, silence merged"][3] == "5" and float(row["aligned, silence merged"][4]) == 3.6
  assert "histogram" in text


def test_merge_and_its_refusal(tmp_path, capsys):
  user = tmp_path / "tok.model"
  user.write_bytes(tokenizer_training.train(["hello world café au lait"] * 20, vocab_size=40))
  a, b = tmp_path / "a", tmp_path / "b"
  for d, lines in ((a, [TEXT_FIRST, SPEECH_FIRST]), (b, [SILENCE_FIRST])):
    src = write(tmp_path / f"{d.name}.jsonl", lines)
    assert run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={d}", f"--tokenizer={user}")[0] == 0
  assert merge.main([f"--inputs={a},{b}", f"--output={tmp_path / 'c'}"]) == 0
  m = load_manifest(str(tmp_path / "c"))
  assert m.split("train").num_speech == 3 and len(m.split("train").speech) == 2
  assert sorted(r.id for r in records(tmp_path / "c")) == ["silence_first", "speech_first", "text_first"]
  assert m.tokenizer_sha256 == sha256_file(str(user))
  capsys.readouterr()
  # Different units: refused, naming the field; nothing written.
  d = tmp_path / "d"
  src = write(tmp_path / "d.jsonl", [SILENCE_FIRST])
  assert run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={d}", f"--tokenizer={user}",
             "--num_units=600")[0] == 0
  assert merge.main([f"--inputs={a},{d}", f"--output={tmp_path / 'e'}"]) == 2
  err = capsys.readouterr().err
  assert "differ in units.num_units: 501 vs 600" in err
  assert not os.path.exists(tmp_path / "e" / "manifest.json")


def test_beam_options_pass_through_and_unknown_flags_are_refused(tmp_path, capsys):
  from data_prep.build import beam_options
  assert beam_options.beam_flags(["--runner=DirectRunner", "--direct_num_workers=2", "--no_such_flag=1"]) == \
      (["--runner=DirectRunner", "--direct_num_workers=2"], ["--no_such_flag=1"])
  docs = write(tmp_path / "docs" / "a.txt", ["hello world again", "", "second doc here"])
  rc, log, err = run(capsys, "--format=text", f"--input={docs}", f"--output={tmp_path / 'ds'}", "--vocab_size=20",
                     "--runner=FnApiRunner", "--direct_num_workers=1")
  assert rc == 0 and "2 text records" in log, err
  with pytest.raises(SystemExit):
    run(capsys, "--format=text", f"--input={docs}", f"--output={tmp_path / 'ds2'}", "--no_such_flag=1")
  assert "unrecognized arguments: --no_such_flag=1" in capsys.readouterr().err


def test_a_remote_runner_needs_an_output_its_workers_can_reach(tmp_path, capsys):
  src = write(tmp_path / "in.jsonl", [TEXT_FIRST])
  rc, _, err = run(capsys, "--format=lst_jsonl", f"--input={src}", f"--output={tmp_path / 'ds'}",
                   "--runner=DataflowRunner", "--project=p")
  assert rc == 2 and err.startswith("error: --runner=DataflowRunner runs on other machines") and "gs://" in err, err
  assert not (tmp_path / "ds").exists()


def test_a_bad_entry_in_a_worker_process_stops_the_build_naming_its_line(tmp_path, capsys):
  """--on_error=fail with shards in worker processes: the shard stops at its bad entry, the build fails
  naming file and line (one line, no marker left behind), and with the line fixed every shard converts."""
  user = tmp_path / "user.model"
  user.write_bytes(tokenizer_training.train([f"w{i}" for i in range(8)] * 20, vocab_size=30))
  lines = [official(f"TEXT w{i}", f"HUBERT {i % 5}", file_id=f"u{i}") for i in range(8)]
  out = tmp_path / "ds"
  args = ("--format=lst_jsonl", f"--input={tmp_path / 'in.jsonl'}", f"--output={out}", "--shard_size=2",
          "--workers=2", f"--tokenizer={user}")
  write(tmp_path / "in.jsonl", lines[:5] + ["{not json"] + lines[6:])
  rc, _, err = run(capsys, *args)
  assert rc == 2 and err.startswith(f"error: {tmp_path / 'in.jsonl'}:6:") and "Traceback" not in err, err
  assert not list(out.glob("train/.*journal/*.failed")) and not (out / "manifest.json").exists()
  write(tmp_path / "in.jsonl", lines)
  rc, log, err = run(capsys, *args)
  assert rc == 0 and "8 speech records from 8 entries" in log and "4 shard(s)" in log, err
