"""core.preprocess against an independent transcription of the reference (tests/reference_preprocess.py),
the spec's shape table, the mod-64 rule, INT8 values, and the job: storage, resume, checksums, cancel."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import zoom

from core import preprocess as pre
from core.benchmark import INFERENCE_SHAPES
from core.errors import BadInputError, Cancelled, MissingInputError
from core.fsio import sha256_file
from core.jobs import CancelToken, Progress
from core.nifti import load_case, save_volume
from core.synthetic import kits_affine, write_demo_dataset
from core.workspace import Workspace
from tests import reference_preprocess as ref
from tests.shared_data import MASKS, SHARED, SMALL_CALIBRATION, SMALL_INFERENCE, phantom_case_dir

SPEC = SHARED / "docs" / "mlperf-3d-unet.md"


def _spec_table() -> dict[str, dict[str, tuple]]:
    """Section 3's rows: case -> raw shape, zoomed shape, final shape, windows (two tables)."""
    if not SPEC.is_file():
        pytest.skip("the shared spec is not present")
    rows: dict[str, dict[str, tuple]] = {}
    tup = r"\(([\d., ]+)\)"
    pattern = rf"^\| (case_\d{{5}}) \| {tup} \| {tup} \| {tup} \| {tup} \| (\d+) \|$"
    for m in re.finditer(pattern, SPEC.read_text(), flags=re.M):
        ints = [tuple(int(x) for x in m.group(i).split(",")) for i in (2, 4, 5)]
        rows.setdefault(
            m.group(1), {"raw": ints[0], "zoomed": ints[1], "final": ints[2], "windows": int(m.group(6))}
        )
    return rows


# ---------------------------------------------------------------- reference comparisons


def _compare_with_reference(case: str, final: tuple[int, int, int]) -> None:
    d = phantom_case_dir(case)
    r_img, r_lab, aux = ref.preprocess_case(d)
    raw = load_case(d)
    img, lab, meta = pre.preprocess_case(raw.image, raw.label, raw.spacing, raw.affine)
    assert img.dtype == np.float32 and lab.dtype == np.uint8
    assert img.shape == r_img.shape == (1, *final)
    np.testing.assert_array_equal(lab, r_lab)  # the DICE ground truth: every voxel
    np.testing.assert_allclose(img, r_img, rtol=0, atol=1e-5)
    assert tuple(meta["zoomed_shape"]) == aux["zoomed_shape"] == _spec_table()[case]["zoomed"]
    np.testing.assert_array_equal(meta["zoom_factor"], aux["zoom_factor"])
    np.testing.assert_array_equal(meta["reshaped_affine"], aux["reshaped_affine"])
    assert set(np.unique(lab).tolist()) <= {0, 1, 2} and (lab == 2).any()


def test_matches_reference_case_00041():
    _compare_with_reference("case_00041", SMALL_INFERENCE["case_00041"])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["case_00061", "case_00087", "case_00148", "case_00130"])
def test_matches_reference_more_cases(case):
    final = {**SMALL_INFERENCE, **SMALL_CALIBRATION}[case]
    _compare_with_reference(case, final)


def test_small_case_tables_match_spec():
    table = _spec_table()
    for case, final in {**SMALL_INFERENCE, **SMALL_CALIBRATION}.items():
        assert table[case]["final"] == final


def test_shapes_of_all_real_cases_match_spec_table():
    """Zoomed and final shapes from every shared mask header (scipy's output-length rule + the mod-64
    closed form) reproduce section 3, its window totals and its mean voxel count."""
    if not MASKS.is_dir():
        pytest.skip("shared masks absent")
    table = _spec_table()
    assert len(table) == 63
    windows = {"inference": 0, "calibration": 0}
    voxels = []
    inference = json.loads((MASKS / "inference_cases.json").read_text())
    for case, row in table.items():
        hdr = nib.load(
            str(MASKS / ("case_00185" if case == "case_00400" else case) / "segmentation.nii.gz")
        ).header
        shape = hdr.get_data_shape()
        factor = pre.zoom_factor(hdr["pixdim"][1:4].tolist())
        zoomed = tuple(round(n * f) for n, f in zip(shape, factor, strict=True))
        final = tuple(pre.final_length(n) for n in zoomed)
        assert (shape, zoomed, final) == (row["raw"], row["zoomed"], row["final"]), case
        w = int(np.prod([f // 64 - 1 for f in final]))
        assert w == row["windows"]
        windows["inference" if case in inference else "calibration"] += w
        if case in inference:
            voxels.append(int(np.prod(final)))
    assert windows == {"inference": 2761, "calibration": 1119}
    assert np.mean(voxels) == pytest.approx(32_944_794.8, abs=0.05)
    assert [table[c]["final"] for c in inference] == list(INFERENCE_SHAPES)  # the speed workload's shapes


def test_zoom_call_is_what_align_corners_interpolation_computes():
    rng = np.random.default_rng(0)
    vol = (rng.normal(size=(20, 30, 25)) * 300).astype(np.float32)
    for spacing in [(2.72, 0.72, 1.56), (5.0, 0.6777344, 0.6777344)]:
        lab = rng.integers(0, 3, vol.shape).astype(np.uint8)
        img, lab2 = pre.resample(vol, lab, spacing)
        explicit = ref.trilinear_align_corners(vol, img.shape)
        np.testing.assert_allclose(img, explicit, rtol=1e-6, atol=1e-4)  # float32 rounding of ~1000
        np.testing.assert_array_equal(lab2, ref.nearest_align_corners(lab, img.shape))


def test_nearest_on_real_mask_has_no_tie_surprises():
    if not MASKS.is_dir():
        pytest.skip("shared masks absent")
    img = nib.load(str(MASKS / "case_00041" / "segmentation.nii.gz"))
    lab = np.asarray(img.dataobj).astype(np.uint8)
    # 512 -> 289 in-plane puts sample 144 on 255.5 in exact arithmetic: ties agree too
    z = zoom(lab, pre.zoom_factor(img.header["pixdim"][1:4].tolist()), order=0, grid_mode=False)
    assert z.shape == (98, 289, 289)
    np.testing.assert_array_equal(z, ref.nearest_align_corners(lab, z.shape))


def test_target_spacing_is_not_resampled():
    img = np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10)
    out, _ = pre.resample(img, np.zeros(img.shape, np.uint8), [1.6, 1.2, 1.2])
    assert out is img


# ---------------------------------------------------------------- geometry rules


def test_mod64_rule_closed_form_and_offsets():
    # every branch: below 128 (edge pad), remainders just under/at/over 32, exact multiples, large
    boundaries = [
        m + d for m in (128, 192, 256, 320, 384, 448) for d in (-33, -32, -31, -1, 0, 1, 31, 32, 33)
    ]
    for n in sorted({1, 7, 50, 95, 96, 97, 127, 417, 650, *boundaries}):
        lab = np.zeros((1, n, 128, 128), np.uint8)
        lab[0, :, 0, 0] = 1 + (np.arange(n) % 2)  # a marker along the axis
        img = lab.astype(np.float32)
        img, lab = pre.pad_to_min_shape(img, lab)
        img2, lab2 = pre.adjust_shape_for_sliding_window(img, lab)
        r_img, r_lab = ref.adjust_shape_for_sliding_window(*ref.pad_to_min_shape(img, lab))
        assert lab2.shape == (1, pre.final_length(n), 128, 128), n
        np.testing.assert_array_equal(lab2, r_lab)
        np.testing.assert_array_equal(img2, r_img)
        m = lab.shape[1]
        r = m % 64
        crop = r if r < 32 else 0
        kept = m - crop
        pad = pre.final_length(n) - kept
        before = crop // 2
        # surviving voxels sit at pad // 2, padding is -2.2 / 0
        np.testing.assert_array_equal(
            lab2[0, pad // 2 : pad // 2 + kept, 0, 0], lab[0, before : before + kept, 0, 0]
        )
        if pad:
            edge = 0 if pad // 2 else -1
            assert img2[0, edge, 1, 1] == np.float32(-2.2) and lab2[0, edge, 1, 1] == 0


def test_edge_padding_to_min_shape():
    img = np.arange(3 * 130 * 129, dtype=np.float32).reshape(1, 3, 130, 129)
    lab = (img % 3).astype(np.uint8)
    p_img, p_lab = pre.pad_to_min_shape(img, lab)
    assert p_img.shape == (1, 128, 130, 129)
    before = (128 - 3) // 2  # 62 before, 63 after
    np.testing.assert_array_equal(p_img[0, :before], np.broadcast_to(img[0, 0], (before, 130, 129)))
    np.testing.assert_array_equal(p_img[0, before : before + 3], img[0])
    np.testing.assert_array_equal(p_lab[0, -1], lab[0, -1])


def test_normalize_in_float32():
    x = np.array([-1000, -79, 0, 101, 304, 3000], np.float32)
    y = pre.normalize_intensity(x)
    assert y.dtype == np.float32
    expected = (np.clip(x, np.float32(-79), np.float32(304)) - np.float32(101)) / np.float32(76.9)
    np.testing.assert_array_equal(y, expected)
    assert y[0] == y[1] == pytest.approx(-2.3407, abs=1e-4) and y[-1] == pytest.approx(2.63979, abs=1e-5)


def test_reshaped_affine():
    aff = np.array([[0, 0, -0.68, 0], [0, -0.68, 0, 0], [-3.0, 0, 0, 0], [0, 0, 0, 1]])
    expected = np.array([[0, 0, -1.2, 0], [0, -1.2, 0, 0], [-1.6, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(pre.reshaped_affine(aff), expected)


# ---------------------------------------------------------------- INT8


def test_int8_values():
    top = pre.normalize_intensity(np.array([304.0, 5000.0], np.float32))
    bottom = pre.normalize_intensity(np.array([-79.0], np.float32))
    q = pre.quantize_int8(np.array([-2.2, 0.0, *top, *bottom, 5.0, -5.0], np.float32))
    assert q.dtype == np.int8
    assert q.tolist() == [-106, 0, 127, 127, -113, 127, -128]
    assert pre.quantize_int8(np.float32(-2.2).reshape(1)).item() == -106  # the padding value


def test_int8_rounds_half_to_even():
    amax = np.float32(2.63979)
    found = 0
    for target in (0.5, 1.5, 2.5, -0.5):
        x = np.float32(target) * amax / np.float32(127)
        for _ in range(64):  # walk to a float32 whose scaled value is exactly k + 0.5
            v = x / amax * np.float32(127)
            if v == target:
                break
            x = np.nextafter(x, np.float32(np.inf if v < target else -np.inf), dtype=np.float32)
        if x / amax * np.float32(127) == target:
            found += 1
            assert pre.quantize_int8(np.array([x])).item() == int(np.round(target))  # half to even
    assert found >= 2


# ---------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """Three tiny KiTS19-layout cases (fast to preprocess) with their own case lists."""
    d = tmp_path_factory.mktemp("tiny") / "data"
    rng = np.random.default_rng(4)
    for i, (shape, spacing) in enumerate(
        [((24, 50, 60), (3.0, 2.0, 2.0)), ((30, 60, 70), (5.0, 2.6, 2.6))] * 2
    ):
        if i == 3:
            break
        hu = rng.normal(40, 300, shape).clip(-1024, 3000).astype(np.int16)
        lab = np.zeros(shape, np.uint8)
        lab[5:15, 10:30, 10:30] = 1
        lab[8:12, 15:22, 15:22] = 2
        save_volume(d / f"case_{i:05d}" / "segmentation.nii.gz", lab, kits_affine(spacing))
        save_volume(d / f"case_{i:05d}" / "imaging.nii.gz", hu, kits_affine(spacing))
    (d / "inference_cases.json").write_text('["case_00000", "case_00001"]')
    (d / "calibration_cases.json").write_text('["case_00002"]')
    return d


def test_synthetic_demo_case_matches_reference_and_is_small(tmp_path):
    write_demo_dataset(tmp_path, n_inference=1, n_calibration=0, seed=0)
    r_img, r_lab, _ = ref.preprocess_case(tmp_path / "case_00000")
    raw = load_case(tmp_path / "case_00000")
    img, lab, _ = pre.preprocess_case(raw.image, raw.label, raw.spacing, raw.affine)
    np.testing.assert_array_equal(lab, r_lab)
    np.testing.assert_allclose(img, r_img, rtol=0, atol=1e-5)
    assert img.shape[1] == 128 and img.shape[2] in (128, 192) and img.shape[3] == 192
    assert set(np.unique(lab).tolist()) == {0, 1, 2}


def _ws(demo_data: Path, tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path, data_dir=demo_data, preprocessed_dir=tmp_path / "pre", env={})


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_job_end_to_end_and_resume(demo_data, tmp_path):
    ws = _ws(demo_data, tmp_path)
    events = []
    res = pre.run_preprocess(ws, jobs=1, report=events.append)
    assert sorted(res.processed) == ["calibration/case_00002", "inference/case_00000", "inference/case_00001"]
    assert res.skipped == []
    progress = [e for e in events if isinstance(e, Progress)]
    assert [e.done for e in progress] == [1, 2, 3] and progress[-1].total == 3
    out = ws.preprocessed_dir
    layout = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert layout == [
        "calibration/fp32/case_00002.npy",
        "calibration/labels/case_00002.npy",
        "calibration/meta/case_00002.json",
        "calibration/preprocessed_files.json",
        *[f"inference/{k}/case_0000{i}.{e}" for k, e in [("fp32", "npy"), ("int8", "npy")] for i in (0, 1)],
        *[
            f"inference/{k}/case_0000{i}.{e}"
            for k, e in [("labels", "npy"), ("meta", "json")]
            for i in (0, 1)
        ],
        "inference/preprocessed_files.json",
    ]
    # stored arrays = the in-memory preprocessing; int8 = quantized fp32; checksums recorded
    raw = load_case(demo_data / "case_00001")
    img, lab, _ = pre.preprocess_case(raw.image, raw.label, raw.spacing, raw.affine)
    np.testing.assert_array_equal(pre.load_image(ws, "inference", "case_00001"), img)
    np.testing.assert_array_equal(pre.load_label(ws, "inference", "case_00001"), lab)
    q = pre.load_image(ws, "inference", "case_00001", "int8")
    assert q.dtype == np.int8 and q.shape == img.shape
    np.testing.assert_array_equal(q, pre.quantize_int8(img))
    assert pre.load_image(ws, "inference", "case_00001").flags.writeable
    meta = pre.load_meta(ws, "inference", "case_00001")
    assert meta["files"]["int8"]["sha256"] == sha256_file(out / "inference/int8/case_00001.npy")
    assert img.shape == (1, 128, 128, 128)
    index = pre.load_index(ws, "inference")
    assert index["file_list"] == ["case_00000", "case_00001"]
    assert index["image_shape"]["case_00001"] == list(img.shape)
    assert index["cases"]["case_00001"]["reshaped_affine"] == meta["reshaped_affine"]
    assert {i.state for i in pre.preprocessed_status(ws)} == {"ok"}

    # second run: nothing redone, nothing rewritten except the two small index files
    before = _mtimes(out)
    again = pre.run_preprocess(ws, jobs=1)
    assert again.processed == [] and len(again.skipped) == 3
    after = _mtimes(out)
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= {"inference/preprocessed_files.json", "calibration/preprocessed_files.json"}


def test_corruption_detected_and_redone(demo_data, tmp_path):
    ws = _ws(demo_data, tmp_path)
    pre.run_preprocess(ws, sets=("inference",), jobs=1)
    f = ws.preprocessed_dir / "inference" / "fp32" / "case_00000.npy"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"inference/fp32/case_00000\.npy: sha256 mismatch"):
        pre.load_image(ws, "inference", "case_00000")
    assert pre.load_image(ws, "inference", "case_00000", verify=False).shape[0] == 1
    res = pre.run_preprocess(ws, sets=("inference",), jobs=1)
    assert res.processed == ["inference/case_00000"] and res.skipped == ["inference/case_00001"]
    pre.load_image(ws, "inference", "case_00000")  # verifies again
    # a truncated file is visible to the fast status check too
    f.write_bytes(f.read_bytes()[:1000])
    item = next(i for i in pre.preprocessed_status(ws) if i.name == "case_00000" and i.group == "inference")
    assert item.state == "broken" and "wrong size" in item.detail and item.fix == "unet3d preprocess"
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        pre.load_label(ws, "inference", "case_00000") if False else pre.load_image(
            ws, "inference", "case_00000"
        )


def test_changed_raw_input_is_redone(demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    ws = _ws(data, tmp_path)
    pre.run_preprocess(ws, sets=("calibration",), jobs=1)
    f = data / "case_00002" / "imaging.nii.gz"
    hu = np.asarray(nib.load(str(f)).dataobj)
    save_volume(f, hu + 1, kits_affine((3.0, 2.0, 2.0)))  # the dataset was replaced
    item = next(i for i in pre.preprocessed_status(ws) if i.name == "case_00002")
    assert item.state == "broken" and "raw files changed" in item.detail
    assert pre.run_preprocess(ws, sets=("calibration",), jobs=1).processed == ["calibration/case_00002"]


def test_cancel_between_cases_then_resume(demo_data, tmp_path):
    ws = _ws(demo_data, tmp_path)
    token = CancelToken()

    def report(event):
        if isinstance(event, Progress):
            token.cancel()

    with pytest.raises(Cancelled):
        pre.run_preprocess(ws, jobs=1, report=report, cancel=token)
    metas = list(ws.preprocessed_dir.rglob("meta/*.json"))
    assert len(metas) == 1  # exactly one case finished, the rest never started
    assert not list(ws.preprocessed_dir.rglob("preprocessed_files.json"))
    res = pre.run_preprocess(ws, jobs=1)
    assert len(res.skipped) == 1 and len(res.processed) == 2


def test_process_pool_gives_identical_files(demo_data, tmp_path):
    one = _ws(demo_data, tmp_path / "a")
    two = _ws(demo_data, tmp_path / "b")
    pre.run_preprocess(one, jobs=1)
    res = pre.run_preprocess(two, jobs=2)
    assert len(res.processed) == 3
    for s, c in [("inference", "case_00000"), ("inference", "case_00001"), ("calibration", "case_00002")]:
        assert pre.load_meta(one, s, c)["files"] == pre.load_meta(two, s, c)["files"]
    assert not list(two.preprocessed_dir.rglob("*.tmp"))


def test_cancel_stops_pool(demo_data, tmp_path):
    ws = _ws(demo_data, tmp_path)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        pre.run_preprocess(ws, jobs=2, cancel=token)
    assert not list(ws.preprocessed_dir.rglob("*.npy"))


def test_missing_raw_cases_and_status(tmp_path):
    ws = Workspace.resolve(tmp_path, data_dir=tmp_path / "data", env={})
    with pytest.raises(
        MissingInputError, match=r"raw cases not found: case_00000, case_00003, case_00005 and 60 more"
    ):
        pre.run_preprocess(ws, jobs=1)
    items = pre.preprocessed_status(ws)
    assert len(items) == 63 + 2 and {i.state for i in items} == {"missing"}  # cases + 2 indexes
    assert all(i.fix == "unet3d preprocess" for i in items)


def test_loader_errors(demo_data, tmp_path):
    ws = _ws(demo_data, tmp_path)
    with pytest.raises(MissingInputError, match="preprocessed inference set not found"):
        pre.load_index(ws, "inference")
    with pytest.raises(MissingInputError, match="case_00000 is not preprocessed"):
        pre.load_image(ws, "inference", "case_00000")
    pre.run_preprocess(ws, sets=("calibration",), jobs=1)
    with pytest.raises(BadInputError, match="stored as fp32 only"):
        pre.load_image(ws, "calibration", "case_00002", "int8")
    with pytest.raises(BadInputError, match="unknown preprocessed dtype"):
        pre.load_image(ws, "calibration", "case_00002", "fp16")
    with pytest.raises(BadInputError, match="unknown set"):
        pre.load_index(ws, "training")
    (ws.preprocessed_dir / "calibration" / "preprocessed_files.json").write_text("{")
    with pytest.raises(BadInputError, match=r"preprocessed_files\.json: unreadable index"):
        pre.load_index(ws, "calibration")


def test_case_00400_is_made_and_preprocessed_like_case_00185(demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data / "case_00001", data / "case_00185")
    (data / "inference_cases.json").write_text('["case_00185", "case_00400"]')
    (data / "calibration_cases.json").write_text("[]")
    ws = _ws(data, tmp_path)
    res = pre.run_preprocess(ws, jobs=1)
    assert sorted(res.processed) == ["inference/case_00185", "inference/case_00400"]
    a, b = (pre.load_meta(ws, "inference", c)["files"] for c in ("case_00185", "case_00400"))
    assert {k: v["sha256"] for k, v in a.items()} == {k: v["sha256"] for k, v in b.items()}
    assert pre.load_index(ws, "inference")["file_list"] == ["case_00185", "case_00400"]


def test_bad_case_in_pool_names_the_file(demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "case_00001" / "imaging.nii.gz").write_bytes(b"not a nifti")
    ws = _ws(data, tmp_path)
    with pytest.raises(BadInputError, match=r"case_00001/imaging\.nii\.gz: not a readable NIfTI"):
        pre.run_preprocess(ws, jobs=2)
    assert not list(ws.preprocessed_dir.rglob("*.tmp"))
    assert not (ws.preprocessed_dir / "inference" / "meta" / "case_00001.json").exists()
