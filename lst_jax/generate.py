"""Generate from a trained run and write samples to listen to (make generate).

  python -m lst_jax.generate --config=experiments/demo.py --workdir=runs/demo
      [--tasks=s2s,t2t,t2s,s2t] [--num=4] [--seconds=6] [--temperature=0.8] [--top_k=0]
      [--top_p=0.95] [--seed=0] [--step=N] [--out=<workdir>/samples] [--config.KEY=VALUE ...]

Tasks, each prompted with held-out data of the run's dataset (verses and voices
it never trained on):
  s2s  speech continuation: the first 3 s of an utterance's units, then speech
  t2t  text continuation: the first words of a document, then text
  t2s  text-to-speech: an utterance's transcript, then <s> and speech
  s2t  speech-to-text: an utterance's units, then <t> and text
Speech comes back as audio through the built-in quantizer's vocoder
(lst_jax.data.vocoder) and is transcribed by pocketsphinx (lst_jax.eval.asr).
Writes <out>/: WAVs, unit and text files, samples.jsonl and index.html, and
prints two word error rates: t2s (ASR of the generated speech against the
prompt text) and its ceiling (ASR of the same utterances' ground-truth units
through the vocoder against their transcripts).
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import app, flags, logging

from lst_jax import cli
from lst_jax import vocab as vocab_lib

TASKS = ("s2s", "t2t", "t2s", "s2t")
PROMPT_SECONDS = 3.0
PROMPT_WORDS = 8

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_TASKS = flags.DEFINE_list("tasks", list(TASKS), f"Which tasks, of {', '.join(TASKS)}.")
_NUM = flags.DEFINE_integer("num", 4, "Prompts per task (held-out utterances and documents).")
_SECONDS = flags.DEFINE_float("seconds", 6.0, "Longest speech to generate, in seconds.")
_TEXT_TOKENS = flags.DEFINE_integer("text_tokens", 40, "Longest text to generate, in tokens.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0: greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k likeliest tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "Nucleus mass (1: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Fixes the draws.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/samples).")
flags.mark_flags_as_required(["workdir"])


def prompts(manifest, vocab, task: str, num: int, sp) -> list[dict]:
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)
  bad = [t for t in _TASKS.value if t not in TASKS]
  if bad:
    cli.fail(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
  from lst_jax.decode import generate as gen
  from lst_jax.decode.sampling import Sampling
  from lst_jax.eval import asr as asr_lib, samples as samples_lib
  from lst_jax.eval.evaluate import restore_model
  from lst_jax.data import codebook as codebook_lib, tokenizer, vocoder

  model, exp, manifest, vocab, step = restore_model(_CONFIG.value, _WORKDIR.value, _STEP.value)
  sp = tokenizer.load(manifest.tokenizer_path)
  book = codebook_lib.load(manifest.dir)
  decoder = gen.Decoder(model, vocab, exp.data.patching.patch_size)
  sampling = Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
  recognizer = asr_lib.Recognizer()
  rate = int(manifest.unit_rate)
  voice = lambda units: vocoder.units_to_wave(units, book)[0]
  samples, scores = [], {}
  tasks = {task: prompts(manifest, vocab, task, _NUM.value, sp) for task in _TASKS.value}
  longest = max(len(it["tokens"]) for items in tasks.values() for it in items)
  slots = longest + max(int(_SECONDS.value * rate), _TEXT_TOKENS.value) + 1   # one cache size: one compile
  for task, items in tasks.items():
    speech_out = items and items[0]["modality"] == "speech"
    limit = int(_SECONDS.value * rate) if speech_out else _TEXT_TOKENS.value
    requests = [gen.Request(tuple(it["tokens"]), it["modality"], limit, "stop") for it in items]
    t0 = time.time()
    results = gen.generate(decoder, requests, sampling, _SEED.value, slots=slots)
    print(f"{task}: {len(items)} prompts generated in {time.time() - t0:.1f} s", flush=True)
    refs, hyps, ceiling_refs, ceiling_hyps = [], [], [], []
    for i, (it, g) in enumerate(zip(items, results)):
      s = {"id": f"{task}_{i}", "task": task, "source": it["source"], "stop": g.stop, "rate": 16000,
           "prompt_text": it.get("prompt_text")}
      if it.get("prompt_units") is not None:
        s["prompt_units"] = it["prompt_units"]
        s["prompt_wave"] = voice(it["prompt_units"])
      if speech_out:
        units = np.array([t - vocab.unit_offset for t in g.tokens if t >= vocab.unit_offset], np.int32)
        s["units"], s["wave"] = units, voice(units)
        s["asr"] = recognizer.transcribe(s["wave"]) if len(units) else ""
        if task == "t2s":
          refs.append(it["prompt_text"])
          hyps.append(s["asr"])
          ceiling_refs.append(it["prompt_text"])
          ceiling_hyps.append(recognizer.transcribe(voice(it["reference_units"])))
      else:
        s["text"] = sp.decode([t - vocab_lib.NUM_SPECIAL for t in g.tokens if vocab.is_text(t)])
        if task == "s2t":
          refs.append(it["reference_text"])
          hyps.append(s["text"])
      samples.append(s)
    if refs:
      scores[f"{task}_wer"] = asr_lib.wer(refs, hyps)
    if ceiling_refs:
      scores["vocoder_ceiling_wer"] = asr_lib.wer(ceiling_refs, ceiling_hyps)
  summary = (f"{exp.model.kind} at step {step} of {_WORKDIR.value}; sampling {sampling}; " +
             ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
  out = _OUT.value or os.path.join(_WORKDIR.value, "samples")
  path = samples_lib.write(out, samples, f"lst-jax samples: {_WORKDIR.value}", summary)
  print(summary)
  print(f"wrote {len(samples)} samples to {out} (open {path})")


if __name__ == "__main__":
  cli.run(main)
