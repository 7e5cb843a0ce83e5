"""Text input must be UTF-8: UTF-16 and binary data are named as such, not read as <unk> soup.

UTF-16 of ASCII is valid UTF-8 (every other byte NUL), so decoding alone would
accept it; `decode_utf8` says what the bytes are instead. Used by data_prep's
input formats and by the benchmark files.
"""

from __future__ import annotations

UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
CONVERT = "convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)"


class EncodingProblem(ValueError):
  """`offset`: the byte where the problem is (for a line and column)."""

  def __init__(self, message: str, offset: int):
    super().__init__(message)
    self.offset = offset


def column(data: bytes, offset: int) -> int:
  return offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def decode_utf8(data: bytes, file_start: bool) -> str:
  """`data` as UTF-8 text (a UTF-8 byte-order mark at the start of the file dropped), or
  EncodingProblem saying it is UTF-16, binary, or not UTF-8."""
  if file_start and data.startswith(UTF16_BOMS):
    raise EncodingProblem(f"UTF-16 text (byte-order mark 0x{data[0]:02x} 0x{data[1]:02x} at the start of the "
                          f"file), not UTF-8: {CONVERT}", 0)
  if file_start and data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  nul = data.find(b"\0")
  if nul >= 0:
    even, odd = data[0::2].count(0), data[1::2].count(0)  # UTF-16 of ASCII: every other byte is 0
    if len(data) >= 4 and max(even, odd) >= len(data) // 4 and min(even, odd) <= len(data) // 40:
      raise EncodingProblem(f"UTF-16 text (NUL bytes between characters), not UTF-8: {CONVERT}", nul)
    raise EncodingProblem(f"binary data (NUL byte at column {column(data, nul)}), not UTF-8 text", nul)
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise EncodingProblem(f"not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column(data, e.start)})",
                          e.start) from None
