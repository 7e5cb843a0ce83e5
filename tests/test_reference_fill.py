"""Reference-fill batches (data_prep.corpus.reference_fill) for make bench's reference comparison."""

import numpy as np

from data_prep.corpus import reference_fill
from lst_jax.data import packing


def test_reference_fill_batches_are_full_rows_filled_like_the_reference(tmp_path):
  batches = reference_fill.reference_batches(2)
  again = reference_fill.reference_batches(2)
  for b, c in zip(batches, again):
    assert all(np.array_equal(b[k], c[k]) for k in b)                  # deterministic
    assert b["tokens"].shape == (4, 768) and b["patch_len"].shape == (4, 256)
    assert 1500 <= (b["token_segment"] > 0).sum() <= 2400              # the 256-patch cap binds first
    assert b["tokens"].max() < 2508 and b["truncated_tokens"].sum() == 0
    assert set(np.unique(b["patch_len"][b["patch_segment"] > 0])) <= {1, 2, 3, 4}
  path = str(tmp_path / "b.npz")
  packing.save_batches(path, batches)
  loaded = packing.load_batches(path)
  assert all(np.array_equal(loaded[i][k], batches[i][k]) for i in range(2) for k in batches[i])

