"""Runs likelihood benchmarks and held-out losses for one set of parameters.

  runner = BenchmarkRunner.from_setup(setup, exp, manifest, mesh, paths)   # once: read, tokenize,
  result = runner(params)                                                   # quantize, pack, jit
  print(format_table(result))

or in one call (runners are cached per setup and benchmark set, so a training loop
calling it every N steps compiles once): `run_benchmarks(params, setup, exp, manifest, mesh)`.

Result (JSON-ready):
  {"benchmarks": {name: {direction: {"n", "acc_sum", "ci_sum", "acc_mean", "ci_mean", "chance",
                                      "truncated_prompts", "candidate_tokens"}}},
   "heldout_unimodal": {"text_bits_per_token", "text_tokens", "text_documents", "speech_bits_per_unit",
                        "speech_bits_per_second", "speech_units", "speech_seconds", "speech_documents",
                        "truncated_tokens"},
   "seconds": ...}
"heldout_unimodal" (lst_jax.train.metrics.UNIMODAL): each held-out document alone and in one modality
(an utterance's units, a text document's text), not the training loop's heldout_interleaved_* losses
over documents drawn and packed as in training; flattened into metrics as heldout_unimodal_<key>.
acc_sum ranks candidates by summed log-likelihood, acc_mean by mean log-likelihood per
candidate token; ties share the credit; intervals are 95% Wilson intervals over items.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Sequence

import numpy as np

from lst_jax import storage
from lst_jax import vocab as vocab_lib
from lst_jax.data import datasets, records
from lst_jax.data.manifest import Manifest
from lst_jax.data.shards import Shards
from lst_jax.eval import benchmark_files as bench_lib
from lst_jax.eval import community, scoring, stats
from lst_jax.eval.benchmark_files import SPEECH, TEXT, Benchmark, BenchmarkError, Segment
from lst_jax.train import metrics

BENCHMARK_DIR = "benchmarks"   # <data dir>/benchmarks/*.jsonl: the default benchmark set


def find_benchmarks(specs: Sequence[str]) -> list[str]:
  """JSONL files and folders expanded (benchmark_files.find_benchmarks); KIND:PATH specs of published
  benchmarks (lst_jax.eval.community) kept as they are."""
  out = []
  for spec in specs:
    published, _ = community.parse_spec(spec)
    out += [spec] if published else bench_lib.find_benchmarks([spec])
  return out


def default_paths(manifest: Manifest) -> list[str]:
  """Benchmark files under <dir>/benchmarks/ of each of the run's data directories."""
  out = []
  for d in manifest.dir.split(","):
    p = storage.join(d.strip(), BENCHMARK_DIR)
    if storage.isdir(p):
      out += bench_lib.find_benchmarks([p])
  return out


def run_provenance(manifest: Manifest, workdir: str | None = None) -> dict:
  """The provenance benchmarks must match: the run's recorded data provenance if there is one,
  else the dataset's manifest."""
  if workdir:
    path = storage.join(workdir, datasets.PROVENANCE_FILE)
    if storage.isfile(path):
      return json.loads(storage.read_text(path))
  return {"dir": manifest.dir, "tokenizer": manifest.raw.get("tokenizer", {}),
          "units": manifest.raw.get("units", {})}


class Converter:
  """Turns segments into shared-vocabulary ids with the run's tokenizer and quantizer (loaded lazily)."""

  def __init__(self, manifest: Manifest, vocab: vocab_lib.Vocab):
    self.manifest, self.vocab = manifest, vocab
    self._sp = None
    self._quantizer = None

  def text(self, seg: Segment, where: str) -> np.ndarray:
    if seg.text_ids is not None:
      ids = np.asarray(seg.text_ids, np.int32)
      if ids.size and ids.max() >= self.vocab.text_size:
        raise BenchmarkError(f"{where}: text id {int(ids.max())} outside the tokenizer's "
                             f"[0, {self.vocab.text_size})")
      return self.vocab.text(ids)
    if self._sp is None:
      try:
        self._sp = self.manifest.load_tokenizer()
      except (FileNotFoundError, OSError, RuntimeError) as e:
        raise BenchmarkError(f"{where}: text needs the dataset's tokenizer ({e})") from None
    from lst_jax.data import tokenizer
    words = tokenizer.encode_words(self._sp, seg.text.split())
    return self.vocab.text([t for w in words for t in w])

  def speech(self, seg: Segment, where: str) -> np.ndarray:
    if seg.units is not None:
      units = np.asarray(seg.units, np.int32)
      if units.size and units.max() >= self.vocab.num_units:
        raise BenchmarkError(f"{where}: unit {int(units.max())} outside the codebook's [0, {self.vocab.num_units})")
      return self.vocab.units(units)
    return self.vocab.units(self.quantize(seg.audio, where))

  def quantize(self, path: str, where: str) -> np.ndarray:
    """Audio file -> unit ids with the dataset's own quantizer (built-in log-mel k-means, or HuBERT)."""
    from lst_jax.data import audio as audio_lib, quantizers
    from lst_jax.data.manifest import DataError
    if self._quantizer is None:
      try:
        self._quantizer = quantizers.for_manifest(self.manifest)
      except (DataError, ValueError, OSError) as e:
        raise BenchmarkError(f"{where}: audio needs the dataset's quantizer, but {e}; give units instead") from None
    try:
      wave = audio_lib.load_audio(path)
    except audio_lib.AudioError as e:
      raise BenchmarkError(f"{where}: {e}") from None
    try:
      return self._quantizer.units(wave, audio_lib.TARGET_RATE)
    except (DataError, ValueError) as e:
      raise BenchmarkError(f"{where}: {e}") from None


@dataclasses.dataclass
class _Task:
  """One benchmark in one direction: which scored sequence is each item's each candidate."""
  benchmark: str
  direction: str
  labels: list[int]
  index: list[list[int]]        # per item: sequence index of each candidate
  truncated_prompts: int
  candidate_tokens: int


class _Sequences:
  """All sequences one evaluation scores, each distinct one once (benchmarks may share items)."""

  def __init__(self):
    self.items: list[scoring.ScoredSequence] = []
    self._index: dict[bytes, int] = {}

  def add(self, seq: scoring.ScoredSequence) -> int:
    key = seq.tokens.tobytes() + b"|" + np.packbits(seq.score).tobytes()
    if key not in self._index:
      self._index[key] = len(self.items)
      self.items.append(seq)
    return self._index[key]


def _task(bench: Benchmark, direction: str, conv: Converter, scorer: scoring.Scorer, seqs: _Sequences) -> _Task:
  x, y = bench_lib.parse_direction(direction)
  index, truncated, cand_tokens = [], 0, 0
  convert = {TEXT: conv.text, SPEECH: conv.speech}
  for item in bench.items:
    where = f"{bench.path}: item {item.id!r}"
    prompt = convert[x](item.prompt, f"{where} prompt")
    row, cut = [], False
    for c, cand in enumerate(item.candidates):
      ids = convert[y](cand, f"{where} candidates[{c}]")
      try:
        seq = scoring.continuation(scorer.vocab, prompt, x, ids, y, scorer.max_tokens, scorer.max_patches,
                                   scorer.patch_size)
      except scoring.TooLong as e:
        raise BenchmarkError(f"{where} candidates[{c}] ({direction}): {e}; evaluate with larger rows "
                             f"(--max_tokens / --max_patches)") from None
      cut |= seq.truncated > 0
      cand_tokens += len(ids)
      row.append(seqs.add(seq))
    truncated += cut
    index.append(row)
  return _Task(benchmark=bench.name, direction=direction, labels=[it.label for it in bench.items], index=index,
               truncated_prompts=truncated, candidate_tokens=cand_tokens)


def _heldout_sequences(manifest: Manifest, vocab: vocab_lib.Vocab, scorer: scoring.Scorer):
  """Held-out documents on their own: BOS <s> units EOS scored on units, BOS <t> text EOS on text."""
  from lst_jax.data import interleave
  if "heldout" not in manifest.splits:
    return None
  split = manifest.splits["heldout"]
  out = {"speech": [], "text": []}
  for paths in (split.speech, split.text):
    if not paths:
      continue
    src = Shards(paths, manifest.shard_records, manifest.limits)
    for i in range(len(src)):
      rec = src[i]
      seq = interleave.interleave(rec, vocab, np.random.default_rng(0), speech_only=rec.kind == records.SPEECH)
      mask = vocab.is_speech(seq.tokens) if rec.kind == records.SPEECH else vocab.is_text(seq.tokens)
      out["speech" if rec.kind == records.SPEECH else "text"].append(
          scoring.whole(vocab, seq.tokens, mask, scorer.max_tokens, scorer.max_patches, scorer.patch_size))
  return out


class BenchmarkRunner:
  """Prepared once (files read, provenance checked, text tokenized, audio quantized, rows packed,
  the forward jitted); call with parameters to evaluate them.

  Options: `directions` (default: all each benchmark supports), `max_items` (the first items
  of each benchmark only), `heldout` (also the held-out bits), and the row shape / batch size."""

  def __init__(self, graphdef, param_shardings, vocab: vocab_lib.Vocab, manifest: Manifest, mesh, *,
               model_kind: str, max_tokens: int, max_patches: int, patch_size: int, batch_size: int,
               paths: Sequence[str] | None = None, provenance: dict | None = None, heldout: bool = True,
               directions: Sequence[str] | None = None, max_items: int | None = None):
    if model_kind != "lst":   # the baseline has no patches: rows are bounded by tokens only
      max_patches = max_tokens
    self.scorer = scoring.Scorer(graphdef, param_shardings, vocab, mesh, max_tokens=max_tokens,
                                 max_patches=max_patches, patch_size=patch_size, batch_size=batch_size)
    self.unit_rate = manifest.unit_rate
    self.paths = list(default_paths(manifest) if paths is None else find_benchmarks(paths))
    provenance = provenance or run_provenance(manifest)
    conv = Converter(manifest, vocab)
    seqs = _Sequences()
    self.tasks: list[_Task] = []
    self.benchmarks: list[Benchmark] = []
    for path in self.paths:
      published, where = community.parse_spec(path)
      bench = community.load(published, where) if published else bench_lib.load_benchmark(path)
      if max_items is not None:   # e.g. a quicker evaluation during training: the first items only
        bench = dataclasses.replace(bench, items=bench.items[:max_items])
      same = [b.path for b in self.benchmarks if b.name == bench.name]
      if same:
        raise BenchmarkError(f"{path} and {same[0]} are both named {bench.name!r}; rename one (header.name)")
      bench_lib.check_provenance(bench, provenance)
      self.benchmarks.append(bench)
      for d in bench.directions():
        if directions is None or d in directions:
          self.tasks.append(_task(bench, d, conv, self.scorer, seqs))
    self.heldout = None   # {"speech" / "text": (sequence indices, tokens cut to fit)}
    if heldout:
      docs = _heldout_sequences(manifest, vocab, self.scorer)
      if docs is not None:
        self.heldout = {k: ([seqs.add(s) for s in v], sum(s.truncated for s in v)) for k, v in docs.items()}
    self.num_sequences = len(seqs.items)
    self.packed = self.scorer.pack(seqs.items)   # every sequence once, in as few rows as fit

  @classmethod
  def from_setup(cls, setup, exp, manifest: Manifest, mesh, paths: Sequence[str] | None = None,
                 workdir: str | None = None, **kwargs) -> "BenchmarkRunner":
    """From lst_jax.train.step.Setup and a parsed experiment (lst_jax.config.Experiment)."""
    from lst_jax.data import pipeline
    d = exp.data
    kwargs = {"max_tokens": d.max_tokens, "max_patches": d.max_patches, "batch_size": d.batch_size, **kwargs}
    return cls(setup.graphdef, setup.shardings.params, pipeline.vocab_of(manifest), manifest, mesh,
               model_kind=exp.model.kind, patch_size=d.patching.patch_size, paths=paths,
               provenance=run_provenance(manifest, workdir), **kwargs)

  def __call__(self, params, with_scores: bool = False) -> dict:
    start = time.time()
    out: dict = {"benchmarks": {}, "paths": self.paths, "sequences": self.num_sequences,
                 "rows": len(self.packed.rows)}
    scores_out = []
    sums, counts = self.scorer.score_packed(params, self.packed, self.num_sequences)
    means = sums / np.maximum(counts, 1)
    for task in self.tasks:
      s_sum = [[sums[i] for i in row] for row in task.index]
      s_mean = [[means[i] for i in row] for row in task.index]
      n = len(task.labels)
      acc_sum, credit_sum = stats.accuracy(s_sum, task.labels)
      acc_mean, credit_mean = stats.accuracy(s_mean, task.labels)
      bench = next(b for b in self.benchmarks if b.name == task.benchmark)
      out["benchmarks"].setdefault(task.benchmark, {})[task.direction] = r = {
          "n": n, "acc_sum": acc_sum, "ci_sum": list(stats.wilson_interval(acc_sum, n)),
          "acc_mean": acc_mean, "ci_mean": list(stats.wilson_interval(acc_mean, n)),
          "chance": stats.chance([len(r) for r in task.index]),
          "truncated_prompts": task.truncated_prompts, "candidate_tokens": task.candidate_tokens}
      if "protocol" in bench.header:   # a published benchmark: its own score beside ours
        r.update(community.protocol_result(bench.header["protocol"], bench.items, credit_sum, credit_mean))
      if with_scores:
        for item, ss, sm, cs, cm in zip(bench.items, s_sum, s_mean, credit_sum, credit_mean):
          scores_out.append({"benchmark": task.benchmark, "direction": task.direction, "id": item.id,
                             "label": item.label, "sum": [float(v) for v in ss], "mean": [float(v) for v in sm],
                             "credit_sum": float(cs), "credit_mean": float(cm)})
    if self.heldout is not None:
      out[metrics.UNIMODAL] = self._heldout(sums, counts)
    out["seconds"] = round(time.time() - start, 2)
    if with_scores:
      out["scores"] = scores_out
    return out

  def _heldout(self, sums: np.ndarray, counts: np.ndarray) -> dict:
    res = {}
    truncated = 0
    for modality, (index, cut) in self.heldout.items():
      n = len(index)
      total, count = -float(sums[index].sum()), int(counts[index].sum())
      truncated += cut
      nats = total / max(count, 1)
      if modality == "text":
        res.update(text_bits_per_token=metrics.bits(nats), text_tokens=count, text_documents=n)
      else:
        res.update(speech_bits_per_unit=metrics.bits(nats),
                   speech_bits_per_second=metrics.speech_bits_per_second(nats, self.unit_rate),
                   speech_units=count, speech_seconds=count / self.unit_rate, speech_documents=n)
    res["truncated_tokens"] = truncated
    return res


_RUNNERS: dict = {}


def run_benchmarks(params, model_setup, exp, manifest: Manifest, mesh, paths: Sequence[str] | None = None,
                   workdir: str | None = None, **kwargs) -> dict:
  """Evaluates `params` on the benchmarks (default: <data dir>/benchmarks/*.jsonl) and the held-out
  losses; see the module docstring for the result. `model_setup` is lst_jax.train.step.Setup and
  `exp` the parsed experiment. The prepared runner is cached per (setup, mesh, paths, options),
  so calling this every N training steps reads the files and compiles once."""
  key = (id(model_setup), id(mesh), id(manifest), tuple(paths) if paths is not None else None, workdir,
         json.dumps(kwargs, sort_keys=True, default=str))
  hit = _RUNNERS.get(key)
  if hit is None or hit[0] is not model_setup:
    hit = (model_setup, BenchmarkRunner.from_setup(model_setup, exp, manifest, mesh, paths, workdir, **kwargs))
    _RUNNERS[key] = hit
  return hit[1](params)


def benchmark_callback(params, model_setup, exp, manifest: Manifest, mesh, workdir: str) -> tuple[dict, str]:
  """What the training loop runs every config.train.benchmark_every steps: (flat metrics, table)."""
  options = {"max_items": exp.train.benchmark_items} if exp.train.benchmark_items else {}
  result = run_benchmarks(params, model_setup, exp, manifest, mesh, workdir=workdir, **options)
  return flat_metrics(result), format_table(result)


def flat_metrics(result: dict) -> dict:
  """One float per number, for a metrics log: {"bench/cloze2/S->S/acc_sum": ..., "heldout_unimodal_...": ...}."""
  out = {}
  for name, dirs in result.get("benchmarks", {}).items():
    for d, r in dirs.items():
      for k in ("acc_sum", "acc_mean", "score"):
        if k in r:
          out[f"bench/{name}/{d}/{k}"] = float(r[k])
      for sub, v in r.get("subsets", {}).items():
        out[f"bench/{name}/{d}/score_{sub}"] = float(v["score"])
  for k, v in result.get(metrics.UNIMODAL, {}).items():
    out[metrics.unimodal(k)] = float(v)
  return out


def format_table(result: dict) -> str:
  """benchmark x direction: item count, accuracy by summed and by mean log-likelihood with 95% CIs."""
  lines = [f"{'benchmark':<14} {'dir':<5} {'n':>5}  {'acc (sum logp) [95% CI]':<25} "
           f"{'acc (mean logp) [95% CI]':<25} {'chance':>6}"]
  for name, dirs in result.get("benchmarks", {}).items():
    for d in bench_lib.DIRECTIONS:
      if d not in dirs:
        continue
      r = dirs[d]
      cell = lambda a, ci: f"{a:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
      note = f"  ({r['truncated_prompts']} prompts cut to fit)" if r["truncated_prompts"] else ""
      lines.append(f"{name:<14} {d:<5} {r['n']:>5}  {cell(r['acc_sum'], r['ci_sum']):<25} "
                   f"{cell(r['acc_mean'], r['ci_mean']):<25} {r['chance']:>6.3f}{note}")
  if len(lines) == 1:
    lines.append("(no benchmarks)")
  for name, dirs in result.get("benchmarks", {}).items():   # published benchmarks: their own protocol
    for d, r in dirs.items():
      if "protocol" in r:
        subs = "".join(f"; {k} {v['score']:.3f} ({v['n']})" for k, v in r.get("subsets", {}).items())
        lines.append(f"{name} {d}: {r['score']:.3f} over {r['score_n']} "
                     f"{'pairs' if r['protocol']['pooling'] == 'pair over voices' else 'items'}{subs}  "
                     f"[{community.Protocol(**r['protocol']).describe()}]")
  h = result.get(metrics.UNIMODAL)
  if h:
    parts = []
    if "text_bits_per_token" in h:
      parts.append(f"text {h['text_bits_per_token']:.3f} bits/token ({h['text_tokens']} tokens)")
    if "speech_bits_per_second" in h:
      parts.append(f"speech {h['speech_bits_per_second']:.1f} bits/s = {h['speech_bits_per_unit']:.3f} "
                   f"bits/unit ({h['speech_seconds']:.0f} s)")
    if h.get("truncated_tokens"):
      parts.append(f"{h['truncated_tokens']} tokens cut to fit rows")
    lines.append(f"held-out, each document alone ({metrics.UNIMODAL}): " + "; ".join(parts))
  return "\n".join(lines)
