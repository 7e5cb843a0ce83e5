"""Opening the datasets a run trains on: one directory, or several that agree.

`config.data.dir` names one prepared dataset or several separated by commas.
Several must share the tokenizer and unit provenance (checked, naming the first
field that differs); their splits are read as one. A run records what it
trained on in <workdir>/data_provenance.json and refuses, on resume, data whose
ids would mean something else.
"""

from __future__ import annotations

import dataclasses
import json

from lst_jax import storage
from lst_jax.data import provenance
from lst_jax.data.manifest import DataError, Manifest, Split, load_manifest

PROVENANCE_FILE = "data_provenance.json"


def open_datasets(spec: str) -> Manifest:
  dirs = [d.strip() for d in spec.split(",") if d.strip()]
  if not dirs:
    raise DataError("config.data.dir is empty: name a prepared dataset directory")
  manifests = [load_manifest(d) for d in dirs]
  first = manifests[0]
  for m in manifests[1:]:
    provenance.check_compatible(first.raw, m.raw, first.dir, m.dir)
  if len(manifests) == 1:
    return first
  splits = {}
  for name in dict.fromkeys(n for m in manifests for n in m.splits):
    parts = [m.splits[name] for m in manifests if name in m.splits]
    splits[name] = Split(speech=sum((p.speech for p in parts), ()), text=sum((p.text for p in parts), ()),
                         num_speech=sum(p.num_speech for p in parts), num_text=sum(p.num_text for p in parts),
                         speech_hours=sum(p.speech_hours for p in parts))
  return dataclasses.replace(first, dir=",".join(dirs), splits=splits,
                             shard_records={k: v for m in manifests for k, v in m.shard_records.items()})


def check_run_provenance(workdir: str, manifest: Manifest, record: bool = True) -> None:
  """Records the data's tokenizer and units on a run's first start (if `record`: the lead
  process); refuses other data later."""
  path = storage.join(workdir, PROVENANCE_FILE)
  current = {"dir": manifest.dir, "tokenizer": manifest.raw.get("tokenizer", {}),
             "units": manifest.raw.get("units", {})}
  if storage.exists(path):
    try:
      saved = json.loads(storage.read_text(path))
      if not isinstance(saved, dict):
        raise ValueError("not a JSON object")
    except ValueError as e:
      raise DataError(f"{path}: unreadable ({e}; cut short?): it records the data this run trained on, which "
                      f"a resume checks. Put back a good copy, or if {manifest.dir} is that data, remove the "
                      f"file: the run records it again") from None
    provenance.check_compatible(saved, current, f"the data this run started with ({saved.get('dir')})",
                                manifest.dir)
    return
  if not record:
    return
  storage.write_json(path, current, sort_keys=True)
