"""The demo's baseline: the global transformer of experiments/demo.py (4 x 256, 4 heads) run
directly over all tokens, trained on the same data for the same steps.

Data-controlled pairing: the same rows as the LST demo (8 rows x 384 tokens, packed under the
same 256-patch cap, same seed), so both models read exactly the same batches; the baseline
spends one global position per token where the LST spends one per text token or speech patch.
For a compute-controlled pairing (baseline tokens = LST patches), add
--config.data.max_tokens=256.

Run: python -m lst_jax.main --config=experiments/demo_baseline.py --workdir=runs/demo_baseline
     (or make train EXP=demo_baseline)
Evaluate both: make eval EXP=demo; make eval EXP=demo_baseline
"""

import importlib.util
import os

import ml_collections


def _demo_config() -> ml_collections.ConfigDict:
  """experiments/demo.py's config (loaded by path, so this works from any directory)."""
  spec = importlib.util.spec_from_file_location("_lst_demo_experiment",
                                                os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config() -> ml_collections.ConfigDict:
  c = _demo_config()
  c.model = dict(kind="baseline", d_global=c.model.d_global, global_layers=c.model.global_layers,
                 global_heads=c.model.global_heads, dtype=c.model.dtype, attention=c.model.attention)
  return c
