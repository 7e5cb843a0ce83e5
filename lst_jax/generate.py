"""Generate from a trained run and write samples to listen to (make generate).

  python -m lst_jax.generate --config=experiments/demo.py --workdir=runs/demo
      [--tasks=s2s,t2t,t2s,s2t] [--num=4] [--seconds=6] [--temperature=0.8] [--top_k=0]
      [--top_p=0.95] [--seed=0] [--step=N] [--out=<workdir>/samples] [--vocoder=DIR] [--asr=DIR]
      [--config.KEY=VALUE ...]

Tasks (s2s, t2t, t2s, s2t) and word error rates: lst_jax.eval.listening; the recognizer is
pocketsphinx, or the user's Whisper in CTranslate2 form with --asr=DIR (lst_jax.eval.asr).
Writes <out>/: WAVs, unit and text files, samples.jsonl, index.html and scores.json.
"""

from __future__ import annotations

from absl import app, flags, logging

from lst_jax import cli, storage
from lst_jax.eval.listening import TASKS, Limits, default_sampling

_CONFIG = cli.config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory: a path or gs://bucket/path.")
_TASKS = flags.DEFINE_list("tasks", list(TASKS), f"Which tasks, of {', '.join(TASKS)}.")
_NUM = flags.DEFINE_integer("num", 4, "Prompts per task (held-out utterances and documents).", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", Limits.seconds, "Longest speech to generate, in seconds.")
_TEXT_TOKENS = flags.DEFINE_integer("text_tokens", Limits.text_tokens, "Longest text to generate, in tokens.",
                                    lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", default_sampling().temperature, "0: greedy.")
_TOP_K = flags.DEFINE_integer("top_k", default_sampling().top_k, "Sample among the k likeliest tokens (0: all).",
                              lower_bound=0)
_TOP_P = flags.DEFINE_float("top_p", default_sampling().top_p, "Nucleus mass (1: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Fixes the draws.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", lower_bound=0)
cli.bounded("seconds", low=0.0, open_low=True)
cli.bounded("temperature", low=0.0)
cli.bounded("top_p", low=0.0, high=1.0, open_low=True)
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/samples).")
_VOCODER = flags.DEFINE_string("vocoder", None, "A unit HiFi-GAN folder (fairseq/textlesslib CodeHiFiGAN layout) "
                               "for datasets with HuBERT units; default: the dataset's built-in vocoder.")
_ASR = flags.DEFINE_string("asr", None, "A Whisper model folder in CTranslate2 form (faster-whisper's layout, "
                           "e.g. faster-whisper-base); default: pocketsphinx.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)
  bad = [t for t in _TASKS.value if t not in TASKS]
  if bad:
    cli.fail(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
  from lst_jax.eval import listening
  listening.check_asr(_ASR.value)   # refused before the restore (and anything slow) when it is no Whisper
  from lst_jax.decode.sampling import Sampling
  from lst_jax.eval import samples as samples_lib
  from lst_jax.train.restore import restore_model

  from lst_jax.data import datasets

  data = datasets.open_datasets(_CONFIG.value.data.dir)
  if not listening.can_listen(data, _VOCODER.value):
    cli.fail(listening.no_vocoder_message(data))
  listening.check_vocoder(data, _VOCODER.value)   # refused before the restore when it does not fit
  model, exp, manifest, vocab, step = restore_model(_CONFIG.value, _WORKDIR.value, _STEP.value)
  sampling = Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
  listener = listening.Listener(model, exp, manifest, vocab, sampling, _SEED.value,
                                Limits(_SECONDS.value, _TEXT_TOKENS.value), vocoder_dir=_VOCODER.value,
                                asr_dir=_ASR.value)
  tasks = listener.tasks(_TASKS.value, _NUM.value)
  slots = listener.slots(tasks)
  if slots > exp.data.max_tokens:   # past the trained row length, and a cache that may not fit in memory
    cli.fail(f"the longest prompt plus --seconds={_SECONDS.value:g} of speech (or --text_tokens="
             f"{_TEXT_TOKENS.value}) need {slots} token slots, more than the {exp.data.max_tokens} of a row "
             f"the model trained on (config.data.max_tokens); lower --seconds or --text_tokens")
  samples, scores = [], {}
  for task, items in tasks.items():
    task_samples, task_scores = listener.run(task, items, slots, log=lambda m: print(m, flush=True))
    samples += task_samples
    scores.update(task_scores)
  summary = (f"{exp.model.kind} at step {step} of {_WORKDIR.value}; sampling {sampling}; "
             f"{listener.vocoder.describe()}; heard by {listener.recognizer.description}; "
             f"{listening.summary_line(scores)}")
  out = _OUT.value or storage.join(_WORKDIR.value, "samples")
  path = samples_lib.write(out, samples, f"lst-jax samples: {_WORKDIR.value}", summary)
  storage.write_json(storage.join(out, "scores.json"), {"model": exp.model.kind, "step": step,
                                                        "sampling": str(sampling),
                                                        "vocoder": listener.vocoder.describe(),
                                                        "recognizer": listener.recognizer.description, **scores})
  print(summary)
  print(f"wrote {len(samples)} samples to {out} (open {path})")


if __name__ == "__main__":
  cli.run(main)
