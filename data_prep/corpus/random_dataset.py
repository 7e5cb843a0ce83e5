"""A small random dataset in the real on-disk format, for tests and benchmarks.

Records have the shapes of real data (3-14 words, 1-3 text ids and 3-9 units per
word, silences between some words) but random content. `listenable=True` adds a
small real SentencePiece tokenizer and a random codebook in the built-in
quantizer's feature space, so that decoding, the vocoder and the samples page
run on it (their output is noise, their plumbing is real).
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_prep import shards
from lst_jax.data import manifest as manifest_lib
from lst_jax.data import records


def random_speech_record(rng: np.random.Generator, id: str, num_units: int, text_vocab: int,
                         words: tuple[int, int] = (3, 14)) -> records.Record:
  w = int(rng.integers(words[0], words[1] + 1))
  text = [rng.integers(0, text_vocab, int(rng.integers(1, 4))).tolist() for _ in range(w)]
  spans, pos = [], int(rng.integers(0, 4))
  for _ in range(w):
    n = int(rng.integers(3, 10))
    spans.append((pos, pos + n))
    pos += n + int(rng.integers(0, 4) * (rng.random() < 0.4))
  total = pos + int(rng.integers(0, 4))
  return records.speech_record(id, text, rng.integers(0, num_units, total), spans)


def random_text_record(rng: np.random.Generator, id: str, text_vocab: int,
                       words: tuple[int, int] = (5, 40)) -> records.Record:
  w = int(rng.integers(words[0], words[1] + 1))
  return records.text_record(id, [rng.integers(0, text_vocab, int(rng.integers(1, 4))).tolist()
                                  for _ in range(w)])


def official_lines(n: int, seed: int = 0, num_units: int = 501, first: int = 0) -> list[str]:
  """Official LST JSONL lines of 3-14 words with silences, built from random word-aligned units
  (ids u<first>, u<first + 1>, ...)."""
  from data_prep.formats.lst_jsonl import format_interleaved
  rng = np.random.default_rng(seed)
  lexicon = ("the of and to in that he shall unto for i his a lord they be is him not them it with all thou "
             "thy was god which my me said but ye their have will thee from as are when this out were upon man "
             "by you israel king son up there hath then people came had house into on her come one we children "
             "s before your also day land men shall against").split()
  lines = []
  for i in range(n):
    rec = random_speech_record(rng, f"u{first + i}", num_units, 10)
    words = [lexicon[int(k)] for k in rng.integers(0, len(lexicon), rec.num_words)]
    lines.append(json.dumps({"file_id": f"u{first + i}", "interleaved": format_interleaved(words, rec.units,
                                                                                  rec.word_spans)}))
  return lines


def make_dataset(directory: str, num_speech: int = 64, num_text: int = 64, num_units: int = 50,
                 text_vocab: int = 100, heldout: int = 16, seed: int = 0,
                 listenable: bool = False) -> manifest_lib.Manifest:
  """Writes a train and a heldout split of random records plus a manifest."""
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  tokenizer = {"path": None, "sha256": None, "vocab_size": text_vocab}   # no tokenizer: the text ids are random
  units = {"quantizer": "synthetic", "num_units": num_units, "frame_rate": 25.0, "codebook_sha256": "synthetic"}
  if listenable:
    tokenizer, units = _tokenizer_and_codebook(directory, rng, text_vocab, num_units)
    text_vocab = tokenizer["vocab_size"]
  splits = {}
  for split, n_speech, n_text in (("train", num_speech, num_text), ("heldout", heldout, heldout)):
    speech = [random_speech_record(rng, f"{split}-s{i}", num_units, text_vocab) for i in range(n_speech)]
    text = [random_text_record(rng, f"{split}-t{i}", text_vocab) for i in range(n_text)]
    splits[split] = {"speech": shards.write_records(directory, split, "speech", speech, 1),
                     "text": shards.write_records(directory, split, "text", text, 1),
                     "num_speech": n_speech, "num_text": n_text,
                     "speech_hours": sum(len(r.units) for r in speech) / 25.0 / 3600}
  manifest_lib.write_manifest(directory, {
      "name": "synthetic",
      "tokenizer": tokenizer, "units": units,
      "splits": splits, "shards": shards.manifest_entries(directory, splits), "build": {"seed": seed}})
  return manifest_lib.load_manifest(directory)


_WORDS = ("in the beginning god created heaven and earth was without form void darkness upon face of deep "
          "spirit moved waters said let there be light saw that it good divided from day night").split()


def _tokenizer_and_codebook(directory: str, rng: np.random.Generator, text_vocab: int,
                            num_units: int) -> tuple[dict, dict]:
  """A SentencePiece model trained on random sentences of a few real words (its real size, at most
  `text_vocab`, becomes the text vocabulary) and a random codebook of the built-in features."""
  from data_prep import codebook_training, tokenizer_training
  from lst_jax.data import codebook as codebook_lib, features, tokenizer as tokenizer_lib
  lines = [" ".join(rng.choice(_WORDS, 12)) for _ in range(200)]
  tok_path = tokenizer_training.save(tokenizer_training.train(lines, text_vocab), directory)
  size = tokenizer_lib.load(tok_path).get_piece_size()
  d = 2 * features.FEATURES["n_mels"]
  book = codebook_lib.Codebook(centroids=rng.normal(size=(num_units, d)).astype(np.float32),
                               mean=np.zeros(d, np.float32), std=np.ones(d, np.float32))
  book_path, _ = codebook_training.save(book, directory)
  tokenizer = {"path": os.path.basename(tok_path), "sha256": manifest_lib.sha256_file(tok_path), "vocab_size": size}
  units = {"quantizer": "synthetic", "num_units": num_units, "frame_rate": 25.0,
           "codebook": os.path.basename(book_path), "codebook_sha256": manifest_lib.sha256_file(book_path),
           "features": json.loads(json.dumps(features.FEATURES))}
  return tokenizer, units
