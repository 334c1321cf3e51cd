"""Bad inputs of every kind through the real CLI (a subprocess each): one `error:` line on stderr naming
the file and the problem, the exit code of the table (2 usage, 3 missing, 4 bad input, 1 invalid), no
traceback, and nothing half-written (no temp file, no meta or index for the bad case, earlier runs'
folders untouched)."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import ExitCode
from core.nifti import IMAGING, SEGMENTATION
from core.workspace import Workspace
from tests.reliability import raw_dataset, tiny_model, unet3d, workspace

CASE = "case_00000"
pytestmark = pytest.mark.slow  # one `unet3d` subprocess per fault (3-10 s each)


def _volume(ws: Workspace, name: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    img = nib.load(str(ws.data_dir / CASE / name))
    return np.asarray(img.dataobj), img.affine, img.header


def _save(
    ws: Workspace, name: str, array: np.ndarray, affine: np.ndarray, zooms: tuple | None = None
) -> None:
    img = nib.Nifti1Image(array, affine)
    if zooms is not None:
        img.header["pixdim"][1 : 1 + len(zooms)] = zooms  # bypass set_zooms' own checks
    (ws.data_dir / CASE / name).write_bytes(gzip.compress(img.to_bytes()))


def truncated_image(ws: Workspace) -> None:
    p = ws.data_dir / CASE / IMAGING
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def not_nifti(ws: Workspace) -> None:
    (ws.data_dir / CASE / IMAGING).write_text("this is a CT scan, honest\n")


def shape_mismatch(ws: Workspace) -> None:
    a, aff, _ = _volume(ws, SEGMENTATION)
    _save(ws, SEGMENTATION, np.ascontiguousarray(a[:-3]), aff)


def four_d(ws: Workspace) -> None:
    a, aff, _ = _volume(ws, IMAGING)
    _save(ws, IMAGING, np.stack([a, a], axis=-1), aff)


def spacing(value: float) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        a, aff, hdr = _volume(ws, IMAGING)
        z = tuple(float(x) for x in hdr.get_zooms())
        _save(ws, IMAGING, a, aff, zooms=(value, z[1], z[2]))

    return damage


def bad_label_values(ws: Workspace) -> None:
    a, aff, _ = _volume(ws, SEGMENTATION)
    a = a.copy()
    a.flat[a.size // 2] = 3
    _save(ws, SEGMENTATION, a, aff)


def nonfinite(value: float) -> Callable[[Workspace], None]:
    def damage(ws: Workspace) -> None:
        a, aff, _ = _volume(ws, IMAGING)
        a = a.astype(np.float32)
        a.flat[12345] = value
        _save(ws, IMAGING, a, aff)

    return damage


def missing_case(ws: Workspace) -> None:
    shutil.rmtree(ws.data_dir / CASE)


def missing_image(ws: Workspace) -> None:
    (ws.data_dir / CASE / IMAGING).unlink()


def list_names_absent_case(ws: Workspace) -> None:
    (ws.data_dir / "inference_cases.json").write_text(json.dumps([CASE, "case_00099"]))


def malformed_list(ws: Workspace) -> None:
    (ws.data_dir / "inference_cases.json").write_text('["case_00000", ')


def list_not_a_list(ws: Workspace) -> None:
    (ws.data_dir / "inference_cases.json").write_text('{"cases": ["case_00000"]}')


def list_bad_name(ws: Workspace) -> None:
    (ws.data_dir / "inference_cases.json").write_text('["case_00000", "kidney_7"]')


@dataclass(frozen=True)
class Fault:
    damage: Callable[[Workspace], None]
    code: int
    names: str  # the file the message must name (relative to the data dir)
    problem: str  # what the message must say


RAW_FAULTS = {
    "truncated_nifti": Fault(truncated_image, 4, f"{CASE}/{IMAGING}", "cannot read voxel data"),
    "not_nifti": Fault(not_nifti, 4, f"{CASE}/{IMAGING}", "not a readable NIfTI file"),
    "shape_mismatch": Fault(shape_mismatch, 4, f"{CASE}/{SEGMENTATION}", "differs from image shape"),
    "four_d_image": Fault(four_d, 4, f"{CASE}/{IMAGING}", "expected a 3-D volume, got 4-D"),
    "zero_spacing": Fault(spacing(0.0), 4, f"{CASE}/{IMAGING}", "must be finite and positive"),
    "negative_spacing": Fault(spacing(-1.5), 4, f"{CASE}/{IMAGING}", "must be finite and positive"),
    "label_values": Fault(bad_label_values, 4, f"{CASE}/{SEGMENTATION}", "label values [3] are outside"),
    "nan_intensity": Fault(nonfinite(np.nan), 4, f"{CASE}/{IMAGING}", "NaN/inf voxels"),
    "inf_intensity": Fault(nonfinite(np.inf), 4, f"{CASE}/{IMAGING}", "NaN/inf voxels"),
    "missing_case": Fault(missing_case, 3, "", f"raw cases not found: {CASE}"),
    "missing_image": Fault(missing_image, 3, "", f"raw cases not found: {CASE}"),
    "list_names_absent_case": Fault(list_names_absent_case, 3, "", "raw cases not found: case_00099"),
    "malformed_json_list": Fault(malformed_list, 4, "inference_cases.json", "malformed case list"),
    "json_not_a_list": Fault(list_not_a_list, 4, "inference_cases.json", "must be a JSON list"),
    "json_bad_case_name": Fault(list_bad_name, 4, "inference_cases.json", "invalid case name 'kidney_7'"),
}


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def raw_ws(tmp_path: Path) -> Workspace:
    """A workspace with a private copy of one raw inference case and no calibration cases."""
    ws = Workspace.resolve(tmp_path / "ws", env={})
    ws.data_dir.mkdir(parents=True)
    shutil.copytree(raw_dataset() / CASE, ws.data_dir / CASE)
    (ws.data_dir / "inference_cases.json").write_text(json.dumps([CASE]))
    (ws.data_dir / "calibration_cases.json").write_text("[]")
    return ws


@pytest.mark.parametrize("fault", sorted(RAW_FAULTS))
def test_bad_raw_input_through_the_cli(raw_ws: Workspace, fault: str) -> None:
    f = RAW_FAULTS[fault]
    f.damage(raw_ws)
    r = unet3d("preprocess", "--jobs", "1", ws=raw_ws.root)
    assert r.returncode == f.code, r.stderr
    line = _one_error(r.stderr)
    assert f.problem in line, line
    if f.names:
        assert str(raw_ws.data_dir / f.names) in line, line
    else:
        assert str(raw_ws.data_dir) in line, line
    pre = raw_ws.preprocessed_dir
    assert not list(pre.rglob("*.tmp")) if pre.exists() else True
    assert not list(pre.rglob("meta/*.json")) if pre.exists() else True
    assert not list(pre.rglob("preprocessed_files.json")) if pre.exists() else True
    assert r.stdout == ""


# --------------------------------------------------------------------------- models


def _truncated(p: Path) -> None:
    tiny_model(p, "ok")
    p.write_bytes(p.read_bytes()[:-40])


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _wrong_io(p: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    tiny_model(p, "ok")
    m = onnx.load(str(p))
    out = m.graph.output[0]
    out.CopyFrom(helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 2, 128, 128, 128]))
    onnx.save(m, str(p))


def _wrong_opset(p: Path) -> None:
    import onnx

    tiny_model(p, "ok")
    m = onnx.load(str(p))
    m.opset_import[0].version = 13
    onnx.save(m, str(p))


MODEL_FAULTS = {
    "missing_model": (lambda p: None, 3, "not found"),
    "truncated_onnx": (_truncated, 4, "truncated"),
    "not_onnx": (_garbage, 4, "not an ONNX model"),
    "empty_onnx": (_empty, 4, "model file is empty"),
    "wrong_output_shape": (_wrong_io, 4, "output output has shape ['batch_size', 2, 128, 128, 128]"),
    "wrong_opset": (_wrong_opset, 4, "ONNX opset 13, expected 12"),
}


@pytest.fixture(scope="module")
def run_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = workspace(tmp_path_factory.mktemp("models") / "ws")
    tiny_model(ws.model_path, "ok")
    r = unet3d("run", "--test_mode=PerformanceOnly", "--min_duration=0", "--min_query_count=2", ws=ws.root)
    assert r.returncode == 0, r.stderr
    return ws


@pytest.mark.parametrize("fault", sorted(MODEL_FAULTS))
def test_bad_model_through_the_cli(run_ws: Workspace, fault: str) -> None:
    from tests.reliability import tree_digest

    damage, code, problem = MODEL_FAULTS[fault]
    model = run_ws.model_path
    model.unlink(missing_ok=True)
    damage(model)
    before = {p.name for p in run_ws.log_dir.iterdir()}
    digest = tree_digest(run_ws.log_dir)
    try:
        r = unet3d(
            "run", "--test_mode=PerformanceOnly", "--min_duration=0", "--min_query_count=2", ws=run_ws.root
        )
        assert r.returncode == code, r.stderr
        line = _one_error(r.stderr)
        assert str(model) in line and problem in line, line
        assert r.stdout == ""
        new = {p.name for p in run_ws.log_dir.iterdir()} - before
        for name in new:  # a run that started records its failure; it is never a result
            doc = json.loads((run_ws.log_dir / name / "run.json").read_text())
            assert doc["status"] == "failed" and problem in doc["error"] and doc["result"] is None
        assert {k: v for k, v in tree_digest(run_ws.log_dir).items() if k.split("/")[0] in before} == digest
        st = unet3d("status", ws=run_ws.root)
        model_line = next(x for x in st.stdout.splitlines() if x.startswith("model"))
        assert ("missing" if code == 3 else "broken") in model_line and problem in model_line, st.stdout
    finally:
        tiny_model(model, "ok")


def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    for args in (
        ("run", "--scenarios=Server"),
        ("preprocess", "--sets=training"),
        ("run", "--gpu_batch_size=-3"),
        ("frobnicate",),
    ):
        r = unet3d(*args, ws=tmp_path)
        assert r.returncode == ExitCode.USAGE, (args, r.stderr)
        _one_error(r.stderr)
