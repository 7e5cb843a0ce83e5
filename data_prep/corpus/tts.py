"""Text-to-speech with exact word timings: espeak-ng (bundled by `espeakng-loader`) via ctypes.

Why SSML marks instead of espeak's WORD events: espeak merges some word pairs
("there be", "there was") into one WORD event and splits others, so WORD events
do not map 1:1 onto our words. A `<mark name="i"/>` before word i yields exactly
one MARK event per word with its audio position, by construction; words that
espeak spoke as one unit (several marks at one position) share that unit's
time in proportion to their lengths. Sentences are synthesized one at a time
(espeak loses a mark placed right after a full stop) and concatenated.

espeak-ng keeps hidden state across calls (pitch-flutter phase, gain control,
random breath noise), so the same text comes out slightly different each time
and depends on what was spoken before. To make `synthesize` a pure function,
the engine is initialised once per process (the pid is checked, so spawned or
forked pool workers each get their own) and every utterance is spoken in a
forked child of that never-used engine, with fixed random seeds.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pickle
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

# espeak-ng's speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth blocks; audio arrives through the callback
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8, _SSML, _PHONEMES = 0x1, 0x10, 0x100   # _PHONEMES: [[...]] is read as phoneme mnemonics
_PHONEME_SEPARATOR = "_"
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED, _EVENT_MARK = 0, 3
_PARAM_RATE, _PARAM_PITCH = 1, 3
_SEED = 1

# Energy-based trimming of word ends (10 ms frames).
_TRIM_FRAME_S = 0.01
_SILENCE_DB = -40.0  # below the utterance's loudest frame


class SynthError(RuntimeError):
  """espeak-ng failed, or its timings do not map onto the words."""


@dataclasses.dataclass(frozen=True)
class Voice:
  name: str       # our label, stored in the manifest
  espeak: str     # espeak-ng voice + variant, e.g. "en+m3"
  rate: int       # words per minute (espeak default 175)
  pitch: int      # 0-100 (espeak default 50)


# Three training voices and one unseen held-out voice (different variant, rate and pitch).
TRAIN_VOICES = (Voice("en-m3", "en+m3", 165, 40),
                Voice("en-f3", "en+f3", 180, 60),
                Voice("en-m7", "en+m7", 150, 50))
HELDOUT_VOICES = (Voice("en-f4", "en+f4", 172, 70),)
# The study corpus (data_prep.corpus.demo --corpus=study): six training voices, two unseen held-out ones.
STUDY_TRAIN_VOICES = TRAIN_VOICES + (Voice("en-m1", "en+m1", 158, 45),
                                     Voice("en-f1", "en+f1", 175, 65),
                                     Voice("en-m5", "en+m5", 170, 35))
STUDY_HELDOUT_VOICES = HELDOUT_VOICES + (Voice("en-m2", "en+m2", 162, 48),)


@dataclasses.dataclass(frozen=True)
class Speech:
  wave: np.ndarray        # float32 [S] in [-1, 1]
  sample_rate: int
  word_times: np.ndarray  # float32 [W, 2] (start_s, end_s) per word, ordered, non-overlapping

  @property
  def duration(self) -> float:
    return len(self.wave) / self.sample_rate


class _Event(ctypes.Structure):
  class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Engine:
  """The process's espeak-ng instance; collects audio and MARK events of one synthesis."""

  def __init__(self):
    import espeakng_loader  # small; imported here so `import data_prep.corpus.tts` stays cheap
    self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self.lib.espeak_Initialize.restype = ctypes.c_int
    self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                      ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                      espeakng_loader.get_data_path().encode(), _INITIALIZE_DONT_EXIT)
    if rate <= 0:
      raise SynthError(f"espeak_Initialize failed ({rate}); data at {espeakng_loader.get_data_path()}")
    self.sample_rate = rate
    self.pid = os.getpid()
    self._chunks: list[np.ndarray] = []
    self._marks: list[tuple[str, int]] = []
    self._callback = _CALLBACK(self._on_audio)  # keep a reference: espeak holds a raw pointer
    self.lib.espeak_SetSynthCallback(self._callback)

  def _on_audio(self, wav, num_samples, events) -> int:
    if wav and num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      if events[i].type == _EVENT_MARK:
        self._marks.append((events[i].id.name.decode(), events[i].audio_position))
      i += 1
    return 0  # 0 = continue

  def speak(self, ssmls: Sequence[str], voice: Voice,
            phonemes: bool = False) -> list[tuple[np.ndarray, list[tuple[str, int]]]]:
    """Speaks each SSML string in a forked child of this (never used) engine, see the docstring."""
    return self._in_child(lambda: [self._run(ssml, voice, phonemes) for ssml in ssmls])

  def phonemes(self, words: Sequence[str], voice: Voice) -> list[list[str]]:
    """espeak-ng's phoneme mnemonics of each word (stress marks on the phone they precede), read
    in a forked child too: the lexicon lookup sets the voice, which must not touch this engine."""
    return self._in_child(lambda: [self._phonemes(w, voice) for w in words])

  def _in_child(self, fn):
    """fn() in a forked child of this engine, with fixed random seeds; its result comes back pickled."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: speak, send the result back, exit without running any cleanup
      try:
        os.close(read_fd)
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(_SEED))
        ctypes.CDLL(None).srand(_SEED)  # espeak's breath noise also draws from libc rand()
        result = (True, fn())
      except BaseException as e:  # noqa: BLE001  (reported to the parent, which raises)
        result = (False, f"{type(e).__name__}: {e}")
      try:
        with os.fdopen(write_fd, "wb") as f:
          f.write(pickle.dumps(result))
      finally:
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
      data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
      raise SynthError(f"the espeak-ng child process died (wait status {status})")
    ok, value = pickle.loads(data)
    if not ok:
      raise SynthError(value)
    return value

  def _phonemes(self, word: str, voice: Voice) -> list[str]:
    if self.lib.espeak_SetVoiceByName(voice.espeak.encode()) != 0:
      raise SynthError(f"espeak-ng has no voice {voice.espeak!r}")
    self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    buf = ctypes.create_string_buffer(word.encode("utf-8"))
    ptr = ctypes.c_void_p(ctypes.addressof(buf))
    out = []
    while ptr.value:   # bits 8-23 of the mode: the separator between phoneme names
      text = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, ord(_PHONEME_SEPARATOR) << 8)
      out += [p for p in (text or b"").decode().split(_PHONEME_SEPARATOR) if p.strip()]
    return out

  def _run(self, ssml: str, voice: Voice, phonemes: bool = False) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Synthesizes `ssml`; returns int16 samples and [(mark name, audio position in ms)]."""
    if self.lib.espeak_SetVoiceByName(voice.espeak.encode()) != 0:
      raise SynthError(f"espeak-ng has no voice {voice.espeak!r}")
    self.lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
    self.lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
    self._chunks, self._marks = [], []
    data = ssml.encode("utf-8")
    flags = _CHARS_UTF8 | _SSML | (_PHONEMES if phonemes else 0)
    err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
    if err != 0 or self.lib.espeak_Synchronize() != 0:
      raise SynthError(f"espeak_Synth failed with error {err} on {ssml[:80]!r}")
    wave = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
    return wave, self._marks


_ENGINE: _Engine | None = None


def _engine() -> _Engine:
  global _ENGINE
  if _ENGINE is None or _ENGINE.pid != os.getpid():
    _ENGINE = _Engine()
  return _ENGINE


def to_ssml(spoken: Sequence[str]) -> str:
  """One <mark name="i"/> before each spoken word (a word, maybe with its trailing punctuation)."""
  return "<speak>" + " ".join(f'<mark name="{i}"/>{escape(w)}' for i, w in enumerate(spoken)) + "</speak>"


def sentences(spoken: Sequence[str]) -> list[tuple[int, int]]:
  """[lo, hi) word ranges of the sentences: espeak drops a mark right after a full stop."""
  ends = [i + 1 for i, w in enumerate(spoken) if w[-1] in ".!?"]
  ends = [e for e in ends if e < len(spoken)] + [len(spoken)]
  return list(zip([0] + ends[:-1], ends))


def phonemes(words: Sequence[str], voice: Voice) -> list[tuple[str, ...]]:
  """Each word's espeak-ng phoneme mnemonics in `voice`'s language, e.g. "hello" -> ("h", "@", "l", "'oU")
  (a stress mark rides on the phone after it); `phoneme_input` turns them back into speakable input."""
  return [tuple(p) for p in _engine().phonemes(list(words), voice)]


def phoneme_input(phones: Sequence[str]) -> str:
  """espeak-ng's phoneme input for one word: [[h@l'oU]] (synthesize(..., read_phonemes=True) reads it)."""
  return "[[" + "".join(phones) + "]]"


def synthesize(words: Sequence[str], voice: Voice, spoken: Sequence[str] | None = None,
               read_phonemes: bool = False) -> Speech:
  """Speaks `words` (optionally `spoken`: the same words with prosody punctuation attached).
  With `read_phonemes`, [[...]] in a spoken word is read as phoneme mnemonics (see `phoneme_input()`),
  which speaks made-up words exactly as written.

  Returns the waveform and one (start_s, end_s) per word; raises SynthError if
  the timings cannot be mapped 1:1 onto the words.
  """
  spoken = list(words if spoken is None else spoken)
  if len(spoken) != len(words) or not words:
    raise SynthError(f"need >= 1 word and one spoken form per word ({len(words)} vs {len(spoken)})")
  engine = _engine()
  ranges = sentences(spoken)
  chunks, starts_ms = [], []
  ssmls = [to_ssml(spoken[lo:hi]) for lo, hi in ranges]
  if read_phonemes:   # espeak misreads "]]</speak>" (it speaks extra sounds); a space before the tag fixes it
    ssmls = [s.replace("</speak>", " </speak>") for s in ssmls]
  spoken_ranges = engine.speak(ssmls, voice, read_phonemes)
  for (lo, hi), (samples, marks) in zip(ranges, spoken_ranges):
    if [name for name, _ in marks] != [str(i) for i in range(hi - lo)]:
      raise SynthError(f"espeak-ng gave marks {[n for n, _ in marks]} for the {hi - lo} words of "
                       f"{' '.join(spoken[lo:hi])!r}")
    offset_ms = 1000.0 * sum(len(c) for c in chunks) / engine.sample_rate
    starts_ms += [offset_ms + ms for _, ms in marks]
    chunks.append(samples)
  samples = np.concatenate(chunks)
  wave = samples.astype(np.float32) / 32768.0
  sr = engine.sample_rate
  starts_s = np.array(starts_ms, np.float64) / 1000.0
  times = word_times(starts_s, [len(w) for w in words], frame_energy_db(wave, sr), len(wave) / sr)
  return Speech(wave=wave, sample_rate=sr, word_times=times)


def frame_energy_db(wave: np.ndarray, sample_rate: int) -> np.ndarray:
  """Energy of consecutive 10 ms frames in dB relative to the loudest frame, [ceil(S / hop)]."""
  hop = int(round(sample_rate * _TRIM_FRAME_S))
  padded = np.pad(wave, (0, -len(wave) % hop))
  energy = np.mean(padded.reshape(-1, hop).astype(np.float64) ** 2, axis=1)
  return 10.0 * np.log10(np.maximum(energy, 1e-12) / max(energy.max(initial=0.0), 1e-12))


def word_times(starts_s: np.ndarray, lengths: Sequence[int], energy_db: np.ndarray,
               duration_s: float) -> np.ndarray:
  """Turns one start time per word (espeak marks) into (start, end) seconds per word, [W, 2].

  Words whose mark coincides with the next one were spoken inside the previous
  word's stretch (espeak joined them): that stretch is shared by character
  length. Each word then ends where the next begins (or at the end of audio),
  pulled back over trailing low-energy frames so pauses become silence.
  """
  starts = np.minimum(np.maximum.accumulate(np.asarray(starts_s, np.float64)), duration_s)
  bounds = np.append(starts, duration_s)
  n = len(starts)
  i = 0
  while i < n:  # a run [i, j): word i, the zero-length words after it, until the run has audio
    j = i + 1
    while j < n and (bounds[j + 1] <= bounds[j] or bounds[j] <= bounds[i]):
      j += 1
    if j - i > 1:
      lo, hi = bounds[i], bounds[j]
      w = np.cumsum([0] + [max(lengths[k], 1) for k in range(i, j)], dtype=np.float64)
      bounds[i:j] = lo + (hi - lo) * w[:-1] / w[-1]
    i = j
  frame = _TRIM_FRAME_S
  out = np.zeros((n, 2), np.float64)
  for k in range(n):
    start, end = bounds[k], bounds[k + 1]
    lo_f, hi_f = int(np.floor(start / frame)), int(np.floor(end / frame))
    voiced = np.nonzero(energy_db[lo_f:hi_f] > _SILENCE_DB)[0]
    if len(voiced):
      end = min(end, (lo_f + voiced[-1] + 1) * frame)
    out[k] = start, max(end, start)
  return out.astype(np.float32)
