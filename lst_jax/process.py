"""Whether a process of this machine still runs (a lock's holder, a worker of a pool)."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
  """True while process `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True
