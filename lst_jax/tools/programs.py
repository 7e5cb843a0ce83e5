"""The programs a run compiles, for abstract inputs: what `inspect`, `aot` and `accel-check` lower.

No flags here (the tools that import this define their own): the paper's vocabulary as the
default, the packed batch as ShapeDtypeStructs, the train and eval steps of lst_jax.train built
on a mesh, and XLA's memory analysis of a compiled program.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from lst_jax import config as config_lib
from lst_jax import sharding
from lst_jax import vocab as vocab_lib
from lst_jax.data import packing
from lst_jax.train import step as step_lib

DEFAULT_VOCAB = vocab_lib.PAPER


def train_programs(exp: config_lib.Experiment, vocab: vocab_lib.Vocab, mesh):
  """(setup, abstract batch): the jitted train and eval steps on `mesh` as lst_jax.train builds
  them (the experiment's micro-batches, remat, scan and attention), and the global batch."""
  run = step_lib.setup(exp.model, exp.optim, vocab, mesh, exp.train.seed, accum_steps=exp.train.grad_accum_steps)
  batch = abstract_batch(exp.data.batch_size, exp.data.max_tokens, exp.data.max_patches,
                         sharding.batch_sharding(mesh))
  return run, batch


def abstract_batch(rows: int, tokens: int, patches: int, batch_sharding=None) -> dict:
  """ShapeDtypeStructs of a packed batch: lst_jax.data.packing's row schema, [rows, ...]."""
  row = packing.empty_row(tokens, patches)
  return {k: jax.ShapeDtypeStruct((rows, *np.shape(v)), np.asarray(v).dtype, sharding=batch_sharding)
          for k, v in row.items()}


def lower_train_step(exp: config_lib.Experiment, vocab: vocab_lib.Vocab, mesh):
  """The experiment's jitted train step lowered for abstract sharded state and batch."""
  run, batch = train_programs(exp, vocab, mesh)
  return run.train_step.lower(run.abstract, batch)


def memory_per_device(compiled) -> dict[str, int]:
  """Bytes per device from XLA's memory analysis; total = arguments + outputs - aliased + temporaries."""
  m = compiled.memory_analysis()
  out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp",
                                                            "generated_code")}
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def vocab_for(config: ml_collections.ConfigDict, vocab_size: int) -> vocab_lib.Vocab:
  """From --vocab_size (501 units, the rest text pieces), else config.data.dir's dataset, else the paper's."""
  if vocab_size:
    units = DEFAULT_VOCAB.num_units
    if vocab_size <= units + vocab_lib.NUM_SPECIAL + 2:
      raise ValueError(f"--vocab_size={vocab_size} leaves no text pieces beside {units} units")
    return vocab_lib.Vocab(text_size=vocab_size - units - vocab_lib.NUM_SPECIAL - 2, num_units=units)
  data_dir = config.get("data", {}).get("dir", "")
  if data_dir and all(os.path.isfile(os.path.join(d.strip(), "manifest.json")) for d in data_dir.split(",")):
    from lst_jax.data import datasets, pipeline
    return pipeline.vocab_of(datasets.open_datasets(data_dir))
  return DEFAULT_VOCAB


