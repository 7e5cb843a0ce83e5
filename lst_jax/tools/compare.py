"""`make compare PAIR=compute_matched`: trains both members of a paper pair and prints them side by side.

  python -m lst_jax.tools.compare --pair=compute_matched [--size=tiny] [--workdir=runs/compare]
      [--data_dir=data/demo] [--steps=N]

Each member trains in <workdir>/<pair>_<size>/<lst|baseline> (rerunning resumes or
just reprints). The table: held-out loss per modality (the loop's heldout_interleaved_*:
nats per target token, text bits per token, speech bits per second of audio at the
data's unit rate, as metrics.jsonl records them), raw text and speech
tokens read, and FLOPs for the whole run per the FLOP model (lst_jax.flops,
every module counted): on real tokens (what a fair pair equalizes), on the rows'
slots and as executed, as the runs' metrics.jsonl record them. With
--pair=flop_matched the baseline's row length is first set so that its real
FLOPs per step equal the LST's (lst_jax.tools.pairing); compare.json records
both members' per-step readings (global positions, real FLOPs, tokens read).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from lst_jax import cli, presets
from lst_jax.train.metrics import interleaved

REAL = "cumulative_real_flops"
HELDOUT = tuple(interleaved(q) for q in ("loss", "text_loss", "speech_loss", "text_bits_per_token",
                                         "speech_bits_per_second"))


def member_config(kind: str, pair: str, size: str):
  return cli.load_experiment(f"{presets.PAIR_EXPERIMENTS[pair][kind]}:{size}")


def summarize(records: list[dict]) -> dict:
  """Final held-out losses and bits, tokens read and FLOPs of one run (its metrics.jsonl records, as
  metrics.read_records gives them; the bits per second were derived at the run's unit rate)."""
  final = next(r for r in reversed(records) if r.get("final"))
  return {"steps": final["step"], **{k: final[k] for k in HELDOUT},
          "text_tokens": final["text_tokens_seen"], "speech_tokens": final["speech_tokens_seen"],
          "flops": final["cumulative_flops"], "real_flops": final.get("cumulative_real_flops"),
          "executed_flops": final.get("cumulative_executed_flops"),
          "real_flops_by_module": {k[len(REAL) + 1:]: v for k, v in final.items() if k.startswith(REAL + "_")}}


def format_table(pair: str, size: str, results: dict) -> str:
  rows = [("held-out interleaved (nats/tok)", interleaved("loss"), "{:.4f}"),
          ("  text (nats/token)", interleaved("text_loss"), "{:.4f}"),
          ("  speech (nats/unit)", interleaved("speech_loss"), "{:.4f}"),
          ("text bits per token", interleaved("text_bits_per_token"), "{:.3f}"),
          ("speech bits per second", interleaved("speech_bits_per_second"), "{:.1f}"),
          ("steps", "steps", "{:,}"),
          ("text tokens read", "text_tokens", "{:,.0f}"),
          ("speech units read", "speech_tokens", "{:,.0f}"),
          ("FLOPs on real tokens", "real_flops", "{:.3e}"),
          ("FLOPs on row slots", "flops", "{:.3e}"),
          ("FLOPs executed", "executed_flops", "{:.3e}")]
  kinds = list(results)
  lines = [f"{pair} pair, size {size}", f"{'':32}" + "".join(f"{k:>16}" for k in kinds)]
  show = lambda v, fmt: "-" if v is None else fmt.format(v)
  for label, key, fmt in rows:
    lines.append(f"{label:32}" + "".join(f"{show(results[k].get(key), fmt):>16}" for k in kinds))
  return "\n".join(lines)


def matched(pair: str, configs: dict) -> tuple[dict, dict]:
  """The members' configs (flop_matched: the baseline's row length set) and their per-step readings."""
  from lst_jax.tools import pairing
  if pair == "flop_matched":
    configs["baseline"], readings = pairing.match_flops(configs["lst"], configs["baseline"])
    return configs, readings
  return configs, {kind: pairing.measure(c) for kind, c in configs.items()}


def per_step_line(readings: dict) -> str:
  """Per step, LST over baseline: global positions, real FLOPs, text and speech tokens read."""
  lst, base = readings["lst"], readings["baseline"]
  ratio = lambda key: getattr(lst, key) / max(getattr(base, key), 1e-9)
  return (f"per step, LST / baseline: global positions {ratio('global_positions'):.2f}x, real FLOPs "
          f"{ratio('real_flops'):.2f}x, slot FLOPs {ratio('slot_flops'):.2f}x, text tokens "
          f"{ratio('text_tokens'):.2f}x, speech units {ratio('speech_tokens'):.2f}x")


def define_flags() -> None:
  """Flags of the command line only (importing this module for its functions defines none)."""
  flags.DEFINE_enum("pair", "compute_matched", presets.PAIRINGS, "Which paper pair.")
  flags.DEFINE_enum("size", "tiny", tuple(presets.SIZES), "Preset size of both members.")
  flags.DEFINE_string("workdir", "runs/compare", "Parent folder of the two runs.")
  flags.DEFINE_string("data_dir", None, "Dataset (default: the preset's).")
  flags.DEFINE_integer("steps", None, "Override the preset's steps (both members).")


def main(argv):
  del argv
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  from lst_jax.train import loop, metrics
  pair, size = f.pair, f.size
  base = os.path.join(f.workdir, f"{pair}_{size}")
  configs = {}
  for kind in ("lst", "baseline"):
    configs[kind] = config = member_config(kind, pair, size)
    if f.data_dir:
      config.data.dir = f.data_dir
    if f.steps:
      config.train.steps = f.steps
  configs, readings = matched(pair, configs)
  results = {}
  for kind, config in configs.items():
    workdir = os.path.join(base, kind)
    print(f"== {kind}_{pair} ({size}) in {workdir}", flush=True)
    loop.train(config, workdir)
    results[kind] = summarize(metrics.read_records(workdir))
  table = format_table(pair, size, results)
  print(table)
  print(per_step_line(readings))
  with open(os.path.join(base, "compare.json"), "w") as f:
    json.dump({**results, "per_step": {k: r.as_dict() for k, r in readings.items()}}, f, indent=2)
  print(f"written to {os.path.join(base, 'compare.json')}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
