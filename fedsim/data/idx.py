"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

An IDX file starts with a 4-byte big-endian magic number ``0x00 0x00 <type> <ndim>``,
then ``ndim`` big-endian ``uint32`` dimension sizes, then the data in row-major order.
Only the unsigned-byte type (``0x08``) used by image and label files is supported.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from fedsim.data.limits import check_bytes
from fedsim.errors import DataError

__all__ = ["read_idx"]

_UBYTE = 0x08


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions.

    Parameters
    ----------
    path
        The file; a name ending in ``.gz`` is decompressed with gzip.
    ndim
        The expected number of dimensions (3 for images, 1 for labels).

    Returns
    -------
    numpy.ndarray
        A ``uint8`` array of the stored shape.

    Raises
    ------
    DataError
        If the file cannot be read, is not gzip when named ``.gz``, or its magic number,
        dimensions or size are not as expected. The message names the file.
    """
    file = Path(path)
    try:
        with gzip.open(file, "rb") if file.suffix == ".gz" else file.open("rb") as fh:
            shape = _read_shape(fh, file, ndim)
            expected = math.prod(shape)
            check_bytes(4 * expected, f"IDX file {file}", f"shape {shape}")
            data = fh.read(expected + 1)  # one byte more reveals trailing data
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {file}: {exc}") from exc
    if len(data) != expected:
        raise DataError(
            f"IDX file {file}: shape {shape} needs {expected} data bytes; found "
            f"{len(data) if len(data) <= expected else 'more'}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


def _read_shape(fh: _Reader, file: Path, ndim: int) -> tuple[int, ...]:
    """Read and check the magic number and dimensions."""
    magic = fh.read(4)
    if len(magic) < 4:
        raise DataError(f"IDX file {file} is truncated: {len(magic)} bytes, no header")
    zero, dtype, dims = struct.unpack(">HBB", magic)
    if zero != 0 or dtype != _UBYTE or dims != ndim:
        raise DataError(
            f"IDX file {file}: bad magic number 0x{magic.hex()}; expected "
            f"0x0000{_UBYTE:02x}{ndim:02x} (unsigned bytes, {ndim} dimensions)"
        )
    header = fh.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DataError(f"IDX file {file} is truncated: header needs {4 + 4 * ndim} bytes")
    return tuple(int(d) for d in struct.unpack(f">{ndim}I", header))
