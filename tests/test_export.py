"""Export: a checkpoint -> lst_jax directory -> load_pretrained gives the checkpoint's logits; the
baseline -> Hugging Face Llama directory -> transformers gives ours; the files carry the
manifest's provenance; bad input is one line from the command line."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from data_prep.corpus import random_dataset
from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax import vocab as vocab_lib
from lst_jax.data import datasets, packing, pipeline, tokenizer as tokenizer_lib
from lst_jax.data.manifest import sha256_file
from lst_jax.train.restore import restore_model
from lst_jax.export import export
from lst_jax.train import step as step_lib
from lst_jax.train.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "in the beginning god created heaven and earth".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """A small dataset with a real SentencePiece model and codebook (files the export copies)."""
  return random_dataset.make_dataset(str(tmp_path_factory.mktemp("export_data")), num_speech=8, num_text=8,
                                     num_units=40, text_vocab=60, heldout=2, seed=1, listenable=True)


def _run(data, root, kind: str, scan_layers: bool = False):
  """(config, workdir) of a run whose checkpoint 3 holds random parameters (norm scales too)."""
  config = tiny_config(data.dir, kind=kind)
  config.model.scan_layers = scan_layers
  vocab = pipeline.vocab_of(data)
  exp = config_lib.parse(config, vocab.size)
  setup = step_lib.setup(exp.model, exp.optim, vocab, sharding.make_mesh(1, 1, 1))
  workdir = str(root / f"run_{kind}_{int(scan_layers)}")
  datasets.check_run_provenance(workdir, data)
  rng = np.random.default_rng(7)   # numpy draws: an eager model init costs seconds per test

  def draw(path, a):
    name = jax.tree_util.keystr(path)
    if name.endswith("'scale']"):
      return jnp.asarray(1 + 0.3 * rng.normal(size=a.shape), jnp.float32)
    std = 1.0 if name.endswith("'table']") or len(a.shape) < 2 else a.shape[-2] ** -0.5
    return jnp.asarray(std * rng.normal(size=a.shape), jnp.float32)
  params = jax.tree_util.tree_map_with_path(draw, setup.abstract.params)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), 1, 2)
  ckpt.save(3, step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                   opt_state=setup.optimizer.init(params)), {"pos": 0}, force=True)
  ckpt.close()
  return config, workdir


def _sequences(vocab: vocab_lib.Vocab, rng) -> list[list[int]]:
  """Documents mixing text and units, of different lengths: BOS <t> text <s> units ... EOS."""
  out = []
  for n in (9, 23, 40):
    seq, mode = [vocab_lib.BOS], rng.integers(2)
    while len(seq) < n:
      seq.append(vocab.text_mode if mode else vocab.speech_mode)
      k = int(rng.integers(2, 9))
      seq += (vocab.text(rng.integers(0, vocab.text_size, k)) if mode
              else vocab.units(rng.integers(0, vocab.num_units, k))).tolist()
      mode = 1 - mode
    out.append(seq[:n - 1] + [vocab_lib.EOS])
  return out


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, batch):
  return nnx.merge(graphdef, params)(batch)


def _logits(model, seqs, vocab, exp):
  """Our logits [B, T, V] of one unpacked document per row."""
  batch = packing.stack([packing.inference_row(s, vocab, exp.data.patching.patch_size, exp.data.max_tokens,
                                           exp.data.max_patches) for s in seqs])
  graphdef, params = nnx.split(model)
  return np.asarray(_forward(graphdef, params, jax.tree.map(jnp.asarray, batch)))


@pytest.mark.parametrize("kind,scan_layers", [("lst", False), ("baseline", True)])
def test_export_loads_with_the_checkpoints_logits(data, tmp_path, kind, scan_layers):
  import lst_jax
  from lst_jax.pretrained import PretrainedError, read_config
  config, workdir = _run(data, tmp_path, kind, scan_layers)
  out = str(tmp_path / "export")
  written = export(config, workdir, out, log=lambda m: None)
  model = lst_jax.load_pretrained(out)
  ref, exp, manifest, vocab, step = restore_model(config, workdir)
  seqs = _sequences(vocab, np.random.default_rng(0))
  ours, theirs = _logits(model, seqs, vocab, exp), _logits(ref, seqs, vocab, exp)
  for i, s in enumerate(seqs):
    np.testing.assert_allclose(ours[i, :len(s)], theirs[i, :len(s)], atol=1e-6, rtol=0)
  # What the directory says about itself and its data.
  assert sorted(os.listdir(out)) == sorted(["README.md", "codebook.npy", "config.json", "model.safetensors",
                                            "tokenizer.model", "units.json"])
  cfg, read_vocab, raw = read_config(out)
  assert raw == json.loads(json.dumps(written)) and read_vocab == vocab and cfg == exp.model
  assert raw["vocab"] == {"size": vocab.size, "pad_id": 0, "bos_id": 1, "eos_id": 2, "text_offset": 3,
                          "text_size": vocab.text_size, "text_mode_id": vocab.text_mode,
                          "speech_mode_id": vocab.speech_mode, "unit_offset": vocab.unit_offset,
                          "num_units": vocab.num_units}
  assert raw["training"]["step"] == step == 3 and raw["training"]["data_dir"] == data.dir
  assert raw["model"]["scan_layers"] == scan_layers and raw["patching"]["patch_size"] == 4
  assert json.load(open(os.path.join(out, "units.json"))) == data.raw["units"]
  assert raw["units"]["codebook_sha256"] == data.raw["units"]["codebook_sha256"]
  assert raw["tokenizer"]["sha256"] == data.raw["tokenizer"]["sha256"] == \
      sha256_file(os.path.join(out, "tokenizer.model"))
  if scan_layers:   # how it runs may change on loading, what it computes may not
    assert lst_jax.load_pretrained(out, dtype="bfloat16").body.blocks.attn.q.dtype == jnp.bfloat16
    with pytest.raises(PretrainedError, match="cannot override global_layers"):
      lst_jax.load_pretrained(out, global_layers=3)
  card = open(os.path.join(out, "README.md")).read()
  assert f"step 3 of {exp.train.steps}" in card and data.dir in card and "load_pretrained" in card


@pytest.mark.parametrize("scan_layers", [False, True])
def test_baseline_as_hf_llama_matches_transformers(data, tmp_path, scan_layers):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config, workdir = _run(data, tmp_path, "baseline", scan_layers)
  out = str(tmp_path / "hf")
  export(config, workdir, out, fmt="hf_llama", log=lambda m: None)
  for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "sentencepiece.model", "units.json", "lst_vocab.json", "README.md"):
    assert os.path.isfile(os.path.join(out, name)), name
  ref, exp, manifest, vocab, _ = restore_model(config, workdir)
  seqs = _sequences(vocab, np.random.default_rng(1))
  ours = _logits(ref, seqs, vocab, exp)
  hf = transformers.LlamaForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
  n = max(map(len, seqs))
  ids = torch.tensor([s + [vocab_lib.PAD] * (n - len(s)) for s in seqs])
  mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
  with torch.no_grad():
    theirs = hf(input_ids=ids, attention_mask=mask).logits.numpy()
  for i, s in enumerate(seqs):
    np.testing.assert_allclose(theirs[i, :len(s)], ours[i, :len(s)], atol=1e-4, rtol=0)
  if scan_layers:
    return
  greedy = hf.generate(ids[:1, :5], attention_mask=mask[:1, :5], max_new_tokens=1, do_sample=False)
  assert greedy[0, -1].item() == int(ours[0, 4].argmax())
  # The tokenizer: our ids exactly, text as the SentencePiece model encodes it word by word.
  tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
  sp = tokenizer_lib.load(os.path.join(out, "sentencepiece.model"))
  text_ids = vocab.text(sum(tokenizer_lib.encode_words(sp, WORDS), [])).tolist()
  assert tok(" ".join(WORDS)).input_ids == [vocab_lib.BOS] + text_ids
  assert tok("<text> " + " ".join(WORDS[:3]) + "<speech><unit_0><unit_17><unit_39>").input_ids == \
      [vocab_lib.BOS, vocab.text_mode] + vocab.text(sum(tokenizer_lib.encode_words(sp, WORDS[:3]), [])).tolist() + \
      [vocab.speech_mode] + vocab.units([0, 17, 39]).tolist()
  assert tok.decode(text_ids) == " ".join(WORDS)
  assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (vocab_lib.BOS, vocab_lib.EOS, vocab_lib.PAD)
  assert len(tok) == vocab.size
  layout = json.load(open(os.path.join(out, "lst_vocab.json")))
  assert layout["vocab"]["unit_offset"] == vocab.unit_offset and layout["units"]["num_units"] == 40


def _cli(*args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "lst_jax.export", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120, env=env)


def test_cli_refuses_bad_input_in_one_line(data, tmp_path):
  common = ["--config=experiments/demo.py", f"--config.data.dir={data.dir}", f"--out={tmp_path / 'out'}"]
  r = _cli(*common, f"--workdir={tmp_path / 'empty'}")
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "no checkpoints" in r.stderr
  r = _cli(*common, f"--workdir={tmp_path / 'empty'}", "--config.model.kind=lst", "--format=hf_llama")
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert "no Hugging Face Llama form" in r.stderr.strip().splitlines()[-1]
  assert not os.path.exists(tmp_path / "out")
