"""Decoding one image file from an untrusted folder into ``float32`` values in ``[0, 1]``.

Scaling by mode: 8-bit modes (``L``, ``RGB``, ``P``, ...) divide by 255; 16-bit grey
(``I;16*``, common for X-rays) divides by 65535; 32-bit integer (``I``) is read as 16-bit
and must hold values in 0..65535; 32-bit float (``F``) must already be in ``[0, 1]``.
Image sizes are checked from the header, against
:data:`~fedsim.data.limits.MAX_IMAGE_PIXELS`, before any pixel is decoded.

DICOM and NIfTI files (by extension) are read by :mod:`fedsim.data.medical` instead of
PIL: windowed or min–max scaled to ``[0, 1]``; their header mode is ``"L"`` (grey DICOM),
``"RGB"`` (colour DICOM) or ``"F"`` (NIfTI).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from fedsim.data.convert import check_unit_range
from fedsim.data.limits import MAX_IMAGE_PIXELS
from fedsim.data.medical import (
    is_dicom,
    is_nifti,
    read_dicom,
    read_dicom_header,
    read_nifti,
    read_nifti_header,
)
from fedsim.errors import DataError

__all__ = ["GREY_MODES", "ImageHeader", "read_header", "read_pixels"]

Channels = Literal["grey", "rgb"]

GREY_MODES = frozenset({"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
"""Modes read as one grey channel; any other mode is read as RGB."""

_SIXTEEN_BIT = 65535.0


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares: its PIL mode and size in pixels."""

    mode: str
    width: int
    height: int


def read_header(path: str, where: str) -> ImageHeader:
    """Read an image's header only, rejecting unreadable files and oversized images.

    Raises
    ------
    DataError
        If the file is not an image PIL can identify (or a readable DICOM/NIfTI file),
        or has more than :data:`~fedsim.data.limits.MAX_IMAGE_PIXELS` pixels or zero pixels.
    """
    if is_dicom(path):
        return ImageHeader(*read_dicom_header(path, where))
    if is_nifti(path):
        return ImageHeader(*read_nifti_header(path, where))
    with _decoding(path, where), Image.open(path) as img:
        header = ImageHeader(img.mode, *img.size)
    pixels = header.width * header.height
    if not 0 < pixels <= MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where}: image {path} is {header.width}×{header.height} pixels; fedsim reads "
            f"images of 1 to {MAX_IMAGE_PIXELS} pixels (a larger one may be a "
            "decompression bomb)"
        )
    return header


def read_pixels(path: str, channels: Channels, where: str) -> np.ndarray:
    """Decode one image as ``float32`` in ``[0, 1]``, shape ``(1, H, W)`` or ``(3, H, W)``.

    Parameters
    ----------
    path
        The image file (its header already checked by :func:`read_header`).
    channels
        ``"grey"`` for one channel (only for :data:`GREY_MODES`), ``"rgb"`` for three.
    where
        The folder, for messages.

    Raises
    ------
    DataError
        If decoding fails (corrupt or truncated file) or the values cannot be scaled.
    """
    if is_dicom(path) or is_nifti(path):
        pixels = read_dicom(path, where) if is_dicom(path) else read_nifti(path, where)
        return _as_channels(pixels, channels)
    with _decoding(path, where), Image.open(path) as img:
        if img.mode in GREY_MODES - {"1", "L"}:
            grey = _scaled_grey(img, path, where)[None]
            return np.repeat(grey, 3, axis=0) if channels == "rgb" else grey
        mode = "L" if channels == "grey" else "RGB"
        pixels = np.asarray(img.convert(mode), dtype=np.float32) / np.float32(255.0)
    return pixels[None] if channels == "grey" else pixels.transpose(2, 0, 1)


def _as_channels(pixels: np.ndarray, channels: Channels) -> np.ndarray:
    """A ``(1|3, H, W)`` image with the requested channels (RGB → grey: 601-2 luma)."""
    if channels == "rgb" and len(pixels) == 1:
        return np.repeat(pixels, 3, axis=0)
    if channels == "grey" and len(pixels) == 3:
        luma = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), pixels, axes=1)
        return np.clip(luma, 0.0, 1.0).astype(np.float32)[None]
    return pixels


def _scaled_grey(img: Image.Image, path: str, where: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grey image to ``[0, 1]``."""
    values = np.asarray(img)
    if img.mode == "F":
        out = values.astype(np.float32)
        check_unit_range(out[None], f"{where}: image {path} (32-bit float)")
        return out
    if img.mode == "I" and values.size and (values.min() < 0 or values.max() > _SIXTEEN_BIT):
        raise DataError(
            f"{where}: image {path} is 32-bit integer with values in "
            f"[{int(values.min())}, {int(values.max())}]; fedsim reads integer images as "
            "16-bit (0..65535)"
        )
    return (values.astype(np.float32) / np.float32(_SIXTEEN_BIT)).astype(np.float32)


@contextlib.contextmanager
def _decoding(path: str, where: str) -> Iterator[None]:
    """Turn any failure of PIL on a hostile file into a :class:`DataError` naming the file.

    PIL's decoders raise many exception types on malformed input (``OSError``,
    ``SyntaxError``, ``ValueError``, ``struct.error``, ``DecompressionBombError``, ...);
    each is re-raised, chained, as one :class:`DataError`. PIL's own bomb warning is
    silenced: :func:`read_header` checks sizes against fedsim's lower limit.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except DataError:
        raise
    except Exception as exc:  # any decoder failure on a user file is a data problem
        raise DataError(f"{where}: cannot read image {path}: {exc}") from exc
