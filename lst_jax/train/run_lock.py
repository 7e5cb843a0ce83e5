"""One training per workdir: `<workdir>/run.lock`, held by the run's lead process, holder written in it.

- Local (or shared POSIX) workdirs: an flock, released by the kernel however the process ends.
- gs:// workdirs (object stores have no locks): an object created only if absent
  (`if_generation_match=0`), rewritten every `heartbeat_s` by a background thread with the
  generation it last wrote as precondition. A lock whose heartbeat is older than `stale_s`
  (by the object's server-side update time) may be taken over, replacing that exact
  generation, with a line saying so; so may one left by a process of this host that is no
  longer running (a restart after a kill or preemption). A holder whose heartbeat finds the
  lock taken has lost its workdir: `check()` raises before its next checkpoint is written.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import threading

from lst_jax import process, storage

LOCK_FILE = "run.lock"
STALE_S = 300.0  # a gs:// lock not heartbeated for this long may be taken over
HEARTBEAT_S = 30.0


class WorkdirError(RuntimeError):
  """The workdir cannot take this run (in use, or holding a run that does not fit); says what to do."""


def _now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _holder(started: str) -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": started,
          "heartbeat": _now().isoformat(timespec="seconds")}


def _in_use(workdir: str, holder: str) -> WorkdirError:
  return WorkdirError(f"{workdir} is in use by another training run ({holder}); wait for it to end or "
                      f"stop it, or train in another --workdir")


class RunLock:
  """Held by the lead process for the run's lifetime (`lead=False`: the other hosts of a
  multi-host run, which share the lead's lock and do nothing)."""

  def __init__(self, workdir: str, lead: bool = True, stale_s: float = STALE_S,
               heartbeat_s: float | None = None):
    self.workdir, self.lead = workdir, lead
    self.path = storage.join(workdir, LOCK_FILE)
    self.stale_s = float(stale_s)
    self.heartbeat_s = heartbeat_s if heartbeat_s is not None else min(HEARTBEAT_S, self.stale_s / 4)
    self.note = None  # a line about a lock taken over, for the console
    self._impl = None

  def acquire(self) -> None:
    if not self.lead:
      return
    impl = _ObjectLock(self) if storage.is_url(self.path) else _FileLock(self)
    impl.acquire()
    self._impl = impl

  def check(self) -> None:
    """Raises WorkdirError when another run has taken the lock over (gs:// only)."""
    if self._impl is not None:
      self._impl.check()

  def release(self) -> None:
    if self._impl is not None:
      self._impl.release()
      self._impl = None


class _FileLock:
  def __init__(self, lock: RunLock):
    self.lock, self._file = lock, None

  def acquire(self) -> None:
    os.makedirs(self.lock.workdir, exist_ok=True)
    f = open(self.lock.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "unknown"
      f.close()
      raise _in_use(self.lock.workdir, holder) from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps(_holder(_now().isoformat(timespec="seconds"))))
    f.flush()
    self._file = f

  def check(self) -> None:
    pass

  def release(self) -> None:
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()


class _ObjectLock:
  """The gs:// lock: create-if-absent, heartbeats and takeover by object generation."""

  def __init__(self, lock: RunLock):
    from google.api_core import exceptions
    from google.cloud import storage as gcs
    self.lock, self.exceptions = lock, exceptions
    bucket, _, name = lock.path[len(storage.SCHEME):].partition("/")
    self.blob = gcs.Client().bucket(bucket).blob(name)
    self.started = _now().isoformat(timespec="seconds")
    self.generation = None
    self.lost = None
    self._stop = threading.Event()
    self._thread = None

  def _write(self, if_generation_match: int) -> None:
    self.blob.upload_from_string(json.dumps(_holder(self.started)), content_type="application/json",
                                 if_generation_match=if_generation_match)
    self.generation = self.blob.generation

  def acquire(self) -> None:
    try:
      self._write(0)
    except self.exceptions.PreconditionFailed:
      self._take_over_if_stale()
    self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
    self._thread.start()

  def _take_over_if_stale(self) -> None:
    held = self.blob.bucket.get_blob(self.blob.name)
    if held is None:  # released in between: try once more from scratch
      self._write(0)
      return
    text = held.download_as_bytes(if_generation_match=held.generation).decode("utf-8", "replace").strip()
    try:
      holder = json.loads(text)
    except json.JSONDecodeError:
      holder = {}
    age = (_now() - held.updated).total_seconds()
    same_host_dead = holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
        and holder["pid"] != os.getpid() and not process.alive(holder["pid"])
    if age <= self.lock.stale_s and not same_host_dead:
      raise _in_use(self.lock.workdir, f"{text or 'unknown'}; last heartbeat {age:.0f} s ago, taken over "
                                       f"after {self.lock.stale_s:.0f} s without one")
    try:
      self._write(held.generation)
    except self.exceptions.PreconditionFailed:
      raise _in_use(self.lock.workdir, "another run took it over at the same moment") from None
    why = f"its process {holder.get('pid')} is not running on this host" if same_host_dead and \
        age <= self.lock.stale_s else f"no heartbeat for {age:.0f} s (more than {self.lock.stale_s:.0f} s)"
    self.lock.note = f"took over the run lock {self.lock.path} from {text or 'unknown'}: {why}"

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.lock.heartbeat_s) and self._heartbeat_once():
      pass

  def _heartbeat_once(self) -> bool:
    """Rewrites the lock if it is still this run's; False once it is not."""
    try:
      self._write(self.generation)
    except self.exceptions.PreconditionFailed:
      self.lost = "another run took the lock over (this run's heartbeats stopped for too long)"
      return False
    except Exception:  # a network error: retried at the next beat (staleness is many beats away)
      pass
    return True

  def check(self) -> None:
    if self.lost:
      raise WorkdirError(f"{self.lock.workdir}: {self.lost}; this run stops without writing there again")

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self.lost is None:
      try:
        self.blob.delete(if_generation_match=self.generation)
      except self.exceptions.PreconditionFailed:
        pass  # taken over meanwhile: it is not ours to delete
