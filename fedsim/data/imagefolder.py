"""Loader for a folder of image files in torchvision's ``ImageFolder`` layout.

::

    <data.path>/train/<class>/*.png|jpg|...   (required)
    <data.path>/val/<class>/...               (optional)
    <data.path>/test/<class>/...              (optional)

Class indices follow the sorted class-folder names of ``train/``; ``val/`` and ``test/``
may hold a subset of those classes but no other. Every class folder must hold at least
one image (files are found recursively by extension, as torchvision does). All images
must have the same size (no resizing is done: a differing image is an error naming that
file). Images stay one grey channel when every image has a grey mode (8-bit, 16-bit,
32-bit integer or float, see :mod:`fedsim.data.imagefile` for their scaling to
``[0, 1]``); otherwise all are read as RGB. Headers are all checked (sizes, pixel and
memory limits) before any image is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedsim.data.imagefile import GREY_MODES, Channels, ImageHeader, read_header, read_pixels
from fedsim.data.limits import check_bytes
from fedsim.data.types import SourceArgs, SourceSplits, Split
from fedsim.errors import DataError

__all__ = ["IMG_EXTENSIONS", "load_imagefolder"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions read as images (torchvision's list), case-insensitive."""

_SPLITS = ("train", "val", "test")

Samples = list[tuple[str, int]]


def load_imagefolder(args: SourceArgs) -> SourceSplits:
    """Load the image folder at ``data.path`` (layout in the module docstring).

    Raises
    ------
    DataError
        If ``data.path`` is unset or lacks ``train/``, a split has no class folder or an
        unknown or empty one, an image cannot be read or is too large, or images differ
        in size. Messages name the folder or file.
    """
    if args.path is None:
        raise DataError(
            "data.path is required for dataset 'imagefolder': a folder with train/<class>/ "
            "image subfolders"
        )
    folder = Path(args.path).expanduser()
    where = f"data.path ({folder})"
    if not (folder / "train").is_dir():
        raise DataError(f"{where}: needs a 'train' subfolder with one folder per class")
    classes = _class_folders(folder / "train", where)
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = {"train": _samples(folder / "train", classes, class_to_idx, where)}
    for split_name in _SPLITS[1:]:
        split_dir = folder / split_name
        if split_dir.is_dir():
            names = _class_folders(split_dir, where)
            unknown = sorted(set(names) - set(class_to_idx))
            if unknown:
                raise DataError(
                    f"{where}: {split_name}/ has class folders not in train/: {', '.join(unknown)}"
                )
            samples[split_name] = _samples(split_dir, names, class_to_idx, where)

    headers = {split: [read_header(p, where) for p, _ in items] for split, items in samples.items()}
    size = width, height = _common_size(samples, headers, where)
    grey = all(h.mode in GREY_MODES for hs in headers.values() for h in hs)
    channels: Channels = "grey" if grey else "rgb"
    total = sum(len(items) for items in samples.values())
    check_bytes(total * (1 if grey else 3) * height * width * 4, where, f"{total} images")
    splits = {name: _decode(items, channels, size, where) for name, items in samples.items()}
    return SourceSplits(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"), class_names=classes
    )


def _class_folders(split_dir: Path, where: str) -> tuple[str, ...]:
    """Sorted names of the class folders of ``split_dir``; at least one."""
    try:
        names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    except OSError as exc:
        raise DataError(f"{where}: cannot list {split_dir.name}/: {exc}") from exc
    if not names:
        raise DataError(
            f"{where}: {split_dir.name}/ has no class folders; put each class's images in "
            f"{split_dir.name}/<class>/"
        )
    return tuple(names)


def _samples(
    split_dir: Path, names: tuple[str, ...], class_to_idx: dict[str, int], where: str
) -> Samples:
    """``(file, label)`` pairs of a split's class folders, each of which must hold images."""
    out: Samples = []
    empty: list[str] = []
    for name in names:
        files = _image_files(split_dir / name, where)
        if not files:
            empty.append(f"{split_dir.name}/{name}/")
        out.extend((f, class_to_idx[name]) for f in files)
    if empty:
        raise DataError(
            f"{where}: class folders without image files ({', '.join(IMG_EXTENSIONS)}): "
            f"{', '.join(empty)}"
        )
    return out


def _image_files(class_dir: Path, where: str) -> list[str]:
    """Image files under ``class_dir``, recursively, in sorted order."""
    found: list[str] = []
    try:
        for root, _, files in sorted(os.walk(class_dir, onerror=_raise)):
            found.extend(
                os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)
            )
    except OSError as exc:
        raise DataError(f"{where}: cannot list {class_dir}: {exc}") from exc
    return found


def _raise(exc: OSError) -> None:
    raise exc


def _common_size(
    samples: dict[str, Samples], headers: dict[str, list[ImageHeader]], where: str
) -> tuple[int, int]:
    """The ``(width, height)`` shared by all images, or an error naming one that differs."""
    first_path, _ = samples["train"][0]
    first = headers["train"][0]
    for split, items in samples.items():
        for (path, _), header in zip(items, headers[split], strict=True):
            if (header.width, header.height) != (first.width, first.height):
                raise DataError(
                    f"{where}: all images must have the same size; {path} is "
                    f"{header.width}×{header.height} but {first_path} is "
                    f"{first.width}×{first.height}"
                )
    return first.width, first.height


def _decode(items: Samples, channels: Channels, size: tuple[int, int], where: str) -> Split:
    """Decode a split's images into one ``float32`` NCHW array."""
    width, height = size
    images = np.empty((len(items), 1 if channels == "grey" else 3, height, width), np.float32)
    for i, (path, _) in enumerate(items):
        pixels = read_pixels(path, channels, where)
        if pixels.shape != images.shape[1:]:
            raise DataError(
                f"{where}: image {path} decodes to shape {pixels.shape} (C, H, W) but its "
                f"header declares {images.shape[1:]}"
            )
        images[i] = pixels
    labels = np.array([label for _, label in items], dtype=np.int64)
    return Split(x=images, y=labels)
