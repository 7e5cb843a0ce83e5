"""The embedded demo: a 4.5M-parameter LST on the demo corpus (KJV verses, synthetic voices).

Global 4 x 256, encoder 1 x 128, decoder 2 x 128, static patches of 4 units; 300 steps
of 8 rows x 384 tokens / 256 patches, speech-heavy mixture (lst_jax/presets.py, size "demo").

Run: make train            (= python -m lst_jax.main --config=experiments/demo.py --workdir=runs/demo)
Its baseline: experiments/demo_baseline.py. Another size: experiments/demo.py:tiny.
"""

from lst_jax import presets


def get_config(size: str = "demo"):
  return presets.experiment("lst", size or "demo", "same_rows")
