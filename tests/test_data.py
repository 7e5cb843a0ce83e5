"""Interleaving, patching and packing: the invariants the model relies on."""

import chex
import numpy as np
import pytest

from lst_jax import vocab as vocab_lib
from lst_jax.config import DataConfig
from data_prep.corpus import random_dataset
from lst_jax.data import interleave, packing, patching, pipeline, records

VOCAB = vocab_lib.Vocab(text_size=60, num_units=40)


def _speech(rng, n=20):
  return [random_dataset.random_speech_record(rng, f"u{i}", 40, 60) for i in range(n)]


def test_vocab_layout_is_disjoint():
  v = VOCAB
  assert v.text(np.array([0, 59])).tolist() == [3, 62]
  assert v.text_mode == 63 and v.speech_mode == 64 and v.unit_offset == 65 and v.size == 105
  ids = np.arange(v.size)
  assert not np.any(v.is_text(ids) & v.is_speech(ids))
  assert v.is_text(ids).sum() == 60 and v.is_speech(ids).sum() == 40


@pytest.mark.parametrize("starts_with", ["text", "speech"])
def test_interleave_keeps_every_word_unit_and_silence(starts_with):
  """Each word appears once, as text or as speech; speech spans cover all units of their words
  and the silences between them; nothing of the utterance is dropped at its start."""
  rng = np.random.default_rng(1)
  for rec in _speech(rng, 30):
    for seed in range(40):
      draw = np.random.default_rng(seed)
      spans = interleave.draw_spans(rec.num_words, np.random.default_rng(seed), DataConfig().interleave)
      if spans[0][0] != starts_with:
        continue
      seq = interleave.interleave(rec, VOCAB, draw)
      assert seq.tokens[0] == vocab_lib.BOS and seq.tokens[-1] == vocab_lib.EOS
      covered = np.zeros(rec.num_words, bool)
      expected_text = []
      for modality, a, b in spans:
        assert not covered[a:b].any()
        covered[a:b] = True
        if modality == "text":
          expected_text += VOCAB.text(rec.text_ids[rec.word_offsets[a]:rec.word_offsets[b]]).tolist()
      assert covered.all()
      assert seq.tokens[VOCAB.is_text(seq.tokens)].tolist() == expected_text
      _check_speech_spans(seq, rec, spans, VOCAB)
      # Consecutive speech spans tile the utterance's units: every unit of words in
      # speech spans, plus the silence halves at span boundaries, appears once.
      modes = seq.tokens[(seq.tokens == VOCAB.text_mode) | (seq.tokens == VOCAB.speech_mode)]
      assert len(modes) == len(spans)
      assert [m == VOCAB.speech_mode for m in modes] == [s[0] == "speech" for s in spans]


def _check_speech_spans(seq, rec, spans, vocab):
  """Each speech span of words [a, b) is one run of the record's units that holds all of its
  words' units, reaches into the silences around it but no further than the neighbouring
  words (the utterance's first and last units included at its ends), and nothing else is
  speech. Where exactly a silence is split: test_interleave_splits_boundary_silence_in_half."""
  speech = [(a, b) for m, a, b in spans if m == "speech"]
  assert len(seq.speech_ranges) == len(speech)
  word_spans, total = rec.word_spans, 0
  for (a, b), (offset, lo, hi, first) in zip(speech, seq.speech_ranges):
    assert first == a
    assert lo == 0 if a == 0 else word_spans[a - 1, 1] <= lo <= word_spans[a, 0]
    assert hi == len(rec.units) if b == rec.num_words else word_spans[b - 1, 1] <= hi <= word_spans[b, 0]
    assert seq.tokens[offset - 1] == vocab.speech_mode
    assert seq.tokens[offset:offset + hi - lo].tolist() == (rec.units[lo:hi] + vocab.unit_offset).tolist()
    total += hi - lo
  assert vocab.is_speech(seq.tokens).sum() == seq.is_speech.sum() == total


@pytest.mark.parametrize("spans, expected, speech_ranges", [
    # text "w0" | speech w1..w3: from the middle of silence [3, 5) to that of [15, 16) | text "w4"
    ([("text", 0, 1), ("speech", 1, 4), ("text", 4, 5)],
     [1, 63, 13, 64, *range(65 + 4, 65 + 15), 63, 18, 19, 2], ((4, 4, 15, 1),)),
    # speech w0, w1 with the leading silence | text "w2" | speech w3, w4 with the trailing silence
    ([("speech", 0, 2), ("text", 2, 3), ("speech", 3, 5)],
     [1, 64, *range(65, 65 + 8), 63, 16, 64, *range(65 + 11, 65 + 20), 2], ((2, 0, 8, 0), (13, 11, 20, 3))),
])
def test_interleave_splits_boundary_silence_in_half(monkeypatch, spans, expected, speech_ranges):
  """A hand-made utterance: 20 units with ids 0..19, words at units [1,3) [5,8) [8,10)
  [13,15) [16,18) (silence around and between them), text ids [10] [11,12] [13] [14]
  [15,16]; with the spans given, the tokens are written out by hand (BOS 1, EOS 2, text
  id + 3, text mode 63, speech mode 64, unit + 65)."""
  rec = records.speech_record("u", [[10], [11, 12], [13], [14], [15, 16]], np.arange(20),
                              np.array([[1, 3], [5, 8], [8, 10], [13, 15], [16, 18]])).validate(40, 60)
  monkeypatch.setattr(interleave, "draw_spans", lambda w, rng, cfg: spans)
  seq = interleave.interleave(rec, VOCAB, np.random.default_rng(0))
  assert seq.tokens.tolist() == expected
  assert seq.speech_ranges == speech_ranges
  assert seq.is_speech.tolist() == [65 <= t for t in expected]


def test_interleave_span_lengths_follow_recipe():
  rng = np.random.default_rng(0)
  cfg = DataConfig().interleave
  for w in (3, 8, 20, 60):
    for _ in range(50):
      spans = interleave.draw_spans(w, rng, cfg)
      assert [m for m, _, _ in spans][1::2] == [("speech" if spans[0][0] == "text" else "text")] * len(spans[1::2])
      cap = max(1, min(30, int(0.6 * w)))
      for i, (m, a, b) in enumerate(spans):
        if m == "text":
          assert b - a <= cap
          assert b - a >= min(5, cap) or b == w
        elif i > 0 and b < w:
          prev = spans[i - 1][2] - spans[i - 1][1]
          assert b - a == max(2, round(0.5 * prev))


def test_text_record_is_one_text_span():
  rec = random_dataset.random_text_record(np.random.default_rng(0), "t", 60)
  seq = interleave.interleave(rec, VOCAB, np.random.default_rng(0))
  assert seq.tokens.tolist() == [vocab_lib.BOS, VOCAB.text_mode, *VOCAB.text(rec.text_ids).tolist(), vocab_lib.EOS]


@pytest.mark.parametrize("p", [1, 2, 4, 5])
def test_static_patches_follow_rule_and_stay_in_one_modality(p):
  rng = np.random.default_rng(p)
  for rec in _speech(rng):
    seq = interleave.interleave(rec, VOCAB, rng)
    starts = patching.static_patch_starts(seq.is_speech, p)
    np.testing.assert_array_equal(starts, patching.static_sequence_starts(seq, p))
    ids = np.cumsum(starts) - 1
    lengths = patching.patch_lengths(starts)
    assert lengths.sum() == len(seq.tokens)
    for j, length in enumerate(lengths):
      members = np.flatnonzero(ids == j)
      kinds = seq.is_speech[members]
      assert kinds.all() or (not kinds.any() and length == 1)  # text-side patches have length 1
      if kinds.all():
        assert length <= p
    # Inside each speech run: all patches have length p except the run's last.
    run_starts = np.flatnonzero(patching.speech_run_starts(seq.is_speech))
    for s in run_starts:
      e = s
      while e < len(seq.is_speech) and seq.is_speech[e]:
        e += 1
      np.testing.assert_array_equal(np.flatnonzero(starts[s:e]), np.arange(0, e - s, p))


def _unit_patches(rec, starts, seq):
  """The unit ranges [start, end) of the speech patches of a speech-only sequence."""
  first = np.flatnonzero(starts & seq.is_speech) - 2  # BOS and <s> come before unit 0
  return list(zip(first, np.append(first[1:], len(rec.units))))


@pytest.mark.parametrize("silence", ["separate", "merged"])
def test_aligned_patches_follow_words_and_silences(silence):
  rng = np.random.default_rng(3)
  cfg = patching.PatchingConfig(strategy="aligned", max_patch_len=1000, silence=silence)
  for rec in _speech(rng, 30):
    seq = interleave.interleave(rec, VOCAB, rng, speech_only=True)
    patches = _unit_patches(rec, patching.aligned_patch_starts(seq, cfg), seq)
    spans = rec.word_spans
    if silence == "separate":  # boundaries are exactly the word starts and ends inside the utterance
      bounds = set(spans.ravel().tolist()) | {0}
      expected = sorted(b for b in bounds if b < len(rec.units))
    else:  # every word but the first starts a patch; silences join the word before
      expected = [0] + spans[1:, 0].tolist()
    assert [s for s, _ in patches] == expected


def test_aligned_patches_split_long_words_and_stay_in_one_modality():
  rng = np.random.default_rng(4)
  cfg = patching.PatchingConfig(strategy="aligned", max_patch_len=3)
  for rec in _speech(rng):
    seq = interleave.interleave(rec, VOCAB, rng)
    starts = patching.aligned_patch_starts(seq, cfg)
    assert np.all(starts[patching.aligned_segment_starts(seq, merge_silence=False)]) and np.all(starts[~seq.is_speech])
    assert patching.patch_lengths(starts).max() <= 3
    ids = np.cumsum(starts) - 1
    for j in range(ids[-1] + 1):
      kinds = seq.is_speech[ids == j]
      assert kinds.all() or not kinds.any()


def test_curriculum_probability_schedule():
  cfg = patching.PatchingConfig(strategy="curriculum", curriculum_t1=0.25, curriculum_t2=0.75)
  probs = [patching.aligned_probability(cfg, u) for u in (0.0, 0.2, 0.25, 0.5, 0.7, 0.75, 1.0)]
  np.testing.assert_allclose(probs, [1, 1, 1, 0.5, 0.1, 0, 0], atol=1e-9)
  assert patching.aligned_probability(patching.PatchingConfig(strategy="mixed", mixed_aligned_prob=0.3), 0.9) == 0.3
  rng = np.random.default_rng(0)
  seq = interleave.interleave(_speech(rng, 1)[0], VOCAB, rng, speech_only=True)
  draws = [patching.document_patch_starts(seq, cfg, 0.5, np.random.default_rng(i))[1] for i in range(400)]
  assert 0.4 < np.mean(draws) < 0.6


def test_document_features_truncate_and_mask():
  tokens = np.arange(1, 21, dtype=np.int32)
  starts = np.ones(20, bool)
  feats, cut = packing.document_features(tokens, starts, max_tokens=50, max_patches=8)
  assert cut == 12 and len(feats["tokens"]) == 8
  assert feats["targets"][-1] == vocab_lib.PAD and feats["targets"][:-1].tolist() == tokens[1:8].tolist()
  feats, cut = packing.document_features(tokens, starts, max_tokens=50, max_patches=50)
  assert cut == 0 and feats["targets"].tolist() == tokens[1:].tolist() + [vocab_lib.PAD]


def test_packed_batches_are_consistent(dataset):
  cfg = DataConfig(max_tokens=128, max_patches=48, interleaved_weight=0.5, text_weight=0.5,
                   speech_only_weight=0.2)
  it = iter(pipeline.train_dataset(dataset, cfg, 4))
  for _ in range(5):
    b = next(it)
    chex.assert_shape([b["tokens"], b["targets"], b["token_patch"], b["token_segment"]], (4, 128))
    chex.assert_shape([b["patch_len"], b["patch_first"], b["patch_segment"]], (4, 48))
    for r in range(4):
      seg, tp = b["token_segment"][r], b["token_patch"][r]
      real = seg > 0
      n_patches = int((b["patch_segment"][r] > 0).sum())
      assert b["patch_len"][r].sum() == real.sum()
      for j in range(n_patches):  # each patch is a contiguous run of one document's tokens
        first, length = b["patch_first"][r, j], b["patch_len"][r, j]
        assert (tp[first:first + length] == j).all()
        assert (seg[first:first + length] == b["patch_segment"][r, j]).all()
      assert not b["loss_mask"][r][~real].any()
      # a target is the next token of the same document
      nxt = np.append(b["tokens"][r, 1:], 0)
      same = np.append(seg[1:] == seg[:-1], False)
      m = b["loss_mask"][r]
      assert (b["targets"][r][m] == nxt[m]).all() and same[m].all()


@pytest.mark.parametrize("strategy", patching.STRATEGIES)
def test_pipeline_resumes_mid_epoch_exactly(dataset, strategy):
  """Stop mid-epoch, restore the iterator state into a new pipeline: the same batch stream."""
  cfg = DataConfig(max_tokens=128, max_patches=64, speech_only_weight=0.2,
                   patching=patching.PatchingConfig(strategy=strategy, max_patch_len=8))
  stream = lambda: iter(pipeline.train_dataset(dataset, cfg, 2, total_docs=60))
  a = stream()
  first = [next(a) for _ in range(5)]
  state = a.get_state()
  rest = [next(a) for _ in range(15)]  # runs past the first epoch of the 96 documents
  b = stream()
  b.set_state(state)
  for x, y in zip(rest, [next(b) for _ in range(15)]):
    chex.assert_trees_all_equal(x, y)
  chex.assert_trees_all_equal(first[0], next(stream()))
  aligned = np.concatenate([x["patch_aligned"][x["patch_segment"] > 0] for x in first + rest])
  if strategy == "static":
    assert not aligned.any()
  elif strategy == "aligned":
    assert aligned.all()
  else:
    assert 0 < aligned.mean() < 1


def test_curriculum_goes_from_aligned_to_static(dataset):
  cfg = DataConfig(max_tokens=128, max_patches=64,
                   patching=patching.PatchingConfig(strategy="curriculum", max_patch_len=8))
  docs = pipeline.documents(dataset, cfg, total_docs=200)
  share = lambda lo, hi: np.mean([docs[i]["patch_aligned"][0] for i in range(lo, hi)])
  assert share(0, 60) == 1.0 and share(140, 200) == 0.0 and 0 < share(80, 120) < 1


def test_interleaving_is_redrawn_every_epoch(dataset):
  cfg = DataConfig(interleaved_weight=1.0, text_weight=0.0)
  docs = pipeline.documents(dataset, cfg)
  n = dataset.split("train").num_speech
  epoch1 = {docs[i]["tokens"][1:].tobytes() for i in range(n)}
  epoch2 = {docs[i]["tokens"][1:].tobytes() for i in range(n, 2 * n)}
  assert len(epoch1 & epoch2) < n // 2


def test_truncation_is_counted(dataset):
  cfg = DataConfig(max_tokens=32, max_patches=16)
  b = next(iter(pipeline.train_dataset(dataset, cfg, 4)))
  assert b["truncated_tokens"].sum() > 0
  assert all(b["token_segment"][r].max() >= 1 for r in range(4))


def test_speech_only_stream_is_all_speech(dataset):
  cfg = DataConfig(interleaved_weight=0.0, text_weight=0.0, speech_only_weight=1.0)
  doc = pipeline.documents(dataset, cfg)[0]
  body = doc["tokens"][2:-1]
  assert doc["tokens"][1] == pipeline.vocab_of(dataset).speech_mode
  assert (body >= pipeline.vocab_of(dataset).unit_offset).all()


def test_eval_batches_cover_split_once(dataset):
  cfg = DataConfig(max_tokens=128, max_patches=48)
  batches = list(pipeline.eval_batches(dataset, cfg, 4))
  docs = sum(int(len(np.unique(b["token_segment"][r][b["token_segment"][r] > 0])))
             for b in batches for r in range(4))
  assert docs == 16  # 8 held-out utterances + 8 held-out text documents


def test_record_roundtrip_and_validation():
  rec = records.speech_record("x", [[1, 2], [3]], [0, 1, 2, 3, 4, 5], [[0, 2], [3, 6]])
  back = records.decode(records.encode(rec))
  chex.assert_trees_all_equal(back.text_ids, rec.text_ids)
  chex.assert_trees_all_equal(back.word_spans, rec.word_spans)
  back.validate(num_units=6, text_vocab=4)
  with pytest.raises(records.RecordError, match="overlap"):
    records.speech_record("y", [[1], [2]], [0] * 6, [[0, 3], [2, 5]]).validate()
  with pytest.raises(records.RecordError, match="outside the 6 units"):
    records.speech_record("y", [[1], [2]], [0] * 6, [[0, 3], [3, 7]]).validate()
  with pytest.raises(records.RecordError, match="codebook"):
    records.speech_record("y", [[1]], [0, 9], [[0, 2]]).validate(num_units=5)


def test_datasets_with_other_units_or_tokenizer_are_refused(dataset, tmp_path):
  from lst_jax.data import datasets
  from lst_jax.data.manifest import DataError
  same = random_dataset.make_dataset(str(tmp_path / "same"), num_speech=8, num_text=8, num_units=40,
                                     text_vocab=60, heldout=2, seed=1)
  both = datasets.open_datasets(f"{dataset.dir},{same.dir}")
  assert both.split("train").num_speech == dataset.split("train").num_speech + 8
  assert len(both.split("train").speech) == 2
  other = random_dataset.make_dataset(str(tmp_path / "other"), num_speech=8, num_text=8, num_units=50,
                                      text_vocab=60, heldout=2, seed=1)
  with pytest.raises(DataError, match=r"differ in units\.num_units: 40 vs 50"):
    datasets.open_datasets(f"{dataset.dir},{other.dir}")
  run = str(tmp_path / "run")
  datasets.check_run_provenance(run, dataset)
  datasets.check_run_provenance(run, same)  # same provenance: a resumed run may read it
  with pytest.raises(DataError, match=r"the data this run started with .* differ in units\.num_units"):
    datasets.check_run_provenance(run, other)


@pytest.mark.parametrize("first", ["speech", "text", "silence"])
def test_official_record_survives_conversion_and_interleaving(first):
  """Every word, silence and unit of an official-format utterance reaches the token stream,
  whether the utterance starts with speech (units before any word), a word, or [SIL]."""
  from data_prep.formats.lst_jsonl import SEP, parse_interleaved
  lead = {"speech": ["HUBERT 7 7 8"], "text": [], "silence": ["TEXT [SIL]", "HUBERT 9 9"]}[first]
  segments = lead + ["TEXT in", "HUBERT 1 2 3", "TEXT the", "HUBERT 4 5", "TEXT [SIL]", "HUBERT 6 6 6",
                     "TEXT beginning", "HUBERT 10 11 12 13", "TEXT god", "HUBERT 14", "TEXT created",
                     "HUBERT 15 16 17", "TEXT [SIL]", "HUBERT 18"]
  words, units, spans = parse_interleaved("".join(SEP + s for s in segments), 501)
  assert words == ("in", "the", "beginning", "god", "created")
  all_units = [int(u) for s in segments if s.startswith("HUBERT") for u in s.split()[1:]]
  assert units.tolist() == all_units
  ids = [[10 + i] for i in range(len(words))]  # one text id per word
  rec = records.speech_record("u", ids, units, spans).validate(num_units=501, text_vocab=60)
  vocab = vocab_lib.Vocab(text_size=60, num_units=501)
  only = interleave.interleave(rec, vocab, np.random.default_rng(0), speech_only=True)
  assert (only.tokens[vocab.is_speech(only.tokens)] - vocab.unit_offset).tolist() == all_units
  for seed in range(30):
    seq = interleave.interleave(rec, vocab, np.random.default_rng(seed))
    text_words = (seq.tokens[vocab.is_text(seq.tokens)] - 3 - 10).tolist()
    spans_drawn = interleave.draw_spans(5, np.random.default_rng(seed), DataConfig().interleave)
    for modality, a, b in spans_drawn:  # each word once: as text, or as its units
      if modality == "text":
        assert all(w in text_words for w in range(a, b))
    _check_speech_spans(seq, rec, spans_drawn, vocab)
