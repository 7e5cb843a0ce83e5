"""Which Apache Beam runner a build's pipelines run on, from data_prep.build's command line.

`--runner` (default: Beam's FnApiRunner with --workers processes, data_prep/build/beam_local.py:
no cluster, nothing downloaded) and any other Beam pipeline option given to data_prep.build
(e.g. `--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp`, Flink's or
Spark's options) go to Beam as they are;
a flag neither data_prep.build nor Beam knows is refused, as any unknown flag is.
"""

from __future__ import annotations

import contextlib
import logging

LOCAL = "FnApiRunner"


@contextlib.contextmanager
def quiet(level: int = logging.ERROR):
  """Beam's import and local runners log notes (missing GCP extras, worker start-up) through the root
  logger; a build's output is its own progress lines and one-line errors, so only errors pass (none
  while a pipeline runs: its failure comes back as an exception)."""
  root = logging.getLogger()
  level, handler = root.level, None
  if not root.handlers:  # else logging's first warning would install a stderr handler for good
    handler = logging.NullHandler()
    root.addHandler(handler)
  root.setLevel(level)
  try:
    yield
  finally:
    root.setLevel(level)
    if handler is not None:
      root.removeHandler(handler)


def beam_flags(extra: list[str]) -> tuple[list[str], list[str]]:
  """(the flags of `extra` Beam declares, the rest) — the rest are errors for the caller."""
  with quiet():
    from apache_beam.options.pipeline_options import PipelineOptions
    declared = set(PipelineOptions([]).get_all_options())
  beam, unknown = [], []
  for arg in extra:
    name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None
    (beam if name in declared else unknown).append(arg)
  return beam, unknown


def pipeline_options(args):
  """The PipelineOptions of the build's pipelines."""
  with quiet():
    from apache_beam.options.pipeline_options import PipelineOptions
  return PipelineOptions([f"--runner={getattr(args, 'runner', None) or LOCAL}", *getattr(args, "beam_args", [])])
