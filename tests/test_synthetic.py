"""The demo phantom generator: deterministic, valid labels, realistic headers, small final shapes."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from core.benchmark import TARGET_SPACING
from core.cases import case_lists
from core.errors import Cancelled
from core.jobs import CancelToken, Progress
from core.nifti import load_case
from core.synthetic import case_seed, kits_affine, make_case, training_names, write_demo_dataset
from core.workspace import Workspace


def _final_len(n: int) -> int:
    # closed form of the benchmark's min-shape pad + mod-64 adjust (spec section 2.2 step 5)
    return max(128, 64 * ((max(n, 128) + 32) // 64))


@pytest.fixture(scope="module")
def case0():
    return make_case("case_00000", 7)


def test_same_seed_same_case_other_seed_differs(case0):
    again = make_case("another name", 7)
    for a, b in zip(case0[:2], again[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    assert case0[2] == again[2]
    other = make_case("case_00000", 8)
    assert other[0].shape != case0[0].shape or not np.array_equal(other[0], case0[0])


def test_dtypes_labels_and_intensities(case0):
    image, label, _spacing, _affine = case0
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape and image.ndim == 3
    counts = np.bincount(label.ravel(), minlength=3)
    assert len(counts) == 3 and counts.min() > 500  # background, kidney and tumour all present
    kidney_hu = image[label == 1].mean()
    assert 100 < kidney_hu < 220  # enhanced kidney
    assert -1100 < image[0, 0, 0] < -850  # corner is air


@pytest.mark.parametrize("seed", range(4))
def test_geometry_lands_in_small_buckets(seed):
    image, _, spacing, affine = make_case("c", seed)
    assert 2.5 <= spacing[0] <= 5.0 and 0.7 <= spacing[1] == spacing[2] <= 0.9
    zoomed = [round(n * s / t) for n, s, t in zip(image.shape, spacing, TARGET_SPACING, strict=True)]
    final = [_final_len(n) for n in zoomed]
    assert final[0] == 128 and final[1] in (128, 192) and final[2] == 192
    np.testing.assert_allclose(np.abs(affine[:3, :3]).sum(axis=0), spacing)
    assert affine[2, 0] < 0 and affine[1, 1] < 0 and affine[0, 2] < 0  # KiTS19 sign pattern


def test_kits_affine_matches_real_layout():
    a = kits_affine((3.0, 0.6777344, 0.6777344))
    expected = np.array([[0, 0, -0.6777344, 0], [0, -0.6777344, 0, 0], [-3.0, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(a, expected)


def test_write_demo_dataset_layout_headers_and_resume(tmp_path):
    events = []
    lists = write_demo_dataset(tmp_path, n_inference=2, n_calibration=1, seed=3, report=events.append)
    assert lists.inference == ["case_00000", "case_00001"] and lists.calibration == ["case_00002"]
    assert json.loads((tmp_path / "inference_cases.json").read_text()) == lists.inference
    assert json.loads((tmp_path / "calibration_cases.json").read_text()) == lists.calibration
    ws = Workspace.resolve(tmp_path / "ws", data_dir=tmp_path, env={})
    assert case_lists(ws).inference == lists.inference and case_lists(ws).source.startswith("DATA_DIR")
    assert [e.done for e in events if isinstance(e, Progress)] == [1, 2, 3]

    image, label, spacing, affine = make_case("case_00001", case_seed(3, "case_00001"))
    hdr = nib.load(str(tmp_path / "case_00001" / "imaging.nii.gz")).header
    assert hdr.get_data_dtype() == np.int16
    np.testing.assert_allclose(hdr["pixdim"][1:4], spacing, rtol=0, atol=1e-6)
    case = load_case(tmp_path / "case_00001")
    np.testing.assert_array_equal(case.image, image.astype(np.float32))
    np.testing.assert_array_equal(case.label, label)
    np.testing.assert_array_equal(case.affine, affine)

    # rerun: nothing rewritten (same bytes, same mtimes), files are byte-reproducible
    f = tmp_path / "case_00000" / "imaging.nii.gz"
    stamp, digest = f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest()
    write_demo_dataset(tmp_path, n_inference=2, n_calibration=1, seed=3)
    assert f.stat().st_mtime_ns == stamp
    f.unlink()
    write_demo_dataset(tmp_path, n_inference=2, n_calibration=1, seed=3)
    assert hashlib.sha256(f.read_bytes()).hexdigest() == digest


def test_cancel_stops_before_next_case(tmp_path):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        write_demo_dataset(tmp_path, n_inference=1, n_calibration=0, cancel=token)
    assert not (tmp_path / "case_00000").exists()


def test_training_names_are_distinct_from_demo_names():
    names = training_names(50)
    assert len(set(names)) == 50 and "case_00000" not in names
    assert len({case_seed(0, n) for n in names}) == 50
