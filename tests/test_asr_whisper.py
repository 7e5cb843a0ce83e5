"""--asr=DIR: the user's Whisper in CTranslate2 form as the listening recognizer (lst_jax.eval.asr).

A tiny random Whisper (d_model 64, 1 encoder and 2 decoder layers, 80 mels, 1500 / 448 positions) and a
word-level Whisper tokenizer (26 words, a few symbols, the special tokens; byte-level like Whisper's)
are built here with transformers and tokenizers and converted with ctranslate2's own converter, as
ct2-transformers-converter makes faster-whisper's folders. Nothing is downloaded.

The random model is rigged so that what it says is words, depends on the audio, and ends:
  - weights drawn at std 0.3 (embeddings 1.0), so every layer and the audio matter;
  - the tied embedding rows of the timestamp tokens, <|notimestamps|>, <|en|> and <|de|> are zero (their
    logit is 0, below the likeliest word's), so the text tokens and the suppressible specials compete;
  - from decoder position 12 on, the position embeddings lean ever harder towards <|endoftext|>'s row, so
    a transcript ends after a few words instead of at ctranslate2's 224-token limit;
  - the positions that predict the first three tokens lean towards what Whisper's decoding suppresses:
    <|endoftext|> (suppressed at the start: suppress_ids_begin), <|nospeech|> (a task token, suppressed
    as faster-whisper does) and a word listed in config.json's suppress_ids, so each suppression decides
    a token (the test checks that leaving any one out changes the reference).
The reference is a greedy loop written here over the same model's logits in transformers (float32,
one thread), with Whisper's suppression applied by hand; the recognizer runs float32 and beam 1 for
the comparison, so the token ids must be equal."""

import json
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import tiny_config
from lst_jax.data import audio
from lst_jax.eval import asr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo",
         "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor",
         "whiskey", "xray", "yankee", "zulu"]
SYMBOLS = ["!", ",", ".", "?", "Ġ"]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
END = 12   # decoder positions from which <|endoftext|> takes over
PROMPT = 4   # multilingual: <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>
NOT_SPEECH = ("<|transcribe|>", "<|translate|>", "<|startoftranscript|>", "<|startofprev|>", "<|startoflm|>",
              "<|nospeech|>")


def _build(directory, multilingual: bool, seed: int = 0) -> dict:
  """A tiny Whisper in Hugging Face form (hf/) and converted (ct2/); the model, ids and folders.
  Multilingual as ctranslate2 tells it: the vocabulary holds the empty token ("", id 50256 in Whisper's
  multilingual vocabulary) that the English-only one lacks."""
  import ctranslate2
  import torch
  from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast
  tokens = SYMBOLS + ["Ġ" + w for w in WORDS] + ([""] if multilingual else [])
  vocab = {t: i for i, t in enumerate(tokens)}
  sid = {s: len(vocab) + i for i, s in enumerate(SPECIALS)}
  tokenizer = WhisperTokenizerFast(vocab=vocab, merges=[])
  tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS})
  assert tokenizer.convert_tokens_to_ids(SPECIALS) == list(sid.values())
  hf, ct2 = os.path.join(directory, "hf"), os.path.join(directory, "tiny-whisper-ct2")
  tokenizer.save_pretrained(hf)
  eot = sid["<|endoftext|>"]
  suppress, begin = [vocab["!"], vocab["Ġzulu"]], [vocab["Ġ"], eot]
  vocab_size = 51865 if multilingual else len(vocab) + len(SPECIALS) + 50   # + timestamp tokens
  config = WhisperConfig(vocab_size=vocab_size, num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=2,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                         decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448,
                         pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                         decoder_start_token_id=sid["<|startoftranscript|>"], suppress_tokens=suppress,
                         begin_suppress_tokens=begin)
  model = WhisperForConditionalGeneration(config).eval()
  model.generation_config = GenerationConfig(
      decoder_start_token_id=sid["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
      suppress_tokens=suppress, begin_suppress_tokens=begin, no_timestamps_token_id=sid["<|notimestamps|>"],
      lang_to_id={t: sid[t] for t in ("<|en|>", "<|de|>")} if multilingual else {},
      task_to_id={"transcribe": sid["<|transcribe|>"], "translate": sid["<|translate|>"]},
      is_multilingual=multilingual, max_length=448)
  with torch.no_grad():
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
      if not name.endswith("layer_norm.weight"):
        p.copy_(torch.randn(p.shape, generator=g) * (1.0 if "embed" in name else 0.3))
    rows = model.model.decoder.embed_tokens.weight          # tied with the output projection
    rows[sid["<|notimestamps|>"]:] = 0.0
    rows[[sid["<|en|>"], sid["<|de|>"]]] = 0.0
    lean = lambda token: rows[token] / rows[token].norm()
    positions = model.model.decoder.embed_positions.weight
    positions[END:] += 10.0 * lean(eot) * (torch.arange(positions.shape[0] - END)[:, None] + 1) ** 0.5
    if multilingual:   # the positions predicting the first three tokens
      for step, (token, strength) in enumerate([(eot, 30.0), (sid["<|nospeech|>"], 15.0), (vocab["Ġzulu"], 50.0)]):
        positions[PROMPT - 1 + step] += strength * lean(token)
  model.save_pretrained(hf)
  ctranslate2.converters.TransformersConverter(hf, copy_files=["tokenizer.json"]).convert(ct2)
  assert sorted(os.listdir(ct2)) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
  return {"model": model, "tokenizer": tokenizer, "hf": hf, "dir": ct2, "ids": sid, "eot": eot,
          "suppress": suppress, "begin": begin}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """The reference runs ~30x faster on one thread than on two contended cores."""
  import torch
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
  return _build(str(tmp_path_factory.mktemp("whisper")), multilingual=True)


@pytest.fixture(scope="module")
def whisper_en(tmp_path_factory):
  return _build(str(tmp_path_factory.mktemp("whisper_en")), multilingual=False, seed=1)


@pytest.fixture(scope="module")
def greedy(whisper):
  return asr.WhisperRecognizer(whisper["dir"], beam_size=1, compute_type="float32", threads=1)


SUPPRESSIONS = ("config", "not_speech", "begin")


def reference_ids(built: dict, wave16k: np.ndarray, prompt: list[int], suppress=SUPPRESSIONS,
                  max_new=224) -> list[int]:
  """Greedy decoding over the transformers model's logits: Whisper's features padded to 30 s, the prompt,
  then the likeliest token each step up to <|endoftext|>, masking (each where named in `suppress`)
  config.json's suppress_ids and the task / start tokens at every step, the blank and <|endoftext|>
  (suppress_ids_begin) at the first."""
  import torch
  from transformers import WhisperFeatureExtractor
  mel = WhisperFeatureExtractor(feature_size=80)(wave16k, sampling_rate=16000, return_tensors="np")
  masked = (built["suppress"] if "config" in suppress else []) + (
      [built["ids"][t] for t in NOT_SPEECH] if "not_speech" in suppress else [])
  out = []
  with torch.no_grad():
    encoded = built["model"].model.encoder(torch.tensor(mel["input_features"])).last_hidden_state
    for step in range(max_new):
      logits = built["model"](encoder_outputs=(encoded,),
                              decoder_input_ids=torch.tensor([prompt + out])).logits[0, -1].clone()
      logits[masked] = -np.inf
      if step == 0 and "begin" in suppress:
        logits[built["begin"]] = -np.inf
      token = int(logits.argmax())
      if token == built["eot"]:
        break
      out.append(token)
  return out


def reference_text(built: dict, ids: list[int]) -> str:
  return asr.normalize(built["tokenizer"].decode([i for i in ids if i < built["eot"]], skip_special_tokens=True))


def tone(seconds: float, freq: float, rate: int = 16000, noise: float = 0.05, seed: int = 0) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2.7 * freq * t)
  if noise:
    wave = wave + noise * np.random.default_rng(seed).normal(size=t.size)
  return wave.astype(np.float32)


# -- decoding against the reference ------------------------------------------------------------------

def test_greedy_transcripts_equal_the_reference(whisper, greedy):
  ids = whisper["ids"]
  assert greedy.prompt == [ids["<|startoftranscript|>"], ids["<|en|>"], ids["<|transcribe|>"],
                           ids["<|notimestamps|>"]]
  assert greedy.model.is_multilingual and greedy.model.n_mels == 80
  texts = set()
  for k, (seconds, freq) in enumerate([(20, 200), (20, 500), (20, 800), (4, 1100)]):
    wave = tone(seconds, freq, seed=k)
    want = reference_ids(whisper, wave, greedy.prompt)
    assert greedy.window_ids(wave) == want, k
    text = greedy.transcribe(wave)
    assert text == reference_text(whisper, want) and set(text.split()) <= set(WORDS), (k, text)
    texts.add(text)
    for left_out in SUPPRESSIONS:         # each suppression decides a token: a recognizer without it fails above
      kept = [s for s in SUPPRESSIONS if s != left_out]
      assert reference_ids(whisper, wave, greedy.prompt, suppress=kept, max_new=3) != want[:3], (k, left_out)
  assert len(texts) == 4                  # what it says depends on the audio
  assert greedy.transcribe(np.zeros(0, np.float32)) == ""


def test_a_transcript_longer_than_speech_could_be_is_cut(whisper):
  """A repetition loop (Whisper on audio it cannot follow) is cut at tokens_per_second x the window's
  seconds + slack_tokens: 1 token a second + 2 on 3 s of audio keeps the reference's first 5 tokens."""
  wave = tone(3, 200, seed=0)
  full = asr.WhisperRecognizer(whisper["dir"], beam_size=1, compute_type="float32", threads=1)
  assert (full.tokens_per_second, full.slack_tokens) == (asr.MAX_TOKENS_PER_SECOND, asr.SLACK_TOKENS) == (8, 8)
  want = reference_ids(whisper, wave, full.prompt)
  assert 5 < len(want) <= 8 * 3 + 8 and full.window_ids(wave) == want    # the default cap leaves it whole
  cut = asr.WhisperRecognizer(whisper["dir"], beam_size=1, compute_type="float32", threads=1,
                              tokens_per_second=1, slack_tokens=2)
  assert cut.window_ids(wave) == want[:5]
  assert cut.transcribe(wave) == reference_text(whisper, want[:5])


def test_english_only_model_has_no_language_or_task_token(whisper_en):
  rec = asr.WhisperRecognizer(whisper_en["dir"], beam_size=1, compute_type="float32", threads=1)
  ids = whisper_en["ids"]
  assert not rec.model.is_multilingual
  assert rec.prompt == [ids["<|startoftranscript|>"], ids["<|notimestamps|>"]]
  wave = tone(10, 300)
  want = reference_ids(whisper_en, wave, rec.prompt)
  assert want and rec.window_ids(wave) == want
  assert rec.transcribe(wave) == reference_text(whisper_en, want)


def test_default_recognizer_int8_beam5_and_the_factory(whisper):
  rec = asr.recognizer(whisper["dir"])
  assert isinstance(rec, asr.WhisperRecognizer) and rec.beam_size == 5
  # int8 weights (the model's own float32 only on a CPU without int8 kernels)
  assert re.fullmatch(r"Whisper \(CTranslate2, tiny-whisper-ct2, (int8_float32|float32), beam 5\)",
                      rec.description), rec.description
  wave = tone(6, 400)
  text = rec.transcribe(wave)
  assert text and set(text.split()) <= set(WORDS) and rec.transcribe(wave) == text
  assert isinstance(asr.recognizer(None), asr.Recognizer)
  with pytest.raises(ValueError, match="beam_size must be >= 1"):
    asr.WhisperRecognizer(whisper["dir"], beam_size=0)


def test_other_rates_are_resampled(greedy):
  """22.05 kHz audio is heard as its 16 kHz resampling; the same tones sampled at 16 kHz say the same,
  and the 22.05 kHz samples taken for 16 kHz ones (a lower, slower sound) say something else."""
  wave22 = tone(8, 700, rate=22050, noise=0.0)
  heard = greedy.transcribe(wave22, 22050)
  assert heard and heard == greedy.transcribe(audio.resample(wave22, 22050, 16000))
  assert heard == greedy.transcribe(tone(8, 700, rate=16000, noise=0.0))
  assert heard != greedy.transcribe(wave22, 16000)


def test_audio_longer_than_30_s_is_heard_in_30_s_windows(greedy):
  parts = [tone(30, 200, seed=1), tone(30, 800, seed=2), tone(5, 500, seed=3)]
  texts = [greedy.transcribe(p) for p in parts]
  assert all(texts) and len(set(texts)) == 3, texts

  class Counting:
    def __init__(self, model):
      self.model, self.calls = model, 0

    def generate(self, *args, **kwargs):
      self.calls += 1
      return self.model.generate(*args, **kwargs)

  model, greedy.model = greedy.model, Counting(greedy.model)
  try:
    assert greedy.transcribe(np.concatenate(parts)) == " ".join(texts)
    assert greedy.model.calls == 3
  finally:
    greedy.model = model


# -- refusals: one line naming the folder or file ----------------------------------------------------

def _variant(whisper, tmp_path, what: str) -> tuple[str, str, str]:
  """A broken --asr folder: (folder, the path the message names, text it holds)."""
  d = str(tmp_path / what)
  if what == "missing":
    return d, d, "not a folder"
  shutil.copytree(whisper["dir"], d)
  path = lambda name: os.path.join(d, name)
  if what == "no_model_bin":
    os.remove(path("model.bin"))
    return d, d, "no model.bin ("
  if what == "no_tokenizer":
    os.remove(path("tokenizer.json"))
    return d, d, "no tokenizer.json ("
  if what == "no_vocabulary":
    os.remove(path("vocabulary.json"))
    return d, d, "no vocabulary.json or vocabulary.txt"
  if what == "junk_model_bin":
    open(path("model.bin"), "wb").write(b"this is not a model" * 100)
    return d, path("model.bin"), "not a CTranslate2 model file"
  if what == "other_ctranslate2_model":           # a tiny GPT-2, converted: a CTranslate2 model, not Whisper
    import ctranslate2
    from transformers import GPT2Config, GPT2LMHeadModel
    hf = str(tmp_path / "gpt2")
    whisper["tokenizer"].save_pretrained(hf)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(whisper["tokenizer"]), n_positions=16, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(hf)
    ctranslate2.converters.TransformersConverter(hf).convert(str(tmp_path / "gpt2_ct2"))
    shutil.copy(tmp_path / "gpt2_ct2" / "model.bin", path("model.bin"))
    return d, path("model.bin"), "a CTranslate2 TransformerDecoderSpec model, not Whisper (WhisperSpec)"
  if what == "truncated_model_bin":               # the header is Whisper's, the weights are cut off
    head = open(path("model.bin"), "rb").read(4000)
    open(path("model.bin"), "wb").write(head)
    return d, d, "ctranslate2 cannot load it"
  if what == "not_a_whisper_config":
    open(path("config.json"), "w").write(json.dumps({"add_source_bos": False}))
    return d, path("config.json"), "no suppress_ids / suppress_ids_begin"
  if what == "junk_config":
    open(path("config.json"), "w").write("{oops")
    return d, path("config.json"), "unreadable"
  if what == "junk_tokenizer":
    open(path("tokenizer.json"), "w").write("{oops")
    return d, path("tokenizer.json"), "not a tokenizer the tokenizers library reads"
  if what == "not_a_whisper_tokenizer":
    import tokenizers
    tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")).save(
        path("tokenizer.json"))
    return d, path("tokenizer.json"), "no <|startoftranscript|>, <|endoftext|>, <|notimestamps|> token"
  raise AssertionError(what)


@pytest.mark.parametrize("what", ["missing", "no_model_bin", "no_tokenizer", "no_vocabulary", "junk_model_bin",
                                  "other_ctranslate2_model", "truncated_model_bin", "not_a_whisper_config",
                                  "junk_config", "junk_tokenizer", "not_a_whisper_tokenizer"])
def test_refuses_what_is_not_a_ctranslate2_whisper(whisper, tmp_path, what):
  folder, where, expect = _variant(whisper, tmp_path, what)
  calls = [lambda: asr.WhisperRecognizer(folder)]
  if what != "truncated_model_bin":               # the check reads headers only; loading finds the rest
    calls.append(lambda: asr.check_whisper_dir(folder))
  for call in calls:
    with pytest.raises(asr.WhisperModelError) as e:
      call()
    msg = str(e.value)
    assert expect in msg and where in msg and "\n" not in msg, (what, msg)
    if where == folder:
      assert msg.startswith(f"--asr={folder}: "), msg


def test_command_lines_refuse_before_the_restore(tmp_path, monkeypatch):
  """make generate (a subprocess: `error: ...` as its one stderr line, status 2, no traceback) and make
  eval's evaluate_checkpoint refuse a bad --asr before restoring anything (here there is no run and no
  dataset at all, so only the check can have answered)."""
  cfg = tmp_path / "exp.py"
  config = tiny_config(str(tmp_path / "no_data"))
  cfg.write_text("import ml_collections\n\ndef get_config():\n"
                 f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")
  bad = str(tmp_path / "faster-whisper-base")
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=")
  r = subprocess.run([sys.executable, "-m", "lst_jax.generate", f"--config={cfg}", f"--workdir={tmp_path / 'run'}",
                      f"--asr={bad}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
  assert lines[-1].startswith(f"error: --asr={bad}: not a folder (a Whisper model in CTranslate2 form"), r.stderr

  from lst_jax.eval import evaluate
  from lst_jax.train import restore as restore_lib
  monkeypatch.setattr(restore_lib, "restore", lambda *a, **k: pytest.fail("restored before checking --asr"))
  with pytest.raises(asr.WhisperModelError, match=f"--asr={bad}: not a folder"):
    evaluate.evaluate_checkpoint(config, str(tmp_path / "run"), listen=1, asr_dir=bad, log=lambda m: None)
  assert not (tmp_path / "run").exists()


# -- the listening wiring -------------------------------------------------------------------------------

def test_listening_hears_with_the_whisper_at_asr_dir(whisper, tmp_path, monkeypatch):
  """Listener(..., asr_dir=DIR), as make eval and make generate build it: its recognizer is the Whisper
  (named in the listening result's "recognizer"), and the ceiling and the original audio are heard by
  it at the vocoder's rate (a stand-in vocoder at 22.05 kHz here; the model's decoder is not needed)."""
  from lst_jax.data import heldout_audio
  from lst_jax.decode import generate as gen
  from lst_jax.eval import listening

  class Vocoder:
    sample_rate = 22050

    def __call__(self, units):
      return tone(len(units) / 25, 300 + 10 * int(np.sum(units) % 50), rate=22050, noise=0.0), 22050

    def describe(self):
      return "stand-in vocoder"

  monkeypatch.setattr(listening, "load_vocoder", lambda manifest, vocoder_dir=None: Vocoder())
  monkeypatch.setattr(gen, "Decoder", lambda *a, **k: None)
  manifest = types.SimpleNamespace(dir=str(tmp_path), unit_rate=25.0, load_tokenizer=lambda: None)
  exp = types.SimpleNamespace(data=types.SimpleNamespace(patching=types.SimpleNamespace(patch_size=4)))
  listener = listening.Listener(None, exp, manifest, None, listening.default_sampling(), asr_dir=whisper["dir"])
  rec = listener.recognizer
  assert isinstance(rec, asr.WhisperRecognizer) and rec.description.startswith("Whisper (CTranslate2, tiny-whisper")

  units = np.arange(100) % 40
  original = tone(4, 650, seed=5)
  heldout_audio.write(str(tmp_path), "utt0", original, 16000)
  sample = {"asr": "golf", "stop": "length", "seconds": 4.0}
  heard = listener._heard({"prompt_text": "golf sierra romeo", "reference_units": units, "source": "utt0"}, sample)
  ceiling = rec.transcribe(Vocoder()(units)[0], 22050)
  assert ceiling and sample["ceiling_asr"] == ceiling
  assert heard["ceiling"] == asr.errors("golf sierra romeo", ceiling)[0]
  assert heard["original"] == asr.errors("golf sierra romeo",
                                         rec.transcribe(listener.original("utt0"), 22050))[0]

  monkeypatch.setattr(listening.Listener, "tasks", lambda self, names, num: {"t2s": []})
  monkeypatch.setattr(listening.Listener, "run", lambda self, *a, **k: ([], {}))
  result = listening.word_error_rates(None, exp, manifest, None, 1, asr_dir=whisper["dir"])
  assert result["recognizer"] == rec.description and result["vocoder"] == "stand-in vocoder"
