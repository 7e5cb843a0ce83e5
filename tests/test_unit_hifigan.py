"""The user's unit HiFi-GAN (fairseq / textlesslib CodeHiFiGAN layout), lst_jax.data.unit_hifigan.

A tiny randomly initialised generator (16 channels, upsampling 8 * 8 * 10 = 640 samples per unit: 25 Hz
at 16 kHz) is built here as torch.nn modules laid out like fairseq's CodeGenerator (its state dict has
fairseq's names and weight_g / weight_v tensors), saved as fairseq saves it ({"generator": state_dict}
next to config.json), and loaded by the module under test, whose functional forward must give this
module copy's waveform. Nothing is downloaded."""

import json
import os

import numpy as np
import pytest

from lst_jax.data import provenance, unit_hifigan
from lst_jax.data.manifest import DataError

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
# The reference saves weight_g / weight_v as fairseq did, with the deprecated weight_norm on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

K = 50                 # units
HOP = 640              # 8 * 8 * 10
BASE = {"resblock": "1", "upsample_rates": [8, 8, 10], "upsample_kernel_sizes": [16, 16, 20],
        "upsample_initial_channel": 16, "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 2, 3]], "num_embeddings": K, "embedding_dim": 8,
        "model_in_dim": 8, "sampling_rate": 16000, "segment_size": 8960, "code_hop_size": 640}
DUR = {"dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 6, "var_pred_kernel_size": 3,
                                "var_pred_dropout": 0.5}}
SPK = {"multispkr": "from_input_file", "num_speakers": 3, "multistyle": "from_input_file", "num_styles": 2,
       "model_in_dim": 24}
HUBERT_UNITS = {"source": "quantizer", "quantizer": "hubert-kmeans", "num_units": K, "frame_rate": 25.0,
                "hubert_sha256": "0" * 64, "layer": 11, "kmeans_sha256": "1" * 64, "kmeans": "hubert_kmeans.npy"}


# -- an independent reference: fairseq's CodeGenerator as modules -----------------------------------

def _wn(module, layout):
  if layout == "parametrizations":
    return nn.utils.parametrizations.weight_norm(module)
  return nn.utils.weight_norm(module)   # weight_g / weight_v, as fairseq saved its checkpoints


class RefResBlock(nn.Module):
  def __init__(self, ch, k, dilations, layout):
    super().__init__()
    self.convs1 = nn.ModuleList([_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=(k * d - d) // 2), layout)
                                 for d in dilations])
    self.convs2 = nn.ModuleList([_wn(nn.Conv1d(ch, ch, k, 1, dilation=1, padding=(k - 1) // 2), layout)
                                 for _ in dilations])

  def forward(self, x):
    for c1, c2 in zip(self.convs1, self.convs2):
      x = c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1)) + x
    return x


class RefDurationPredictor(nn.Module):
  def __init__(self, dim, hidden, k):
    super().__init__()
    self.conv1 = nn.Sequential(nn.Conv1d(dim, hidden, k, padding=(k - 1) // 2), nn.ReLU())
    self.ln1 = nn.LayerNorm(hidden)
    self.conv2 = nn.Sequential(nn.Conv1d(hidden, hidden, k, padding=1), nn.ReLU())
    self.ln2 = nn.LayerNorm(hidden)
    self.proj = nn.Linear(hidden, 1)

  def forward(self, x):  # [B, T, C] -> [B, T]
    x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
    x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
    return self.proj(x).squeeze(2)


class RefCodeGenerator(nn.Module):
  def __init__(self, cfg, layout="weight_norm"):
    super().__init__()
    ch, e = cfg["upsample_initial_channel"], cfg["embedding_dim"]
    self.num_kernels = len(cfg["resblock_kernel_sizes"])
    self.conv_pre = _wn(nn.Conv1d(cfg["model_in_dim"], ch, 7, 1, padding=3), layout)
    self.ups = nn.ModuleList([_wn(nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2),
                                  layout)
                              for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"]))])
    self.resblocks = nn.ModuleList([RefResBlock(ch // 2 ** (i + 1), k, d, layout) for i in range(len(self.ups))
                                    for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"])])
    self.conv_post = _wn(nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, 1, padding=3), layout)
    self.dict = nn.Embedding(cfg["num_embeddings"], e)
    self.multispkr, self.multistyle = cfg.get("multispkr"), cfg.get("multistyle")
    if self.multispkr:
      self.spkr = nn.Embedding(cfg.get("num_speakers", 200), e)
    if self.multistyle:
      self.style = nn.Embedding(cfg.get("num_styles", 100), e)
    self.dur_predictor = None
    if cfg.get("dur_predictor_params"):
      p = cfg["dur_predictor_params"]
      self.dur_predictor = RefDurationPredictor(p["encoder_embed_dim"], p["var_pred_hidden_dim"],
                                                p["var_pred_kernel_size"])

  def forward(self, code, spkr=None, style=None, dur_prediction=False):
    x = self.dict(code).transpose(1, 2)
    if self.dur_predictor is not None and dur_prediction:
      dur = torch.clamp(torch.round(torch.exp(self.dur_predictor(x.transpose(1, 2))) - 1).long(), min=1)
      x = torch.repeat_interleave(x, dur.view(-1), dim=2)
    for table, index, on in ((getattr(self, "spkr", None), spkr, self.multispkr),
                             (getattr(self, "style", None), style, self.multistyle)):
      if on:
        c = table(index).transpose(1, 2)                  # [1, E, 1]
        x = torch.cat([x, c.repeat(1, 1, x.shape[-1])], dim=1)
    x = self.conv_pre(x)
    for i, up in enumerate(self.ups):
      x = up(F.leaky_relu(x, 0.1))
      xs = sum(self.resblocks[i * self.num_kernels + j](x) for j in range(self.num_kernels))
      x = xs / self.num_kernels
    return torch.tanh(self.conv_post(F.leaky_relu(x)))


def make_generator(cfg, seed=0, layout="weight_norm"):
  """Random weights at a scale that makes every layer matter (the published init's 0.01 would not)."""
  torch.manual_seed(seed)
  model = RefCodeGenerator(cfg, layout).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(0.0, 1.0 if name.startswith(("dict", "spkr", "style")) else 0.4)
      if name.endswith(("weight_g", "original0")):
        p.abs_().add_(0.5)
      if name.startswith("dur_predictor.proj.bias"):
        p.fill_(1.2)           # durations of about 2-3 frames
  return model


def save(directory, cfg, model, config_name="config.json", checkpoint_name="g_00000100", state=None):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, config_name), "w") as f:
    json.dump(cfg, f)
  torch.save({"generator": state if state is not None else model.state_dict()},
             os.path.join(directory, checkpoint_name))
  return str(directory)


def reference_wave(model, units, spkr=None, style=None, dur_prediction=False):
  code = torch.tensor(np.asarray(units), dtype=torch.long)
  if dur_prediction:
    code = torch.unique_consecutive(code)                # textlesslib's deduplicate_code
  with torch.inference_mode():
    kw = {}
    if spkr is not None:
      kw["spkr"] = torch.tensor([[spkr]])
    if style is not None:
      kw["style"] = torch.tensor([[style]])
    return model(code[None], dur_prediction=dur_prediction, **kw)[0, 0].numpy()


UNITS = np.random.default_rng(0).integers(0, K, 30)
UNITS_RUNS = np.repeat(np.random.default_rng(1).integers(0, K, 12), 2)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
  model = make_generator(BASE)
  return save(tmp_path_factory.mktemp("voc") / "plain", BASE, model), model


# -- the forward --------------------------------------------------------------------------------

def test_matches_reference_length_finite_deterministic(plain):
  directory, model = plain
  voc = unit_hifigan.load(directory, HUBERT_UNITS, device="cpu")
  wave = voc.synthesize(UNITS)
  assert wave.dtype == np.float32 and wave.shape == (len(UNITS) * HOP,)
  assert voc.sample_rate == 16000 and voc.frame_rate == 25.0 and voc.hop == HOP
  assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0 and wave.std() > 0.05
  np.testing.assert_array_equal(wave, voc.synthesize(UNITS))                       # deterministic
  np.testing.assert_allclose(wave, reference_wave(model, UNITS), atol=2e-5, rtol=0)
  w, rate = voc.units_to_wave(UNITS[:5])
  assert rate == 16000 and len(w) == 5 * HOP == unit_hifigan.expected_samples(5, voc.config)
  assert len(voc.synthesize([])) == 0
  with pytest.raises(ValueError, match=r"unit ids must lie in \[0, 50\); got 3..50"):
    voc.synthesize([3, 50])
  with pytest.raises(DataError, match="no dur_predictor_params"):
    voc.synthesize(UNITS, dur_prediction=True)


@pytest.mark.parametrize("layout", ["parametrizations", "removed"])
def test_other_weight_layouts_give_the_same_wave(plain, tmp_path, layout):
  """torch's newer weight_norm parametrizations, and a checkpoint saved after remove_weight_norm."""
  directory, model = plain
  if layout == "parametrizations":
    other = make_generator(BASE, layout="parametrizations")
    state = other.state_dict()
    assert any(".parametrizations.weight.original1" in k for k in state)
    # the same weights as the weight_g / weight_v model (same seed, same draw order)
    np.testing.assert_allclose(reference_wave(other, UNITS), reference_wave(model, UNITS), atol=1e-6)
  else:
    # remove_weight_norm recomputes weight from g and v; module.weight itself is stale until a forward
    # has run (make_generator redraws g and v after weight_norm), so it must not be read directly.
    removed = make_generator(BASE)      # the same weights as the plain model (same seed, same draw order)
    for module in removed.modules():
      if hasattr(module, "weight_v"):
        nn.utils.remove_weight_norm(module)
    state = removed.state_dict()
    assert not any(k.endswith(("weight_g", "weight_v")) for k in state)
  voc = unit_hifigan.load(save(tmp_path / layout, BASE, None, state=state), HUBERT_UNITS, device="cpu")
  np.testing.assert_allclose(voc.synthesize(UNITS), reference_wave(model, UNITS), atol=2e-5, rtol=0)


def test_duration_predictor(tmp_path):
  cfg = {**BASE, **DUR}
  model = make_generator(cfg, seed=1)
  voc = unit_hifigan.load(save(tmp_path, cfg, model), HUBERT_UNITS, device="cpu")
  assert voc.has_duration_predictor and "duration predictor" in voc.describe()
  plain_wave = voc.synthesize(UNITS_RUNS)          # the units keep their own timing
  assert len(plain_wave) == len(UNITS_RUNS) * HOP
  np.testing.assert_allclose(plain_wave, reference_wave(model, UNITS_RUNS), atol=2e-5, rtol=0)
  wave = voc.synthesize(UNITS_RUNS, dur_prediction=True)
  ref = reference_wave(model, UNITS_RUNS, dur_prediction=True)
  assert len(wave) == len(ref) and len(ref) % HOP == 0 and len(ref) != len(plain_wave)
  np.testing.assert_allclose(wave, ref, atol=2e-5, rtol=0)


def test_speaker_and_style_textlesslib_names(tmp_path):
  """textlesslib's file names (…_config.json, …_generator.pt) and its speakers.txt / styles.txt."""
  cfg = {**BASE, **SPK}
  model = make_generator(cfg, seed=2)
  directory = save(tmp_path, cfg, model, config_name="hifigan_tiny_config.json",
                   checkpoint_name="hifigan_tiny_generator.pt")
  (tmp_path / "speakers.txt").write_text("ex01\nlj\nvctk_p225\n")
  (tmp_path / "styles.txt").write_text("read-default\nread-happy\n")
  by_name = unit_hifigan.load(directory, HUBERT_UNITS, device="cpu", speaker="lj", style="read-happy")
  assert (by_name.speaker, by_name.style) == (1, 1)
  wave = by_name.synthesize(UNITS[:10])
  np.testing.assert_allclose(wave, reference_wave(model, UNITS[:10], spkr=1, style=1), atol=2e-5, rtol=0)
  other = unit_hifigan.load(directory, HUBERT_UNITS, device="cpu", speaker=2, style=0).synthesize(UNITS[:10])
  np.testing.assert_allclose(other, reference_wave(model, UNITS[:10], spkr=2, style=0), atol=2e-5, rtol=0)
  assert not np.allclose(wave, other)
  with pytest.raises(DataError, match=r"no speaker 'nobody' in speakers.txt \(it has ex01, lj, vctk_p225\)"):
    unit_hifigan.load(directory, HUBERT_UNITS, device="cpu", speaker="nobody")
  with pytest.raises(DataError, match=r"style 2 is outside \[0, 2\)"):
    unit_hifigan.load(directory, HUBERT_UNITS, device="cpu", style=2)


def test_other_sampling_rate_is_resampled(tmp_path):
  cfg = {**BASE, "sampling_rate": 32000, "upsample_rates": [8, 8, 20], "upsample_kernel_sizes": [16, 16, 40]}
  voc = unit_hifigan.load(save(tmp_path, cfg, make_generator(cfg, seed=3)), HUBERT_UNITS, device="cpu")
  assert (voc.native_rate, voc.hop, voc.frame_rate) == (32000, 1280, 25.0)
  wave = voc.synthesize(UNITS[:4])
  assert wave.dtype == np.float32 and len(wave) == 4 * HOP == unit_hifigan.expected_samples(4, cfg)


def test_user_units_accepted(plain):
  directory, _ = plain
  assert unit_hifigan.check(directory, provenance.user_units("lst_jsonl", K, 25.0))["num_embeddings"] == K
  assert unit_hifigan.check(directory, provenance.user_units("manifest", K, 25.0))


# -- refusals: one line, naming the folder or file -----------------------------------------------

LOGMEL_UNITS = {"source": "quantizer", "quantizer": "logmel-kmeans", "num_units": K, "frame_rate": 25.0,
                "codebook": "codebook.npy", "codebook_sha256": "2" * 64}


@pytest.mark.parametrize("case, units, expect", [
    ("count", {**HUBERT_UNITS, "num_units": 500}, "has 50 unit embeddings but the dataset has 500 units"),
    ("count_user", provenance.user_units("lst_jsonl", 501, 25.0), "but the dataset has 501 units"),
    ("logmel", LOGMEL_UNITS, "built-in logmel-kmeans quantizer, not from a HuBERT"),
    ("logmel_old_manifest", {k: v for k, v in LOGMEL_UNITS.items() if k != "source"}, "not from a HuBERT"),
    ("text_only", provenance.no_units(), "has no speech units"),
    ("rate", {**HUBERT_UNITS, "frame_rate": 50.0},
     "expects 25 Hz units (16000 Hz / 640 samples per unit) but the dataset's units are 50 Hz"),
])
def test_refuses_units_that_do_not_fit(plain, case, units, expect):
  directory, _ = plain
  for call in (lambda: unit_hifigan.check(directory, units), lambda: unit_hifigan.load(directory, units, "cpu")):
    with pytest.raises(DataError) as e:
      call()
    msg = str(e.value)
    assert expect in msg and msg.startswith(f"--vocoder={directory}: ") and "\n" not in msg, (case, msg)


def _variant(tmp_path, what):
  """A folder broken in one way; returns (folder, text the message must hold)."""
  d = tmp_path / what
  model = make_generator(BASE)
  if what == "not_a_folder":
    return str(d), "not a folder"
  if what == "no_config":
    save(d, BASE, model)
    os.remove(d / "config.json")
    return str(d), "no config.json"
  if what == "no_checkpoint":
    save(d, BASE, model)
    os.remove(d / "g_00000100")
    return str(d), "no generator checkpoint"
  if what == "two_checkpoints":
    save(d, BASE, model, checkpoint_name="a.pt")
    save(d, BASE, model, checkpoint_name="b.pt")
    return str(d), "several candidates (a.pt, b.pt)"
  if what == "not_json":
    save(d, BASE, model)
    (d / "config.json").write_text("{oops")
    return str(d / "config.json"), "unreadable"
  if what == "not_codehifigan":
    save(d, {k: v for k, v in BASE.items() if k != "num_embeddings"}, model)
    return str(d / "config.json"), "no 'num_embeddings'; not a CodeHiFiGAN"
  if what == "f0":
    save(d, {**BASE, "f0": True}, model)
    return str(d / "config.json"), "f0-conditioned vocoder"
  if what == "rows_differ_from_config":      # config says 50 units, the checkpoint was trained with 60
    save(d, BASE, make_generator({**BASE, "num_embeddings": 60}))
    return str(d / "g_00000100"), "60 unit embeddings, its config says num_embeddings 50"
  if what == "config_of_another_model":
    save(d, {**BASE, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}, model)
    return str(d / "g_00000100"), "resblocks.1.convs1.0.weight_v has shape (8, 8, 5), its config gives (4, 4, 3)"
  if what == "extra_tensor":                 # a speaker table the config does not declare
    save(d, BASE, model, state={**model.state_dict(), "spkr.weight": torch.zeros(4, 8)})
    return str(d / "g_00000100"), "1 generator tensors its config does not use (e.g. 'spkr.weight')"
  if what == "not_torch":
    save(d, BASE, model)
    (d / "g_00000100").write_bytes(b"not a checkpoint")
    return str(d / "g_00000100"), "not a torch checkpoint"
  raise AssertionError(what)


@pytest.mark.parametrize("what", ["not_a_folder", "no_config", "no_checkpoint", "two_checkpoints", "not_json",
                                  "not_codehifigan", "f0", "rows_differ_from_config", "config_of_another_model",
                                  "extra_tensor", "not_torch"])
def test_refuses_broken_folders(tmp_path, what):
  where, expect = _variant(tmp_path, what)
  with pytest.raises(DataError) as e:
    unit_hifigan.load(str(tmp_path / what), HUBERT_UNITS, device="cpu")
  msg = str(e.value)
  assert expect in msg and where in msg and "\n" not in msg, msg


def test_listening_voices_hubert_units_with_it_and_refuses_builtin_units(plain):
  """--vocoder=DIR as make eval and make generate use it (lst_jax.eval.listening.load_vocoder): HuBERT
  units get the unit HiFi-GAN, whose wave is the reference's; the built-in quantizer's units are refused
  in one line (they have their own vocoder), and a dataset without a codebook can listen only with one."""
  import types
  from lst_jax.eval import listening
  directory, model = plain
  hubert = types.SimpleNamespace(dir="/data/hubert", units=HUBERT_UNITS)
  assert listening.can_listen(hubert, directory) and not listening.can_listen(hubert)
  units = np.arange(12) % K
  wave, rate = listening.load_vocoder(hubert, directory)(units)
  assert rate == 16000 and wave.shape == (12 * HOP,)
  np.testing.assert_allclose(wave, reference_wave(model, units), atol=1e-4)   # wiring; numerics: above
  builtin = types.SimpleNamespace(dir="/data/demo", units={"quantizer": "logmel-kmeans", "num_units": K,
                                                           "frame_rate": 25.0, "codebook": "codebook.npy"})
  with pytest.raises(DataError) as e:
    listening.load_vocoder(builtin, directory)
  assert "own vocoder" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(ValueError, match="give a unit HiFi-GAN with --vocoder=DIR"):
    listening.load_vocoder(hubert)
