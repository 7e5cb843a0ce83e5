"""Exports a run's checkpoint as a directory that loads without the run (make-free, one command).

  python -m lst_jax.export --config=experiments/X.py --workdir=runs/X --out=DIR
      [--step=N] [--format=lst_jax|hf_llama] [--overwrite] [--config.KEY=VALUE ...]

--format=lst_jax (any model; load with `lst_jax.load_pretrained(DIR)`):
  model.safetensors, config.json (lst_jax.pretrained), tokenizer.model (the dataset's
  SentencePiece model), units.json (the manifest's unit provenance) and the files it names
  (codebook, feature statistics), README.md (a model card).
--format=hf_llama (the baseline only; load with transformers' LlamaForCausalLM):
  config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
  special_tokens_map.json (lst_jax.hf_llama), sentencepiece.model, units.json, lst_vocab.json
  (our id layout and provenance), README.md.
The directory is written beside DIR and moved into place whole.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from absl import app, flags, logging

from lst_jax import cli, storage

FORMATS = ("lst_jax", "hf_llama")
UNITS = "units.json"
SP_MODEL = "tokenizer.model"
UNIT_FILES = ("codebook", "feature_stats")   # manifest "units" keys that name files of the dataset

def export(config, workdir: str, out: str, step: int | None = None, fmt: str = "lst_jax",
           overwrite: bool = False, log=print) -> dict:
  """Writes <out> from <workdir>'s checkpoint `step` (default latest); returns config.json's dict."""
  import jax

  from lst_jax import config as config_lib
  from lst_jax import hf_llama, pretrained
  from lst_jax.config import ConfigError
  from lst_jax.data.manifest import DataError
  from lst_jax.train.restore import restore

  if fmt not in FORMATS:
    raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
  if fmt == "hf_llama":   # refuse before the (slow) restore
    hf_llama.check_llama(config_lib.parse(config).model)
  if storage.isfile(out):
    raise DataError(f"{out!r} exists and is not a directory")
  if storage.isdir(out) and storage.listdir(out):
    if not overwrite:
      raise DataError(f"{out!r} exists and is not empty; pass --overwrite to replace it")
    why = _not_an_export(out)
    if why:
      raise DataError(f"--overwrite replaces an earlier export only, and {out!r} {why}: it may be a run or a "
                      f"dataset, so nothing was touched; give another --out")
  exp, manifest, vocab, _, _, params, step = restore(config, workdir, step)
  tensors = pretrained.flatten_params(params)
  if jax.process_index() != 0:   # restoring is collective, writing is the lead process's
    return {}
  sp_model = _dataset_file(manifest, manifest.raw["tokenizer"], "path", "sha256")
  training = {"step": step, "planned_steps": exp.train.steps, "workdir": storage.absolute(workdir),
              "data_dir": manifest.dir, "dataset": manifest.name,
              "speech_hours": round(manifest.splits["train"].speech_hours, 3) if "train" in manifest.splits
                              else None,
              "experiment": config_lib.to_dict(exp)}
  described = {"vocab": pretrained.vocab_layout(vocab),
               "tokenizer": {**manifest.raw["tokenizer"],
                             "file": None if not sp_model else SP_MODEL if fmt == "lst_jax" else hf_llama.SP_COPY},
               "units": {**manifest.raw["units"], "file": UNITS},
               "patching": {"strategy": exp.data.patching.strategy, "patch_size": exp.data.patching.patch_size,
                            "max_patch_len": exp.data.patching.max_patch_len,
                            "inference": f"static: a speech patch every {exp.data.patching.patch_size} units, "
                                         "every other token a patch of one"},
               "context": {"max_tokens": exp.data.max_tokens, "max_patches": exp.data.max_patches},
               "training": training}
  # Written into a local folder first: beside <out> (one rename at the end), or a temporary one
  # uploaded to a gs:// <out>.
  tmp = tempfile.mkdtemp(prefix="lst_jax_export_") if storage.is_url(out) else out.rstrip("/") + ".export-tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    os.makedirs(tmp)
    if sp_model:
      storage.copy_file(sp_model, os.path.join(tmp, described["tokenizer"]["file"]))
      sp_model = os.path.join(tmp, described["tokenizer"]["file"])
    if fmt == "lst_jax":
      config_json = pretrained.save_pretrained(tmp, exp.model, tensors, vocab, described)
    else:
      hf_llama.save_hf_llama(tmp, exp.model, tensors, vocab, exp.data.max_tokens, sp_model)
      config_json = {"format": "hf_llama", "model": dataclasses.asdict(exp.model), **described,
                     "token_names": {"specials": list(hf_llama.SPECIAL_NAMES), "text_mode": hf_llama.TEXT_MODE,
                                     "speech_mode": hf_llama.SPEECH_MODE, "unit": hf_llama.UNIT_FORMAT.format("u"),
                                     "text": "the SentencePiece piece of id - text_offset"}}
      storage.write_json(os.path.join(tmp, "lst_vocab.json"), config_json)
    _write_units(tmp, manifest)
    with open(os.path.join(tmp, "README.md"), "w") as f:
      f.write(model_card(fmt, exp, vocab, described, sum(t.size for t in tensors.values()), bool(sp_model)))
    storage.publish_dir(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  log(f"exported {exp.model.kind} step {step} of {workdir} as {fmt} to {out} "
      f"({sum(t.size for t in tensors.values()):,} parameters)")
  return config_json


EXPORT_FILES = ("model.safetensors", UNITS, "README.md")   # every export has them, and no folders


def _not_an_export(out: str) -> str | None:
  """Why the folder `out` is not one this command wrote (so --overwrite must not delete it), or None."""
  names = storage.listdir(out)
  missing = [n for n in EXPORT_FILES if n not in names]
  if missing:
    return f"has no {missing[0]}"
  folders = [n for n in names if storage.isdir(storage.join(out, n))]
  return f"holds the folder {folders[0]!r}" if folders else None


def _dataset_file(manifest, entry: dict, key: str, sha_key: str) -> str | None:
  """The dataset file `entry[key]` names (checked against its sha256), or None if it has none."""
  from lst_jax.data.manifest import DataError, sha256_file
  name = entry.get(key)
  path = storage.join(manifest.dir.split(",")[0], name) if name else None
  if path is None or not storage.isfile(path):
    return None
  if entry.get(sha_key) and sha256_file(path) != entry[sha_key]:
    raise DataError(f"{path} changed since the dataset was built (its sha256 differs from the manifest's)")
  return path


def _write_units(directory: str, manifest) -> None:
  """units.json: the manifest's "units" entry as is, plus copies of the files it names."""
  units = manifest.raw["units"]
  storage.write_json(os.path.join(directory, UNITS), units, sort_keys=True)
  for key in UNIT_FILES:
    path = _dataset_file(manifest, units, key, f"{key}_sha256")
    if path:
      storage.copy_file(path, os.path.join(directory, os.path.basename(units[key])))


def model_card(fmt: str, exp, vocab, described: dict, num_params: int, has_tokenizer: bool) -> str:
  """README.md of the export: what it is, how it was trained, how to load it, what ids mean."""
  m, t, u = exp.model, described["training"], described["units"]
  what = ("the Latent Speech-Text Transformer (LST), in which a local encoder pools tokens into patches, a "
          "global transformer runs over the patches and a local decoder predicts the next token"
          if m.kind == "lst" else "the baseline, one decoder-only transformer over the interleaved "
          "speech-text tokens (a Llama architecture)")
  lines = [f"# lst-jax {m.kind} ({num_params / 1e6:.2f}M parameters)", "",
           f"A speech-text language model trained with lst-jax: {what}.", "",
           "## Training", "",
           f"- checkpoint step {t['step']} of {t['planned_steps']} planned, run `{t['workdir']}`",
           f"- data: `{t['data_dir']}` (dataset {t['dataset']!r}"
           + (f", {t['speech_hours']} h of speech" if t["speech_hours"] else "") + ")",
           f"- model: d={m.d_global}, {m.global_layers} layers, {m.global_heads} heads, rope theta {m.rope_theta:g}"
           + (f"; local d={m.d_local}, {m.encoder_layers} encoder / {m.decoder_layers} decoder layers, "
              f"patch size {exp.data.patching.patch_size} ({exp.data.patching.strategy} patching)"
              if m.kind == "lst" else ""),
           f"- context: {exp.data.max_tokens} tokens per row", "",
           "## Vocabulary", "",
           f"{vocab.size} ids: 0 pad, 1 bos, 2 eos; text pieces at 3 + SentencePiece id "
           f"({vocab.text_size} pieces); {vocab.text_mode} opens a text span, {vocab.speech_mode} a speech "
           f"span; speech unit u is {vocab.unit_offset} + u ({vocab.num_units} units). A document is "
           "`bos <mode> tokens... [<mode> tokens...] eos`; text words are encoded one at a time as \"▁word\".",
           "", f"Units: {u.get('quantizer', u.get('source', '?'))}, {u.get('frame_rate')} Hz, "
           f"{u.get('num_units')} units; provenance in `{UNITS}`.", ""]
  if not has_tokenizer:
    lines += ["The dataset had no SentencePiece model, so none is included: text ids cannot be turned "
              "into text here.", ""]
  lines += ["## Loading", ""]
  if fmt == "lst_jax":
    lines += ["```python", "import lst_jax", "model = lst_jax.load_pretrained(\"DIR\")   # a flax.nnx module",
              "from lst_jax.pretrained import read_config", "cfg, vocab, config = read_config(\"DIR\")",
              "# logits [B, T, V] = model(batch): a packed batch as lst_jax.data.packing builds it, e.g. one",
              "# document per row with lst_jax.data.packing.inference_row(tokens, vocab, patch_size, T, P)",
              "```", "",
              "Weights: `model.safetensors`, fp32, named by parameter path; scanned stacks keep their "
              "layers on a leading axis (see `config.json` \"weights\")."]
  else:
    lines += ["```python", "from transformers import AutoTokenizer, LlamaForCausalLM",
              "model = LlamaForCausalLM.from_pretrained(\"DIR\")",
              "tok = AutoTokenizer.from_pretrained(\"DIR\")",
              "ids = tok(\"<text> in the beginning\", return_tensors=\"pt\").input_ids   # bos added",
              "out = model.generate(ids, max_new_tokens=20)", "```", "",
              "Exactly our baseline's weights as a LlamaForCausalLM (fp32; its logits match lst-jax's within "
              "1e-4). Tokens: `<pad>` `<bos>` `<eos>`, the SentencePiece pieces, `<text>`, `<speech>`, and "
              "`<unit_0>` ... for the speech units; write speech as `<speech><unit_12><unit_7>...`. The "
              "original SentencePiece model is `sentencepiece.model`; the id layout is in `lst_vocab.json`.",
              "It loads wherever a Llama checkpoint does (transformers `generate`, lm-eval-harness's `hf` "
              "model, vLLM); only transformers is tested by lst-jax. It was trained on documents of at most "
              "the context above, each `<bos> <text> ...` or `<bos> <speech> ...`: start a text prompt "
              "with `<text>` (the tokenizer adds `<bos>`)."]
  return "\n".join(lines) + "\n"


def define_flags():
  """Flags of the command line only (importing this module for `export` defines none)."""
  config = cli.config_flag()
  flags.DEFINE_string("workdir", None, "The trained run's directory (checkpoints/): a path or gs://bucket/path.")
  flags.DEFINE_string("out", None, "The directory to write: a path or gs://bucket/path.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_enum("format", "lst_jax", FORMATS, "lst_jax (any model) or hf_llama (the baseline).")
  flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
  flags.mark_flags_as_required(["workdir", "out"])
  return config


def main(argv, config):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)
  from lst_jax.pretrained import PretrainedError
  f = flags.FLAGS
  try:
    export(config.value, f.workdir, f.out, f.step, f.format, f.overwrite)
  except PretrainedError as e:
    cli.fail(str(e))


if __name__ == "__main__":
  _config = define_flags()
  cli.run(lambda argv: main(argv, _config))
