"""Where a run's and a dataset's files live: local paths or Cloud Storage URLs (gs://bucket/path).

Cloud TPU pod VMs share no filesystem and a preempted VM takes its disk with it, so real
runs keep checkpoints, logs and data on Cloud Storage. Every file the trainer, evaluation,
generation and export touch goes through these functions: local paths keep POSIX
semantics (atomic replace, real directories); gs:// URLs go to gcsfs, where an object
write is atomic and folders are name prefixes. A URL is never turned into a local path
(`absolute` leaves it as it is), and a scheme other than gs:// is refused.

On a Cloud TPU VM or GCE the VM's service account authenticates; elsewhere
`gcloud auth application-default login`. `STORAGE_EMULATOR_HOST` (with the variables
`emulator_environment` lists) points everything at a local emulator, as the tests do.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from typing import Iterator

SCHEME = "gs://"


class StorageError(RuntimeError):
  """A path that cannot be used: an unsupported scheme, a bucket that cannot be reached."""


def is_url(path: str) -> bool:
  """True for object-store URLs (scheme://...), which are never treated as local paths."""
  return "://" in str(path)


def _check_scheme(path: str) -> None:
  if is_url(path) and not str(path).startswith(SCHEME):
    raise StorageError(f"{path}: only local paths and {SCHEME} URLs are supported")


def _fs():
  import gcsfs  # imported on first use: local runs never need it
  # One instance per process (fsspec caches it); no listings cache: other hosts write too. An
  # emulator takes no credentials (and a metadata-server lookup would only print a warning).
  token = "anon" if os.environ.get("STORAGE_EMULATOR_HOST") else None
  return gcsfs.GCSFileSystem(use_listings_cache=False, token=token)


def absolute(path: str) -> str:
  """A local path made absolute; a URL unchanged (checked for its scheme)."""
  _check_scheme(path)
  return str(path) if is_url(path) else os.path.abspath(os.path.expanduser(path))


def normal(path: str) -> str:
  """A local path without redundant separators and up-level references; a URL unchanged."""
  return str(path) if is_url(path) else os.path.normpath(path)


def join(path: str, *parts: str) -> str:
  return posixpath.join(str(path), *parts) if is_url(path) else os.path.join(path, *parts)


def parent(path: str) -> str:
  """The folder holding `path` (for a bucket's top level, the bucket URL itself)."""
  if is_url(path):
    head = str(path).rstrip("/")
    folder = posixpath.dirname(head[len(SCHEME):])
    return SCHEME + folder if folder else head
  return os.path.dirname(os.path.abspath(path))


def exists(path: str) -> bool:
  _check_scheme(path)
  return _fs().exists(path) if is_url(path) else os.path.exists(path)


def isfile(path: str) -> bool:
  _check_scheme(path)
  return _fs().isfile(path) if is_url(path) else os.path.isfile(path)


def isdir(path: str) -> bool:
  """A local directory, or a URL prefix that holds at least one object."""
  _check_scheme(path)
  return _fs().isdir(path) if is_url(path) else os.path.isdir(path)


def getsize(path: str) -> int:
  return int(_fs().size(path)) if is_url(path) else os.path.getsize(path)


def file_sizes(paths: list[str], folder: str) -> dict[str, int]:
  """{path: bytes} of those `paths` (all under `folder`) that are files; the rest are absent.
  On object storage one listing of `folder` answers for all of them."""
  if is_url(folder):
    found = _fs().find(folder, detail=True)
    listed = {SCHEME + p: int(info["size"]) for p, info in found.items() if info.get("type") == "file"}
    return {p: listed[p] for p in paths if p in listed}
  return {p: os.path.getsize(p) for p in paths if os.path.isfile(p)}


def listdir(path: str) -> list[str]:
  """Names (not paths) of the entries of a folder, sorted."""
  if is_url(path):
    return sorted(posixpath.basename(p.rstrip("/")) for p in _fs().ls(path, detail=False))
  return sorted(os.listdir(path))


def glob(pattern: str) -> list[str]:
  """Paths matching a shell pattern, sorted."""
  if is_url(pattern):
    return sorted(SCHEME + p for p in _fs().glob(pattern))
  import glob as glob_lib
  return sorted(glob_lib.glob(pattern))


def makedirs(path: str) -> None:
  """A local folder and its parents; nothing for a URL (object stores have no folders)."""
  _check_scheme(path)
  if not is_url(path):
    os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "r"):
  """open() for both. On object storage a file written is uploaded whole at close (no append)."""
  _check_scheme(path)
  if is_url(path):
    if "a" in mode:
      raise StorageError(f"{path}: objects cannot be appended to; write the whole file")
    return _fs().open(path, mode)
  return open(path, mode)


def read_bytes(path: str) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
  """Writes `path` whole or not at all: a local temporary file renamed over it, or one upload."""
  _check_scheme(path)
  if is_url(path):
    _fs().pipe_file(path, data)
    return
  makedirs(os.path.dirname(path) or ".")
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj, **dumps_options) -> None:
  """`obj` as JSON (indent 2 unless told otherwise), written whole or not at all (write_bytes): the
  one way results, configs, manifests and journal entries reach disk or a bucket."""
  write_text(path, json.dumps(obj, **{"indent": 2, **dumps_options}))


def rmtree(path: str) -> None:
  """Removes a folder and everything in it (a missing one is fine)."""
  if is_url(path):
    if _fs().exists(path):
      _fs().rm(path, recursive=True)
  else:
    shutil.rmtree(path, ignore_errors=True)


def remove(path: str) -> None:
  """Removes one file (a missing one is fine)."""
  if is_url(path):
    if _fs().exists(path):
      _fs().rm_file(path)
    return
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


def rename(src: str, dst: str) -> None:
  """Moves a file or folder. Local: one atomic rename. Object storage: copy, then delete."""
  if is_url(src) != is_url(dst):
    raise StorageError(f"cannot move {src} to {dst}: one is local, the other is not")
  if is_url(src):
    fs = _fs()
    if fs.isdir(src):
      fs.copy(src.rstrip("/") + "/", dst.rstrip("/") + "/", recursive=True)
      fs.rm(src, recursive=True)
    else:
      fs.mv(src, dst)
  else:
    os.rename(src, dst)


def copy_file(src: str, dst: str) -> None:
  """Copies one file between any two places (local or gs://)."""
  if not is_url(src) and not is_url(dst):
    shutil.copyfile(src, dst)
  elif is_url(src) and is_url(dst):
    _fs().copy(src, dst)
  elif is_url(dst):
    _fs().put_file(src, dst)
  else:
    _fs().get_file(src, dst)


def publish_dir(local_dir: str, dst: str) -> None:
  """Puts a finished local folder at `dst`, replacing what was there: a rename when `dst` is
  local (on the same filesystem), an upload of every file (then the local copy removed) when
  it is a URL."""
  if not is_url(dst):
    if os.path.exists(dst):
      shutil.rmtree(dst)
    os.replace(local_dir, dst)
    return
  rmtree(dst)
  _fs().put(local_dir.rstrip("/") + "/", dst.rstrip("/") + "/", recursive=True)
  shutil.rmtree(local_dir, ignore_errors=True)


@contextlib.contextmanager
def local_folder(dst: str) -> Iterator[str]:
  """A local folder to write `dst`'s files into: `dst` itself when local; for a URL a temporary
  folder uploaded to `dst` (file by file, under the same names) when the block ends without error."""
  if not is_url(dst):
    makedirs(dst)
    yield dst
    return
  with tempfile.TemporaryDirectory(prefix="lst_jax_") as tmp:
    yield tmp
    upload_tree(tmp, dst)


def upload_tree(local_dir: str, dst: str) -> None:
  """Copies every file under `local_dir` to the same relative names under `dst` (a URL)."""
  _fs().put(local_dir.rstrip("/") + "/", dst.rstrip("/") + "/", recursive=True)


def download_tree(src: str, local_dir: str) -> None:
  """Copies every object under the URL `src` into `local_dir` under the same relative names."""
  _fs().get(src.rstrip("/") + "/", local_dir.rstrip("/") + "/", recursive=True)


def check_writable(folder: str, what: str) -> None:
  """StorageError (one line) unless a file can be created in `folder` (made if missing): checked before
  long work whose results would otherwise be lost at the end."""
  probe = join(folder, f".write-check-{os.getpid()}")
  try:
    makedirs(folder)
    write_bytes(probe, b"")
    remove(probe)
  except OSError as e:
    raise StorageError(f"{folder}: {what} is not writable ({e.strerror or e})") from None


def check_reachable(path: str, what: str) -> None:
  """Raises StorageError in one line when `path` is a URL whose bucket cannot be reached
  (missing, no access, no credentials); local paths pass."""
  _check_scheme(path)
  if not is_url(path):
    return
  bucket = str(path)[len(SCHEME):].split("/")[0]
  try:
    ok = _fs().exists(bucket)
  except Exception as e:  # gcsfs/google-auth raise many types: credentials, HTTP, DNS
    raise StorageError(f"{what} {path}: bucket gs://{bucket} cannot be reached ({type(e).__name__}: "
                       f"{str(e)[:200]}); check the credentials (the VM's service account, or "
                       f"`gcloud auth application-default login`)") from None
  if not ok:
    raise StorageError(f"{what} {path}: bucket gs://{bucket} does not exist (or this account cannot see it)")


def emulator_environment(endpoint: str) -> dict[str, str]:
  """The variables that point every Cloud Storage client lst-jax uses at a local emulator
  (fake-gcs-server): google-cloud-storage and gcsfs, tensorstore (Orbax's arrays), the C++
  client inside array_record; metadata-server lookups go to a closed local port."""
  dead = "127.0.0.1:9"
  return {"STORAGE_EMULATOR_HOST": endpoint, "TENSORSTORE_GCS_HTTP_URL": endpoint,
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint,
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true",
          "GCE_METADATA_HOST": dead, "GCE_METADATA_IP": dead, "GCE_METADATA_ROOT": dead,
          "GOOGLE_CLOUD_PROJECT": "lst-jax-emulator"}
