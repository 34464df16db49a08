"""Reading DICOM and NIfTI files as 2-D images with values in ``[0, 1]``.

DICOM (``.dcm``, ``.dicom``; needs the optional ``pydicom``, ``pip install
'fedsim[medical]'``), one single-frame image per file:

1. the stored values go through the modality LUT (``RescaleSlope`` and
   ``RescaleIntercept``, or a Modality LUT Sequence) — pydicom's ``apply_modality_lut``;
2. grey images (``MONOCHROME1``/``MONOCHROME2``) are windowed with the file's first
   ``WindowCenter``/``WindowWidth`` and its ``VOILUTFunction`` (``LINEAR``, the
   default; ``LINEAR_EXACT``; ``SIGMOID``), by the formulas of DICOM PS3.3 C.11.2.1.2
   scaled to ``[0, 1]`` (:func:`window`); without a window, the image is min–max scaled
   (:func:`min_max`);
3. ``MONOCHROME1`` (higher values darker) is inverted, ``v ↦ 1 − v``, so bright means
   dense in every image;
4. colour images (``RGB``, ``YBR_FULL*``, converted to RGB by pydicom) are divided by
   ``2**BitsStored − 1``.

Multi-frame DICOM and other photometric interpretations (``PALETTE COLOR``, ...) are
refused. Compressed transfer syntaxes decode only where pydicom has a decoder
(e.g. ``pylibjpeg``) installed; otherwise the file is refused with pydicom's reason.

NIfTI (``.nii``, ``.nii.gz``; needs the optional ``nibabel``): a 2-D image, or one sample
per 3-D volume — its **middle axial slice**: the slice at index ``n // 2`` along the
array axis closest to the superior–inferior direction of the file's affine, oriented
as RAS (the in-plane axes reordered and flipped accordingly) and rotated so anterior
is at the top. ``scl_slope``/``scl_inter`` are applied (nibabel) and the slice is min–max
scaled. 4-D files are accepted only with one volume. One file stays one sample, so the
labels of an image folder keep meaning one label per patient/study.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from fedsim.data.limits import MAX_IMAGE_PIXELS
from fedsim.errors import DataError

__all__ = [
    "DICOM_EXTENSIONS",
    "MAX_VOLUME_VOXELS",
    "MEDICAL_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "is_dicom",
    "is_nifti",
    "min_max",
    "read_dicom",
    "read_dicom_header",
    "read_nifti",
    "read_nifti_header",
    "window",
]

DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
MEDICAL_EXTENSIONS = DICOM_EXTENSIONS + NIFTI_EXTENSIONS

MAX_VOLUME_VOXELS = 2**30
"""Largest NIfTI volume accepted, in voxels (its header is checked before any read)."""

_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_SHOWN_CHARS = 200  # longest library message shown in an error


def is_dicom(path: str) -> bool:
    """Whether ``path`` names a DICOM file (by extension, case-insensitive)."""
    return path.lower().endswith(DICOM_EXTENSIONS)


def is_nifti(path: str) -> bool:
    """Whether ``path`` names a NIfTI file (by extension, case-insensitive)."""
    return path.lower().endswith(NIFTI_EXTENSIONS)


# --- pure value mappings --------------------------------------------------------------


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map values through a DICOM VOI window to ``[0, 1]`` (DICOM PS3.3 C.11.2.1.2).

    ``LINEAR``: ``0`` for ``x <= c − 0.5 − (w − 1)/2``, ``1`` for ``x > c − 0.5 +
    (w − 1)/2``, else ``((x − (c − 0.5)) / (w − 1) + 0.5)``; ``LINEAR_EXACT``:
    ``clip((x − c)/w + 0.5, 0, 1)``; ``SIGMOID``: ``1 / (1 + exp(−4 (x − c)/w))``.
    ``LINEAR`` needs ``w >= 1`` (a width of 1 is a threshold at ``c − 0.5``); the
    others ``w > 0``.
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR_EXACT":
        out = np.clip((x - center) / width + 0.5, 0.0, 1.0)
    elif function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700.0, 700.0)))
    elif width == 1:
        out = (x > center - 0.5).astype(np.float64)
    else:
        out = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return out.astype(np.float32)


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale values linearly so the smallest becomes 0 and the largest 1 (a constant
    image becomes all zeros)."""
    x = np.asarray(values, dtype=np.float64)
    low, high = float(x.min()), float(x.max())
    if high == low:
        return np.zeros(x.shape, np.float32)
    return ((x - low) / (high - low)).astype(np.float32)


# --- DICOM ----------------------------------------------------------------------------


def read_dicom_header(path: str, where: str) -> tuple[str, int, int]:
    """``(mode, width, height)`` of a DICOM file, ``mode`` ``"L"`` (grey) or ``"RGB"``.

    Reads the header only (``stop_before_pixels``) and checks what :func:`read_dicom`
    needs: one frame, a supported photometric interpretation, a valid window, a size
    within :data:`~fedsim.data.limits.MAX_IMAGE_PIXELS`.
    """
    pydicom = _require("pydicom", "DICOM", path, where)
    with _reading(path, where, "DICOM"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return _check_dicom(ds, path, where)


def read_dicom(path: str, where: str) -> np.ndarray:
    """Decode a DICOM file to ``float32`` ``(1, H, W)`` (grey) or ``(3, H, W)`` (colour)
    in ``[0, 1]``, as the module docstring describes."""
    pydicom = _require("pydicom", "DICOM", path, where)
    from pydicom.pixels import apply_modality_lut

    with _reading(path, where, "DICOM"):
        ds = pydicom.dcmread(path)
        mode, _, _ = _check_dicom(ds, path, where)
        if "PixelData" not in ds:
            raise DataError(f"{where}: DICOM file {path} has no pixel data (PixelData)")
        stored = ds.pixel_array
        if mode == "RGB":
            bits = int(ds.get("BitsStored", 8))
            return (
                (np.asarray(stored, np.float64) / (2**bits - 1))
                .astype(np.float32)
                .transpose(2, 0, 1)
            )
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{where}: DICOM file {path} has non-finite values after rescaling")
    win = _window_of(ds, path, where)
    out = window(values, *win) if win is not None else min_max(values)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = (1.0 - out).astype(np.float32)
    return out[None]


def _check_dicom(ds: Any, path: str, where: str) -> tuple[str, int, int]:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _GREY + _COLOUR:
        raise DataError(
            f"{where}: DICOM file {path} has PhotometricInterpretation {photometric!r}; "
            f"fedsim reads {', '.join(_GREY + _COLOUR)}"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(
            f"{where}: DICOM file {path} has NumberOfFrames {frames}; fedsim reads "
            "single-frame images (export one file per frame)"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_pixels(path, where, cols, rows)
    if photometric in _GREY:
        _window_of(ds, path, where)
    return ("L" if photometric in _GREY else "RGB"), cols, rows


def _window_of(ds: Any, path: str, where: str) -> tuple[float, float, str] | None:
    """The file's first window ``(center, width, function)``, or ``None`` without one."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in _VOI_FUNCTIONS:
        raise DataError(
            f"{where}: DICOM file {path} has VOILUTFunction {function!r}; fedsim applies "
            f"{', '.join(_VOI_FUNCTIONS)}"
        )
    if not (math.isfinite(center) and math.isfinite(width)):
        raise DataError(
            f"{where}: DICOM file {path}: WindowCenter and WindowWidth must be finite; got "
            f"{center:g} and {width:g}"
        )
    if (function == "LINEAR" and width < 1) or width <= 0:
        bound = ">= 1" if function == "LINEAR" else "> 0"
        raise DataError(
            f"{where}: DICOM file {path}: WindowWidth must be {bound} for VOILUTFunction "
            f"{function}; got {width:g}"
        )
    return center, width, function


def _first(value: Any) -> float:
    """The first value of a possibly multi-valued DICOM element, as a float."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


# --- NIfTI ----------------------------------------------------------------------------


def read_nifti_header(path: str, where: str) -> tuple[str, int, int]:
    """``("F", width, height)`` of the slice :func:`read_nifti` returns; header only."""
    nibabel = _require("nibabel", "NIfTI", path, where)
    with _reading(path, where, "NIfTI"):
        img = nibabel.load(path)
        shape = tuple(int(s) for s in img.shape)
    _check_volume(shape, path, where)
    with _reading(path, where, "NIfTI"):
        axis, ornt = _axial(img, shape)
    h, w = _plane_size(shape, axis, ornt)
    _check_pixels(path, where, w, h)
    return "F", w, h


def read_nifti(path: str, where: str) -> np.ndarray:
    """The file's 2-D image, or its middle axial slice, as ``float32`` ``(1, H, W)``."""
    nibabel = _require("nibabel", "NIfTI", path, where)
    with _reading(path, where, "NIfTI"):
        img = nibabel.load(path)
        shape = tuple(int(s) for s in img.shape)
        _check_volume(shape, path, where)
        axis, ornt = _axial(img, shape)
        plane = _slice(img, shape, axis, ornt)
    if plane.size == 0 or not np.isfinite(plane).all():
        raise DataError(f"{where}: NIfTI file {path} has non-finite values in its slice")
    return min_max(plane)[None]


def _check_volume(shape: tuple[int, ...], path: str, where: str) -> None:
    ok = len(shape) in (2, 3) or (len(shape) == 4 and shape[3] == 1)
    if not ok:
        raise DataError(
            f"{where}: NIfTI file {path} has shape {shape}; fedsim reads 2-D images and 3-D "
            "volumes (a 4-D file only with one volume)"
        )
    if math.prod(shape) > MAX_VOLUME_VOXELS:
        raise DataError(
            f"{where}: NIfTI file {path} has {math.prod(shape)} voxels; fedsim reads volumes "
            f"of at most {MAX_VOLUME_VOXELS}"
        )


def _axial(img: Any, shape: tuple[int, ...]) -> tuple[int | None, np.ndarray | None]:
    """The array axis closest to superior–inferior and the file's orientation (3-D)."""
    if len(shape) == 2:
        return None, None
    from nibabel.orientations import io_orientation

    ornt = io_orientation(img.affine)
    if np.isnan(ornt).any():  # degenerate affine: take the array as RAS
        ornt = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    return int(np.flatnonzero(ornt[:, 0] == 2)[0]), ornt


def _plane_size(
    shape: tuple[int, ...], axis: int | None, ornt: np.ndarray | None
) -> tuple[int, int]:
    """``(H, W)`` of the returned slice: rot90 of an ``(x, y)`` plane is ``(y, x)``."""
    if axis is None or ornt is None:
        return shape[1], shape[0]
    x_axis, y_axis = sorted((i for i in range(3) if i != axis), key=lambda i: ornt[i, 0])
    return shape[y_axis], shape[x_axis]


def _slice(
    img: Any, shape: tuple[int, ...], axis: int | None, ornt: np.ndarray | None
) -> np.ndarray:
    if axis is None or ornt is None:
        return np.rot90(np.asarray(img.dataobj, dtype=np.float64))
    index: list[Any] = [slice(None)] * len(shape)
    index[axis] = shape[axis] // 2
    if len(shape) == 4:
        index[3] = 0
    plane = np.asarray(img.dataobj[tuple(index)], dtype=np.float64)
    rest = [i for i in range(3) if i != axis]
    if ornt[rest[0], 0] != 0:  # put world x first
        plane, rest = plane.T, rest[::-1]
    for ax, i in enumerate(rest):
        if ornt[i, 1] < 0:
            plane = np.flip(plane, ax)
    return np.rot90(plane)


# --- helpers --------------------------------------------------------------------------


def _check_pixels(path: str, where: str, width: int, height: int) -> None:
    if not 0 < width * height <= MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where}: image {path} is {width}×{height} pixels; fedsim reads images of 1 to "
            f"{MAX_IMAGE_PIXELS} pixels"
        )


def _require(module: str, kind: str, path: str, where: str) -> ModuleType:
    """Import an optional reader, or explain how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise DataError(
            f"{where}: {path} is a {kind} file, which needs the optional package {module}; "
            "install it with: pip install 'fedsim[medical]'"
        ) from None


@contextlib.contextmanager
def _reading(path: str, where: str, kind: str) -> Iterator[None]:
    """Turn any reader failure on a user file into one :class:`DataError` naming it."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # pydicom/nibabel raise many types on malformed input
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if len(reason) > _SHOWN_CHARS:
            reason = reason[:_SHOWN_CHARS] + "..."
        raise DataError(f"{where}: cannot read {kind} file {path}: {reason}") from exc
