"""Built-in spoken cloze benchmarks from verses the demo model never trained on.

  python -m data_prep.benchmarks.builtin --data_dir=data/demo [--output=data/demo/benchmarks]

Writes <output>/cloze2.jsonl (StoryCloze-like, 2-way) and cloze4.jsonl
(HellaSwag-like, 4-way) in the format of lst_jax/eval/benchmark_files.py, every
prompt and candidate given both as text and as speech units, so each file
is scored in all four directions (S->S, T->T, S->T, T->S); and lexical.jsonl,
sWUGGY's word / non-word pairs made from the training vocabulary (data_prep/benchmarks/lexical.py).

Items. Each verse is split into a prompt (its first part, ending at the
punctuation mark nearest the middle, or at the middle word) and its true
continuation (the rest). The distractors are the continuations of other
benchmark verses of about the same length (drawn among the nearest in word
count), so every continuation is the right answer once and a distractor
elsewhere, and no candidate is favoured by being short or familiar. cloze2's
distractor is the first of cloze4's three (so cloze2 is cloze4 with two
candidates removed, and costs nothing extra to evaluate).

Verses. The demo's 50 held-out verses (data_prep/corpus/selection.py), plus
`--extra_verses` others drawn the same way (same books, 8-40 words) whose text
occurs nowhere in the training data (training speech verses and text
documents, which are also the tokenizer's training text); each item records
its source ("heldout" or "unseen").

Speech. Following the paper's protocol, the prompt and each continuation are
synthesized separately (espeak-ng, the held-out voice that no training
utterance uses), turned into features and quantized with the dataset's own
codebook; S->S concatenates the prompt's units and a candidate's. Synthesis
is a pure function of the text (data_prep/corpus/tts.py), so builds are
deterministic; a rerun with the same settings and data reuses the files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import random
import sys
import time
from typing import Callable, Sequence

import numpy as np

from data_prep.benchmarks import lexical
from data_prep.corpus import kjv, render, tts
from data_prep.corpus import selection as corpus_lib
from lst_jax import storage
from lst_jax.data import codebook as codebook_lib
from lst_jax.data.features import FEATURES

BUILD_VERSION = 2
BENCHMARK_DIR = "benchmarks"
WAYS = {"cloze2": 2, "cloze4": 4}
PUNCTUATION = ",;:.!?"
MIN_PART_WORDS = 3
NEAREST = 8   # distractors are drawn among this many continuations nearest in word count


class BenchmarkBuildError(RuntimeError):
  """The data directory is not a demo build this module can make benchmarks for."""


@dataclasses.dataclass(frozen=True)
class ClozeVerse:
  ref: str
  source: str                    # "heldout" or "unseen"
  words: tuple[str, ...]
  spoken: tuple[str, ...]
  split: int                     # prompt = words[:split], continuation = words[split:]

  @property
  def prompt_text(self) -> str:
    return " ".join(self.words[:self.split])

  @property
  def continuation_text(self) -> str:
    return " ".join(self.words[self.split:])


def split_point(spoken: Sequence[str]) -> int:
  """Where the prompt ends: after the punctuation mark nearest the middle within 35-65% of the
  words (each part keeps at least 3 words), else at the middle."""
  n = len(spoken)
  lo = max(MIN_PART_WORDS, math.ceil(0.35 * n))
  hi = min(n - MIN_PART_WORDS, math.floor(0.65 * n))
  marks = [k for k in range(lo, hi + 1) if spoken[k - 1][-1] in PUNCTUATION]
  if marks:
    return min(marks, key=lambda k: (abs(k - n / 2), k))
  return n // 2


def select_verses(verses: Sequence[kjv.Verse], corpus: corpus_lib.Corpus, extra: int,
                  seed: int) -> list[ClozeVerse]:
  """The held-out verses plus `extra` verses whose text is not in the training data."""
  training_text = "\n".join(f" {line} " for line in corpus.tokenizer_lines())
  used = {v.ref for v in corpus.train_speech + corpus.heldout_speech}
  seen_texts = {" ".join(v.words) for v in corpus.heldout_speech}
  pool = []
  for v in verses:
    text = " ".join(v.words)
    if (v.ref in used or v.book not in corpus_lib.SPEECH_BOOKS
        or not corpus_lib.MIN_WORDS <= len(v.words) <= corpus_lib.MAX_WORDS
        or text in seen_texts or f" {text} " in training_text):
      continue
    seen_texts.add(text)
    pool.append(v)
  if extra > len(pool):
    raise BenchmarkBuildError(f"asked for {extra} extra verses; only {len(pool)} unseen verses qualify")
  order = {v.ref: i for i, v in enumerate(verses)}
  picked = sorted(random.Random(seed).sample(pool, extra), key=lambda v: order[v.ref])
  out = [ClozeVerse(v.ref, "heldout", v.words, v.spoken, split_point(v.spoken)) for v in corpus.heldout_speech]
  out += [ClozeVerse(v.ref, "unseen", v.words, v.spoken, split_point(v.spoken)) for v in picked]
  return out


def choose_distractors(verses: Sequence[ClozeVerse], count: int, seed: int) -> list[list[int]]:
  """Per verse: `count` other verses whose continuations are distractors, nearest in word count
  (ties broken at random, drawn among the NEAREST), none with the true continuation's text."""
  rng = random.Random(seed)
  lengths = [len(v.words) - v.split for v in verses]
  out = []
  for i, v in enumerate(verses):
    others = [j for j in range(len(verses))
              if j != i and verses[j].continuation_text != v.continuation_text]
    keys = {j: (abs(lengths[j] - lengths[i]), rng.random()) for j in others}
    nearest = sorted(others, key=keys.__getitem__)[:max(NEAREST, count)]
    out.append(rng.sample(nearest, count))
  return out


def make_items(verses: Sequence[ClozeVerse], units: dict[tuple[str, str], np.ndarray], ways: int,
               seed: int) -> list[dict]:
  """Benchmark items (JSON objects) from verses and the units of each (ref, "prompt"/"continuation").

  The distractors of a k-way benchmark are the first k-1 of one fixed draw of max(WAYS) - 1, so
  cloze2's candidates are a subset of cloze4's (an evaluation scores each pair once)."""
  draws = choose_distractors(verses, max(WAYS.values()) - 1, seed)
  rng = random.Random(seed + ways)
  items = []
  for i, (v, distractors) in enumerate(zip(verses, draws)):
    cands = [i] + distractors[:ways - 1]
    rng.shuffle(cands)
    items.append({
        "id": v.ref, "source": v.source,
        "prompt": {"text": v.prompt_text, "units": units[(v.ref, "prompt")].tolist()},
        "candidates": [{"text": verses[j].continuation_text,
                        "units": units[(verses[j].ref, "continuation")].tolist()} for j in cands],
        "label": cands.index(i)})
  return items


def render_jobs(verses: Sequence[ClozeVerse], voice: tts.Voice) -> list[render.Job]:
  jobs = []
  for v in verses:
    jobs.append(render.Job(id=f"{v.ref}|prompt", words=v.words[:v.split], spoken=v.spoken[:v.split], voice=voice))
    jobs.append(render.Job(id=f"{v.ref}|continuation", words=v.words[v.split:], spoken=v.spoken[v.split:],
                           voice=voice))
  return jobs


def settings_of(manifest: dict, extra: int, seed: int) -> dict:
  """Everything that determines the benchmark files (compared on reuse)."""
  return {"version": BUILD_VERSION, "extra_verses": extra, "seed": seed,
          "data_build": manifest.get("build"), "codebook_sha256": manifest["units"].get("codebook_sha256"),
          "tokenizer_sha256": manifest["tokenizer"].get("sha256"),
          "voice": dataclasses.asdict(tts.HELDOUT_VOICES[0]), "nearest": NEAREST}


def is_ready(output: str, settings: dict) -> bool:
  for name in WAYS:
    try:
      with open(os.path.join(output, f"{name}.jsonl")) as f:
        header = json.loads(f.readline()).get("header", {})
    except (OSError, ValueError, AttributeError):
      return False
    if json.loads(json.dumps(settings)) != header.get("build"):
      return False
  return True


def is_demo(data_dir: str) -> bool:
  """Whether `data_dir` holds a finished data_prep.corpus.demo build."""
  try:
    with open(os.path.join(data_dir, "manifest.json")) as f:
      raw = json.load(f)
  except (OSError, ValueError):
    return False
  return raw.get("name") == "demo" and "num_heldout_verses" in raw.get("build", {})


def _load_demo_manifest(data_dir: str) -> dict:
  path = os.path.join(data_dir, "manifest.json")
  if not os.path.isfile(path):
    raise BenchmarkBuildError(f"{data_dir!r} has no manifest.json: build the demo data first (`make data`)")
  with open(path) as f:
    raw = json.load(f)
  if not is_demo(data_dir):
    raise BenchmarkBuildError(f"{data_dir!r} is not a demo build (data_prep.corpus.demo); the built-in benchmarks "
                              f"are made from the demo's held-out verses. For other data, write benchmark "
                              f"JSONL files yourself (see README, Evaluation)")
  if raw["units"].get("features") != json.loads(json.dumps(FEATURES)):
    raise BenchmarkBuildError(f"{data_dir!r}: its units used other feature settings than this version's "
                              f"(units.features); rebuild the demo data")
  from lst_jax.data.manifest import sha256_file
  codebook = os.path.join(data_dir, raw["units"]["codebook"])
  if sha256_file(codebook) != raw["units"]["codebook_sha256"]:
    raise BenchmarkBuildError(f"{codebook}: does not match the manifest's units.codebook_sha256")
  return raw


def _check_heldout(data_dir: str, raw: dict, corpus: corpus_lib.Corpus) -> None:
  """The held-out verses re-derived here must be the ones in the data's held-out split."""
  import grain
  from lst_jax.data import records
  paths = [os.path.join(data_dir, p) for p in raw["splits"]["heldout"]["speech"]]
  src = grain.sources.ArrayRecordDataSource(paths)
  stored = {records.decode(src[i]).id.split("/")[1] for i in range(len(src))}
  derived = {v.ref for v in corpus.heldout_speech}
  if stored != derived:
    raise BenchmarkBuildError(f"{data_dir}: the held-out split's verses differ from the ones its build settings "
                              f"select ({len(stored ^ derived)} differ); rebuild the demo data")


def build(data_dir: str, output: str | None = None, extra: int = 150, seed: int = 0, workers: int = 2,
          lexical_words: int = lexical.DEFAULT_WORDS, log: Callable[[str], None] = print) -> list[str]:
  """Builds (or reuses) the cloze and lexical benchmarks for the demo dataset in `data_dir`; returns
  the file paths."""
  output = output or os.path.join(data_dir, BENCHMARK_DIR)
  raw = _load_demo_manifest(data_dir)
  settings = settings_of(raw, extra, seed)
  paths = [os.path.join(output, f"{name}.jsonl") for name in WAYS]
  b = raw["build"]
  derived = {}

  def corpus_and_verses():   # derived once, only for what is (re)built
    if not derived:
      derived["verses"] = kjv.read_verses()
      derived["corpus"] = corpus_lib.select(derived["verses"], b["num_train_verses"], b["num_heldout_verses"],
                                            b["num_text_docs"], b["seed"])
      _check_heldout(data_dir, raw, derived["corpus"])
    return derived["corpus"], derived["verses"]

  if is_ready(output, settings):
    log(f"benchmarks ready in {output} (reused: same settings)")
  else:
    _build_cloze(data_dir, output, raw, settings, paths, extra, seed, workers, corpus_and_verses, log)
  if lexical_words > 0:
    paths.append(lexical.build(
        data_dir, output, raw, lambda: corpus_and_verses()[0].tokenizer_lines(),
        lambda: sorted({w for v in corpus_and_verses()[1] for w in v.words}), lexical_words, seed, workers,
        log=log))
  return paths


def _build_cloze(data_dir, output, raw, settings, paths, extra, seed, workers, corpus_and_verses, log) -> None:
  """Synthesizes, quantizes and writes cloze2.jsonl and cloze4.jsonl."""
  start = time.time()
  corpus, verses_all = corpus_and_verses()
  verses = select_verses(verses_all, corpus, extra, seed)
  voice = tts.HELDOUT_VOICES[0]
  jobs = render_jobs(verses, voice)
  log(f"synthesizing {len(jobs)} prompts and continuations of {len(verses)} verses "
      f"({sum(v.source == 'heldout' for v in verses)} held-out, {extra} unseen) with voice {voice.name}")
  if workers > 0:
    # spawn: each worker initialises its own espeak-ng (see data_prep/corpus/demo_build.py).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      rendered = list(pool.imap(render.render, jobs, chunksize=4))
  else:
    rendered = [render.render(j) for j in jobs]
  codebook = codebook_lib.load(data_dir)
  from data_prep.corpus.demo_build import quantize_all
  unit_lists = quantize_all([r.features for r in rendered], codebook)
  units = {}
  for job, u in zip(jobs, unit_lists):
    ref, part = job.id.split("|")
    units[(ref, part)] = u
  tok = raw["tokenizer"]
  os.makedirs(output, exist_ok=True)
  for (name, ways), path in zip(WAYS.items(), paths):
    header = {
        "name": name, "ways": ways,
        "description": (f"spoken cloze, {ways}-way: a verse's first part, then its true continuation or "
                        f"{ways - 1} other verses' continuations of about the same length; prompt and each "
                        f"candidate synthesized separately with the unseen voice {voice.name}"),
        "units": raw["units"], "tokenizer": {"sha256": tok["sha256"], "vocab_size": tok["vocab_size"]},
        "build": settings,
    }
    items = make_items(verses, units, ways, seed)
    storage.write_text(path, json.dumps({"header": header}, sort_keys=True) + "\n"
                       + "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items))
  seconds = sum(len(u) for u in unit_lists) / FEATURES["frame_rate"]
  log(f"wrote {', '.join(paths)}: {len(verses)} items each, {seconds / 60:.1f} min of speech "
      f"({time.time() - start:.1f} s)")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m data_prep.benchmarks.builtin", description=__doc__.split("\n")[0])
  p.add_argument("--data_dir", default="data/demo", help="the demo dataset (data_prep.corpus.demo's output)")
  p.add_argument("--output", default=None, help="where the JSONL files go (default: <data_dir>/benchmarks)")
  p.add_argument("--extra_verses", type=int, default=150,
                 help="verses beyond the 50 held-out ones, from text no training document contains")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workers", type=int, default=2, help="synthesis processes (0: in this process)")
  p.add_argument("--lexical_words", type=int, default=lexical.DEFAULT_WORDS,
                 help="word / non-word pairs of the lexical benchmark (0: none)")
  p.add_argument("--if_demo", action="store_true",
                 help="if --data_dir is not a demo build, say so and exit 0 instead of failing (make eval)")
  args = p.parse_args(argv)
  if args.if_demo and not is_demo(args.data_dir):
    print(f"{args.data_dir} holds no demo build (data_prep.corpus.demo): no built-in benchmarks to make there; "
          f"evaluate with your own (--benchmarks)")
    return 0
  try:
    build(args.data_dir, args.output, args.extra_verses, args.seed, args.workers, args.lexical_words)
  except (BenchmarkBuildError, corpus_lib.CorpusError, kjv.BibleError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
