"""Loader for a folder of image files in torchvision's ``ImageFolder`` layouts.

::

    <data.path>/<class>/*.png|jpg|dcm|...     plain layout (torchvision's ImageFolder)

    <data.path>/train/<class>/...             split layout
    <data.path>/val/<class>/...               (optional)
    <data.path>/test/<class>/...              (optional)

A ``train/`` folder marks the split layout. Splits a layout lacks (both in the plain
layout) are carved out of the training images by :func:`fedsim.data.load_dataset`:
seeded and stratified by class (``data.test_size``, ``data.val_size``).

Data labelled by site (``data.partition: natural``): the training images have one more
level, the site, above the class folders — ``<data.path>/<site>/<class>/...`` or
``<data.path>/train/<site>/<class>/...``; the server's ``val/`` and ``test/`` keep
``<class>/``. Site indices follow the sorted site-folder names.

Class indices follow the sorted class-folder names of the training images (over all
sites); ``val/`` and ``test/`` may hold a subset of those classes but no other. Every
class folder must hold at least one image (files are found recursively by extension:
torchvision's image extensions plus DICOM ``.dcm``/``.dicom`` and NIfTI
``.nii``/``.nii.gz``, see :mod:`fedsim.data.medical`).

Shape: with ``data.image_size`` every image is fitted to that size (``data.resize``,
:mod:`fedsim.data.fit`); without it all images must have the same size (a differing
image is an error naming that file). ``data.channels`` fixes grey (1) or RGB (3);
without it images stay one grey channel when every image has a grey mode (8-bit,
16-bit, 32-bit integer or float, see :mod:`fedsim.data.imagefile`), else all are read
as RGB. Headers are all checked (sizes, pixel and memory limits) before any image is
decoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedsim.data.fit import ImageSpec, fit_image
from fedsim.data.imagefile import GREY_MODES, Channels, ImageHeader, read_header, read_pixels
from fedsim.data.limits import check_bytes
from fedsim.data.medical import MEDICAL_EXTENSIONS
from fedsim.data.types import SourceArgs, SourceSplits, Split
from fedsim.errors import DataError

__all__ = ["IMG_EXTENSIONS", "load_imagefolder"]

IMG_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    *MEDICAL_EXTENSIONS,
)
"""File extensions read as images (torchvision's list, DICOM, NIfTI), case-insensitive."""

_SPLITS = ("train", "val", "test")


class _Sample(NamedTuple):
    path: str
    label: int
    site: int


def load_imagefolder(args: SourceArgs) -> SourceSplits:
    """Load the image folder at ``data.path`` (layouts in the module docstring).

    Raises
    ------
    DataError
        If ``data.path`` is unset or not a folder, a split has no class (or site) folder
        or an unknown or empty one, an image cannot be read or is too large, or images
        differ in size without ``data.image_size``. Messages name the folder or file.
    """
    if args.path is None:
        raise DataError(
            "data.path is required for dataset 'imagefolder': a folder with one subfolder "
            "of images per class (<class>/ or train/<class>/)"
        )
    folder = Path(args.path).expanduser()
    where = f"data.path ({folder})"
    if not folder.is_dir():
        raise DataError(f"{where}: not a folder")
    roots = _split_roots(folder, where)
    site_names: tuple[str, ...] = ()
    if args.sites:
        site_names = _subfolders(roots["train"], folder, where, "site")
        by_site = [roots["train"] / s for s in site_names]
    else:
        by_site = [roots["train"]]
    classes = tuple(sorted({c for d in by_site for c in _subfolders(d, folder, where, "class")}))
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples = {
        "train": [
            s
            for site, site_dir in enumerate(by_site)
            for s in _samples(site_dir, folder, class_to_idx, where, site)
        ]
    }
    for split_name in _SPLITS[1:]:
        if split_name in roots:
            split_dir = roots[split_name]
            names = _subfolders(split_dir, folder, where, "class")
            unknown = sorted(set(names) - set(class_to_idx))
            if unknown:
                raise DataError(
                    f"{where}: {split_name}/ has class folders not in train/: {', '.join(unknown)}"
                )
            samples[split_name] = _samples(split_dir, folder, class_to_idx, where, 0)

    headers = {name: [read_header(s.path, where) for s in items] for name, items in samples.items()}
    height, width = args.image.size or _common_size(samples, headers, where)
    channels = _channels(args.image, headers)
    total = sum(len(items) for items in samples.values())
    depth = 1 if channels == "grey" else 3
    check_bytes(total * depth * height * width * 4, where, f"{total} images")
    shape = (depth, height, width)
    fit = None if args.image.size is None else ImageSpec(args.image.size, depth, args.image.resize)
    splits = {name: _decode(items, shape, fit, where) for name, items in samples.items()}
    train = splits["train"]
    if args.sites:
        train = Split(x=train.x, y=train.y, sites=np.array([s.site for s in samples["train"]]))
    return SourceSplits(
        train=train,
        val=splits.get("val"),
        test=splits.get("test"),
        class_names=classes,
        site_names=site_names,
    )


def _split_roots(folder: Path, where: str) -> dict[str, Path]:
    """The folder of each split the layout has: ``train`` always."""
    if (folder / "train").is_dir():
        return {s: folder / s for s in _SPLITS if (folder / s).is_dir()}
    stray = [s for s in _SPLITS[1:] if (folder / s).is_dir()]
    if stray:
        raise DataError(
            f"{where}: has a {stray[0]}/ folder but no train/ folder; use train/<class>/ "
            f"(with optional val/, test/) or the plain <class>/ layout without {stray[0]}/"
        )
    return {"train": folder}


def _subfolders(parent: Path, folder: Path, where: str, level: str) -> tuple[str, ...]:
    """Sorted names of the (class or site) folders in ``parent``; at least one."""
    shown = "" if parent == folder else f" {parent.relative_to(folder)}/"
    try:
        names = sorted(e.name for e in os.scandir(parent) if e.is_dir())
    except OSError as exc:
        raise DataError(f"{where}: cannot list{shown or ' it'}: {exc}") from exc
    if not names:
        layout = "<site>/<class>/" if level == "site" else "<class>/"
        raise DataError(
            f"{where}:{shown} has no {level} folders; put the images in {layout} subfolders"
            + (f" (or train/{layout})" if not shown else "")
        )
    return tuple(names)


def _samples(
    parent: Path, folder: Path, class_to_idx: dict[str, int], where: str, site: int
) -> list[_Sample]:
    """The samples of ``parent``'s class folders, each of which must hold images."""
    out: list[_Sample] = []
    empty: list[str] = []
    for name in _subfolders(parent, folder, where, "class"):
        files = _image_files(parent / name, where)
        if not files:
            empty.append(f"{(parent / name).relative_to(folder)}/")
        out.extend(_Sample(f, class_to_idx[name], site) for f in files)
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


def _channels(spec: ImageSpec, headers: dict[str, list[ImageHeader]]) -> Channels:
    """Grey or RGB: as declared, else grey when every image is grey."""
    if spec.channels is not None:
        return "grey" if spec.channels == 1 else "rgb"
    grey = all(h.mode in GREY_MODES for hs in headers.values() for h in hs)
    return "grey" if grey else "rgb"


def _common_size(
    samples: dict[str, list[_Sample]], headers: dict[str, list[ImageHeader]], where: str
) -> tuple[int, int]:
    """The ``(height, width)`` shared by all images, or an error naming one that differs."""
    first_path = samples["train"][0].path
    first = headers["train"][0]
    for split, items in samples.items():
        for sample, header in zip(items, headers[split], strict=True):
            if (header.width, header.height) != (first.width, first.height):
                raise DataError(
                    f"{where}: all images must have the same size; {sample.path} is "
                    f"{header.width}×{header.height} but {first_path} is "
                    f"{first.width}×{first.height} (set data.image_size to resize them)"
                )
    return first.height, first.width


def _decode(
    items: list[_Sample], shape: tuple[int, int, int], fit: ImageSpec | None, where: str
) -> Split:
    """Decode a split's images into one ``float32`` NCHW array of ``shape`` images,
    fitting each to ``fit`` (the declared size) when given."""
    images = np.empty((len(items), *shape), np.float32)
    channels: Channels = "grey" if shape[0] == 1 else "rgb"
    for i, sample in enumerate(items):
        pixels = read_pixels(sample.path, channels, where)
        if pixels.shape[0] != shape[0]:
            raise DataError(
                f"{where}: image {sample.path} decodes to {pixels.shape[0]} channels; "
                f"expected {shape[0]}"
            )
        if pixels.shape[1:] != shape[1:]:
            if fit is None:
                raise DataError(
                    f"{where}: image {sample.path} decodes to shape {pixels.shape} (C, H, W) "
                    f"but its header declares {shape}"
                )
            pixels = fit_image(pixels, fit)
        images[i] = pixels
    labels = np.array([s.label for s in items], dtype=np.int64)
    return Split(x=images, y=labels)
