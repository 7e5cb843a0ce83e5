"""A tiny counter-based random generator for per-document draws (SplitMix64).

Each document's interleaving and patching draws come from a generator keyed
by (seed, stream index), so they are a pure function of both. Seeding a numpy
Generator costs ~40 us, more than the rest of a document's preparation, and
its scalar draws ~1-8 us each; this one seeds and draws in well under 1 us.
It offers the two numpy-Generator methods the pipeline uses.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
  return z ^ (z >> 31)


class DocRng:
  __slots__ = ("state",)

  def __init__(self, *keys: int):
    state = 0
    for k in keys:
      state = _mix((state ^ (int(k) & _MASK)) + _GOLDEN & _MASK)
    self.state = state

  def next64(self) -> int:
    self.state = (self.state + _GOLDEN) & _MASK
    return _mix(self.state)

  def random(self) -> float:
    """Uniform in [0, 1) with 53 random bits."""
    return (self.next64() >> 11) * (1.0 / (1 << 53))

  def integers(self, low: int, high: int) -> int:
    """Uniform integer in [low, high), like numpy's Generator.integers."""
    if high <= low:
      raise ValueError(f"empty range [{low}, {high})")
    return low + self.next64() % (high - low)
