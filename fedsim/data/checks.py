"""Checks of a source's classes that every dataset must pass before training starts.

Pure functions over :class:`~fedsim.data.types.SourceSplits`: a classifier needs at least
two classes in its training data, and a validation or test split cannot hold a class the
training data never shows (its accuracy on that class would be zero by construction).
"""

from __future__ import annotations

import numpy as np

from fedsim.data.types import SourceSplits
from fedsim.errors import DataError

__all__ = ["check_classes"]


def check_classes(source: SourceSplits, where: str) -> None:
    """Raise :class:`DataError` if the source's classes cannot train a classifier.

    Parameters
    ----------
    source
        The splits a source loaded.
    where
        The data's origin for messages, e.g. ``"data.path (/data/x.npz)"``.

    Raises
    ------
    DataError
        If the training split has fewer than 2 distinct classes, or the validation or
        test split has a label the training split does not; the message names the class.
    """
    names = source.class_names
    seen = np.unique(source.train.y)
    if len(seen) < 2:
        only = ", ".join(_name(names, int(c)) for c in seen) or "none"
        raise DataError(
            f"{where}: the training data has {len(seen)} class{'es' if len(seen) != 1 else ''} "
            f"({only}); a classifier needs at least 2 classes"
        )
    for split_name, split in (("validation", source.val), ("test", source.test)):
        if split is None:
            continue
        unseen = np.setdiff1d(np.unique(split.y), seen)
        if unseen.size:
            listed = ", ".join(_name(names, int(c)) for c in unseen)
            raise DataError(
                f"{where}: the {split_name} split has classes with no training samples: "
                f"{listed}; every class of the {split_name} split must appear in training"
            )


def _name(names: tuple[str, ...], label: int) -> str:
    """``"'cat' (label 0)"``, or the bare label when it has no name."""
    return f"{names[label]!r} (label {label})" if 0 <= label < len(names) else f"label {label}"
