"""Run by tests/test_aot.py inside a compile-only venv (.venv-aot-tpu / .venv-aot-cuda): compiles
small presets for a compile-only target and prints one JSON line of what the compiler planned.

  python tests/aot_driver.py TARGET SIZE:KIND[:ATTENTION[:CROSS_WINDOW]] ...
"""

import dataclasses
import json
import sys

from lst_jax import config as config_lib
from lst_jax import presets
from lst_jax.tools import aot
from lst_jax.tools import programs
from lst_jax import targets


def one(target, spec: str) -> dict:
  size, kind, *attention = spec.split(":")
  attention, window = attention[:1], int(attention[1]) if len(attention) > 1 else 1
  c = presets.experiment(kind, size)
  # What the 420m and 7b presets run, at a size a test can compile: micro-batches, remat, scan, bf16.
  c.train.grad_accum_steps, c.model.remat, c.model.scan_layers, c.model.dtype = 2, "full", True, "bfloat16"
  c.mesh.update(data=-1, fsdp=target.devices, tensor=1)
  c.data.batch_size = 2 * 2 * target.devices
  if attention:
    c.model.attention = attention[0]
  c.model.encoder_window = c.model.decoder_window = window
  exp = config_lib.parse(c, programs.DEFAULT_VOCAB.size)
  # Windows of one patch: train, eval and decoding (which supports no other: lst_jax.decode.lst_step);
  # a wider window's spec compiles its train step only (where the windowed cross-attention is). The
  # compiler's cost estimate (two more compiles of unrolled probes, model-agnostic) for the baseline only:
  # on tiny's LST it cost 31 s of the TPU test's 90 (the suite's budget).
  compiled = ("train", "eval", "decode") if window == 1 else ("train",)
  result = aot.compile_experiment(exp, programs.DEFAULT_VOCAB, target, compiled,
                                  cost=kind == "baseline" and not attention)
  result["spec"], result["model_cfg"] = spec, dataclasses.asdict(exp.model)
  return result


def main(argv):
  target = targets.parse(argv[1])
  print(json.dumps([one(target, spec) for spec in argv[2:]]))


if __name__ == "__main__":
  main(sys.argv)
