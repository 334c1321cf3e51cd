"""NIfTI loading: reference-equivalent values and a one-line error naming the file for every defect."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import BadInputError, MissingInputError
from core.nifti import header_info, load_case, load_label, load_volume, save_volume
from core.synthetic import kits_affine

SPACING = (3.0, 0.6777344, 0.6777344)


def _write(path: Path, array: np.ndarray, spacing=SPACING, **hdr) -> Path:
    img = nib.Nifti1Image(array, kits_affine(spacing))
    for k, v in hdr.items():
        img.header[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _case(tmp_path: Path, image=None, label=None, spacing=SPACING) -> Path:
    rng = np.random.default_rng(0)
    if image is None:
        image = rng.integers(-1024, 1500, (6, 7, 8)).astype(np.int16)
    if label is None:
        label = rng.integers(0, 3, (6, 7, 8)).astype(np.uint8)
    d = tmp_path / "case_00001"
    _write(d / "imaging.nii.gz", image, spacing)
    _write(d / "segmentation.nii.gz", label, spacing)
    return d


def test_load_case_matches_reference_reading(tmp_path):
    d = _case(tmp_path)
    case = load_case(d)
    ref_img = nib.load(str(d / "imaging.nii.gz"))
    # the reference: spacing = pixdim[1:4].tolist(); get_fdata().astype(float32 / uint8)
    assert case.spacing == tuple(ref_img.header["pixdim"][1:4].tolist())
    np.testing.assert_array_equal(case.image, ref_img.get_fdata().astype(np.float32))
    np.testing.assert_array_equal(
        case.label, nib.load(str(d / "segmentation.nii.gz")).get_fdata().astype(np.uint8)
    )
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8 and case.name == "case_00001"
    np.testing.assert_array_equal(case.affine, ref_img.affine)


def test_scaled_float_image_goes_through_float64(tmp_path):
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    p = _write(tmp_path / "img.nii.gz", data, scl_slope=0.3, scl_inter=-7.1)
    vol = load_volume(p)
    np.testing.assert_array_equal(vol.array, nib.load(str(p)).get_fdata().astype(np.float32))


def test_float_label_values_accepted_when_integral(tmp_path):
    p = _write(tmp_path / "seg.nii.gz", np.array([0.0, 1.0, 2.0] * 8, dtype=np.float32).reshape(2, 3, 4))
    assert load_label(p).array.dtype == np.uint8
    assert load_label(p).array.max() == 2


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MissingInputError, match=r"imaging\.nii\.gz: file not found"):
        load_volume(tmp_path / "imaging.nii.gz")
    with pytest.raises(MissingInputError, match="case folder not found"):
        load_case(tmp_path / "case_00009")
    d = _case(tmp_path)
    (d / "segmentation.nii.gz").unlink()
    with pytest.raises(MissingInputError, match=r"segmentation\.nii\.gz"):
        load_case(d)


def test_not_nifti_and_truncated(tmp_path):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(BadInputError, match=r"junk\.nii\.gz: not a readable NIfTI"):
        load_volume(junk)
    text = tmp_path / "plain.nii.gz"
    text.write_text("hello")
    with pytest.raises(BadInputError, match=r"plain\.nii\.gz"):
        load_volume(text)
    d = _case(tmp_path, image=np.zeros((40, 50, 60), np.int16))
    f = d / "imaging.nii.gz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(BadInputError, match=r"imaging.nii.gz: cannot read voxel data"):
        load_case(d)


def test_four_d_rejected(tmp_path):
    p = _write(tmp_path / "img.nii.gz", np.zeros((4, 5, 6, 2), np.int16))
    with pytest.raises(BadInputError, match=r"img\.nii\.gz: expected a 3-D volume, got 4-D"):
        load_volume(p)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_bad_spacing_rejected(tmp_path, bad):
    raw = bytearray(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), kits_affine(SPACING)).to_bytes())
    raw[76 + 8 : 76 + 12] = np.float32(bad).tobytes()  # pixdim[2] (y); nibabel would rewrite it
    p = tmp_path / "img.nii.gz"
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(BadInputError, match=r"img\.nii\.gz: voxel spacing"):
        load_volume(p)
    with pytest.raises(BadInputError, match="voxel spacing"):
        header_info(p)


def test_shape_mismatch_names_segmentation(tmp_path):
    d = _case(tmp_path, label=np.zeros((6, 7, 9), np.uint8))
    with pytest.raises(BadInputError, match=r"segmentation.nii.gz: label shape \(6, 7, 9\) differs"):
        load_case(d)


def test_spacing_mismatch(tmp_path):
    d = _case(tmp_path)
    _write(d / "segmentation.nii.gz", np.zeros((6, 7, 8), np.uint8), (5.0, 0.6777344, 0.6777344))
    with pytest.raises(BadInputError, match="label spacing"):
        load_case(d)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_label_values_outside_0_1_2(tmp_path, dtype):
    lab = np.zeros((6, 7, 8), dtype)
    lab[1, 2, 3] = 3
    d = _case(tmp_path, label=lab)
    with pytest.raises(BadInputError, match=r"segmentation.nii.gz: label values \[3\] are outside"):
        load_case(d)


def test_fractional_label_rejected(tmp_path):
    lab = np.zeros((6, 7, 8), np.float32)
    lab[0, 0, 0] = 1.5
    with pytest.raises(BadInputError, match="outside"):
        load_label(_write(tmp_path / "seg.nii.gz", lab))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_inf_intensities(tmp_path, value):
    img = np.zeros((6, 7, 8), np.float32)
    img[2, 2, 2] = value
    d = _case(tmp_path, image=img)
    with pytest.raises(BadInputError, match=r"imaging\.nii\.gz: contains 1 NaN/inf voxels"):
        load_case(d)


def test_save_volume_is_atomic_and_reproducible(tmp_path):
    arr = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    p = tmp_path / "sub" / "imaging.nii.gz"
    save_volume(p, arr, kits_affine((2.5, 0.8, 0.8)))
    first = p.read_bytes()
    save_volume(p, arr, kits_affine((2.5, 0.8, 0.8)))
    assert p.read_bytes() == first
    assert [f.name for f in p.parent.iterdir()] == ["imaging.nii.gz"]  # no temp files left
    vol = load_volume(p)
    assert vol.spacing == (2.5, pytest.approx(0.8), pytest.approx(0.8))
    np.testing.assert_array_equal(vol.array, arr)
