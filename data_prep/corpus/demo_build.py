"""The demo build pipeline behind `python -m data_prep.corpus.demo` (which decides whether to run it).

Side effects live here (processes, files, progress lines); the steps it calls
are pure functions in their own modules. The manifest is written last, after
every shard is in place, and an older build's manifest is removed first, so
the directory never has a manifest that describes files that are not there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import multiprocessing
import os
import time
from typing import Callable, Sequence

import numpy as np

from data_prep import codebook_training, frame_spans, shards, tokenizer_training
from data_prep.corpus import kjv, render, tts
from data_prep.corpus import selection as corpus_lib
from lst_jax.data import codebook as codebook_lib
from lst_jax.data import heldout_audio
from lst_jax.data import records as records_lib
from lst_jax.data import tokenizer
from lst_jax.data import vocoder
from lst_jax.data.features import FEATURES
from lst_jax.data.manifest import MANIFEST, sha256_file, write_manifest

NUM_SHARDS = {"train": 2, "heldout": 1}


def build(output: str, settings: dict, workers: int = 2, log: Callable[[str], None] = print) -> str:
  """Builds the demo dataset described by `settings` into `output`; returns a one-line summary."""
  start = time.time()
  os.makedirs(output, exist_ok=True)
  clear_previous(output)
  corpus = corpus_lib.select(kjv.read_verses(), settings["num_train_verses"],
                             settings["num_heldout_verses"], settings["num_text_docs"], settings["seed"])
  verses = {"train": corpus.train_speech, "heldout": corpus.heldout_speech}
  docs = {"train": corpus.train_docs, "heldout": corpus.heldout_docs}
  voices = {split: [tts.Voice(**v) for v in settings[f"{split}_voices"]] for split in NUM_SHARDS}
  per_verse = {"train": settings["voices_per_verse"], "heldout": len(voices["heldout"])}
  jobs = {split: speech_jobs(verses[split], voices[split], per_verse[split]) for split in NUM_SHARDS}
  # Waveforms come back only for the vocoder bank's training utterances and the held-out ones.
  bank_jobs = min(settings.get("vocoder_bank_utterances", 0), len(jobs["train"]))
  jobs["train"] = [dataclasses.replace(j, keep_wave=i < bank_jobs) for i, j in enumerate(jobs["train"])]
  jobs["heldout"] = [dataclasses.replace(j, keep_wave=True) for j in jobs["heldout"]]
  all_jobs = jobs["train"] + jobs["heldout"]
  log(f"synthesizing {len(all_jobs)} utterances ({len(jobs['train'])} train, "
      f"{len(jobs['heldout'])} held-out) in {max(workers, 1)} process(es)")
  with _pool(workers) as pool:
    results = pool.imap(render.render, all_jobs, chunksize=4)
    # The tokenizer trains here while the workers synthesize.
    model = tokenizer_training.train(corpus.tokenizer_lines(), settings["vocab_size"])
    tokenizer_path = tokenizer_training.save(model, output)
    sp = tokenizer.load(tokenizer_path)
    rendered = _collect(results, len(all_jobs), start, log)
  rendered = {"train": rendered[:len(jobs["train"])], "heldout": rendered[len(jobs["train"]):]}

  train_features = [r.features for r in rendered["train"]]
  log(f"fitting {settings['num_units']} k-means units on "
      f"{sum(len(f) for f in train_features)} training frames ({time.time() - start:.1f} s)")
  codebook = codebook_training.fit(train_features, settings["num_units"], seed=settings["seed"])
  codebook_path, stats_path = codebook_training.save(codebook, output)

  log(f"quantizing and writing shards ({time.time() - start:.1f} s)")
  vocab = sp.get_piece_size()
  splits, bank_entry = {}, {}
  for split in NUM_SHARDS:
    units = quantize_all([r.features for r in rendered[split]], codebook)
    if split == "train" and bank_jobs:
      bank_path = write_bank(output, rendered["train"][:bank_jobs], units[:bank_jobs], codebook)
      bank_entry = {vocoder.BANK_KEY: vocoder.BANK, f"{vocoder.BANK_KEY}_sha256": sha256_file(bank_path)}
    speech = [speech_record(j, r, u, sp).validate(codebook.num_units, vocab)
              for j, r, u in zip(jobs[split], rendered[split], units)]
    text = [records_lib.text_record(f"text/{d.id}", tokenizer.encode_words(sp, d.words))
            .validate(codebook.num_units, vocab) for d in docs[split]]
    splits[split] = {
        "speech": shards.write_records(output, split, "speech", speech, NUM_SHARDS[split]),
        "text": shards.write_records(output, split, "text", text, NUM_SHARDS[split]),
        **split_stats(speech, text, rendered[split]),
        "voices": [v.name for v in voices[split]],
    }
  for job, r in zip(jobs["heldout"], rendered["heldout"]):
    heldout_audio.write(output, job.id, r.wave, FEATURES["sample_rate"])
  splits["heldout"]["audio"] = "/".join(heldout_audio.FOLDER)
  log(f"wrote {f'the vocoder bank ({bank_jobs} training utterances) and ' if bank_jobs else ''}"
      f"{len(jobs['heldout'])} held-out utterances' audio ({time.time() - start:.1f} s)")
  write_manifest(output, {
      "name": "demo",
      "source": {"text": "King James Bible (Debian bible-kjv)",
                 "speech": "espeak-ng via espeakng-loader, word times from SSML marks"},
      "tokenizer": {"path": tokenizer.MODEL, "sha256": sha256_file(tokenizer_path), "vocab_size": vocab},
      "units": {"quantizer": "logmel-kmeans", "num_units": codebook.num_units,
                "frame_rate": FEATURES["frame_rate"], "fit_split": "train",
                "codebook": codebook_lib.CODEBOOK, "codebook_sha256": sha256_file(codebook_path),
                "feature_stats": codebook_lib.FEATURE_STATS, "feature_stats_sha256": sha256_file(stats_path),
                "features": FEATURES, **bank_entry},
      "splits": splits,
      "shards": shards.manifest_entries(output, splits),
      "build": settings,
  })
  train = splits["train"]
  return (f"{train['num_speech']} train + {splits['heldout']['num_speech']} held-out utterances "
          f"({train['speech_hours'] + splits['heldout']['speech_hours']:.2f} h), "
          f"{train['num_text']} + {splits['heldout']['num_text']} text docs, "
          f"{codebook.num_units} units, vocab {vocab}, built in {time.time() - start:.1f} s")


def speech_jobs(verses: Sequence[kjv.Verse], voices: Sequence[tts.Voice], per_verse: int) -> list[render.Job]:
  """Verse i is spoken by `per_verse` of the voices, starting at voice i (all of them when
  per_verse = len(voices)), so every voice speaks a share of the verses."""
  per_verse = min(per_verse, len(voices))
  first = (lambda i: i) if per_verse < len(voices) else (lambda i: 0)
  return [render.Job(id=f"speech/{v.ref}/{voice.name}", words=v.words, spoken=v.spoken, voice=voice)
          for i, v in enumerate(verses)
          for voice in (voices[(first(i) + j) % len(voices)] for j in range(per_verse))]


def quantize_all(features: Sequence[np.ndarray], codebook: codebook_lib.Codebook) -> list[np.ndarray]:
  """Units of each utterance, quantized in one batch (many small calls are much slower)."""
  if not features:
    return []
  units = codebook_lib.quantize(np.concatenate(features), codebook)
  return np.split(units, np.cumsum([len(f) for f in features])[:-1])


def write_bank(output: str, rendered: Sequence[render.Rendered], units: Sequence[np.ndarray],
               codebook: codebook_lib.Codebook) -> str:
  """The vocoder bank (lst_jax.data.vocoder) of these training utterances; its path."""
  bank = vocoder.make_bank([r.wave for r in rendered], units, [r.id for r in rendered], codebook,
                           features=[r.features for r in rendered])
  return vocoder.save_bank(bank, output)


def speech_record(job: render.Job, rendered: render.Rendered, units: np.ndarray,
                  sp) -> records_lib.Record:
  spans = frame_spans.unit_spans(rendered.word_times, len(units), FEATURES["frame_rate"])
  return records_lib.speech_record(job.id, tokenizer.encode_words(sp, job.words), units, spans,
                                   FEATURES["frame_rate"])


def split_stats(speech: Sequence[records_lib.Record], text: Sequence[records_lib.Record],
                rendered: Sequence[render.Rendered]) -> dict:
  """Counts for the manifest (and the report): utterances, hours, units, words, tokens."""
  units = sum(len(r.units) for r in speech)
  in_words = sum(int(np.sum(r.word_spans[:, 1] - r.word_spans[:, 0])) for r in speech)
  return {
      "num_speech": len(speech), "num_text": len(text),
      "speech_hours": round(sum(r.duration_s for r in rendered) / 3600.0, 4),
      "speech_units": units, "speech_words": sum(r.num_words for r in speech),
      "speech_silence_fraction": round(1.0 - in_words / max(units, 1), 4),
      "speech_text_tokens": sum(len(r.text_ids) for r in speech),
      "text_words": sum(r.num_words for r in text), "text_tokens": sum(len(r.text_ids) for r in text),
  }


def clear_previous(output: str) -> None:
  """Removes an older build's manifest first (so it never describes new files), then its shards,
  vocoder bank and held-out audio."""
  with contextlib.suppress(FileNotFoundError):
    os.remove(os.path.join(output, MANIFEST))
  old = [os.path.join(output, vocoder.BANK)]
  old += glob.glob(os.path.join(heldout_audio.folder(output), "*" + heldout_audio.SUFFIX + "*"))
  for split in NUM_SHARDS:
    old += glob.glob(os.path.join(output, split, "*" + shards.SUFFIX + "*"))
  for path in old:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


class _InlinePool:
  """Stands in for a Pool when --workers=0 (debugging, profiling)."""

  def imap(self, fn, items, chunksize=1):
    del chunksize
    return map(fn, items)


@contextlib.contextmanager
def _pool(workers: int):
  if workers <= 0:
    yield _InlinePool()
    return
  # spawn, not fork: the parent may have imported multithreaded libraries (jax under pytest),
  # and each worker must initialise its own espeak-ng.
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    yield pool


def _collect(results, total: int, start: float, log) -> list[render.Rendered]:
  out = []
  step = max(1, total // 10)
  for r in results:
    out.append(r)
    if len(out) % step == 0 or len(out) == total:
      log(f"synthesized {len(out)}/{total} utterances ({time.time() - start:.1f} s)")
  return out
