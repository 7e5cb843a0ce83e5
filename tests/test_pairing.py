"""What the members of a pair read and spend, counted on real batches of the test dataset."""

import pytest

from lst_jax import config as config_lib
from lst_jax import presets
from lst_jax.tools import pairing
from tests.conftest import tiny_config

BATCHES = 12


def _member(kind: str, data_dir: str, max_tokens: int, max_patches: int):
  c = tiny_config(data_dir, kind)
  c.data.update(max_tokens=max_tokens, max_patches=max_patches, batch_size=4)
  c.data.patching.strategy = config_lib.STATIC
  return c


def _pair(pairing_name: str, data_dir: str):
  """The tiny members with the pairing's row caps (lst_jax.presets.row_caps on a tiny Size)."""
  size = presets.Size(d_global=64, global_layers=2, global_heads=4, d_local=32, local_heads=2,
                      encoder_layers=1, decoder_layers=1, rows=4, positions=64, steps=6, warmup=2,
                      tokens_per_position=2)
  return [_member(kind, data_dir, *presets.row_caps(kind, size, pairing_name)) for kind in ("lst", "baseline")]


def test_data_matched_members_read_the_same_text_and_speech(dataset):
  lst, base = (pairing.measure(c, BATCHES) for c in _pair("data_matched", dataset.dir))
  assert lst.text_tokens > 0 and lst.speech_tokens > 0
  assert lst.text_tokens == pytest.approx(base.text_tokens, rel=0.01)
  assert lst.speech_tokens == pytest.approx(base.speech_tokens, rel=0.01)
  assert lst.real_patches < lst.real_tokens  # the LST's global row holds fewer positions


def test_compute_matched_reads_more_data_for_the_lst_at_equal_global_positions(dataset):
  lst, base = (pairing.measure(c, BATCHES) for c in _pair("compute_matched", dataset.dir))
  assert lst.global_positions == base.global_positions
  assert lst.speech_tokens > 1.3 * base.speech_tokens


def test_flop_matched_baseline_spends_the_lsts_real_flops_per_step(dataset):
  lst_cfg, base_cfg = _pair("flop_matched", dataset.dir)
  before = pairing.measure(base_cfg, BATCHES)
  matched, readings = pairing.match_flops(lst_cfg, base_cfg, BATCHES)
  assert readings["baseline"].real_flops == pytest.approx(readings["lst"].real_flops, rel=0.05)
  assert abs(readings["baseline"].real_flops / readings["lst"].real_flops - 1) < \
      abs(before.real_flops / readings["lst"].real_flops - 1)
  assert matched.data.max_tokens == matched.data.max_patches and matched.data.max_tokens % pairing.ROW_UNIT == 0
  again = pairing.measure(matched, BATCHES)  # the same reading when measured anew
  assert again.real_flops == readings["baseline"].real_flops
