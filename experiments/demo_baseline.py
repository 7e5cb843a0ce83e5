"""The demo's baseline: the global transformer of experiments/demo.py (4 x 256) over all tokens.

Same-rows pairing: it reads exactly the demo LST's packed rows (8 x 384 tokens under the
same 256-patch cap, same seed), spending a global position per token where the LST
spends one per text token or speech patch. For compute-matched rows (baseline tokens =
LST patches), add --config.data.max_tokens=256.

Run: make train EXP=demo_baseline
     (= python -m lst_jax.main --config=experiments/demo_baseline.py --workdir=runs/demo_baseline)
Evaluate both: make eval EXP=demo; make eval EXP=demo_baseline
"""

from lst_jax import presets


def get_config(size: str = "demo"):
  return presets.experiment("baseline", size or "demo", "same_rows")
