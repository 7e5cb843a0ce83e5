"""Speech units back to audio, for the built-in quantizer (log-mel k-means units).

Two vocoders; `Vocoder.for_dataset` picks one:

* exemplar (datasets with a vocoder bank, `vocoder_bank.npz`): concatenative
  synthesis from training audio. The bank holds int16 16 kHz waveforms of a
  subset of the training utterances and their unit per 40 ms frame. The bank
  frames played are chosen by a Viterbi search (`exemplar_segments`): playing
  a frame of the unit itself costs nothing, a frame of one of its nearest
  units (by codebook centroid) costs their distance (and, with frame_weight,
  a frame far from its own centroid more), and each join (a frame that is not the one right
  after the previous) costs JOIN_COST, less where the frame before the joined
  one holds the previous unit. So runs of units come out as runs of training
  audio (a training utterance's own units give back its audio exactly) and a
  unit absent from the bank is played as its nearest present unit, never
  refused (generated units may be anything). The pieces are overlap-added with
  raised-cosine crossfades; deterministic; exactly len(units) / 25 s; ~1 ms per
  second of audio.
* Griffin-Lim (datasets without a bank): unit -> its codebook centroid
  (normalized log-mel + delta, lst_jax.data.features) -> the log-mel half,
  de-normalized -> mel power -> linear spectrogram (least squares through the
  mel filterbank's pseudo-inverse) -> waveform by Griffin-Lim (librosa). The
  units come at 25 Hz with 50 ms windows; Griffin-Lim needs overlapping frames,
  so the mel frames are interpolated to a 10 ms hop first. Per-utterance mean
  normalization (CMN) removed each utterance's spectral level, so the level is
  a constant and the waveform is peak-normalized. Robotic; ~0.1 s per second.

Measured (issue 27, the demo's 50 held-out utterances in the unseen voice,
pocketsphinx): neither vocoder is what limits the ceiling. The recognizer
misses most words of the ORIGINAL espeak audio (WER 0.93 with its general
language model, 0.87 with a trigram of the training text), and the 500 units
at 25 Hz lose as much again (phone error rate on an unseen verse in a training
voice: original 0.69, Griffin-Lim 0.79, exemplar 0.80). On the unseen voice
Griffin-Lim's averaged spectra suit pocketsphinx's phones better than other
voices' exemplars (phone error rate: original 0.75, Griffin-Lim 0.79,
exemplar 0.85); word error rates are at
the floor and within noise (0.98 vs 0.96 with the general language model, 0.93
vs 0.94 in-domain). Crossfades of 30-40 ms, the Viterbi choice and a larger
bank each helped a little (PER 0.87 -> 0.83); 5 vs 10 vs 30 min barely mattered.

The bank is named in the manifest's "units" entry ("vocoder_bank" with
"vocoder_bank_sha256") and refused (DataError) when its hash differs.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Sequence

import numpy as np

from lst_jax import storage
from lst_jax.data.codebook import Codebook
from lst_jax.data.features import FEATURES

SYNTH_HOP_MS = 10.0
LEVEL = 2.0          # log-mel offset added back (CMN removed the utterance's own level)

BANK = "vocoder_bank.npz"     # the manifest's units["vocoder_bank"] in datasets that have one
BANK_KEY = "vocoder_bank"
BANK_FORMAT = 1
CROSSFADE_MS = 30.0           # raised-cosine crossfade at each join (measured: issue 27; at most a hop)
EXEMPLAR, GRIFFIN_LIM = "exemplar", "griffin-lim"


# -- Griffin-Lim ---------------------------------------------------------------------------------

def units_to_logmel(units, codebook: Codebook, settings: dict = FEATURES) -> np.ndarray:
  """[F] unit ids -> [F, n_mels] log-mel frames (the centroids' static half, de-normalized)."""
  units = _check_units(units, codebook.num_units)
  frames = codebook.centroids[units] * codebook.std + codebook.mean
  return frames[:, :settings["n_mels"]]


def logmel_to_wave(logmel_FM: np.ndarray, settings: dict = FEATURES, iterations: int = 32,
                   seed: int = 0) -> np.ndarray:
  """[F, n_mels] log-mel at the unit rate -> float32 waveform at settings' sample rate: exactly
  F / frame_rate seconds, peak 0.9."""
  import librosa  # heavy (numba); only decoding needs it
  sr, n_fft = settings["sample_rate"], settings["n_fft"]
  hop = int(round(sr * SYNTH_HOP_MS / 1000))
  up = int(round(settings["hop_ms"] / SYNTH_HOP_MS))
  f = len(logmel_FM)
  if f == 0:
    return np.zeros(0, np.float32)
  t_in = (np.arange(f) + 0.5) * up
  t_out = np.arange(f * up) + 0.5
  fine = np.stack([np.interp(t_out, t_in, logmel_FM[:, m]) for m in range(logmel_FM.shape[1])], axis=1)
  mel_power = np.exp(fine + LEVEL).T                                   # [n_mels, frames]
  basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=settings["n_mels"], fmin=settings["fmin_hz"],
                              fmax=settings["fmax_hz"], htk=True, norm=None)
  # Least squares through the filterbank's pseudo-inverse, clipped at 0 (librosa's NNLS inversion
  # gives the same ears at ~100x the time).
  stft_mag = np.maximum(_pinv(basis) @ mel_power, 0.0) ** 0.5
  rng = np.random.default_rng(seed)
  wave = librosa.griffinlim(stft_mag, n_iter=iterations, hop_length=hop, n_fft=n_fft,
                            win_length=int(round(sr * settings["win_ms"] / 1000)), init=None, random_state=rng)
  length = f * up * hop                          # exactly F units' duration
  wave = np.pad(wave, (0, max(0, length - len(wave))))[:length]
  if settings.get("preemphasis"):
    from scipy import signal
    wave = signal.lfilter([1.0], [1.0, -settings["preemphasis"]], wave)  # undo the features' pre-emphasis
  peak = float(np.max(np.abs(wave))) or 1.0
  return (0.9 * wave / peak).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _pinv_cached(key: bytes, shape: tuple[int, int]) -> np.ndarray:
  return np.linalg.pinv(np.frombuffer(key).reshape(shape))


def _pinv(basis: np.ndarray) -> np.ndarray:
  b = np.ascontiguousarray(basis, np.float64)
  return _pinv_cached(b.tobytes(), b.shape)


def units_to_wave(units, codebook: Codebook, settings: dict = FEATURES) -> tuple[np.ndarray, int]:
  """(waveform, sample rate) of a unit sequence, by Griffin-Lim."""
  return logmel_to_wave(units_to_logmel(units, codebook, settings), settings), settings["sample_rate"]


def _check_units(units, num_units: int) -> np.ndarray:
  units = np.asarray(units, np.int64).reshape(-1)
  if units.size and (units.min() < 0 or units.max() >= num_units):
    raise ValueError(f"unit ids must lie in [0, {num_units}); got {units.min()}..{units.max()}")
  return units


# -- the vocoder bank ------------------------------------------------------------------------------

NEAR = 8   # units a bank lists as stand-ins for each unit (the nearest centroids present in the bank)


@dataclasses.dataclass(frozen=True)
class Bank:
  """Training audio for exemplar synthesis: utterances back to back, frame j of utterance i (unit
  units[starts[i] + j]) playing samples [(starts[i] + j) * hop, ... + hop) of `wave`."""
  wave: np.ndarray            # int16 [N * hop] at sample_rate
  units: np.ndarray           # int32 [N] unit per frame
  starts: np.ndarray          # int64 [U + 1] first frame of each utterance, then N
  ids: np.ndarray             # str [U] record ids of the utterances
  near: np.ndarray            # int32 [C, NEAR] units present in the bank nearest each unit (itself first)
  near_cost: np.ndarray       # float32 [C, NEAR] their squared centroid distances / the median nearest one
  representative: np.ndarray  # int64 [C] a bank frame of each unit's nearest present unit, nearest its centroid
  frame_cost: np.ndarray      # float32 [N] each frame's squared distance to its centroid / the median one
  sample_rate: int = FEATURES["sample_rate"]
  frame_rate: float = FEATURES["frame_rate"]

  @property
  def num_units(self) -> int:
    return len(self.near)

  @property
  def substitute(self) -> np.ndarray:
    """int32 [C]: the unit played for each unit without stand-ins: itself if in the bank, else the nearest."""
    return self.near[:, 0]

  @property
  def hop(self) -> int:
    return int(round(self.sample_rate / self.frame_rate))

  @property
  def seconds(self) -> float:
    return len(self.units) / self.frame_rate

  @functools.cached_property
  def _index(self):
    """The units with -1 before, between and after utterances (a match never crosses one), the
    bank frame of each position, each unit's positions (ascending), and each frame's position."""
    u = len(self.starts) - 1
    seq = np.full(len(self.units) + u + 1, -1, np.int64)
    frame = np.full(len(seq), -1, np.int64)
    where = np.arange(len(self.units)) + np.repeat(np.arange(1, u + 1), np.diff(self.starts))
    seq[where], frame[where] = self.units, np.arange(len(self.units))
    order = np.argsort(seq, kind="stable")
    bounds = np.searchsorted(seq[order], np.arange(self.num_units + 1))
    positions = [order[bounds[k]:bounds[k + 1]] for k in range(self.num_units)]
    return seq, frame, positions, where

  def check(self) -> "Bank":
    """Raises ValueError unless the arrays fit together."""
    n, c = len(self.units), len(self.near)
    if self.wave.dtype != np.int16 or len(self.wave) != n * self.hop:
      raise ValueError(f"vocoder bank: {len(self.wave)} {self.wave.dtype} samples for {n} frames of {self.hop}")
    if len(self.starts) != len(self.ids) + 1 or self.starts[0] != 0 or self.starts[-1] != n or \
        np.any(np.diff(self.starts) <= 0):
      raise ValueError("vocoder bank: utterance starts do not partition the frames")
    if n and (self.units.min() < 0 or self.units.max() >= c):
      raise ValueError(f"vocoder bank: unit ids outside [0, {c})")
    present = np.zeros(c, bool)
    present[self.units] = True
    if not (self.near.ndim == 2 and self.near_cost.shape == self.near.shape and np.all(present[self.near]) and
            len(self.representative) == c and np.all(self.units[self.representative] == self.substitute) and
            self.frame_cost.shape == self.units.shape):
      raise ValueError("vocoder bank: a stand-in or representative is not in the bank")
    return self


def make_bank(waves: Sequence[np.ndarray], units: Sequence[np.ndarray], ids: Sequence[str],
              codebook: Codebook, features: Sequence[np.ndarray] | None = None,
              settings: dict = FEATURES) -> Bank:
  """A bank of utterances: int16 (or float in [-1, 1]) waveforms at settings' rate, each cut or
  zero-padded to its units' length; `features` (as the codebook quantizes them) pick each unit's
  representative frame (nearest its centroid; the first occurrence without them)."""
  rate, frame_rate = int(settings["sample_rate"]), float(settings["frame_rate"])
  hop = int(round(rate / frame_rate))
  if not units:
    raise ValueError("a vocoder bank needs at least one utterance")
  pieces = []
  for w, u in zip(waves, units):
    w = np.asarray(w)
    if w.dtype != np.int16:
      w = np.round(np.clip(np.asarray(w, np.float32), -1.0, 1.0) * 32767).astype(np.int16)
    pieces.append(np.pad(w[:len(u) * hop], (0, max(0, len(u) * hop - len(w)))))
  all_units = np.concatenate([np.asarray(u, np.int32) for u in units])
  c = codebook.num_units
  present = np.zeros(c, bool)
  present[all_units] = True
  cents = codebook.centroids.astype(np.float64)
  sq = np.sum(cents ** 2, axis=1)
  d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * cents @ cents.T, 0.0)   # [C, C]
  scale = float(np.median(np.where(np.eye(c, dtype=bool), np.inf, d).min(axis=1))) or 1.0
  d = np.where(np.eye(c, dtype=bool), 0.0, d)[:, present]
  m = min(NEAR, int(present.sum()))
  order = np.argsort(d, axis=1, kind="stable")[:, :m]
  near = np.flatnonzero(present)[order].astype(np.int32)
  near_cost = (np.take_along_axis(d, order, axis=1) / scale).astype(np.float32)
  dist = np.zeros(len(all_units), np.float64)
  if features is not None:
    x = (np.concatenate(features) - codebook.mean) / codebook.std
    dist = np.sum((x - codebook.centroids[all_units]) ** 2, axis=1)
    dist = dist / (float(np.median(dist)) or 1.0)
  by_unit = np.lexsort((dist, all_units))          # by unit, then distance
  first = np.searchsorted(all_units[by_unit], np.arange(c))
  representative = np.zeros(c, np.int64)
  representative[present] = by_unit[first[present]]
  return Bank(wave=np.concatenate(pieces), units=all_units,
              starts=np.concatenate([[0], np.cumsum([len(u) for u in units])]).astype(np.int64),
              ids=np.array(list(ids), dtype=str), near=near, near_cost=near_cost,
              representative=representative[near[:, 0]], frame_cost=dist.astype(np.float32),
              sample_rate=rate, frame_rate=frame_rate).check()


def save_bank(bank: Bank, directory: str, name: str = BANK) -> str:
  """Writes the bank (compressed npz, atomically); returns its path."""
  buf = io.BytesIO()
  np.savez_compressed(buf, format=np.int64(BANK_FORMAT), wave=bank.wave, units=bank.units, starts=bank.starts,
                      ids=bank.ids, near=bank.near, near_cost=bank.near_cost, representative=bank.representative,
                      frame_cost=bank.frame_cost,
                      sample_rate=np.int64(bank.sample_rate), frame_rate=np.float64(bank.frame_rate))
  path = storage.join(directory, name)
  storage.write_bytes(path, buf.getvalue())
  return path


def read_bank(path: str, sha256: str | None = None) -> Bank:
  """Reads a bank file; with `sha256`, refuses (DataError, one line) a file whose hash differs."""
  import hashlib
  from lst_jax.data.manifest import DataError
  if not storage.isfile(path):
    raise DataError(f"{path}: the vocoder bank the manifest names does not exist; rebuild the dataset "
                    f"(or put the file back)")
  data = storage.read_bytes(path)
  if sha256 is not None:
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
      raise DataError(f"{path}: sha256 {got[:16]}... differs from the manifest's {sha256[:16]}...: the vocoder "
                      f"bank changed since the dataset was built; put the dataset's file back or rebuild it")
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      if int(z["format"]) != BANK_FORMAT:
        raise DataError(f"{path}: vocoder bank format {int(z['format'])}, this version reads {BANK_FORMAT}")
      return Bank(wave=z["wave"], units=z["units"], starts=z["starts"], ids=z["ids"], near=z["near"],
                  near_cost=z["near_cost"],
                  representative=z["representative"], frame_cost=z["frame_cost"], sample_rate=int(z["sample_rate"]),
                  frame_rate=float(z["frame_rate"])).check()
  except DataError:
    raise
  except Exception as e:  # a damaged zip or array fails in many ways; the file is simply not usable
    raise DataError(f"{path}: not a vocoder bank ({type(e).__name__}: {e})") from None


def load_bank(manifest) -> Bank | None:
  """The dataset's bank, hash-checked against the manifest; None if the manifest names none."""
  from lst_jax.data.manifest import DataError
  rel = manifest.units.get(BANK_KEY)
  if not rel:
    return None
  bank = read_bank(storage.join(manifest.dir, rel), manifest.units.get(f"{BANK_KEY}_sha256"))
  if bank.num_units != manifest.num_units or bank.frame_rate != manifest.unit_rate:
    raise DataError(f"{manifest.dir}: the vocoder bank has {bank.num_units} units at {bank.frame_rate:g} Hz, the "
                    f"dataset {manifest.num_units} at {manifest.unit_rate:g} Hz; rebuild the dataset")
  return bank


# -- exemplar synthesis ----------------------------------------------------------------------------

JOIN_COST = 2.0     # a join's cost in target-cost units (the median nearest-centroid distance); measured
FRAME_WEIGHT = 0.0  # weight of a frame's distance to its centroid (in units of the median one): 1 measured
#                     no better, and above 0 a training utterance's own units may not give back its audio


def exemplar_segments(units, bank: Bank, method: str = "viterbi", join_cost: float = JOIN_COST,
                      context_bonus: float = 0.5, frame_weight: float = FRAME_WEIGHT) -> list[tuple[int, int, int]]:
  """How `units` are played: (first output frame, first bank frame, frames) per piece, in order.

  "viterbi" (the default): the bank frames minimizing target cost (a frame whose unit is one of
  the unit's NEAR nearest present units costs their normalized centroid distance; its own unit
  costs 0) plus `join_cost` per join (less `context_bonus` of it where the bank frame before the
  joined one holds the previous unit); a natural continuation costs nothing. So a piece may play a
  near unit where that saves a join.
  "longest": exact units only; each piece the longest run of bank frames that continues the units
  (the fewest joins), among equals one whose preceding frame holds the previous unit.
  "greedy" (the rule one frame at a time): the bank frame right after the previous one if it holds
  the unit, else the first frame of the unit preceded by the previous unit, else its representative.
  """
  u = _check_units(units, bank.num_units)
  if method == "viterbi":
    return _viterbi(u, bank, join_cost, context_bonus, frame_weight)
  u = bank.substitute[u]
  seq, frame, positions, where = bank._index
  out: list[list[int]] = []
  t, f, cur = 0, len(u), -1           # cur: the seq position last played
  while t < f:
    if method == "longest":
      alive, n = positions[u[t]], 1
      while t + n < f:
        longer = alive[seq[alive + n] == u[t + n]]
        if not longer.size:
          break
        alive, n = longer, n + 1
      if t:
        after = alive[seq[alive - 1] == u[t - 1]]
        alive = after if after.size else alive
      cur = int(alive[0]) + n - 1
      out.append([t, int(frame[alive[0]]), n])
      t += n
      continue
    if method != "greedy":
      raise ValueError(f"unknown exemplar method {method!r}")
    if t and seq[cur + 1] == u[t]:    # the natural continuation (never across an utterance's end)
      cur += 1
      out[-1][2] += 1
    else:
      cands = positions[u[t]]
      after = cands[seq[cands - 1] == u[t - 1]] if t else cands[:0]
      cur = int(after[0]) if after.size else int(where[bank.representative[u[t]]])
      out.append([t, int(frame[cur]), 1])
    t += 1
  return [tuple(s) for s in out]


def _viterbi(u: np.ndarray, bank: Bank, join_cost: float, context_bonus: float,
             frame_weight: float) -> list[tuple[int, int, int]]:
  seq, frame, positions, _ = bank._index
  f = len(u)
  if not f:
    return []
  cands, costs = [], []
  for t in range(f):
    group = [positions[v] for v in bank.near[u[t]]]
    p = np.concatenate(group)
    c = np.repeat(bank.near_cost[u[t]].astype(np.float64), [len(g) for g in group])
    order = np.argsort(p, kind="stable")
    cands.append(p[order])
    costs.append(c[order] + frame_weight * bank.frame_cost[frame[p[order]]])
  best, backs = costs[0], []
  for t in range(1, f):
    p, prev = cands[t], cands[t - 1]
    k = np.minimum(np.searchsorted(prev, p - 1), len(prev) - 1)
    cont = np.where(prev[k] == p - 1, best[k], np.inf)
    m = int(np.argmin(best))
    join = best[m] + join_cost * (1.0 - context_bonus * (seq[p - 1] == u[t - 1]))
    take = cont <= join
    best = costs[t] + np.where(take, cont, join)
    backs.append(np.where(take, k, m))
  i = int(np.argmin(best))
  path = [int(cands[-1][i])]
  for t in range(f - 1, 0, -1):
    i = int(backs[t - 1][i])
    path.append(int(cands[t - 1][i]))
  path.reverse()
  out: list[list[int]] = []
  for t, q in enumerate(path):
    if t and q == path[t - 1] + 1:
      out[-1][2] += 1
    else:
      out.append([t, int(frame[q]), 1])
  return [tuple(s) for s in out]


def exemplar_wave(units, bank: Bank, crossfade_ms: float = CROSSFADE_MS, **selection) -> np.ndarray:
  """float32 waveform of `units` at the bank's rate, exactly len(units) * hop samples: the pieces of
  `exemplar_segments`, each with crossfade/2 of its own audio either side, overlap-added with
  raised-cosine fades (no fade at the very start and end)."""
  hop = bank.hop
  if not 0.0 <= crossfade_ms <= 1000.0 * hop / bank.sample_rate:
    raise ValueError(f"crossfade_ms={crossfade_ms:g}: give 0 to one hop ({1000.0 * hop / bank.sample_rate:g} ms)")
  segments = exemplar_segments(units, bank, **selection)
  total = len(units) * hop
  half = int(round(bank.sample_rate * crossfade_ms / 2000))
  fade = 2 * half
  ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade) if fade else np.zeros(0)
  out = np.zeros(total + 2 * half, np.float64)   # out[half + s] is output sample s
  for t, b, n in segments:
    i = np.searchsorted(bank.starts, b, side="right") - 1
    lo_frame, hi_frame = bank.starts[i], bank.starts[i + 1]
    lo, hi = b * hop - half, (b + n) * hop + half    # bank samples of the piece, with context
    piece = np.zeros(hi - lo, np.float64)
    a, z = max(lo, lo_frame * hop), min(hi, hi_frame * hop)
    piece[a - lo:z - lo] = bank.wave[a:z]
    if fade:
      if t:
        piece[:fade] *= ramp
      if t + n < len(units):
        piece[-fade:] *= ramp[::-1]
      else:
        piece[-half:] = 0.0
      if not t:
        piece[:half] = 0.0
    out[t * hop:t * hop + len(piece)] += piece
  return (out[half:half + total] / 32768.0).astype(np.float32)


class Vocoder:
  """Units -> (float32 waveform, rate) for one dataset: exemplar synthesis from its vocoder bank, or
  Griffin-Lim from its codebook. `kind` says which."""

  def __init__(self, codebook: Codebook, bank: Bank | None = None, crossfade_ms: float = CROSSFADE_MS,
               settings: dict = FEATURES):
    if bank is not None and bank.num_units != codebook.num_units:
      raise ValueError(f"vocoder bank of {bank.num_units} units for a codebook of {codebook.num_units}")
    self.codebook, self.bank, self.crossfade_ms, self.settings = codebook, bank, crossfade_ms, settings
    self.kind = EXEMPLAR if bank is not None else GRIFFIN_LIM
    self.sample_rate = bank.sample_rate if bank is not None else int(settings["sample_rate"])

  @classmethod
  def for_dataset(cls, manifest, kind: str | None = None, **kwargs) -> "Vocoder":
    """The dataset's vocoder. kind None: exemplar where the manifest names a bank (hash-checked),
    else Griffin-Lim; "griffin-lim": Griffin-Lim even so (the bank is not read); "exemplar": the
    bank's, refused (DataError, one line) where the dataset has none."""
    from lst_jax.data import codebook as codebook_lib
    from lst_jax.data.manifest import DataError
    if kind not in (None, EXEMPLAR, GRIFFIN_LIM):
      raise ValueError(f"vocoder kind {kind!r}: choose {EXEMPLAR!r} or {GRIFFIN_LIM!r}")
    bank = None if kind == GRIFFIN_LIM else load_bank(manifest)
    if kind == EXEMPLAR and bank is None:
      raise DataError(f"{manifest.dir}: no vocoder bank (its manifest names none; the demo builder writes one "
                      f"since build version 2): exemplar synthesis needs one; use Griffin-Lim or rebuild")
    return cls(codebook_lib.load(manifest.dir), bank, **kwargs)

  def units_to_wave(self, units) -> tuple[np.ndarray, int]:
    """(float32 waveform, sample rate) of [F] unit ids: exactly F / 25 s (unit_hifigan's interface)."""
    if self.bank is not None:
      return exemplar_wave(units, self.bank, self.crossfade_ms), self.sample_rate
    return units_to_wave(units, self.codebook, self.settings)

  __call__ = units_to_wave

  def describe(self) -> str:
    if self.bank is None:
      return "Griffin-Lim from codebook centroids"
    b = self.bank
    return (f"exemplar synthesis from {b.seconds / 60:.1f} min of training audio ({len(b.ids)} utterances, "
            f"{int(np.sum(b.substitute == np.arange(b.num_units)))}/{b.num_units} units present), "
            f"{self.crossfade_ms:g} ms crossfades")
