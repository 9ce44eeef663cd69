"""IDX files (the MNIST family's format), gzip-compressed or plain, read and checked.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values. Only unsigned bytes
(type 0x08) occur in the MNIST family, so only those are read. The SHA-256 returned is
of the decompressed bytes: recompressing a file (as Debian's packages do) changes the
.gz but not what it holds.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct

import numpy as np

from mobilenet_jax.data.errors import DatasetNotFoundError

_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(DatasetNotFoundError):
  """An IDX file that is not what its name promises; the message names the file."""


@dataclasses.dataclass(frozen=True)
class IdxArray:
  """The values of one IDX file and the SHA-256 of its decompressed bytes."""
  path: str
  values: np.ndarray  # uint8, shaped as the header says.
  sha256: str


def read_idx(path: str) -> IdxArray:
  """Reads an IDX file of unsigned bytes (gzip-compressed or not, whatever its name).

  Raises:
    IdxError: unreadable, truncated, too long, or not an IDX file of unsigned bytes.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
    if raw.startswith(_GZIP_MAGIC):
      raw = gzip.decompress(raw)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise IdxError(f"{path}: cannot read it ({type(e).__name__}: {e}).") from None
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _UBYTE:
    raise IdxError(f"{path}: not an IDX file of unsigned bytes (header "
                   f"{raw[:4].hex() or 'empty'}, expected 0000 08 then the rank).")
  rank = raw[3]
  header = 4 + 4 * rank
  if len(raw) < header:
    raise IdxError(f"{path}: truncated IDX header ({len(raw)} bytes).")
  shape = struct.unpack(f">{rank}I", raw[4:header])
  expected = header + int(np.prod(shape, dtype=np.int64))
  if len(raw) != expected:
    raise IdxError(f"{path}: {len(raw)} bytes where its header {shape} needs "
                   f"{expected}: the file is truncated or damaged.")
  values = np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
  return IdxArray(path, values, hashlib.sha256(raw).hexdigest())
