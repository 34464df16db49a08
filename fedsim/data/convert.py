"""Pure conversions of raw image/label arrays to the :class:`~fedsim.data.types.Split` format.

Each function takes a ``where`` string naming the origin of the array for error messages,
e.g. ``"data.path (/data/x.npz): key 'train_images'"``.
"""

from __future__ import annotations

import numpy as np

from fedsim.data.types import Split
from fedsim.errors import DataError

__all__ = ["check_unit_range", "images_to_nchw_float", "labels_to_int64", "make_split"]

_CHANNELS = (1, 3)
_INTEGER_SCALE = {"u1": 255.0, "u2": 65535.0}  # dtype code -> value of full intensity


def images_to_nchw_float(
    images: np.ndarray, where: str, channels_first: bool | None = None
) -> np.ndarray:
    """Return ``images`` as ``float32`` NCHW in ``[0, 1]``.

    Parameters
    ----------
    images
        ``uint8`` (0..255, divided by 255), ``uint16`` (0..65535, divided by 65535, e.g.
        16-bit X-rays; 12-bit data stored in 16 bits comes out darker but with the right
        relative values) or floating-point images already in ``[0, 1]`` (values outside
        are rejected, not rescaled: a rescaling guess could silently change the data) of
        shape
        ``(N, H, W)`` (grey), ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` in {1, 3}.
        When both layouts fit (e.g. ``(N, 3, 32, 3)``), NCHW is assumed if the last two
        axes are equal, else NHWC if the middle two are, else the shape is rejected.
    where
        Origin of the array, used in error messages.
    channels_first
        ``True`` if 4-D images are known to be NCHW, ``False`` if NHWC, ``None`` to infer
        the layout as described above.

    Returns
    -------
    numpy.ndarray
        A new ``float32`` array of shape ``(N, C, H, W)``.

    Raises
    ------
    DataError
        On an unsupported dtype, shape or value range.
    """
    arr = np.asarray(images)
    scale = _INTEGER_SCALE.get(arr.dtype.str.lstrip("<>|="))
    if scale is None and not (np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize <= 8):
        raise DataError(
            f"{where}: images must be uint8 (0..255), uint16 (0..65535) or float in [0, 1]; "
            f"got dtype {arr.dtype}"
        )
    arr = _to_nchw(arr, where, channels_first)
    out = arr.astype(np.float32)  # always a copy
    if scale is not None:
        out /= scale
    elif out.size:
        check_unit_range(out, where)
    return out


def check_unit_range(images: np.ndarray, where: str) -> None:
    """Raise :class:`DataError` unless every value of ``images`` (N, ...) is in ``[0, 1]``.

    The message counts the offending values and images and names the first image.
    """
    finite = np.isfinite(images)
    if not finite.all():
        per_image = (~finite).reshape(len(images), -1).sum(axis=1)
        raise DataError(
            f"{where}: float images must be finite; found {int(per_image.sum())} NaN/Inf "
            f"values in {int((per_image > 0).sum())} images (first: image "
            f"{int(np.flatnonzero(per_image)[0])})"
        )
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        outside = (images < 0.0) | (images > 1.0)
        raise DataError(
            f"{where}: float images must be in [0, 1]; got values in [{low:g}, {high:g}] "
            f"({int(outside.sum())} values outside; store uint8 0..255 or rescale to [0, 1])"
        )


def _to_nchw(arr: np.ndarray, where: str, channels_first: bool | None) -> np.ndarray:
    """Return a view of ``arr`` in NCHW layout, with non-empty images."""
    out = _layout(arr, where, channels_first)
    if out.shape[2] == 0 or out.shape[3] == 0:
        raise DataError(f"{where}: images must be at least 1×1 pixels; got shape {arr.shape}")
    return out


def _layout(arr: np.ndarray, where: str, channels_first: bool | None) -> np.ndarray:
    if arr.ndim == 3:
        return arr[:, None, :, :]
    if arr.ndim != 4:
        raise DataError(
            f"{where}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W); "
            f"got shape {arr.shape}"
        )
    first, last = arr.shape[1] in _CHANNELS, arr.shape[3] in _CHANNELS
    if channels_first is not None:
        first, last = first and channels_first, last and not channels_first
    elif first and last:
        if arr.shape[2] == arr.shape[3]:
            last = False
        elif arr.shape[1] == arr.shape[2]:
            first = False
        else:
            raise DataError(
                f"{where}: image layout is ambiguous for shape {arr.shape}; store images as "
                "(N, H, W, C) with square H, W"
            )
    if first:
        return arr
    if last:
        return arr.transpose(0, 3, 1, 2)
    raise DataError(
        f"{where}: images must have 1 or 3 channels, first (N, C, H, W) or last "
        f"(N, H, W, C); got shape {arr.shape}"
    )


def labels_to_int64(labels: np.ndarray, where: str) -> np.ndarray:
    """Return ``labels`` as a flat ``int64`` array of non-negative class indices.

    Parameters
    ----------
    labels
        Integer labels of shape ``(N,)`` or ``(N, 1)``; floats are accepted when every
        value is a whole number.
    where
        Origin of the array, used in error messages.

    Raises
    ------
    DataError
        On a wrong shape, non-integral or negative values.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{where}: labels must have shape (N,) or (N, 1); got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = np.flatnonzero(~(np.isfinite(arr) & (arr == np.round(arr))))
        if bad.size:
            raise DataError(
                f"{where}: labels must be whole numbers; got {bad.size} non-integral "
                f"values, first {float(arr[bad[0]])!r} at index {int(bad[0])}"
            )
        if arr.size and arr.max() > np.iinfo(np.int64).max:
            raise DataError(f"{where}: labels must be class indices; got {float(arr.max()):g}")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers; got dtype {arr.dtype}")
    elif arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise DataError(f"{where}: labels must be class indices; got {int(arr.max())}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise DataError(
            f"{where}: labels must be >= 0; got {int(out.min())} at index {int(out.argmin())}"
        )
    return out


def make_split(
    images: np.ndarray,
    labels: np.ndarray,
    where: str,
    x_name: str,
    y_name: str,
    channels_first: bool | None = None,
) -> Split:
    """Convert and pair images and labels, checking that their lengths agree.

    Parameters
    ----------
    images, labels
        Raw arrays, as accepted by :func:`images_to_nchw_float` and :func:`labels_to_int64`.
    where
        Origin of both arrays, e.g. ``"data.path (/data/x.npz)"``.
    x_name, y_name
        Names of the two arrays within ``where``, e.g. ``"key 'train_images'"``.
    channels_first
        Known layout of 4-D images, or ``None`` to infer it.
    """
    y = labels_to_int64(labels, f"{where}: {y_name}")
    n_images = int(np.shape(images)[0]) if np.ndim(images) else 0
    if n_images != len(y):
        raise DataError(f"{where}: {y_name} has {len(y)} entries but {x_name} has {n_images}")
    return Split(x=images_to_nchw_float(images, f"{where}: {x_name}", channels_first), y=y)
