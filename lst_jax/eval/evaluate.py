"""Evaluate one checkpoint of a run: restore its parameters, score the benchmarks, write the result.

The command line (lst_jax.eval.main) is a thin wrapper around `evaluate_checkpoint`.
"""

from __future__ import annotations


def evaluate_checkpoint(config, workdir: str, step: int | None = None, benchmarks=None, directions=None,
                        output: str | None = None, heldout: bool = True, max_tokens: int | None = None,
                        max_patches: int | None = None, max_items: int | None = None, listen: int = 0,
                        log=print, vocoder_dir: str | None = None, asr_dir: str | None = None) -> dict:
  """Restores <workdir>'s checkpoint `step` (default latest), evaluates it, writes and returns the result.

  `listen` > 0 also generates speech for that many held-out transcripts and reports three word error
  rates (original audio, vocoder ceiling, generated; lst_jax.eval.listening), where the units have a
  vocoder (the dataset's, or the unit HiFi-GAN at `vocoder_dir`), heard by pocketsphinx or the user's
  Whisper at `asr_dir` (lst_jax.eval.asr); both folders are checked before the restore."""
  import json

  import jax

  from lst_jax import storage
  from lst_jax.eval import benchmark_files as bench_lib
  from lst_jax.eval import runner as runner_lib

  if benchmarks is not None and not runner_lib.find_benchmarks(benchmarks):
    raise bench_lib.BenchmarkError(f"--benchmarks={','.join(benchmarks)}: no benchmark files (*.jsonl) there; "
                                   f"nothing to evaluate")
  if listen and asr_dir is not None:   # not a Whisper model in CTranslate2 form: refused before the restore
    from lst_jax.eval import listening
    listening.check_asr(asr_dir)
  from lst_jax.train.restore import restore
  if listen and vocoder_dir is not None:   # a vocoder that does not fit the dataset: refused before the restore
    from lst_jax.data import datasets
    from lst_jax.eval import listening
    listening.check_vocoder(datasets.open_datasets(config.data.dir), vocoder_dir)
  exp, manifest, vocab, mesh, setup, params, step = restore(config, workdir, step)
  if output is None:   # before the evaluation, whose results would otherwise be lost at its end
    storage.check_writable(storage.join(workdir, "eval"), "the run's eval folder")
  extra = {k: v for k, v in (("max_tokens", max_tokens), ("max_patches", max_patches)) if v is not None}
  if benchmarks is None and not runner_lib.default_paths(manifest):
    log(f"note: no benchmarks under {manifest.dir}/{runner_lib.BENCHMARK_DIR}/ (build the demo's with "
        f"`python -m data_prep.benchmarks.builtin --data_dir={manifest.dir}`); held-out losses only")
  runner = runner_lib.BenchmarkRunner.from_setup(setup, exp, manifest, mesh, paths=benchmarks, workdir=workdir,
                                                 heldout=heldout, directions=directions, max_items=max_items,
                                                 **extra)
  result = runner(params, with_scores=True)
  scores = result.pop("scores")
  result = {"step": int(step), "workdir": workdir, "model": exp.model.kind, "data": manifest.dir,
            "row_shape": {"max_tokens": runner.scorer.max_tokens, "max_patches": runner.scorer.max_patches,
                     "patching": f"static p={exp.data.patching.patch_size}"}, **result}
  if listen:
    result["listening"] = _listen(setup, params, exp, manifest, vocab, listen, log, vocoder_dir, asr_dir)
  lead = jax.process_index() == 0
  if lead:
    output = output or storage.join(workdir, "eval", f"{step}.json")
    poorer = _poorer_than(result, output)
    if poorer:
      kept, output = output, output[:-5] + ".partial.json" if output.endswith(".json") else output + ".partial"
      log(f"note: {kept} holds a fuller evaluation ({poorer}); kept it, and wrote this one to {output}")
    storage.write_json(output, result)
    base = output[:-5] if output.endswith(".json") else output
    storage.write_text(base + ".scores.jsonl", "".join(json.dumps(s) + "\n" for s in scores))
    log(f"{exp.model.kind} at step {step} ({workdir}); ranked by log-likelihood of each candidate given the prompt")
    log(runner_lib.format_table(result))
    if "t2s_wer" in result.get("listening", {}):
      from lst_jax.eval import listening
      li = result["listening"]
      log(f"listening ({li['prompts']} held-out transcripts, {li['sampling']}; {li['vocoder']}; "
          f"{li['recognizer']}): {listening.summary_line(li)}")
    log(f"wrote {output} ({result['seconds']:.1f} s)")
  return result


def coverage(result: dict) -> dict:
  """What an evaluation covers: items per (benchmark, direction), and held-out losses / listening
  (an earlier version's "heldout" section counted under today's name)."""
  from lst_jax.train import metrics
  result = metrics.renamed(result)
  cover = {f"{name}/{d}": r.get("n", 0) for name, dirs in result.get("benchmarks", {}).items() for d, r in dirs.items()}
  cover.update({k: 1 for k in (metrics.UNIMODAL, "listening") if k in result})
  return cover


def _poorer_than(result: dict, path: str) -> str | None:
  """What the evaluation already at `path` has that `result` lacks (a partial one must not replace it)."""
  import json

  from lst_jax import storage
  if not storage.isfile(path):
    return None
  try:
    old = json.loads(storage.read_text(path))
  except ValueError:
    return None  # unreadable: replaced
  new, had = coverage(result), coverage(old)
  lacking = [k for k, n in had.items() if new.get(k, 0) < n]
  return f"{len(lacking)} result(s) this one lacks or has fewer items of, e.g. {lacking[0]}" if lacking else None


def _listen(setup, params, exp, manifest, vocab, num: int, log, vocoder_dir: str | None = None,
            asr_dir: str | None = None) -> dict:
  from flax import nnx

  from lst_jax.eval import listening
  if not listening.can_listen(manifest, vocoder_dir):
    log(f"note: {listening.no_vocoder_message(manifest)}; no listening")
    return {"skipped": "no vocoder for these units"}
  return listening.word_error_rates(nnx.merge(setup.graphdef, params), exp, manifest, vocab, num, log=log,
                                    vocoder_dir=vocoder_dir, asr_dir=asr_dir)
