"""The build's worker processes, how it cuts work for them, and its progress lines.

Workers are spawned, not forked: the parent may hold threads (jax under pytest,
sentencepiece). They count the entries they finish in a shared counter, so the
parent can say how far a long shard got. --workers=0 runs every task in this
process (debugging, profiling, small inputs).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time

from data_prep import shard_job


class _Inline:
  """Runs tasks in this process (--workers=0): debugging, profiling, small inputs."""

  def imap(self, fn, items):
    return _InlineResults(map(fn, items))


class _InlineResults:

  def __init__(self, results):
    self.results = results

  def __iter__(self):
    return self.results

  def next(self, timeout=None):
    del timeout
    return next(self.results)


@contextlib.contextmanager
def pool(workers: int):
  """A process pool whose workers count the entries they finish in `pool.progress` (shared)."""
  ctx = multiprocessing.get_context("spawn")
  counter = ctx.Value("q", 0)
  if workers <= 0:
    shard_job.init_worker(counter)
    inline = _Inline()
    inline.progress = counter
    try:
      yield inline
    finally:
      shard_job.init_worker(None)
    return
  with ctx.Pool(workers, initializer=shard_job.init_worker, initargs=(counter,)) as processes:
    processes.progress = counter
    yield processes


def chunks(items: list, size: int) -> list[list]:
  return [items[lo:lo + size] for lo in range(0, len(items), size)]


def progress(log, what: str, done: int, total: int, entries: int, start: float, unit: str = "entries",
             extra: str = "") -> None:
  """One line per step when there are few, else about every 5%."""
  step = max(1, total // 20)
  if done == total or done % step == 0:
    elapsed = max(time.time() - start, 1e-9)
    log(f"{what} {done}/{total}: {entries} {unit}, {entries / elapsed:.0f} {unit}/s, "
        f"{elapsed:.1f} s elapsed{extra}")
