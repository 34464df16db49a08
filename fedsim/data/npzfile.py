"""Reading ``.npz`` archives from untrusted files without surprises.

Each wanted member's ``.npy`` header is read and checked (plain numeric dtype, declared
size equal to the stored size, total within :data:`~fedsim.data.limits.MAX_DATASET_BYTES`)
before any array is allocated; arrays are then read with ``allow_pickle=False``. Every
problem is a :class:`~fedsim.errors.DataError` naming the file and the key.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from fedsim.data.limits import check_bytes
from fedsim.errors import DataError

__all__ = ["read_npz_arrays"]

# What zipfile and numpy raise on damaged archives and members.
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # unsupported zip compression method
    RuntimeError,  # encrypted member
)
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_FLOAT_BYTES = 4  # images become float32


def read_npz_arrays(
    file: Path, where: str, wanted: Iterable[str]
) -> tuple[frozenset[str], dict[str, np.ndarray]]:
    """Return the archive's keys and the arrays of the ``wanted`` keys it holds.

    Parameters
    ----------
    file
        The archive.
    where
        How the file was named, e.g. ``"data.path (/data/x.npz)"``, for error messages.
    wanted
        Keys to read; keys absent from the archive are skipped.

    Raises
    ------
    DataError
        If the file is missing, empty, not a zip archive or damaged, or a wanted member is
        not a plain ``.npy`` array (e.g. an object array, which would need pickle), is
        truncated, or is too large.
    """
    if not file.exists():
        raise DataError(f"{where}: file not found")
    if not file.is_file():
        raise DataError(f"{where}: is a directory or special file, not an .npz file")
    if file.stat().st_size == 0:
        raise DataError(f"{where}: file is empty (0 bytes)")
    try:
        is_zip = zipfile.is_zipfile(file)
    except OSError as exc:
        raise DataError(f"{where}: cannot read file ({exc})") from exc
    if not is_zip:
        raise DataError(
            f"{where}: not an .npz archive (not a zip file; save arrays with numpy.savez)"
        )
    try:
        with zipfile.ZipFile(file) as archive:
            members = {_key(n): n for n in archive.namelist()}
            chosen = {k: members[k] for k in wanted if k in members}
            total = sum(_check_member(archive, k, m, where) for k, m in chosen.items())
            check_bytes(total, where, "the arrays")
            arrays = {k: _read_member(archive, k, m, where) for k, m in chosen.items()}
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{where}: not a readable .npz archive ({exc})") from exc
    return frozenset(members), arrays


def _key(name: str) -> str:
    return name.removesuffix(".npy")


def _check_member(archive: zipfile.ZipFile, key: str, member: str, where: str) -> int:
    """Check a member's ``.npy`` header; return the bytes its array takes as ``float32``."""
    info = archive.getinfo(member)
    with archive.open(member) as fh:
        shape, dtype, header_len = _read_header(fh, key, where)
    count = math.prod(shape)
    expected = header_len + count * dtype.itemsize
    if info.file_size != expected:
        raise DataError(
            f"{where}: key {key!r} is truncated or corrupt: its header declares a {dtype} "
            f"array of shape {shape} ({expected} bytes with the header) but it holds "
            f"{info.file_size} bytes"
        )
    return count * max(dtype.itemsize, _FLOAT_BYTES)


def _read_header(fh: IO[bytes], key: str, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Read ``(shape, dtype, header length)`` of one ``.npy`` member."""
    try:
        version = np.lib.format.read_magic(fh)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            raise DataError(f"{where}: key {key!r} uses unsupported .npy format {version}")
        shape, _, dtype = reader(fh)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{where}: key {key!r} is damaged or not a .npy array ({exc})") from exc
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(
            f"{where}: key {key!r} holds an array of dtype {dtype} (Python objects or records); "
            "store plain numeric arrays (fedsim loads with allow_pickle=False)"
        )
    return tuple(int(s) for s in shape), dtype, fh.tell()


def _read_member(archive: zipfile.ZipFile, key: str, member: str, where: str) -> np.ndarray:
    try:
        with archive.open(member) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{where}: key {key!r} cannot be read ({exc})") from exc
