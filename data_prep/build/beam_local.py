"""Runs a build's Beam pipelines: on the local runner with --workers processes, or on the runner named.

The local runner is Beam's FnApiRunner: --workers=0 or 1 runs everything in this
process; more start that many worker processes (python -m data_prep.build.beam_worker,
Beam's SDK harness). While a pipeline runs, this process reads the workers'
status files (data_prep/build/worker_status.py) for progress lines and stops the
build, naming the shard, when a worker is killed (the local runner would wait
for it forever). Other runners (--runner=DataflowRunner, FlinkRunner,
SparkRunner and their options) get the pipeline as it is; their workers write
through lst_jax.storage, so their --output must be object storage.

Files a pipeline hands back (check results, transcripts, features) go to a
scratch folder: a local temporary one, or <output>/.build-scratch-<id> on
object storage for a remote runner; `scratch` removes it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Callable, Iterator

from data_prep.build import beam_options, worker_status
from lst_jax import storage
from lst_jax.data.manifest import DataError

with beam_options.quiet():
  import apache_beam as beam
  from apache_beam.options.pipeline_options import DirectOptions
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner
  from apache_beam.transforms import environments

POLL_S = 1.0       # how often the launcher reads the workers' status files
GRACE_S = 10.0     # after a worker process exits with an error, how long the pipeline may take to fail by itself


def is_local(args) -> bool:
  runner = getattr(args, "runner", None) or beam_options.LOCAL
  return runner in (beam_options.LOCAL, "DirectRunner")


def check_runner(args) -> None:
  """A remote runner's workers cannot write into this machine's folders: refuse a local --output."""
  if not is_local(args) and not storage.is_url(args.output):
    raise DataError(f"--runner={args.runner} runs on other machines; give an --output they can write to "
                    f"(gs://bucket/path), not the local folder {args.output}")


@contextlib.contextmanager
def scratch(args) -> Iterator[str]:
  """A folder the pipeline's workers can write into and this process can read."""
  if is_local(args):
    with tempfile.TemporaryDirectory(prefix="lst_jax_build_") as tmp:
      yield tmp
    return
  folder = storage.join(args.output, f".build-scratch-{uuid.uuid4().hex[:12]}")
  try:
    yield folder
  finally:
    storage.rmtree(folder)


def status_dir(args, scratch_dir: str) -> str | None:
  """Where local workers keep their status files (None for a remote runner)."""
  if not is_local(args):
    return None
  path = os.path.join(scratch_dir, "workers")
  os.makedirs(path, exist_ok=True)
  return path


def workers_for(args, items: int) -> int:
  """Processes of the local runner for `items` elements: --workers (default: the machine's cores), at
  most one per element; 1 runs in this process (no worker start-up, ~2 s, for small work)."""
  return max(1, min(args.workers if args.workers is not None else (os.cpu_count() or 1), items))


def where(args, workers: int) -> str:
  """How a stage runs, for its log line."""
  return f"in {workers} process(es)" if is_local(args) else f"on {args.runner}"


def run(args, graph: Callable, status: str | None = None,
        on_poll: Callable[[list[dict]], None] | None = None, workers: int = 1) -> None:
  """Builds the pipeline with graph(pipeline) and runs it to the end (local runner: in `workers`
  processes); WorkerDied if a local worker dies. `on_poll(states)` gets the workers' status every
  POLL_S (progress lines)."""
  failure: list[BaseException] = []
  worker_exit: list[str] = []
  with beam_options.quiet(logging.CRITICAL + 1), _worker_exits(worker_exit):  # Beam's notes, all threads
    options, runner = _options_and_runner(args, workers)

    def target():
      try:
        with beam.Pipeline(runner=runner, options=options) as p:
          graph(p)
      except BaseException as e:  # noqa: BLE001 - handed to the launching thread
        failure.append(e)

    thread = threading.Thread(target=target, name="beam pipeline", daemon=True)
    thread.start()
    died_at = None
    while thread.is_alive():
      thread.join(POLL_S)
      states = worker_status.read_all(status) if status else []
      try:
        worker_status.check_alive(states)
        if worker_exit and thread.is_alive():
          died_at = died_at or time.time()
          if time.time() - died_at > GRACE_S:
            raise worker_status.WorkerDied(f"a worker process ended ({worker_exit[0]}) and the pipeline "
                                           f"stopped; rerun the build: finished shards are reused")
      except worker_status.WorkerDied:
        worker_status.stop_all(states)
        logging.disable(logging.CRITICAL)  # the stuck pipeline's threads would log as this process ends
        raise
      if on_poll is not None and thread.is_alive():
        on_poll(states)
  if failure:
    raise failure[0]


def _options_and_runner(args, workers: int):
  """The local runner with our worker processes, or the runner the options name."""
  options = beam_options.pipeline_options(args)
  if not is_local(args):
    return options, None
  options.view_as(DirectOptions).direct_num_workers = workers
  if workers == 1:
    return options, FnApiRunner()
  command = f"exec {sys.executable} -m data_prep.build.beam_worker"  # exec: no shell between (it would say "Killed")
  return options, FnApiRunner(default_environment=environments.SubprocessSDKEnvironment.from_command_string(command))


@contextlib.contextmanager
def _worker_exits(found: list[str]):
  """Keeps the tracebacks of Beam's own threads off stderr while a pipeline runs, noting the local
  runner's 'Worker subprocess exited with return code N' (the pipeline's failure, if any, is raised)."""
  previous = threading.excepthook

  def hook(info):
    if "Worker subprocess exited" in str(info.exc_value):
      found.append(f"exit code {str(info.exc_value).split()[-1]}")

  threading.excepthook = hook
  try:
    yield
  except worker_status.WorkerDied:
    raise  # the hook stays: the stuck pipeline's threads fail as this process ends
  except BaseException:
    threading.excepthook = previous
    raise
  threading.excepthook = previous


class WriteLines(beam.DoFn):
  """Writes each bundle's elements (strings) as the lines of one new file in `folder`."""

  def __init__(self, folder: str):
    self.folder = folder

  def start_bundle(self):
    self.lines = []

  def process(self, line):
    self.lines.append(line + "\n")

  def finish_bundle(self):
    if self.lines:
      storage.write_text(storage.join(self.folder, f"{uuid.uuid4().hex}.jsonl"), "".join(self.lines))
    self.lines = []


def read_lines(folder: str) -> Iterator[str]:
  """The lines WriteLines wrote into `folder` (files in name order)."""
  if not storage.exists(folder):
    return
  for name in storage.listdir(folder):
    if name.endswith(".jsonl"):
      yield from storage.read_text(storage.join(folder, name)).splitlines()
