"""Automatic listening: a recognizer transcribes speech, jiwer scores word error rate.

Recognizer: pocketsphinx (a dependency already: data_prep aligns with it), with
the CMU US English acoustic model, dictionary and a general language model. It
is weak on robotic, vocoded speech (and on the demo's original audio: WER ~0.9);
what it scores is comparable between samples and against the ceiling of
ground-truth units through the same vocoder, not against human listeners.
WhisperRecognizer (`--asr=DIR`): the user's Whisper model in CTranslate2 form
(faster-whisper's folder layout: model.bin, config.json, tokenizer.json,
vocabulary.json or .txt, e.g. Systran/faster-whisper-base), run by ctranslate2
on the CPU on Whisper's log-mel features (transformers' WhisperFeatureExtractor),
English, no timestamps, 30 s windows. Nothing is downloaded either way.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct

import numpy as np

from lst_jax.data.manifest import DataError

RATE = 16000


@functools.cache
def _english_normalizer():
  from transformers.models.whisper.english_normalizer import EnglishTextNormalizer
  return EnglishTextNormalizer({})   # no British -> American spelling map: the KJV's spellings stay


def normalize(text: str) -> str:
  """What both sides of a WER compare: Whisper's English text normalizer (numbers as digits, so "sixty and
  five" and "65"-style transcripts meet halfway; contractions expanded, fillers and punctuation dropped), as
  Whisper-based ASR-WER evaluations score, then lowercase words of letters, digits and apostrophes."""
  return " ".join(re.findall(r"[a-z0-9']+", _english_normalizer()(text).lower()))


class Recognizer:
  """pocketsphinx, a fresh decoder per utterance: a reused one adapts (cepstral means and more)
  to what it heard before, so the same audio would be transcribed differently by position in a
  list; loading costs ~0.5 s, decoding an utterance several times that."""

  description = "pocketsphinx (en-us model, general LM)"

  def transcribe(self, wave: np.ndarray, rate: int = RATE) -> str:
    import pocketsphinx
    if rate != RATE:
      from lst_jax.data import audio
      wave = audio.resample(wave, rate, RATE)
    pcm = (np.clip(np.asarray(wave, np.float32), -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    d = pocketsphinx.Decoder(loglevel="FATAL")
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    hyp = d.hyp()
    return normalize(hyp.hypstr) if hyp is not None else ""


# -- Whisper in CTranslate2 form (--asr=DIR) ----------------------------------------------------------

WINDOW_SECONDS = 30                     # Whisper hears 30 s at a time: 3000 log-mel frames
# A transcript longer than speech could be is a repetition loop (Whisper's failure on audio it cannot
# follow): fast English speech is ~4 words (~5 tokens) a second, so a window's transcript is cut at 8 tokens
# a second of its audio, plus 8. (Whisper's own fallback, sampling again at rising temperatures, is not
# reproducible with ctranslate2: its draws differ from call to call whatever the seed.)
MAX_TOKENS_PER_SECOND = 8
SLACK_TOKENS = 8
MAX_LENGTH = 448                        # Whisper's text context; ctranslate2 generates up to half of it
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
_VOCABULARY_FILES = ("vocabulary.json", "vocabulary.txt")
_PROMPT_TOKENS = ("<|startoftranscript|>", "<|endoftext|>", "<|notimestamps|>")
_NOT_SPEECH = ("<|transcribe|>", "<|translate|>", "<|startoftranscript|>", "<|startofprev|>", "<|startoflm|>",
               "<|nospeech|>", "<|nocaptions|>")   # suppressed as faster-whisper does, with config.json's symbols
_LAYOUT = ("a Whisper model in CTranslate2 form holds model.bin, config.json, tokenizer.json and vocabulary.json "
           "or .txt, as Systran/faster-whisper-base does; ct2-transformers-converter makes one from a Hugging "
           "Face Whisper")


class WhisperModelError(DataError):
  """The --asr folder or one of its files is not a Whisper model in CTranslate2 form; one line naming it."""


def _spec_name(path: str) -> str:
  """The model spec a CTranslate2 model.bin was saved from (its header: uint32 binary version, then from
  version 2 on a uint16-length name such as WhisperSpec); WhisperModelError when it is not such a file."""
  try:
    with open(path, "rb") as f:
      head = f.read(4 + 2 + 256)
  except OSError as e:
    raise WhisperModelError(f"{path}: unreadable ({e.strerror or e})") from None
  if len(head) >= 6:
    version, length = struct.unpack("<IH", head[:6])
    name = head[6:6 + length]
    if 2 <= version <= 64 and 1 < length <= 250 and len(name) == length and name.endswith(b"\0") and \
        re.fullmatch(rb"[A-Za-z0-9_]+", name[:-1]):
      return name[:-1].decode("ascii")
  raise WhisperModelError(f"{path}: not a CTranslate2 model file (no model spec in its header)")


def check_whisper_dir(model_dir: str) -> None:
  """Refuses (WhisperModelError, one line naming the folder or file) what is not a Whisper model in
  CTranslate2 form, reading only file headers, config.json and tokenizer.json: cheap enough to run
  before a checkpoint restore."""
  import tokenizers
  flag = f"--asr={model_dir}"
  if not os.path.isdir(model_dir):
    raise WhisperModelError(f"{flag}: not a folder ({_LAYOUT})")
  missing = [n for n in _REQUIRED_FILES if not os.path.isfile(os.path.join(model_dir, n))]
  if not any(os.path.isfile(os.path.join(model_dir, n)) for n in _VOCABULARY_FILES):
    missing.append(" or ".join(_VOCABULARY_FILES))
  if missing:
    raise WhisperModelError(f"{flag}: no {', '.join(missing)} ({_LAYOUT})")
  path = os.path.join(model_dir, "model.bin")
  spec = _spec_name(path)
  if spec != "WhisperSpec":
    raise WhisperModelError(f"{path}: a CTranslate2 {spec} model, not Whisper (WhisperSpec)")
  path = os.path.join(model_dir, "config.json")
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise WhisperModelError(f"{path}: unreadable ({' '.join(str(e).split())})") from None
  if not isinstance(config, dict) or not all(isinstance(config.get(k), list) for k in ("suppress_ids",
                                                                                        "suppress_ids_begin")):
    raise WhisperModelError(f"{path}: no suppress_ids / suppress_ids_begin lists; not the config.json of a "
                            f"CTranslate2 Whisper model")
  path = os.path.join(model_dir, "tokenizer.json")
  try:
    tokenizer = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own exception types
    raise WhisperModelError(f"{path}: not a tokenizer the tokenizers library reads "
                            f"({' '.join(str(e).split())[:200]})") from None
  absent = [t for t in _PROMPT_TOKENS if tokenizer.token_to_id(t) is None]
  if absent:
    raise WhisperModelError(f"{path}: no {', '.join(absent)} token; not a Whisper tokenizer")


class WhisperRecognizer:
  """The user's Whisper (CTranslate2 form, `--asr=DIR`), run on the CPU by ctranslate2: English, no
  timestamps, beam search, each 30 s window of the audio decoded on its own (its transcript cut where
  it is longer than speech could be: a repetition loop) and the texts joined.

  Prompt: <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|> (English-only models, such as
  base.en: <|startoftranscript|> <|notimestamps|>). Suppressed: config.json's suppress_ids (Whisper's
  non-speech symbols) and the task tokens, at the start also suppress_ids_begin (blank, end of text),
  as faster-whisper decodes. Features: transformers' WhisperFeatureExtractor (80 or 128 mels, from the
  model). compute_type "int8" (weights quantized when loaded; Whisper base on the demo's 50 held-out
  utterances gave the same WER as float32 at 0.6x the time: README) falls back to the model's own type
  where the CPU has no int8 kernels."""

  def __init__(self, model_dir: str, beam_size: int = 5, compute_type: str = "int8", threads: int | None = None,
               max_length: int = MAX_LENGTH, tokens_per_second: float = MAX_TOKENS_PER_SECOND,
               slack_tokens: int = SLACK_TOKENS):
    import ctranslate2
    import tokenizers
    from transformers import WhisperFeatureExtractor
    if beam_size < 1:
      raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    check_whisper_dir(model_dir)
    threads = threads or min(4, os.cpu_count() or 1)

    def load(kind: str):
      return ctranslate2.models.Whisper(model_dir, device="cpu", compute_type=kind, intra_threads=threads)
    try:
      try:
        self.model = load(compute_type)
      except ValueError as e:
        if "support" not in str(e) or compute_type == "default":   # "... do not support efficient int8"
          raise
        self.model = load("default")        # no int8 kernels here: the model's own type
    except (RuntimeError, ValueError) as e:
      raise WhisperModelError(f"--asr={model_dir}: ctranslate2 cannot load it "
                              f"({' '.join(str(e).split())[:300]})") from None
    self.tokenizer = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    ids = {t: self.tokenizer.token_to_id(t) for t in (*_PROMPT_TOKENS, *_NOT_SPEECH, "<|en|>")}
    if self.model.is_multilingual:
      absent = [t for t in ("<|en|>", "<|transcribe|>") if ids[t] is None]
      if absent:
        raise WhisperModelError(f"{os.path.join(model_dir, 'tokenizer.json')}: no {', '.join(absent)} token, "
                                f"which a multilingual Whisper's prompt needs")
      task = ["<|en|>", "<|transcribe|>"]
    else:
      task = []                             # English-only: no language or task token
    self.prompt = [ids[t] for t in ("<|startoftranscript|>", *task, "<|notimestamps|>")]
    self.eot = ids["<|endoftext|>"]
    self.suppress = [-1] + sorted({ids[t] for t in _NOT_SPEECH if ids[t] is not None})
    self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels, sampling_rate=RATE)
    self.beam_size, self.max_length = int(beam_size), int(max_length)
    self.tokens_per_second, self.slack_tokens = float(tokens_per_second), int(slack_tokens)
    name = os.path.basename(model_dir.rstrip("/"))
    self.description = f"Whisper (CTranslate2, {name}, {self.model.compute_type}, beam {self.beam_size})"

  def transcribe(self, wave: np.ndarray, rate: int = RATE) -> str:
    wave = np.asarray(wave, np.float32)
    if rate != RATE:
      from lst_jax.data import audio
      wave = audio.resample(wave, rate, RATE)
    step = WINDOW_SECONDS * RATE
    return normalize(" ".join(self._window(wave[i:i + step]) for i in range(0, len(wave), step)))

  def window_ids(self, wave: np.ndarray) -> list[int]:
    """The token ids Whisper generates (after the prompt, up to <|endoftext|>) for at most 30 s of
    16 kHz audio, padded to 30 s; at most tokens_per_second x its seconds + slack_tokens of them."""
    import ctranslate2
    mel = self.features(wave, sampling_rate=RATE, return_tensors="np")["input_features"]   # [1, mels, 3000]
    allowed = int(np.ceil(self.tokens_per_second * len(wave) / RATE)) + self.slack_tokens
    result = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, np.float32)),
                                 [self.prompt], beam_size=self.beam_size,
                                 max_length=min(self.max_length, 2 * allowed),   # it generates half of it
                                 suppress_blank=True, suppress_tokens=self.suppress)[0]
    return list(result.sequences_ids[0])[:allowed]

  def _window(self, wave: np.ndarray) -> str:
    text_ids = [i for i in self.window_ids(wave) if i < self.eot]   # text tokens come before <|endoftext|>
    return self.tokenizer.decode(text_ids, skip_special_tokens=True)


def recognizer(asr_dir: str | None = None):
  """What listening transcribes with: the user's Whisper at `asr_dir` (--asr=DIR), else pocketsphinx."""
  return Recognizer() if asr_dir is None else WhisperRecognizer(asr_dir)


def errors(reference: str, hypothesis: str) -> tuple[int, int]:
  """(word errors: substitutions + deletions + insertions, reference words) of one utterance, on
  normalized text (jiwer); summed over utterances they give the corpus WER `wer` reports."""
  import jiwer
  ref, hyp = normalize(reference), normalize(hypothesis)
  if not ref:
    return len(hyp.split()), 0
  out = jiwer.process_words(ref, hyp or "")
  return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(references: list[str], hypotheses: list[str]) -> float:
  """Word error rate over all pairs (jiwer), on normalized text; empty references are skipped."""
  import jiwer
  pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses) if normalize(r)]
  if not pairs:
    return float("nan")
  refs, hyps = zip(*pairs)
  return float(jiwer.wer(list(refs), list(hyps)))
