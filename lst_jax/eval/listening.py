"""Generating from held-out prompts and listening to the result (make generate, make eval).

Tasks, each prompted with held-out data of the run's dataset (verses and voices
it never trained on):
  s2s  speech continuation: the first 3 s of an utterance's units, then speech
  t2t  text continuation: the first words of a document, then text
  t2s  text-to-speech: an utterance's transcript, then <s> and speech
  s2t  speech-to-text: an utterance's units, then <t> and text
Speech comes back as audio through a vocoder (the user's unit HiFi-GAN with
--vocoder=DIR, lst_jax.data.unit_hifigan; else the dataset's built-in one,
lst_jax.data.vocoder) and is transcribed by pocketsphinx, or by the user's Whisper
with --asr=DIR (lst_jax.eval.asr).
t2s reports three word error rates, always together, on the same utterances
and against the same transcripts: the recognizer on the original audio (where
the dataset keeps it, lst_jax.data.heldout_audio), on the ground-truth units
through the vocoder (the ceiling), and on the generated speech; each with a
bootstrap interval over utterances, and how far the generated WER lies above
the ceiling (paired). Every speech task also says how its samples ended (EOS,
a switch to text, the length limit) and how long they are, so a reader knows
what was heard. s2t adds the WER of the generated text against the transcript.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from lst_jax import vocab as vocab_lib

TASKS = ("s2s", "t2t", "t2s", "s2t")
PROMPT_SECONDS = 3.0
PROMPT_WORDS = 8
SHORT_SECONDS = 1.0   # generated speech shorter than this is counted apart (it stopped almost at once)
HEARD = ("original", "ceiling", "generated")   # the three t2s word error rates, in this order


def default_sampling():
  """What make generate and make eval sample with: a little cooler than the model, the tail cut."""
  from lst_jax.decode.sampling import Sampling
  return Sampling(temperature=0.8, top_k=0, top_p=0.95)


@dataclasses.dataclass(frozen=True)
class Limits:
  """How much each request may generate."""
  seconds: float = 6.0      # speech
  text_tokens: int = 40     # text


def prompts(manifest, vocab: vocab_lib.Vocab, task: str, num: int, sp) -> list[dict]:
  """Held-out prompts of one task: token ids, the modality to generate, and what to show."""
  from lst_jax.data.shards import Shards
  split = manifest.split("heldout")
  bos = [vocab_lib.BOS]
  out = []
  if task == "t2t":
    for r in list(Shards(split.text, manifest.shard_records))[:num]:
      words = r.text_ids[r.word_offsets[0]:r.word_offsets[min(PROMPT_WORDS, r.num_words)]]
      out.append({"tokens": bos + [vocab.text_mode] + vocab.text(words).tolist(), "modality": "text",
                  "prompt_text": sp.decode(list(map(int, words))), "source": r.id})
    return out
  records = list(Shards(split.speech, manifest.shard_records))
  if task == "t2s":  # one prompt per text (held-out verses come in several voices)
    records = list({tuple(r.text_ids.tolist()): r for r in reversed(records)}.values())[::-1]
  for r in records[:num]:
    units, text = vocab.units(r.units).tolist(), sp.decode(list(map(int, r.text_ids)))
    if task == "s2s":
      head = r.units[:int(PROMPT_SECONDS * r.unit_rate)]
      out.append({"tokens": bos + [vocab.speech_mode] + vocab.units(head).tolist(), "modality": "speech",
                  "prompt_units": head, "source": r.id})
    elif task == "t2s":
      out.append({"tokens": bos + [vocab.text_mode] + vocab.text(r.text_ids).tolist() + [vocab.speech_mode],
                  "modality": "speech", "prompt_text": text, "reference_units": r.units, "source": r.id})
    else:  # s2t
      out.append({"tokens": bos + [vocab.speech_mode] + units + [vocab.text_mode], "modality": "text",
                  "prompt_units": r.units, "reference_text": text, "source": r.id})
  return out


def can_listen(manifest, vocoder_dir: str | None = None) -> bool:
  """Whether the units can be voiced: by the user's unit vocoder, or the built-in quantizer's (its
  codebook centroids are log-mel frames)."""
  return vocoder_dir is not None or bool(manifest.units.get("codebook"))


def check_vocoder(manifest, vocoder_dir: str | None) -> None:
  """Refuses (one line) a user's unit vocoder that does not fit the dataset's units, before anything
  slow (a checkpoint restore) runs; the built-in vocoder needs no check."""
  if vocoder_dir is not None:
    from lst_jax.data import unit_hifigan
    unit_hifigan.check(vocoder_dir, manifest.units)


def check_asr(asr_dir: str | None) -> None:
  """Refuses (one line) a --asr folder that is not a Whisper model in CTranslate2 form, before anything
  slow runs; pocketsphinx needs no check."""
  if asr_dir is not None:
    from lst_jax.eval import asr
    asr.check_whisper_dir(asr_dir)


def no_vocoder_message(manifest) -> str:
  return (f"{manifest.dir}'s units have no built-in vocoder (only the built-in quantizer's do); give a unit "
          f"HiFi-GAN with --vocoder=DIR (lst_jax.data.unit_hifigan names the public ones)")


class Listener:
  """A trained model's decoder, its dataset's tokenizer, codebook and vocoder, and a recognizer
  (pocketsphinx, or the user's Whisper at `asr_dir`)."""

  def __init__(self, model, exp, manifest, vocab: vocab_lib.Vocab, sampling, seed: int = 0,
               limits: Limits = Limits(), vocoder_dir: str | None = None, asr_dir: str | None = None):
    from lst_jax.decode import generate as gen
    from lst_jax.eval import asr
    self.manifest, self.vocab, self.sampling, self.seed, self.limits = manifest, vocab, sampling, seed, limits
    self.sp = manifest.load_tokenizer()
    self.vocoder = load_vocoder(manifest, vocoder_dir)
    self.decoder = gen.Decoder(model, vocab, exp.data.patching.patch_size)
    self.recognizer = asr.recognizer(asr_dir)
    self.rate = int(manifest.unit_rate)
    self.audio_rate = self.vocoder.sample_rate

  def voice(self, units) -> np.ndarray:
    wave, rate = self.vocoder(units)
    assert rate == self.audio_rate
    return wave

  def original(self, record_id: str) -> np.ndarray | None:
    """The held-out utterance's original audio at the vocoder's rate, where the dataset keeps it."""
    from lst_jax.data import audio, heldout_audio
    found = heldout_audio.read(self.manifest.dir, record_id)
    if found is None:
      return None
    wave, rate = found
    return wave if rate == self.audio_rate else audio.resample(wave, rate, self.audio_rate)

  def tasks(self, names, num: int) -> dict[str, list[dict]]:
    return {task: prompts(self.manifest, self.vocab, task, num, self.sp) for task in names}

  def slots(self, tasks: dict[str, list[dict]]) -> int:
    """One cache size for every task: one compile."""
    longest = max((len(it["tokens"]) for items in tasks.values() for it in items), default=1)
    return longest + max(int(self.limits.seconds * self.rate), self.limits.text_tokens) + 1

  def run(self, task: str, items: list[dict], slots: int, log=print) -> tuple[list[dict], dict[str, float]]:
    """Generates for one task's prompts; (samples for lst_jax.eval.samples, word error rates)."""
    from lst_jax.decode import generate as gen
    from lst_jax.eval import asr
    if not items:
      return [], {}
    vocab = self.vocab
    speech_out = items[0]["modality"] == "speech"
    limit = int(self.limits.seconds * self.rate) if speech_out else self.limits.text_tokens
    requests = [gen.Request(tuple(it["tokens"]), it["modality"], limit, "stop") for it in items]
    t0 = time.time()
    results = gen.generate(self.decoder, requests, self.sampling, self.seed, slots=slots)
    log(f"{task}: {len(items)} prompts generated in {time.time() - t0:.1f} s")
    samples, heard = [], []
    for i, (it, g) in enumerate(zip(items, results)):
      s = {"id": f"{task}_{i}", "task": task, "source": it["source"], "stop": g.stop, "rate": self.audio_rate,
           "prompt_text": it.get("prompt_text")}
      if it.get("prompt_units") is not None:
        s["prompt_units"] = it["prompt_units"]
        s["prompt_wave"] = self.voice(it["prompt_units"])
      if speech_out:
        units = np.array([t - vocab.unit_offset for t in g.tokens if vocab.is_speech(t)], np.int32)
        s["units"], s["wave"] = units, self.voice(units)
        s["seconds"] = round(len(units) / self.rate, 3)
        s["asr"] = self.recognizer.transcribe(s["wave"], self.audio_rate) if len(units) else ""
        if task == "t2s":
          heard.append(self._heard(it, s))
      else:
        s["text"] = self.sp.decode([t - vocab_lib.NUM_SPECIAL for t in g.tokens if vocab.is_text(t)])
        if task == "s2t":
          wrong, words = asr.errors(it["reference_text"], s["text"])
          heard.append({"words": words, "generated": wrong})
      samples.append(s)
    scores = {}
    if task == "t2s":
      scores.update(three_wers(heard))
    elif task == "s2t" and heard:
      scores["s2t_wer"] = _wer(heard, "generated")
    if speech_out:
      scores[f"{task}_endings"] = endings(samples)
    return samples, scores

  def _heard(self, item: dict, sample: dict) -> dict:
    """One t2s utterance's (errors, words) under the three listenings; "original" None without audio."""
    from lst_jax.eval import asr
    ref = item["prompt_text"]
    ceiling = self.recognizer.transcribe(self.voice(item["reference_units"]), self.audio_rate)
    original = self.original(item["source"])
    out = {"source": item["source"], "words": asr.errors(ref, "")[1], "stop": sample["stop"],
           "seconds": sample["seconds"], "generated": asr.errors(ref, sample["asr"])[0],
           "ceiling": asr.errors(ref, ceiling)[0], "original": None}
    if original is not None:
      out["original"] = asr.errors(ref, self.recognizer.transcribe(original, self.audio_rate))[0]
    sample["ceiling_asr"] = ceiling
    return out


def _wer(heard: list[dict], which: str) -> float:
  words = sum(h["words"] for h in heard)
  return sum(h[which] for h in heard) / words if words else float("nan")


def three_wers(heard: list[dict]) -> dict:
  """t2s's word error rates on the original audio, the ceiling and the generated speech (same
  utterances, same references), each with a 95% bootstrap interval over utterances, how far the
  generated WER lies above the ceiling (paired interval), and the per-utterance counts."""
  from lst_jax.eval import stats
  if not heard:
    return {}
  words = [h["words"] for h in heard]
  out = {}
  for which, key in zip(HEARD, ("original_wer", "vocoder_ceiling_wer", "t2s_wer")):
    if which == "original" and any(h["original"] is None for h in heard):
      out[key], out[key + "_ci"] = None, None   # the dataset keeps no original audio for these
      continue
    errs = [h[which] for h in heard]
    out[key], out[key + "_ci"] = _wer(heard, which), list(stats.ratio_interval(errs, words))
  out["t2s_above_ceiling"] = out["t2s_wer"] - out["vocoder_ceiling_wer"]
  out["t2s_above_ceiling_ci"] = list(stats.paired_ratio_difference_interval(
      [h["generated"] for h in heard], [h["ceiling"] for h in heard], words))
  out["t2s_utterances"] = heard
  return out


def endings(samples: list[dict]) -> dict:
  """How a task's speech samples ended and how long they are (the page and the JSON say it)."""
  from lst_jax.decode.generate import STOPS
  seconds = [s["seconds"] for s in samples if "seconds" in s]
  return {"samples": len(seconds), **{stop: sum(s["stop"] == stop for s in samples) for stop in STOPS[1:]},
          f"under_{SHORT_SECONDS:g}s": sum(x < SHORT_SECONDS for x in seconds),
          "mean_seconds": float(np.mean(seconds)) if seconds else 0.0}


def summary_line(scores: dict) -> str:
  """The listening figures in one line: the three t2s WERs with intervals, then the rest."""
  parts = []
  for key, label in (("original_wer", "original audio"), ("vocoder_ceiling_wer", "vocoder ceiling"),
                     ("t2s_wer", "generated (t2s)")):
    if key in scores:
      v, ci = scores[key], scores.get(key + "_ci")
      parts.append(f"{label} WER " + ("n/a (no original audio in the dataset)" if v is None else
                                      f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"))
  if scores.get("t2s_above_ceiling") is not None:
    lo, hi = scores["t2s_above_ceiling_ci"]
    parts.append(f"generated - ceiling {scores['t2s_above_ceiling']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
  if "s2t_wer" in scores:
    parts.append(f"s2t text WER {scores['s2t_wer']:.3f}")
  for key, e in scores.items():
    if key.endswith("_endings"):
      parts.append(f"{key[:-len('_endings')]}: {e['samples']} speech samples, {e['eos']} ended at EOS, "
                   f"{e['switch']} at a switch to text, {e['length']} at the length limit, "
                   f"{e[f'under_{SHORT_SECONDS:g}s']} under {SHORT_SECONDS:g} s (mean {e['mean_seconds']:.1f} s)")
  return "; ".join(parts)


def load_vocoder(manifest, vocoder_dir: str | None = None):
  """The user's unit HiFi-GAN (checked against the dataset's units) or the dataset's built-in vocoder."""
  if vocoder_dir is not None:
    from lst_jax.data import unit_hifigan
    return unit_hifigan.load(vocoder_dir, manifest.units)
  if not can_listen(manifest):
    raise ValueError(no_vocoder_message(manifest))
  from lst_jax.data import vocoder
  return vocoder.Vocoder.for_dataset(manifest)


def word_error_rates(model, exp, manifest, vocab: vocab_lib.Vocab, num: int, seed: int = 0, log=print,
                     vocoder_dir: str | None = None, asr_dir: str | None = None) -> dict:
  """make eval's listening figures: the three t2s WERs of `num` held-out transcripts (three_wers)
  and how the generated speech ended (endings)."""
  listener = Listener(model, exp, manifest, vocab, default_sampling(), seed, vocoder_dir=vocoder_dir,
                      asr_dir=asr_dir)
  tasks = listener.tasks(["t2s"], num)
  _, scores = listener.run("t2s", tasks["t2s"], listener.slots(tasks), log=log)
  return {"prompts": len(tasks["t2s"]), "sampling": str(listener.sampling), "seed": seed,
          "vocoder": listener.vocoder.describe(), "recognizer": listener.recognizer.description,
          **scores}
