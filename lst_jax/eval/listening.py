"""Generating from held-out prompts and listening to the result (make generate, make eval).

Tasks, each prompted with held-out data of the run's dataset (verses and voices
it never trained on):
  s2s  speech continuation: the first 3 s of an utterance's units, then speech
  t2t  text continuation: the first words of a document, then text
  t2s  text-to-speech: an utterance's transcript, then <s> and speech
  s2t  speech-to-text: an utterance's units, then <t> and text
Speech comes back as audio through the built-in quantizer's vocoder
(lst_jax.data.vocoder) and is transcribed by pocketsphinx (lst_jax.eval.asr).
Two word error rates come out: t2s (ASR of the generated speech against the
prompt text) and its ceiling (ASR of the same utterances' ground-truth units
through the vocoder against their transcripts); s2t adds the WER of the
generated text against the utterance's transcript.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from lst_jax import vocab as vocab_lib

TASKS = ("s2s", "t2t", "t2s", "s2t")
PROMPT_SECONDS = 3.0
PROMPT_WORDS = 8


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


def can_listen(manifest) -> bool:
  """Only the built-in quantizer's units have a vocoder (their codebook centroids are log-mel frames)."""
  return bool(manifest.units.get("codebook"))


class Listener:
  """A trained model's decoder, its dataset's tokenizer, codebook and vocoder, and a recognizer."""

  def __init__(self, model, exp, manifest, vocab: vocab_lib.Vocab, sampling, seed: int = 0,
               limits: Limits = Limits()):
    from lst_jax.data import codebook as codebook_lib
    from lst_jax.data.features import FEATURES
    from lst_jax.decode import generate as gen
    from lst_jax.eval import asr
    self.manifest, self.vocab, self.sampling, self.seed, self.limits = manifest, vocab, sampling, seed, limits
    self.sp = manifest.load_tokenizer()
    self.codebook = codebook_lib.load(manifest.dir)
    self.decoder = gen.Decoder(model, vocab, exp.data.patching.patch_size)
    self.recognizer = asr.Recognizer()
    self.rate = int(manifest.unit_rate)
    self.audio_rate = FEATURES["sample_rate"]

  def voice(self, units) -> np.ndarray:
    from lst_jax.data import vocoder
    wave, rate = vocoder.units_to_wave(units, self.codebook)
    assert rate == self.audio_rate
    return wave

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
    samples, scores = [], {}
    refs, hyps, ceiling_hyps = [], [], []   # t2s: the ceiling is scored against the same references
    for i, (it, g) in enumerate(zip(items, results)):
      s = {"id": f"{task}_{i}", "task": task, "source": it["source"], "stop": g.stop, "rate": self.audio_rate,
           "prompt_text": it.get("prompt_text")}
      if it.get("prompt_units") is not None:
        s["prompt_units"] = it["prompt_units"]
        s["prompt_wave"] = self.voice(it["prompt_units"])
      if speech_out:
        units = np.array([t - vocab.unit_offset for t in g.tokens if vocab.is_speech(t)], np.int32)
        s["units"], s["wave"] = units, self.voice(units)
        s["asr"] = self.recognizer.transcribe(s["wave"], self.audio_rate) if len(units) else ""
        if task == "t2s":
          refs.append(it["prompt_text"])
          hyps.append(s["asr"])
          ceiling_hyps.append(self.recognizer.transcribe(self.voice(it["reference_units"]), self.audio_rate))
      else:
        s["text"] = self.sp.decode([t - vocab_lib.NUM_SPECIAL for t in g.tokens if vocab.is_text(t)])
        if task == "s2t":
          refs.append(it["reference_text"])
          hyps.append(s["text"])
      samples.append(s)
    if refs:
      scores[f"{task}_wer"] = asr.wer(refs, hyps)
    if ceiling_hyps:
      scores["vocoder_ceiling_wer"] = asr.wer(refs, ceiling_hyps)
    return samples, scores


def word_error_rates(model, exp, manifest, vocab: vocab_lib.Vocab, num: int, seed: int = 0, log=print) -> dict:
  """make eval's listening figures: t2s WER of `num` held-out transcripts and the vocoder's ceiling."""
  listener = Listener(model, exp, manifest, vocab, default_sampling(), seed)
  tasks = listener.tasks(["t2s"], num)
  _, scores = listener.run("t2s", tasks["t2s"], listener.slots(tasks), log=log)
  return {"prompts": len(tasks["t2s"]), "sampling": str(listener.sampling), "seed": seed, **scores}
