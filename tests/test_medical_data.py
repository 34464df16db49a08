"""Medical image folders: the plain layout, declared input shapes, DICOM and NIfTI.

Every file is written here, in its real format (PIL, pydicom, nibabel); nothing is
downloaded. Pixel values are checked against a direct computation of each rule
(DICOM PS3.3 windowing per pixel, NIfTI orientation by hand, resizing oracles).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from fedsim.config import from_dict
from fedsim.data import DatasetBundle, load_dataset
from fedsim.data.fit import ImageSpec
from fedsim.data.medical import window
from fedsim.errors import ConfigError, DataError, FedsimError


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


# --- writers of real files -------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    window_tags: tuple[object, object] | None = None,
    rescale: tuple[float, float] | None = None,
    voi_function: str | None = None,
    frames: int | None = None,
) -> Path:
    """A single-sample DICOM file (Secondary Capture) holding ``stored`` as its pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = stored.shape[:2]
    if stored.ndim == 3:  # RGB, 8 bit
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = stored.astype(np.uint8).tobytes()
    else:
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = stored.astype("<u2").tobytes()
    ds.PhotometricInterpretation = photometric
    if window_tags is not None:
        ds.WindowCenter, ds.WindowWidth = window_tags
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if frames is not None:
        ds.NumberOfFrames = frames
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def linear_window_by_hand(x: float, c: float, w: float) -> float:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR), output range [0, 1], one value at a time."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 1.0
    return (x - (c - 0.5)) / (w - 1) + 0.5


STORED = np.arange(0, 4096, 4096 // 48, dtype=np.uint16)[:48].reshape(6, 8)  # 12-bit ramp


def dicom_folder(root: Path, **tags: object) -> Path:
    """Class 'a': one DICOM file holding STORED; class 'b': two others."""
    write_dicom(root / "a" / "0.dcm", STORED, **tags)  # type: ignore[arg-type]
    for i in range(2):
        write_dicom(root / "b" / f"{i}.dcm", STORED + 7 * (i + 1), **tags)  # type: ignore[arg-type]
    return root


def images_of(bundle: DatasetBundle, label: int) -> list[np.ndarray]:
    """Every image of class ``label``, whichever split it was carved into."""
    splits = (bundle.train, bundle.val, bundle.test)
    return [x for s in splits for x, y in zip(s.x, s.y, strict=True) if y == label]


def class_a_image(root: Path, **kw: object) -> np.ndarray:
    """The one image of class 'a' as fedsim reads it (carved into whichever split)."""
    b = load_dataset("imagefolder", path=str(root), val_size=1, test_size=1, **kw)  # type: ignore[arg-type]
    (found,) = images_of(b, 0)
    return found


# --- the plain layout and carving ------------------------------------------------------


def _plain_folder(root: Path, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        for i in range(n):
            write_png(root / cls / f"{i:03d}.png", rng.integers(0, 256, (5, 6), dtype=np.uint8))
    return root


def test_plain_layout_labels_and_reproducible_stratified_carving(tmp_path: Path) -> None:
    root = _plain_folder(tmp_path / "img", {"normal": 30, "pneumonia": 70})
    a = load_dataset("imagefolder", path=str(root), val_size=0.2, test_size=10, seed=4)
    assert a.class_names == ("normal", "pneumonia")
    assert (len(a.test), len(a.val), len(a.train)) == (10, 18, 72)
    assert np.bincount(a.test.y).tolist() == [3, 7]  # stratified: 30 % / 70 %
    assert np.bincount(a.val.y).tolist() == [5, 13]  # 18 of the remaining 27 / 63
    load_dataset.cache_clear()
    again = load_dataset("imagefolder", path=str(root), val_size=0.2, test_size=10, seed=4)
    other = load_dataset("imagefolder", path=str(root), val_size=0.2, test_size=10, seed=5)
    assert np.array_equal(again.test.x, a.test.x) and np.array_equal(again.val.x, a.val.x)
    assert not np.array_equal(other.test.x, a.test.x)
    # every image is in exactly one split, with its class folder's label
    pool = np.concatenate([a.train.x, a.val.x, a.test.x]).reshape(100, -1)
    assert len(np.unique(pool, axis=0)) == 100


def test_plain_layout_with_a_stray_split_folder_is_refused(tmp_path: Path) -> None:
    root = _plain_folder(tmp_path / "img", {"a": 2, "b": 2})
    _plain_folder(root / "test", {"a": 1})
    with pytest.raises(DataError, match=r"has a test/ folder but no train/ folder"):
        load_dataset("imagefolder", path=str(root))


def test_split_layout_still_reads_its_own_splits(tmp_path: Path) -> None:
    _plain_folder(tmp_path / "train", {"a": 4, "b": 4})
    _plain_folder(tmp_path / "test", {"b": 3})
    b = load_dataset("imagefolder", path=str(tmp_path), val_size=2, test_size=0.5)
    assert (len(b.train), len(b.val), len(b.test)) == (6, 2, 3)  # test_size ignored
    assert set(b.test.y.tolist()) == {1}


# --- declared input shape: PNG / JPEG / TIFF of other sizes and modes -----------------


def test_mixed_sizes_modes_and_formats_are_fitted(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "grey.png", np.full((10, 20), 200, np.uint8))
    write_png(tmp_path / "a" / "rgb.jpg", np.full((30, 30, 3), (255, 0, 0), np.uint8), "JPEG")
    write_png(tmp_path / "b" / "16bit.tif", np.full((8, 8), 65535, np.uint16), "TIFF")
    write_png(tmp_path / "b" / "rgba.png", np.full((12, 12, 4), (0, 0, 255, 255), np.uint8))
    with pytest.raises(DataError, match=r"all images must have the same size; .* \(set data"):
        load_dataset("imagefolder", path=str(tmp_path))
    b = load_dataset(
        "imagefolder", path=str(tmp_path), val_size=1, test_size=1, image=ImageSpec((16, 16), 1)
    )
    assert b.input_shape == (1, 16, 16)
    values = sorted(
        round(float(x.mean()), 2) for s in (b.train, b.val, b.test) for x in s.x
    )  # grey 200, red and blue by 601-2 luma, white 16-bit; constants survive resizing
    expected = sorted(round(v, 2) for v in (200 / 255, 0.299, 0.114, 1.0))
    assert values == pytest.approx(expected, abs=0.02)  # JPEG is lossy
    rgb = load_dataset("imagefolder", path=str(tmp_path), val_size=1, image=ImageSpec((4, 5), 3))
    assert rgb.input_shape == (3, 4, 5)


def test_resize_modes_against_hand_oracles(tmp_path: Path) -> None:
    band = np.zeros((10, 20), np.uint8)
    band[:, 5:15] = 255  # a white vertical band in the middle half
    write_png(tmp_path / "a" / "0.png", band)
    for i in range(2):
        write_png(tmp_path / "b" / f"{i}.png", np.full((10, 20), 255, np.uint8))

    def load(mode: str) -> dict[int, np.ndarray]:
        load_dataset.cache_clear()
        b = load_dataset(
            "imagefolder",
            path=str(tmp_path),
            val_size=1,
            test_size=1,
            image=ImageSpec((10, 10), 1, mode),  # type: ignore[arg-type]
        )
        return {label: images_of(b, label)[0][0] for label in (0, 1)}

    crop = load("center_crop")  # no rescale needed: the centre 10×10 is the band
    assert np.array_equal(crop[0], np.ones((10, 10), np.float32))
    pad = load("pad")  # 10×20 → 5×10 inside 10×10, zero rows above and below
    white = pad[1]
    assert np.allclose(white[2:7], 1.0) and np.allclose(white[:2], 0) and np.allclose(white[7:], 0)
    stretch = load("stretch")  # a constant stays constant
    assert np.allclose(stretch[1], 1.0)
    assert stretch[0][:, 0].max() < 0.5 and stretch[0][:, 5].min() > 0.5


def test_an_image_of_the_declared_size_is_unchanged(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (7, 9), dtype=np.uint8)
    write_png(tmp_path / "a" / "0.png", pixels)
    write_png(tmp_path / "b" / "0.png", np.zeros((3, 3), np.uint8))
    write_png(tmp_path / "b" / "1.png", np.zeros((9, 3), np.uint8))
    b = load_dataset(
        "imagefolder", path=str(tmp_path), val_size=1, test_size=1, image=ImageSpec((7, 9), 1)
    )
    (found,) = images_of(b, 0)
    assert np.array_equal(found[0], pixels.astype(np.float32) / 255)


def test_npz_images_are_fitted_too(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, train_images=np.full((20, 8, 8), 255, np.uint8), train_labels=np.arange(20) % 2)
    b = load_dataset("npz", path=str(path), image=ImageSpec((4, 6), 3))
    assert b.input_shape == (3, 4, 6) and np.allclose(b.test.x, 1.0)


# --- DICOM -----------------------------------------------------------------------------


def test_dicom_window_from_the_file_with_rescale(tmp_path: Path) -> None:
    """CT-like: stored 0..4095, HU = stored − 1024, window 40/400 (soft tissue)."""
    root = dicom_folder(tmp_path, window_tags=(40, 400), rescale=(1.0, -1024.0))
    got = class_a_image(root)
    hu = STORED.astype(float) - 1024.0
    expected = np.vectorize(lambda v: linear_window_by_hand(v, 40.0, 400.0))(hu)
    assert got.shape == (1, 6, 8)
    assert np.allclose(got[0], expected, atol=1e-6)
    assert 0 < (got > 0).sum() < got.size  # the window clips at both ends of the ramp
    # and pydicom's own VOI LUT agrees (its output spans the file's range: rescale it)
    ds = pydicom.dcmread(root / "a" / "0.dcm")
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=False)
    assert np.allclose(got[0], (ref - ref.min()) / (ref.max() - ref.min()), atol=1e-6)


def test_dicom_slope_and_multi_valued_window(tmp_path: Path) -> None:
    root = dicom_folder(tmp_path, window_tags=([1000, 50], [2001, 10]), rescale=(0.5, 10.0))
    got = class_a_image(root)
    values = STORED.astype(float) * 0.5 + 10.0
    expected = np.vectorize(lambda v: linear_window_by_hand(v, 1000.0, 2001.0))(values)
    assert np.allclose(got[0], expected, atol=1e-6)


def test_dicom_without_window_is_min_max_and_monochrome1_inverted(tmp_path: Path) -> None:
    plain = class_a_image(dicom_folder(tmp_path / "m2"))
    span = STORED.max() - STORED.min()
    assert np.allclose(plain[0], (STORED - STORED.min()) / span, atol=1e-6)
    load_dataset.cache_clear()
    inverted = class_a_image(dicom_folder(tmp_path / "m1", photometric="MONOCHROME1"))
    assert np.allclose(inverted[0], 1.0 - (STORED - STORED.min()) / span, atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_dicom_voi_functions(tmp_path: Path, function: str) -> None:
    c, w = 2000.0, 1500.0
    root = dicom_folder(tmp_path, window_tags=(c, w), voi_function=function)
    got = class_a_image(root)
    x = STORED.astype(float)
    if function == "LINEAR_EXACT":
        expected = np.clip((x - c) / w + 0.5, 0, 1)
    else:
        expected = 1 / (1 + np.exp(-4 * (x - c) / w))
    assert np.allclose(got[0], expected, atol=1e-6)
    assert np.allclose(window(x, c, w, function), expected, atol=1e-6)


def test_colour_dicom_and_png_share_a_declared_shape(tmp_path: Path) -> None:
    write_dicom(
        tmp_path / "a" / "rgb.dcm", np.full((6, 4, 3), (255, 0, 0), np.uint8), photometric="RGB"
    )
    write_png(tmp_path / "b" / "0.png", np.full((5, 5), 255, np.uint8))
    write_png(tmp_path / "b" / "1.png", np.full((5, 5), 255, np.uint8))
    b = load_dataset(
        "imagefolder", path=str(tmp_path), val_size=1, test_size=1, image=ImageSpec((8, 8), 3)
    )
    assert b.input_shape == (3, 8, 8)
    red = images_of(b, 0)[0]
    assert np.allclose(red[0], 1.0) and np.allclose(red[1:], 0.0)


def _bad_dicom(tmp_path: Path, fault: str) -> Path:
    path = tmp_path / "a" / "bad.dcm"
    if fault == "width 0":
        write_dicom(path, STORED, window_tags=(40, 0))
    elif fault == "palette":
        write_dicom(path, STORED, photometric="PALETTE COLOR")
    elif fault == "multi-frame":
        write_dicom(path, STORED, frames=3)
    elif fault == "voi function":
        write_dicom(path, STORED, window_tags=(40, 400), voi_function="LOG")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a dicom file at all")
    write_dicom(tmp_path / "b" / "0.dcm", STORED)
    return path


DICOM_FAULTS = {
    "width 0": r"WindowWidth must be >= 1 for VOILUTFunction LINEAR; got 0",
    "palette": r"PhotometricInterpretation 'PALETTE COLOR'; fedsim reads MONOCHROME1",
    "multi-frame": r"NumberOfFrames 3; fedsim reads single-frame images",
    "voi function": r"VOILUTFunction 'LOG'; fedsim applies LINEAR, LINEAR_EXACT, SIGMOID",
    "not dicom": r"cannot read DICOM file .*bad.dcm: ",
}


@pytest.mark.parametrize("fault", list(DICOM_FAULTS))
def test_dicom_faults_name_the_file_the_rule_and_the_value(tmp_path: Path, fault: str) -> None:
    bad = _bad_dicom(tmp_path, fault)
    where = re.escape(f"data.path ({tmp_path}): ")
    with pytest.raises(DataError, match=f"^{where}.*{DICOM_FAULTS[fault]}") as info:
        load_dataset("imagefolder", path=str(tmp_path))
    assert str(bad) in str(info.value)


def test_missing_optional_reader_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dicom_folder(tmp_path)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if not installed
    with pytest.raises(
        DataError,
        match=r"is a DICOM file, which needs the optional package pydicom; install it with: "
        r"pip install 'fedsim\[medical\]'",
    ):
        load_dataset("imagefolder", path=str(tmp_path))


# --- NIfTI -----------------------------------------------------------------------------


def _volume() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.normal(size=(7, 5, 9)).astype(np.float32)  # x, y, z in RAS


def _nifti_image(root: Path, data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    write_nifti(root / "a" / "0.nii.gz", data, affine)
    write_nifti(root / "b" / "0.nii", np.ones((7, 5, 9), np.float32))
    write_nifti(root / "b" / "1.nii", np.ones((7, 5, 9), np.float32))
    b = load_dataset("imagefolder", path=str(root), val_size=1, test_size=1)
    return images_of(b, 0)[0]


def test_nifti_middle_axial_slice_in_any_orientation(tmp_path: Path) -> None:
    v = _volume()
    plane = v[:, :, 9 // 2]  # axial slice (x, y) of the RAS volume
    expected = np.rot90((plane - plane.min()) / (plane.max() - plane.min()))
    ras = _nifti_image(tmp_path / "ras", v, np.eye(4))
    assert ras.shape == (1, 5, 7) and np.allclose(ras[0], expected, atol=1e-6)
    # the same world image stored as LPS (x and y flipped) ...
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    load_dataset.cache_clear()
    lps = _nifti_image(tmp_path / "lps", v[::-1, ::-1, :].copy(), lps_affine)
    assert np.allclose(lps[0], expected, atol=1e-6)
    # ... and with the superior axis first in the array (z, y, x)
    zyx = np.zeros((4, 4))
    zyx[0, 2] = zyx[1, 1] = zyx[2, 0] = zyx[3, 3] = 1.0
    load_dataset.cache_clear()
    transposed = _nifti_image(tmp_path / "zyx", v.transpose(2, 1, 0).copy(), zyx)
    assert np.allclose(transposed[0], expected, atol=1e-6)


def test_nifti_2d_and_4d(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a" / "0.nii", np.arange(12, dtype=np.float32).reshape(3, 4))
    write_nifti(tmp_path / "b" / "0.nii", np.zeros((3, 4, 2, 2), np.float32))
    with pytest.raises(
        DataError, match=r"0.nii has shape \(3, 4, 2, 2\); fedsim reads 2-D images and 3-D volumes"
    ):
        load_dataset("imagefolder", path=str(tmp_path))
    write_nifti(tmp_path / "b" / "0.nii", np.zeros((3, 4, 1, 1), np.float32))
    write_nifti(tmp_path / "b" / "1.nii", np.zeros((3, 4), np.float32))
    b = load_dataset("imagefolder", path=str(tmp_path), val_size=1, test_size=1)
    image = images_of(b, 0)[0]
    assert np.allclose(image[0], np.rot90(np.arange(12).reshape(3, 4)) / 11)


# --- config and CLI --------------------------------------------------------------------


def test_config_rules_of_the_declared_shape() -> None:
    base = {"dp": {"epsilon": 1.0}}
    cfg = from_dict({**base, "data": {"image_size": [32, 48], "channels": 3, "resize": "pad"}})
    assert cfg.data.image_hw == (32, 48)
    assert from_dict({**base, "data": {"image_size": 64}}).data.image_hw == (64, 64)
    bad = {
        "image_size": [1, 2, 3],
        "channels": 2,
        "resize": "squash",
    }
    with pytest.raises(ConfigError) as info:
        from_dict({**base, "data": bad})
    text = "\n".join(info.value.problems)
    assert "data.resize must be one of 'stretch', 'center_crop', 'pad'; got 'squash'" in text
    with pytest.raises(ConfigError) as info:
        from_dict({**base, "data": {"image_size": [1, 2, 3], "channels": 2}})
    text = "\n".join(info.value.problems)
    assert (
        "data.image_size must be one number (a square) or [height, width]; got a list of 3" in text
    )
    assert "data.channels must be 1 (grey) or 3 (RGB); got 2" in text
    with pytest.raises(
        ConfigError,
        match=r"data.image_size must be between 1 and 4096 pixels per side; got \[0, 5\]",
    ):
        from_dict({**base, "data": {"image_size": [0, 5]}})
    with pytest.raises(
        ConfigError, match=r"data.image_size must be null for the tabular dataset 'diabetes'"
    ):
        from_dict({**base, "data": {"name": "diabetes", "image_size": 8}, "model": {"name": "mlp"}})


@pytest.mark.slow  # a fresh interpreter importing the CLI: ~5-15 s here
def test_validate_exits_2_naming_a_bad_dicom_file(tmp_path: Path) -> None:
    bad = _bad_dicom(tmp_path / "scans", "width 0")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{name: imagefolder, path: {tmp_path / 'scans'}, image_size: 16}}\n"
        "dp: {epsilon: 1}\nmodel: {name: mlp}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "WindowWidth must be >= 1" in proc.stderr
    assert proc.stderr.count("\n") <= 2  # one message


def test_a_sites_own_dicom_export_is_fitted_to_the_federations_shape(tmp_path: Path) -> None:
    from fedsim.deploy.site import load_site_data

    dicom_folder(tmp_path / "export", window_tags=(40, 400), rescale=(1.0, -1024.0))
    data = load_site_data(tmp_path / "export", None, ImageSpec((28, 28), 1, "pad"))
    assert data.input_shape == (1, 28, 28) and len(data.train) == 3
    assert data.class_names == ("a", "b")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage, not a NIfTI header", r"cannot read NIfTI file .*bad.nii: "),
        (None, r"NIfTI file .*bad.nii has non-finite values in its slice"),
    ],
)
def test_nifti_faults_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    bad = tmp_path / "a" / "bad.nii"
    if content is None:
        write_nifti(bad, np.full((3, 3, 3), np.nan, np.float32))
    else:
        bad.parent.mkdir(parents=True)
        bad.write_bytes(content)
    write_nifti(tmp_path / "b" / "0.nii", np.ones((3, 3, 3), np.float32))
    with pytest.raises(DataError, match=f"^{re.escape(f'data.path ({tmp_path}): ')}{message}"):
        load_dataset("imagefolder", path=str(tmp_path))


def test_site_check_fits_images_as_the_client_app_will(tmp_path: Path) -> None:
    """`fedsim site check` / `fedsim supernode` with the run's --image-size accept an
    export of mixed sizes that would otherwise be refused."""
    import argparse

    from fedsim.cli.site import _image_size
    from fedsim.deploy.site import load_site_data
    from fedsim.deploy.sitecheck import check_site

    load_site_data.cache_clear()
    write_dicom(tmp_path / "a" / "0.dcm", STORED)
    write_png(tmp_path / "b" / "0.png", np.zeros((30, 20), np.uint8))
    with pytest.raises(FedsimError, match=r"all images must have the same size"):
        check_site(tmp_path)
    report = check_site(tmp_path, image=ImageSpec((16, 16), 1))
    assert "2 images of shape (1, 16, 16)" in "\n".join(report.lines())
    assert _image_size("224") == (224, 224) and _image_size("256x192") == (256, 192)
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be N or HxW"):
        _image_size("0x5")
