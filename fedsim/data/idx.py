"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

An IDX file starts with a 4-byte big-endian magic number ``0x00 0x00 <type> <ndim>``,
then ``ndim`` big-endian ``uint32`` dimension sizes, then the data in row-major order.
Only the unsigned-byte type (``0x08``) used by image and label files is supported.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from fedsim.errors import DataError

__all__ = ["read_idx"]

_UBYTE = 0x08


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
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as fh:
                raw = fh.read()
        else:
            raw = file.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {file}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"IDX file {file} is truncated: {len(raw)} bytes, no header")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE or dims != ndim:
        raise DataError(
            f"IDX file {file}: bad magic number 0x{raw[:4].hex()}; expected "
            f"0x0000{_UBYTE:02x}{ndim:02x} (unsigned bytes, {ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {file} is truncated: header needs {header} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {file}: shape {shape} needs {expected} data bytes; found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()
