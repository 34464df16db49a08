"""Fuzz fedsim's data loaders with broken and hostile files; print how each was handled.

Every file goes through the real loading path (:func:`fedsim.data.load_dataset`). A
:class:`~fedsim.errors.DataError` counts as handled cleanly; a file that loads counts as
handled only when it is a valid file of the catalogue; any other exception is a traceback.

Usage::

    python benchmarks/fuzz_data.py [--n 200] [--seed 0]

Prints ``tried N, handled cleanly M, tracebacks K``, one line per traceback and one per
catalogued broken file that loaded without an error (a silently wrong dataset).
"""

from __future__ import annotations

import argparse
import io
import pickle
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from fedsim.data import load_dataset
from fedsim.errors import DataError

Case = tuple[str, Callable[[Path], dict[str, str]]]  # name, writer returning load kwargs


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _good_npz() -> bytes:
    x = np.arange(20 * 16, dtype=np.uint8).reshape(20, 4, 4)
    return _npz_bytes(train_images=x, train_labels=np.arange(20) % 2)


def _png_bytes(mode: str = "L", size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, size[::-1], dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def npz_case(content: bytes) -> Callable[[Path], dict[str, str]]:
    def write(d: Path) -> dict[str, str]:
        (d / "d.npz").write_bytes(content)
        return {"name": "npz", "path": str(d / "d.npz")}

    return write


def folder_case(bad: bytes, suffix: str = ".png") -> Callable[[Path], dict[str, str]]:
    """Two good classes of 16×16 PNGs plus one hostile file in the first class."""

    def write(d: Path) -> dict[str, str]:
        for cls in ("a", "b"):
            (d / "train" / cls).mkdir(parents=True)
            for i in range(3):
                (d / "train" / cls / f"{i}.png").write_bytes(_png_bytes())
        (d / "train" / "a" / f"bad{suffix}").write_bytes(bad)
        return {"name": "imagefolder", "path": str(d)}

    return write


def idx_case(images: bytes) -> Callable[[Path], dict[str, str]]:
    """A Fashion-MNIST root whose training-image file is ``images``."""

    def write(d: Path) -> dict[str, str]:
        labels = _idx_bytes(np.arange(10) % 10)
        (d / "train-images-idx3-ubyte").write_bytes(images)
        (d / "train-labels-idx1-ubyte").write_bytes(labels)
        (d / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((10, 28, 28))))
        (d / "t10k-labels-idx1-ubyte").write_bytes(labels)
        return {"name": "fashion-mnist", "root": str(d)}

    return write


def cifar_case(batch: bytes) -> Callable[[Path], dict[str, str]]:
    def write(d: Path) -> dict[str, str]:
        folder = d / "cifar-10-batches-py"
        folder.mkdir()
        good = pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10))})
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(good)
        (folder / "data_batch_1").write_bytes(batch)
        names = [str(i) for i in range(10)]
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
        return {"name": "cifar10", "root": str(d)}

    return write


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite a few random bytes, or truncate at a random point."""
    buf = bytearray(data)
    if rng.random() < 0.3:
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    for _ in range(int(rng.integers(1, 8))):
        buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
    return bytes(buf)


def _zip_with(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    return buf.getvalue()


def catalogue() -> list[Case]:
    """Hand-written broken files, one per kind of problem."""
    x = np.arange(20 * 16, dtype=np.uint8).reshape(20, 4, 4)
    y = np.arange(20) % 2
    nan = x.astype(np.float32) / 255
    nan[3, 1, 1] = np.nan
    good = _good_npz()
    npz = {
        "npz 0-byte": b"",
        "npz truncated": good[: len(good) // 2],
        "npz not a zip": b"hello, world\n" * 10,
        "npz is .npy": _npy(x),
        "npz member not .npy": _zip_with(**{"train_images.npy": b"xx", "train_labels.npy": b"y"}),
        "npz lying header": _zip_with(
            **{"train_images.npy": _npy(x)[:-50], "train_labels.npy": _npy(y)}
        ),
        "npz missing labels": _npz_bytes(train_images=x),
        "npz object array": _npz_bytes(
            train_images=np.array([x, None], dtype=object)[:1], train_labels=y
        ),
        "npz string images": _npz_bytes(train_images=x.astype(str), train_labels=y),
        "npz complex images": _npz_bytes(train_images=x.astype(complex), train_labels=y),
        "npz labels 2-D": _npz_bytes(train_images=x, train_labels=np.zeros((20, 3))),
        "npz images 5-D": _npz_bytes(train_images=x[:, None, None], train_labels=y),
        "npz length mismatch": _npz_bytes(train_images=x, train_labels=y[:7]),
        "npz negative label": _npz_bytes(train_images=x, train_labels=y - 1),
        "npz label >= classes": _npz_bytes(
            train_images=x, train_labels=y + 1, class_names=np.array(["a", "b"])
        ),
        "npz huge label": _npz_bytes(train_images=x, train_labels=y * 10**12),
        "npz float labels": _npz_bytes(train_images=x, train_labels=y + 0.5),
        "npz NaN pixels": _npz_bytes(train_images=nan, train_labels=y),
        "npz pixels > 1": _npz_bytes(train_images=x.astype(np.float32), train_labels=y),
        "npz single class": _npz_bytes(train_images=x, train_labels=y * 0),
        "npz unseen test class": _npz_bytes(
            train_images=x, train_labels=y, test_images=x[:3], test_labels=np.array([0, 1, 2])
        ),
        "npz 0-pixel images": _npz_bytes(
            train_images=np.zeros((20, 0, 4), np.uint8), train_labels=y
        ),
    }
    cases: list[Case] = [(name, npz_case(content)) for name, content in npz.items()]
    png = _png_bytes()
    cases += [
        ("png 0-byte", folder_case(b"")),
        ("png truncated", folder_case(_png_bytes()[:120])),
        ("png text file", folder_case(b"not an image", ".jpg")),
        ("png bomb 8000x8000", folder_case(_png_bytes("1", (8000, 8000)))),
        ("png other size", folder_case(_png_bytes(size=(7, 7)))),
        ("png corrupt chunk", folder_case(png[:40] + bytes(20) + png[60:])),
    ]
    cases.append(("idx truncated", idx_case(_idx_bytes(np.zeros((10, 28, 28)))[:100])))
    cases.append(("idx wrong magic", idx_case(b"\x00\x00\x09\x03" + bytes(12))))
    cases.append(("cifar not a pickle", cifar_case(b"garbage")))
    cases.append(("cifar pickled list", cifar_case(pickle.dumps([1, 2, 3]))))
    return cases


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def random_cases(n: int, rng: np.random.Generator) -> list[Case]:
    """``n`` random-byte files and ``n`` mutated valid files per format."""
    cases: list[Case] = []
    seeds = {
        "npz": _good_npz(),
        "png": _png_bytes(size=(16, 16)),
        "png16": _png_bytes("I;16", (16, 16)),
        "idx": _idx_bytes(np.zeros((10, 28, 28))),
        "pickle": pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 10}),
    }
    make: dict[str, Callable[[bytes], Callable[[Path], dict[str, str]]]] = {
        "npz": npz_case,
        "png": folder_case,
        "png16": folder_case,
        "idx": idx_case,
        "pickle": cifar_case,
    }
    for fmt, valid in seeds.items():
        for i in range(n):
            size = int(rng.integers(0, 2048))
            cases.append((f"{fmt} random #{i}", make[fmt](rng.bytes(size))))
            cases.append((f"{fmt} mutated #{i}", make[fmt](_mutate(valid, rng))))
    return cases


def run_case(write: Callable[[Path], dict[str, str]]) -> str | None:
    """Load one case in a fresh folder; return ``"loaded"``, ``"DataError"`` or a traceback."""
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = write(Path(tmp))
        load_dataset.cache_clear()
        try:
            load_dataset(download=False, **kwargs)  # type: ignore[arg-type]
        except DataError:
            return "DataError"
        except Exception as exc:  # the figure this script measures
            return f"{type(exc).__name__}: {str(exc)[:160]}"
        finally:
            load_dataset.cache_clear()
    return "loaded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="random files per format")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    broken = catalogue()
    cases = broken + random_cases(args.n, rng)
    outcomes = [(name, run_case(write)) for name, write in cases]
    failures = [(name, why) for name, why in outcomes if why not in ("DataError", "loaded")]
    accepted = [name for name, why in outcomes[: len(broken)] if why == "loaded"]
    for name, why in failures:
        print(f"traceback: {name}: {why}")
    for name in accepted:
        print(f"broken file accepted: {name}")
    clean = len(cases) - len(failures)
    print(f"tried {len(cases)}, handled cleanly {clean}, tracebacks {len(failures)}")
    print(f"catalogue of broken files: {len(broken)}, accepted silently {len(accepted)}")


if __name__ == "__main__":
    main()
