"""What must agree between datasets (or builds) that share a directory or are merged.

A dataset's text ids mean something only with its tokenizer, and its unit ids
only with the units' source (a codebook, or the user's HuBERT units). Two
builds into one directory, or two datasets merged into one, must therefore
have the same tokenizer and the same unit provenance; mixing them silently is
the most common way spoken-LM data goes wrong, so it is refused, naming the
first field that differs.
"""

from __future__ import annotations

import json

from lst_jax.data.manifest import DataError

NO_UNITS = "none"   # a text-only dataset: no unit provenance yet (the first speech build sets it)
QUANTIZER = "quantizer"
USER = "user"
# Unit fields that must agree, in the order they are compared (the first difference is named).
# HuBERT units: the checkpoint's hash (config + weights), the layer, the k-means centroids' hash.
UNIT_FIELDS = ("source", "quantizer", "format", "num_units", "frame_rate", "codebook_sha256",
               "feature_stats_sha256", "features", "hubert_sha256", "layer", "kmeans_sha256")
TOKENIZER_FIELDS = ("sha256", "vocab_size")


def user_units(format: str, num_units: int, frame_rate: float) -> dict:
  """Provenance of units the user gave (e.g. HuBERT units in the official JSONL)."""
  return {"source": USER, "format": format, "num_units": int(num_units), "frame_rate": float(frame_rate)}


def no_units() -> dict:
  return {"source": NO_UNITS, "num_units": 0, "frame_rate": 25.0}


def units_source(units: dict) -> str | None:
  """"user", "quantizer" or "none"; manifests written before the field existed had a quantizer."""
  return units.get("source") or (QUANTIZER if "quantizer" in units else None)


def provenance(manifest: dict) -> dict:
  """The fields of a manifest that must agree, flat and ordered: {"tokenizer.sha256": ..., ...}."""
  tok, units = manifest.get("tokenizer", {}), manifest.get("units", {})
  out = {f"tokenizer.{k}": tok.get(k) for k in TOKENIZER_FIELDS}
  out["units.source"] = units_source(units)
  out.update({f"units.{k}": units.get(k) for k in UNIT_FIELDS[1:]})
  return out


def has_units(manifest: dict) -> bool:
  return units_source(manifest.get("units", {})) != NO_UNITS


def check_compatible(a: dict, b: dict, name_a: str, name_b: str) -> None:
  """Raises DataError naming the first differing field and both values.

  Unit fields are compared only when both sides have units: text-only data
  fits any unit provenance.
  """
  pa, pb = provenance(a), provenance(b)
  both_units = has_units(a) and has_units(b)
  for field in pa:
    if field.startswith("units.") and not both_units:
      continue
    if _canonical(pa[field]) != _canonical(pb[field]):
      where, va, vb = _first_difference(field, pa[field], pb[field])
      raise DataError(f"{name_a} and {name_b} differ in {where}: {_show(va)} vs {_show(vb)}; "
                      f"their ids mean different things, so they cannot share a dataset")


def _first_difference(field: str, a, b) -> tuple[str, object, object]:
  """The innermost field where two values differ (e.g. units.features.n_mels), and the values there."""
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      if _canonical(a.get(key)) != _canonical(b.get(key)):
        return _first_difference(f"{field}.{key}", a.get(key), b.get(key))
  return field, a, b


def merged_units(a: dict, b: dict) -> dict:
  """The unit provenance of data with provenance a plus data with b (checked compatible)."""
  return a.get("units", no_units()) if has_units(a) else b.get("units", no_units())


def _canonical(value):
  return json.dumps(value, sort_keys=True)


def _show(value) -> str:
  return "(missing)" if value is None else json.dumps(value, sort_keys=True)
