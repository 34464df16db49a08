"""Pure conversions of raw image/label arrays to the :class:`~fedsim.data.types.Split` format.

Each function takes a ``where`` string naming the origin of the array for error messages,
e.g. ``"data.path (/data/x.npz): key 'train_images'"``.
"""

from __future__ import annotations

import numpy as np

from fedsim.data.types import Split
from fedsim.errors import DataError

__all__ = ["images_to_nchw_float", "labels_to_int64", "make_split"]

_CHANNELS = (1, 3)


def images_to_nchw_float(
    images: np.ndarray, where: str, channels_first: bool | None = None
) -> np.ndarray:
    """Return ``images`` as ``float32`` NCHW in ``[0, 1]``.

    Parameters
    ----------
    images
        ``uint8`` (0..255) or floating-point (already in ``[0, 1]``) images of shape
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
    if arr.dtype == np.uint8:
        scaled = False
    elif np.issubdtype(arr.dtype, np.floating):
        scaled = True
    else:
        raise DataError(
            f"{where}: images must be uint8 (0..255) or float in [0, 1]; got dtype {arr.dtype}"
        )
    arr = _to_nchw(arr, where, channels_first)
    out = arr.astype(np.float32)  # always a copy
    if scaled:
        if out.size and not np.isfinite(out).all():
            raise DataError(f"{where}: float images must be finite; found NaN or Inf")
        if out.size and (out.min() < 0.0 or out.max() > 1.0):
            raise DataError(
                f"{where}: float images must be in [0, 1]; got values in "
                f"[{float(out.min()):g}, {float(out.max()):g}] (store uint8 0..255 or rescale)"
            )
    else:
        out /= 255.0
    return out


def _to_nchw(arr: np.ndarray, where: str, channels_first: bool | None) -> np.ndarray:
    """Return a view of ``arr`` in NCHW layout."""
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
        if arr.size and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DataError(f"{where}: labels must be whole numbers; got non-integral values")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers; got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise DataError(f"{where}: labels must be >= 0; got {int(out.min())}")
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
