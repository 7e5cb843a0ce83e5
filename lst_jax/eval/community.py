"""The community's spoken-LM benchmarks, read as published, and the protocol each is scored by.

  python -m lst_jax.eval.main ... --benchmarks=swuggy:/data/zr2021/lexical/dev,ssc:/data/sSC

A benchmark named KIND:PATH (KIND below) is read from its published layout into the usual
items (benchmark_files.Item): an empty prompt and the spoken candidates (audio files, turned
into units by the checkpoint dataset's own quantizer, runner.Converter), the right one first.
The runner scores every candidate by its log-likelihood like any other benchmark; the header's
"protocol" says which ranking (sum or mean log-likelihood) is the published score and how items
are pooled (ZeroSpeech: a pair's credit is averaged over its voices, then over pairs).

Layouts (PATH):
  swuggy   ZeroSpeech 2021 lexical: a folder with gold.csv (id,filename,word,phones,length,
           frequency,voice,correct) and <filename>.wav; or its parent (lexical/, which holds dev/
           and test/: dev is read) or the dataset root. A word and its non-word share id and voice.
  sblimp   ZeroSpeech 2021 syntactic: the same with gold.csv (id,filename,voice,type,subtype,
           correct[,transcription]); a grammatical sentence and its twin share id and voice.
  ssc/tsc  spoken / topic StoryCloze (TWIST): a folder of <n>_correct.wav and <n>_incorrect.wav
           (each the whole spoken story), optionally <n>_mutual.wav / .txt with the shared first
           sentences as the prompt and <n>_*.txt transcripts (slamkit's layout); one level of
           subfolders is searched too.
  any      a Hugging Face parquet export (a .parquet file or a folder of them): columns positive
           and negative (one row per pair, e.g. the speed/sStoryCloze, speed/sWUGGY exports),
           correct and incorrect, or gold.csv's columns plus an audio column. Audio cells are the
           HF Audio struct {bytes, path} (or {array, sampling_rate}); they are written once to
           a temporary folder as audio files for the quantizer.
"""

from __future__ import annotations

import atexit
import collections
import csv
import dataclasses
import math
import os
import re
import shutil
import tempfile

from lst_jax import storage
from lst_jax.eval.benchmark_files import NO_PROMPT, Benchmark, BenchmarkError, Item, Segment


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How a published benchmark is scored; printed with its result."""
  name: str
  score: str                  # "sum" or "mean" log-likelihood ranks the candidates
  pooling: str                # "pair over voices" (ZeroSpeech) or "item"
  subsets: tuple[str, ...]    # reported beside the whole set, e.g. ("invocab",)
  source: str                 # where the protocol is defined

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    pool = ("credit averaged over a pair's voices, then over pairs" if self.pooling == "pair over voices"
            else "mean credit over items")
    return f"{self.name}: {self.score} log-likelihood, ties 1/2, {pool} ({self.source})"


_ZR = "zerospeech2021 toolkit (lexical.py / syntactic.py), ZR2021 LSTM baseline: summed log-probability"
_SLAMKIT = "TWIST / slamkit modelling_metric: mean log-likelihood per token (mean_nll)"
PROTOCOLS = {
    "swuggy": Protocol("ZeroSpeech 2021 lexical (sWUGGY)", "sum", "pair over voices", ("invocab",), _ZR),
    "sblimp": Protocol("ZeroSpeech 2021 syntactic (sBLIMP)", "sum", "pair over voices", (), _ZR),
    "ssc": Protocol("spoken StoryCloze (sSC)", "mean", "item", (), _SLAMKIT),
    "tsc": Protocol("topic StoryCloze (tSC)", "mean", "item", (), _SLAMKIT),
}
KINDS = tuple(PROTOCOLS)
GOLD = "gold.csv"
GOLD_COLUMNS = {"swuggy": ("id", "filename", "voice", "correct"),
                "sblimp": ("id", "filename", "voice", "type", "subtype", "correct")}
ZR_FOLDER = {"swuggy": "lexical", "sblimp": "syntactic"}
EMPTY = NO_PROMPT   # no prompt: the whole utterance is scored


def parse_spec(spec: str) -> tuple[str | None, str]:
  """"swuggy:/x" -> ("swuggy", "/x"); a plain path -> (None, path). An unknown KIND: is refused
  unless the whole spec is an existing path."""
  m = re.match(r"^([A-Za-z][A-Za-z0-9_]*):(.+)$", spec)
  if not m or os.path.exists(spec):
    return None, spec
  kind = m.group(1).lower()
  if kind not in PROTOCOLS:
    raise BenchmarkError(f"{spec}: unknown benchmark kind {m.group(1)!r}; give KIND:PATH with KIND one of "
                         f"{', '.join(KINDS)}, or a JSONL file or folder")
  return kind, m.group(2)


def load(kind: str, path: str) -> Benchmark:
  """Reads the published benchmark `kind` at `path` (see the module docstring); BenchmarkError names
  the file that does not fit."""
  if kind not in PROTOCOLS:
    raise BenchmarkError(f"{path}: unknown benchmark kind {kind!r}; choose from {', '.join(KINDS)}")
  if not os.path.exists(path):
    raise BenchmarkError(f"{path}: no such file or folder ({kind})")
  parquet = _parquet_files(path)
  if parquet:
    items = _parquet_items(kind, parquet)
    source = "parquet"
  elif kind in GOLD_COLUMNS:
    gold = _find_gold(kind, path)
    items = _gold_items(kind, gold, _read_csv(gold), os.path.dirname(gold), audio_dir=os.path.dirname(gold))
    path, source = os.path.dirname(gold), "zerospeech"
  else:
    items = _story_items(path)
    source = "folder"
  split = next((p for p in reversed(storage.normal(path).split(os.sep)) if p in ("dev", "test")), None)
  name = f"{kind}-{split}" if split else kind
  directions = ["S->S"] + (["T->T"] if all(c.text for it in items for c in it.candidates)
                           and all(it.prompt.text is not None for it in items) else [])
  header = {"name": name, "kind": kind, "layout": source, "protocol": PROTOCOLS[kind].to_json(),
            "directions": directions}
  return Benchmark(name=name, path=path, header=header, items=tuple(items))


# --- ZeroSpeech 2021 folders -------------------------------------------------------------------

def _find_gold(kind: str, path: str) -> str:
  tried = []
  for cand in (path, os.path.join(path, "dev"), os.path.join(path, ZR_FOLDER[kind], "dev")):
    g = cand if cand.endswith(GOLD) else os.path.join(cand, GOLD)
    tried.append(g)
    if os.path.isfile(g):
      return g
  raise BenchmarkError(f"{path}: no {GOLD} for {kind} (looked for {', '.join(tried)}); give the "
                       f"{ZR_FOLDER[kind]}/dev or {ZR_FOLDER[kind]}/test folder of the ZeroSpeech 2021 dataset")


def _read_csv(path: str) -> list[tuple[int, dict]]:
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      rows = [(n, row) for n, row in enumerate(reader, 2)]
      header = reader.fieldnames or []
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise BenchmarkError(f"{path}: unreadable CSV ({e})") from None
  if not rows:
    raise BenchmarkError(f"{path}: no rows (columns: {', '.join(header) or 'none'})")
  return rows


def _gold_items(kind: str, where: str, rows, base: str, audio_dir: str | None = None,
                audio: dict | None = None) -> list[Item]:
  """Items from gold rows: a correct and an incorrect row that share id and voice form one pair.

  `audio` maps a row number to an audio path (parquet); else <audio_dir>/<filename>.wav."""
  cols = rows[0][1].keys()
  missing = [c for c in GOLD_COLUMNS[kind] if c not in cols and not (c == "filename" and audio)]
  if missing:
    raise BenchmarkError(f"{where}: missing column(s) {missing} for {kind} (has {', '.join(cols)}); "
                         f"expected {', '.join(GOLD_COLUMNS[kind])}")
  groups: dict[tuple[str, str], list] = collections.OrderedDict()
  for n, row in rows:
    correct = str(row["correct"]).strip()
    if correct not in ("0", "1", "True", "False", "true", "false"):
      raise BenchmarkError(f"{where}:{n}: field correct must be 1 or 0, got {row['correct']!r}")
    if audio is not None:
      path = audio[n]
    else:
      path = os.path.join(audio_dir, f"{str(row['filename']).strip()}.wav")
      if not os.path.isfile(path):
        raise BenchmarkError(f"{where}:{n}: field filename {row['filename']!r}: no {path}")
    groups.setdefault((str(row["id"]).strip(), str(row["voice"]).strip()), []).append(
        (n, correct in ("1", "True", "true"), row, path))
  items = []
  for (pid, voice), members in groups.items():
    good = [m for m in members if m[1]]
    bad = [m for m in members if not m[1]]
    if len(good) != 1 or len(bad) != 1:
      lines = ", ".join(str(m[0]) for m in members)
      raise BenchmarkError(f"{where}:{members[0][0]}: id {pid!r} voice {voice!r} has {len(good)} correct and "
                           f"{len(bad)} incorrect row(s) (lines {lines}); each needs one of each")
    (_, _, g, gpath), (_, _, b, bpath) = good[0], bad[0]
    text = kind == "sblimp" and all(_cell(r.get("transcription")) for r in (g, b))
    extra = {"group": pid, "voice": voice, "filenames": [_cell(g.get("filename")), _cell(b.get("filename"))]}
    for key in ("word", "type", "subtype"):
      if _cell(g.get(key)):
        extra[key] = _cell(g[key])
    if kind == "swuggy":
      if _cell(b.get("word")):
        extra["non_word"] = _cell(b["word"])
      freq = _cell(g.get("frequency"))
      if freq:
        try:
          extra["frequency"] = int(float(freq))
        except ValueError:
          raise BenchmarkError(f"{where}:{good[0][0]}: field frequency must be a count, got {freq!r}") from None
        extra["subsets"] = ["invocab"] if extra["frequency"] > 0 else []
    cands = tuple(Segment(audio=p, text=_cell(r.get("transcription")) if text else None)
                  for r, p in ((g, gpath), (b, bpath)))
    items.append(Item(id=f"{pid}/{voice}", prompt=EMPTY, candidates=cands, label=0, extra=extra))
  return items


def _cell(v) -> str | None:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return None
  s = str(v).strip()
  return s or None


# --- spoken StoryCloze folders -----------------------------------------------------------------

_ROLE = re.compile(r"^(?P<key>.+?)_(?P<role>correct|incorrect|mutual)$")


def _story_items(path: str) -> list[Item]:
  if not os.path.isdir(path):
    raise BenchmarkError(f"{path}: not a folder of <n>_correct.wav / <n>_incorrect.wav files, nor a .parquet "
                         f"file")
  folders = [path] + sorted(os.path.join(path, d) for d in os.listdir(path)
                            if os.path.isdir(os.path.join(path, d)))
  stories: dict[tuple[str, str], dict[str, str]] = {}
  for folder in folders:
    for f in sorted(os.listdir(folder)):
      stem, ext = os.path.splitext(f)
      m = _ROLE.match(stem)
      if ext.lower() in (".wav", ".flac") and m:
        stories.setdefault((folder, m["key"]), {})[m["role"]] = os.path.join(folder, f)
  if not stories:
    wavs = [f for f in os.listdir(path) if f.lower().endswith(".wav")]
    raise BenchmarkError(f"{path}: no <n>_correct.wav / <n>_incorrect.wav files"
                         + (f" (found {len(wavs)} other .wav files, e.g. {sorted(wavs)[0]}; the true and the "
                            f"false ending of story n must be named n_correct.wav and n_incorrect.wav)"
                            if wavs else ""))
  items = []
  with_prompt = [k for k, v in stories.items() if "mutual" in v]
  if with_prompt and len(with_prompt) != len(stories):
    raise BenchmarkError(f"{path}: {len(with_prompt)} of {len(stories)} stories have a _mutual prompt file; "
                         f"give it for all or none")

  def txt(wav):
    t = os.path.splitext(wav)[0] + ".txt"
    if not os.path.isfile(t):
      return None
    with open(t, encoding="utf-8") as f:
      return f.read().strip() or None

  for (folder, key), files in sorted(stories.items(), key=lambda kv: (kv[0][0], _natural(kv[0][1]))):
    for role in ("correct", "incorrect"):
      if role not in files:
        raise BenchmarkError(f"{os.path.join(folder, key)}_{role}.wav: missing (story {key!r} has "
                             f"{', '.join(sorted(os.path.basename(p) for p in files.values()))})")
    prompt = EMPTY
    if "mutual" in files:
      prompt = Segment(audio=files["mutual"], text=txt(files["mutual"]))
    cands = tuple(Segment(audio=files[r], text=txt(files[r])) for r in ("correct", "incorrect"))
    rel = os.path.relpath(os.path.join(folder, key), path)
    items.append(Item(id=rel, prompt=prompt, candidates=cands, label=0))
  return items


def _natural(key: str):
  return (0, int(key), "") if key.isdigit() else (1, 0, key)


# --- Hugging Face parquet exports --------------------------------------------------------------

_PAIR_COLUMNS = (("positive", "negative"), ("correct", "incorrect"))
_PROMPT_COLUMNS = ("prompt", "mutual")
_AUDIO_COLUMNS = ("audio", "wav")
_TMP: list[str] = []


def _parquet_files(path: str) -> list[str]:
  if os.path.isfile(path):
    return [path] if path.endswith(".parquet") else []
  out = []
  for root, _, files in sorted(os.walk(path)):
    out += sorted(os.path.join(root, f) for f in files if f.endswith(".parquet"))
  return out


def _parquet_items(kind: str, files: list[str]) -> list[Item]:
  try:
    import pyarrow.parquet as pq
  except ImportError:
    raise BenchmarkError(f"{files[0]}: reading parquet needs pyarrow (pip install pyarrow)") from None
  cache = _cache_dir()
  items = []
  for path in files:
    try:
      table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several types for a bad file)
      raise BenchmarkError(f"{path}: unreadable parquet file ({str(e).splitlines()[0][:200]})") from None
    cols = table.column_names
    rows = table.to_pylist()
    stem = os.path.splitext(os.path.basename(path))[0]
    pair = next((p for p in _PAIR_COLUMNS if all(c in cols for c in p) and _is_audio(rows, p[0])), None)
    if pair:
      prompt_col = next((c for c in _PROMPT_COLUMNS if c in cols), None)
      for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        rid = str(row.get("id", row.get("idx", i)))
        prompt = (Segment(audio=_audio_file(row[prompt_col], where, prompt_col, cache, f"{stem}-{i}-p"))
                  if prompt_col else EMPTY)
        cands = tuple(Segment(audio=_audio_file(row[c], where, c, cache, f"{stem}-{i}-{k}"))
                      for k, c in enumerate(pair))
        items.append(Item(id=f"{stem}/{rid}" if len(files) > 1 else rid, prompt=prompt, candidates=cands,
                          label=0))
      continue
    audio_col = next((c for c in _AUDIO_COLUMNS if c in cols), None)
    if kind in GOLD_COLUMNS and audio_col and "correct" in cols:
      audio = {i + 2: _audio_file(r[audio_col], f"{path}: row {i}", audio_col, cache, f"{stem}-{i}")
               for i, r in enumerate(rows)}
      items += _gold_items(kind, path, [(i + 2, r) for i, r in enumerate(rows)], os.path.dirname(path),
                           audio=audio)
      continue
    expected = " / ".join(f"{a},{b}" for a, b in _PAIR_COLUMNS)
    raise BenchmarkError(f"{path}: columns {', '.join(cols)} fit no {kind} export; expected audio columns "
                         f"{expected}" + (f", or gold.csv's columns ({', '.join(GOLD_COLUMNS[kind])}) "
                                          f"with an audio column" if kind in GOLD_COLUMNS else ""))
  if not items:
    raise BenchmarkError(f"{files[0]}: no rows")
  return items


def _is_audio(rows, col) -> bool:
  return bool(rows) and isinstance(rows[0].get(col), (dict, str, bytes))


def _cache_dir() -> str:
  d = tempfile.mkdtemp(prefix="lst_jax_benchmark_audio_")
  if not _TMP:
    atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _TMP])
  _TMP.append(d)
  return d


def _audio_file(cell, where: str, col: str, cache: str, name: str) -> str:
  """An HF Audio cell as a file path the quantizer reads: bytes are written as they are (WAV/FLAC),
  a decoded array as 16-bit WAV, a plain path is used where it is."""
  if isinstance(cell, str):
    if not os.path.isfile(cell):
      raise BenchmarkError(f"{where}: column {col}: no audio file {cell}")
    return cell
  if isinstance(cell, bytes):
    cell = {"bytes": cell}
  if not isinstance(cell, dict):
    raise BenchmarkError(f"{where}: column {col} is {type(cell).__name__}, not audio ({{bytes, path}})")
  data = cell.get("bytes")
  if data:
    ext = ".flac" if data[:4] == b"fLaC" else ".wav" if data[:4] == b"RIFF" else \
        os.path.splitext(cell.get("path") or "")[1] or ".bin"
    out = os.path.join(cache, name + ext)
    with open(out, "wb") as f:
      f.write(data)
    return out
  if cell.get("array") is not None and cell.get("sampling_rate"):
    import numpy as np
    import soundfile
    out = os.path.join(cache, name + ".wav")
    soundfile.write(out, np.asarray(cell["array"], np.float32), int(cell["sampling_rate"]), subtype="PCM_16")
    return out
  path = cell.get("path")
  if path and os.path.isfile(path):
    return path
  raise BenchmarkError(f"{where}: column {col} has no audio bytes, array or readable path")


# --- scoring by the protocol -------------------------------------------------------------------

def protocol_result(protocol: dict, items, credit_sum, credit_mean) -> dict:
  """The published score from per-item credits (ties already 1/2): the protocol's ranking, pooled
  per pair over voices (ZeroSpeech) or per item, and each subset (items whose extra.subsets names it).
  {"protocol", "score", "score_n" (pairs or items pooled), "subsets": {name: {"score", "n"}}}."""
  credit = credit_sum if protocol["score"] == "sum" else credit_mean

  def pooled(keep):
    groups: dict[str, list[float]] = collections.OrderedDict()
    for it, c in zip(items, credit):
      if keep(it):
        key = it.extra.get("group", it.id) if protocol["pooling"] == "pair over voices" else it.id
        groups.setdefault(str(key), []).append(float(c))
    means = [sum(v) / len(v) for v in groups.values()]
    return {"score": sum(means) / len(means) if means else float("nan"), "n": len(means)}

  whole = pooled(lambda it: True)
  out = {"protocol": protocol, "score": whole["score"], "score_n": whole["n"]}
  subsets = {}
  for name in protocol.get("subsets", ()):
    if any("subsets" in it.extra for it in items):
      subsets[name] = pooled(lambda it, name=name: name in it.extra.get("subsets", ()))
  if subsets:
    out["subsets"] = subsets
  return out

