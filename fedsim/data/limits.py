"""Size limits on user data files, checked before anything large is decoded or allocated.

A data file declares its sizes (an ``.npz`` member's array header, an image's header, an
IDX file's dimensions) before its content; fedsim checks those declarations against these
limits first, so a hostile or mistaken file cannot exhaust memory and cost a run.
"""

from __future__ import annotations

from fedsim.errors import DataError

__all__ = ["MAX_CLASSES", "MAX_DATASET_BYTES", "MAX_IMAGE_PIXELS", "check_bytes"]

MAX_IMAGE_PIXELS = 2**25
"""Largest image accepted, in pixels (about 5800×5800); below PIL's own bomb warning."""

MAX_DATASET_BYTES = 16 * 2**30
"""Largest dataset accepted, in bytes of its in-memory ``float32`` images (16 GiB)."""

MAX_CLASSES = 100_000
"""Largest number of classes accepted when class names are inferred from labels."""


def check_bytes(nbytes: int, where: str, what: str) -> None:
    """Raise :class:`DataError` if ``nbytes`` exceeds :data:`MAX_DATASET_BYTES`.

    Parameters
    ----------
    nbytes
        Bytes the data would take in memory.
    where
        The file, for the message, e.g. ``"data.path (/data/x.npz)"``.
    what
        What is that large, e.g. ``"key 'train_images' (shape (10**9, 28, 28))"``.
    """
    if nbytes > MAX_DATASET_BYTES:
        raise DataError(
            f"{where}: {what} would need {nbytes / 2**30:.1f} GiB in memory; fedsim loads "
            f"at most {MAX_DATASET_BYTES / 2**30:.0f} GiB of images"
        )
