"""Loader for a folder of image files in torchvision's ``ImageFolder`` layout.

::

    <data.path>/train/<class>/*.png|jpg|...   (required)
    <data.path>/val/<class>/...               (optional)
    <data.path>/test/<class>/...              (optional)

Class indices follow the sorted class-folder names of ``train/``; ``val/`` and ``test/``
may hold a subset of those classes but no other. All images must have the same size
(no resizing is done: a differing image is an error naming that file). Images stay one
grey channel when every image is mode ``"L"``; otherwise all are converted to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedsim.data.convert import make_split
from fedsim.data.types import SourceArgs, SourceSplits, Split
from fedsim.errors import DataError

__all__ = ["load_imagefolder"]

_SPLITS = ("train", "val", "test")


def load_imagefolder(args: SourceArgs) -> SourceSplits:
    """Load the image folder at ``data.path`` (layout in the module docstring).

    Raises
    ------
    DataError
        If ``data.path`` is unset or lacks ``train/``, a split has an unknown or empty class
        folder, an image cannot be read, or images differ in size.
    """
    from torchvision.datasets import ImageFolder  # imported on use: torchvision is slow to load

    if args.path is None:
        raise DataError(
            "data.path is required for dataset 'imagefolder': a folder with train/<class>/ "
            "image subfolders"
        )
    folder = Path(args.path).expanduser()
    where = f"data.path ({folder})"
    if not (folder / "train").is_dir():
        raise DataError(f"{where}: needs a 'train' subfolder with one folder per class")
    try:
        train = ImageFolder(str(folder / "train"))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{where}: train/: {exc}") from exc
    classes: tuple[str, ...] = tuple(train.classes)
    samples: dict[str, list[tuple[str, int]]] = {"train": list(train.samples)}
    for split_name in _SPLITS[1:]:
        split_dir = folder / split_name
        if split_dir.is_dir():
            samples[split_name] = _split_samples(split_dir, train.class_to_idx, where)

    mode = "L" if _scan_modes(samples, where) == {"L"} else "RGB"
    splits: dict[str, Split] = {}
    for split_name, items in samples.items():
        images = np.stack([_read(path, mode, where) for path, _ in items])
        if images.ndim == 3:
            images = images[:, None]
        labels = np.array([label for _, label in items], dtype=np.int64)
        splits[split_name] = make_split(
            images.transpose(0, 3, 1, 2) if mode == "RGB" else images,
            labels,
            where,
            f"{split_name}/ images",
            f"{split_name}/ labels",
            channels_first=True,
        )
    return SourceSplits(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"), class_names=classes
    )


def _split_samples(
    split_dir: Path, class_to_idx: dict[str, int], where: str
) -> list[tuple[str, int]]:
    """List ``(file, label)`` pairs of a ``val/`` or ``test/`` folder with train's labels."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        names, _ = find_classes(split_dir)
    except FileNotFoundError as exc:
        raise DataError(f"{where}: {split_dir.name}/: {exc}") from exc
    unknown = sorted(set(names) - set(class_to_idx))
    if unknown:
        raise DataError(
            f"{where}: {split_dir.name}/ has class folders not in train/: {', '.join(unknown)}"
        )
    try:
        return make_dataset(
            split_dir, {n: class_to_idx[n] for n in names}, extensions=IMG_EXTENSIONS
        )
    except FileNotFoundError as exc:
        raise DataError(f"{where}: {split_dir.name}/: {exc}") from exc


def _scan_modes(samples: dict[str, list[tuple[str, int]]], where: str) -> set[str]:
    """Return the set of image modes, checking that all sizes agree; reads headers only."""
    modes: set[str] = set()
    first: tuple[str, tuple[int, int]] | None = None
    for items in samples.values():
        for path, _ in items:
            try:
                with Image.open(path) as img:
                    mode, size = img.mode, img.size
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"{where}: cannot read image {path}: {exc}") from exc
            modes.add(mode)
            if first is None:
                first = (path, size)
            elif size != first[1]:
                raise DataError(
                    f"{where}: all images must have the same size; {path} is "
                    f"{size[0]}×{size[1]} but {first[0]} is {first[1][0]}×{first[1][1]}"
                )
    return modes


def _read(path: str, mode: str, where: str) -> np.ndarray:
    """Read one image as a ``uint8`` HWC (RGB) or HW (grey) array."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{where}: cannot read image {path}: {exc}") from exc
