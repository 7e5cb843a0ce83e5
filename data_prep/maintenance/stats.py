"""What a prepared dataset holds, per split: python -m data_prep.maintenance.stats DIR

Counts (utterances, hours of speech, units, words, text tokens, text documents)
and the patch-length distribution of the speech, with each utterance taken as
one speech span (lst_jax.data.interleave, speech_only), for three strategies
(lst_jax.data.patching; paper.md section 3), named as patching.describe names them:
  static p=4                 chunks of p units
  aligned, silence separate  one patch per word and one per silence
  aligned, silence merged    each silence joins the word before it (leading silence the first word)
Aligned lengths are the words' and silences' own lengths unless --max_patch_len
splits longer ones, as training does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Iterable, Iterator

import numpy as np

from lst_jax import config as config_lib
from lst_jax import vocab as vocab_lib
from lst_jax.data import interleave, patching
from lst_jax.data import records as records_lib
from lst_jax.data.manifest import DataError, load_manifest

HIST_BINS = 16  # lengths 1..16 each, then one bin for longer


def read_records(paths: Iterable[str]) -> Iterator[records_lib.Record]:
  """Every record of the shards; DataError naming the shard (and record) that is missing or damaged
  (`python -m data_prep.maintenance.verify DIR` checks them all)."""
  from array_record.python.array_record_module import ArrayRecordReader
  for path in paths:
    try:
      reader = ArrayRecordReader(path)
      try:
        payloads = reader.read_all()
      finally:
        reader.close()
    except Exception as e:  # noqa: BLE001 - array_record fails in many ways on a damaged file
      raise DataError(f"{path}: damaged or unreadable shard: {first_line(e)}; "
                      f"run python -m data_prep.maintenance.verify on the dataset") from None
    for i, data in enumerate(payloads):
      try:
        rec = records_lib.decode(data)
      except Exception as e:  # noqa: BLE001 - as above
        raise DataError(f"{path}: record {i} does not decode: {first_line(e)}; "
                        f"run python -m data_prep.maintenance.verify on the dataset") from None
      yield rec


def first_line(e: Exception) -> str:
  return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def strategies(patch_size: int = 4, max_patch_len: int = 0) -> tuple[config_lib.PatchingConfig, ...]:
  """The patchings compared: static, and aligned with silences separate or merged (max_patch_len 0:
  aligned segments never split)."""
  cap = max_patch_len if max_patch_len > 0 else 2 ** 31 - 1
  aligned = lambda silence: config_lib.PatchingConfig(strategy=config_lib.ALIGNED, max_patch_len=cap, silence=silence)
  return (config_lib.PatchingConfig(strategy=config_lib.STATIC, patch_size=patch_size),
          aligned(config_lib.SILENCE_SEPARATE), aligned(config_lib.SILENCE_MERGED))


def patch_lengths(record: records_lib.Record, vocab: vocab_lib.Vocab, cfg: config_lib.PatchingConfig) -> np.ndarray:
  """int32 [patches]: lengths of the patches of a speech record's units under a static or aligned `cfg`."""
  if len(record.units) == 0:
    return np.zeros(0, np.int32)
  seq = interleave.interleave(record, vocab, np.random.default_rng(0), speech_only=True)
  starts, _ = patching.document_patch_starts(seq, cfg, 0.0, np.random.default_rng(0))
  return patching.patch_lengths(starts[seq.is_speech])


def silence_lengths(record: records_lib.Record) -> np.ndarray:
  """Lengths of the stretches of units outside every word (leading, between, trailing)."""
  edges = np.concatenate([[0], record.word_spans.reshape(-1), [len(record.units)]]).reshape(-1, 2)
  gaps = edges[:, 1] - edges[:, 0]
  return gaps[gaps > 0]


def split_stats(speech: Iterable[records_lib.Record], text: Iterable[records_lib.Record],
                vocab: vocab_lib.Vocab, patch_size: int = 4, max_patch_len: int = 0) -> dict:
  """Counts and patch-length histograms (np.bincount over lengths) of one split."""
  s = {"utterances": 0, "seconds": 0.0, "units": 0, "words": 0, "silence_units": 0, "transcript_tokens": 0,
       "documents": 0, "document_words": 0, "document_tokens": 0,
       "lengths": {k: np.zeros(1, np.int64) for k in _names(patch_size, max_patch_len) + ("words", "silences")}}
  for r in speech:
    s["utterances"] += 1
    s["seconds"] += len(r.units) / r.unit_rate
    s["units"] += len(r.units)
    s["words"] += r.num_words
    s["transcript_tokens"] += len(r.text_ids)
    sil = silence_lengths(r)
    s["silence_units"] += int(sil.sum())
    add = {patching.describe(c): patch_lengths(r, vocab, c) for c in strategies(patch_size, max_patch_len)}
    add["words"] = r.word_spans[:, 1] - r.word_spans[:, 0]
    add["silences"] = sil
    for k, v in add.items():
      s["lengths"][k] = _add_counts(s["lengths"][k], v)
  for r in text:
    s["documents"] += 1
    s["document_words"] += r.num_words
    s["document_tokens"] += len(r.text_ids)
  return s


def _add_counts(counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  new = np.bincount(np.asarray(lengths, np.int64), minlength=len(counts))
  new[:len(counts)] += counts
  return new


def summarize(counts: np.ndarray) -> dict:
  """Mean and percentiles of a length histogram."""
  total = int(counts.sum())
  if total == 0:
    return {"count": 0}
  lengths = np.arange(len(counts))
  cdf = np.cumsum(counts) / total
  pct = {f"p{q}": int(lengths[np.searchsorted(cdf, q / 100)]) for q in (10, 50, 90, 99)}
  return {"count": total, "mean": float((counts * lengths).sum() / total), **pct,
          "max": int(lengths[counts > 0][-1])}


def render(name: str, s: dict, patch_size: int, max_patch_len: int) -> str:
  hours = s["seconds"] / 3600
  lines = [f"== {name} ==",
           f"  utterances       {s['utterances']:>10}   {hours:.3f} h of speech",
           f"  units            {s['units']:>10}   {s['silence_units']} silence "
           f"({100 * s['silence_units'] / max(s['units'], 1):.1f}%)",
           f"  words            {s['words']:>10}   in utterances",
           f"  text tokens      {s['transcript_tokens'] + s['document_tokens']:>10}   "
           f"{s['transcript_tokens']} in transcripts, {s['document_tokens']} in documents",
           f"  text documents   {s['documents']:>10}   {s['document_words']} words"]
  if not s["utterances"]:
    return "\n".join(lines)
  cap = f", aligned ones longer than {max_patch_len} split" if max_patch_len else ""
  lines.append(f"  patch lengths in units (each utterance one speech span{cap}):")
  names = _names(patch_size, max_patch_len)
  lines.append(f"    {'strategy':<28}{'patches':>9}{'mean':>7}{'p10':>5}{'p50':>5}{'p90':>5}{'p99':>5}{'max':>5}")
  for k in names:
    m = summarize(s["lengths"][k])
    lines.append(f"    {k:<28}{m['count']:>9}{m['mean']:>7.2f}"
                 + "".join(f"{m[q]:>5}" for q in ("p10", "p50", "p90", "p99", "max")))
  w, sil = summarize(s["lengths"]["words"]), summarize(s["lengths"]["silences"])
  lines.append(f"    (words: mean {w.get('mean', 0):.2f} units; silences: {sil['count']}, mean "
               f"{sil.get('mean', 0):.2f} units)")
  lines.append("  histogram (% of patches):")
  lines.append(f"    {'len':>5}" + "".join(f"{k:>28}" for k in names))
  binned = {k: _bins(s["lengths"][k]) for k in names}
  for b in range(HIST_BINS + 1):
    label = str(b + 1) if b < HIST_BINS else f">{HIST_BINS}"
    cells = "".join(f"{_bar(binned[k][b], binned[k].max()):>28}" for k in names)
    lines.append(f"    {label:>5}{cells}")
  return "\n".join(lines)


def _bins(counts: np.ndarray) -> np.ndarray:
  """Fractions for lengths 1..HIST_BINS and longer."""
  c = np.zeros(HIST_BINS + 1)
  upto = min(len(counts), HIST_BINS + 1)
  c[:upto - 1] = counts[1:upto]
  c[HIST_BINS] = counts[HIST_BINS + 1:].sum()
  return c / max(counts.sum(), 1)


def _names(patch_size: int, max_patch_len: int) -> tuple[str, ...]:
  return tuple(patching.describe(c) for c in strategies(patch_size, max_patch_len))


def _bar(fraction: float, largest: float, width: int = 12) -> str:
  """A bar scaled to the column's largest bin, then the percentage."""
  return f"{'#' * int(round(width * fraction / max(largest, 1e-12))):<{width}} {100 * fraction:5.1f}"


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m data_prep.maintenance.stats", description=__doc__.split("\n")[0])
  p.add_argument("dir", help="dataset directory (with manifest.json)")
  p.add_argument("--patch_size", type=int, default=4, help="static patch size p")
  p.add_argument("--max_patch_len", type=int, default=0,
                 help="split aligned segments longer than this, as training does (0: never)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    m = load_manifest(args.dir)
    out = [f"{args.dir}: tokenizer {m.text_vocab_size} pieces, {m.num_units} units at {m.unit_rate:g} Hz "
           f"({m.units.get('source') or m.units.get('quantizer')})"]
    vocab = vocab_lib.Vocab(text_size=m.text_vocab_size, num_units=m.num_units)
    for name, split in sorted(m.splits.items()):
      s = split_stats(read_records(split.speech), read_records(split.text), vocab, args.patch_size,
                      args.max_patch_len)
      out.append(render(name, s, args.patch_size, args.max_patch_len))
  except (DataError, records_lib.RecordError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n".join(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
