"""The pinned requirements `make accel-check` needs, from pyproject.toml (standard library only:
it runs before anything is installed).

  python tools/accel_requirements.py --accel=cuda [--missing] [--no_jax]

Prints one requirement per line: what lst_jax.tools.accel_check and tests/test_accelerator.py
import, at pyproject.toml's versions, and JAX through the ACCEL extra (jax[cuda13] / jax[tpu]).
--missing prints only what this Python lacks at any version, and no JAX at all when the JAX it
has already sees a GPU or TPU (a machine's preinstalled, newer JAX is kept).
"""

import argparse
import importlib.metadata
import re
import tomllib

# pyproject.toml names of what the check imports besides JAX (versions come from there).
NEEDS = ("flax", "optax", "orbax-checkpoint", "grain", "array-record", "tensorstore", "ml-collections",
         "absl-py", "chex", "numpy", "scipy", "msgpack", "sentencepiece", "pytest")


def name_of(requirement: str) -> str:
  return re.split(r"[\[=<>~! ;]", requirement, maxsplit=1)[0].lower()


def pinned_requirements(project: dict) -> dict:
  return {name_of(r): r for r in project["dependencies"] + project["optional-dependencies"]["test"]}


def has(name: str) -> bool:
  try:
    importlib.metadata.version(name)
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


def jax_sees_accelerator() -> bool:
  try:
    import jax
    return jax.default_backend() != "cpu"
  except Exception:   # no JAX, or one that cannot start: install ours
    return False


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--accel", choices=("cuda", "tpu", "cpu"), default="cuda",
                      help="cpu: JAX's CPU build, to try the check on a machine without an accelerator")
  parser.add_argument("--missing", action="store_true")
  parser.add_argument("--no_jax", action="store_true", help="leave JAX out (wheels for a machine that has it)")
  parser.add_argument("--pyproject", default="pyproject.toml")
  args = parser.parse_args()
  with open(args.pyproject, "rb") as f:
    project = tomllib.load(f)["project"]
  pinned = pinned_requirements(project)
  skip_jax = args.no_jax or (args.missing and jax_sees_accelerator())
  jax = [pinned["jax"], pinned["jaxlib"]] if args.accel == "cpu" else project["optional-dependencies"][args.accel]
  out = [] if skip_jax else list(jax)
  out += [pinned[n] for n in NEEDS if not (args.missing and has(n))]
  print("\n".join(out))


if __name__ == "__main__":
  main()
