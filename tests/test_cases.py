"""Case lists, DATA_DIR overrides, case_00400 as a copy of case_00185, and raw status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.cases import (
    OFFICIAL_CALIBRATION,
    OFFICIAL_INFERENCE,
    ItemStatus,
    case_lists,
    ensure_case_00400,
    raw_status,
)
from core.errors import BadInputError
from core.nifti import save_volume
from core.synthetic import kits_affine
from core.workspace import Workspace

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _ws(tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path, data_dir=tmp_path / "data", env={})


def _put(ws: Workspace, case: str, shape=(4, 5, 6), label_shape=None) -> Path:
    d = ws.data_dir / case
    aff = kits_affine((2.5, 0.8, 0.8))
    save_volume(d / "imaging.nii.gz", np.zeros(shape, np.int16), aff)
    save_volume(d / "segmentation.nii.gz", np.zeros(label_shape or shape, np.uint8), aff)
    return d


def test_official_lists():
    assert len(OFFICIAL_INFERENCE) == 43 and OFFICIAL_INFERENCE[-1] == "case_00400"
    assert sorted(OFFICIAL_INFERENCE) == OFFICIAL_INFERENCE
    assert len(OFFICIAL_CALIBRATION) == 20 and OFFICIAL_CALIBRATION[:3] == [
        "case_00050",
        "case_00117",
        "case_00172",
    ]
    assert not set(OFFICIAL_INFERENCE) & set(OFFICIAL_CALIBRATION)


def test_official_lists_match_shared_copy():
    if not (SHARED / "kits19").is_dir():
        pytest.skip("shared folder absent")
    assert json.loads((SHARED / "kits19" / "inference_cases.json").read_text()) == OFFICIAL_INFERENCE
    assert json.loads((SHARED / "kits19" / "calibration_cases.json").read_text()) == OFFICIAL_CALIBRATION


def test_data_dir_overrides(tmp_path):
    ws = _ws(tmp_path)
    assert case_lists(ws).source == "official"
    ws.data_dir.mkdir(parents=True)
    (ws.data_dir / "inference_cases.json").write_text('["case_00001", "case_00000"]')
    lists = case_lists(ws)
    assert lists.inference == ["case_00001", "case_00000"]  # file order kept
    assert lists.calibration == OFFICIAL_CALIBRATION
    assert lists.source == "DATA_DIR (inference_cases.json)"
    (ws.data_dir / "calibration_cases.json").write_text("[]")
    assert case_lists(ws).calibration == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["case_00001",', "malformed case list"),
        ('{"a": 1}', "must be a JSON list"),
        ('["case_1"]', "invalid case name 'case_1'"),
        ('["case_00001", 3]', "invalid case name 3"),
        ('["case_00001", "case_00001"]', "case_00001 is listed twice"),
    ],
)
def test_malformed_override_names_the_file(tmp_path, text, message):
    ws = _ws(tmp_path)
    ws.data_dir.mkdir(parents=True)
    (ws.data_dir / "calibration_cases.json").write_text(text)
    with pytest.raises(BadInputError, match=message) as info:
        case_lists(ws)
    assert str(info.value).startswith(str(ws.data_dir / "calibration_cases.json") + ":")
    items = raw_status(ws)
    assert len(items) == 1 and items[0].state == "broken" and message.split()[0] in items[0].detail


def test_ensure_case_00400_copies_case_00185(tmp_path):
    ws = _ws(tmp_path)
    assert ensure_case_00400(ws) == "no-source"
    assert not (ws.data_dir / "case_00400").exists()
    _put(ws, "case_00185", shape=(3, 4, 5))
    by_name = {s.name: s for s in raw_status(ws)}
    assert by_name["case_00400"].state == "missing" and "case_00185" in by_name["case_00400"].fix
    assert ensure_case_00400(ws) == "copied"
    for f in ("imaging.nii.gz", "segmentation.nii.gz"):
        assert (ws.data_dir / "case_00400" / f).read_bytes() == (ws.data_dir / "case_00185" / f).read_bytes()
    assert ensure_case_00400(ws) == "present"
    item = {s.name: s for s in raw_status(ws)}["case_00400"]
    assert item.state == "ok" and "present by copy of case_00185" in item.detail
    assert sorted(p.name for p in (ws.data_dir / "case_00400").iterdir()) == [
        "imaging.nii.gz",
        "segmentation.nii.gz",
    ]
    # a different case_00400 is reported, not silently accepted
    save_volume(
        ws.data_dir / "case_00400" / "imaging.nii.gz", np.ones((3, 4, 5), np.int16), kits_affine((1, 1, 1))
    )
    item = {s.name: s for s in raw_status(ws)}["case_00400"]
    assert item.state == "broken" and "differs from case_00185" in item.detail


def test_ensure_not_needed_for_custom_lists(tmp_path):
    ws = _ws(tmp_path)
    _put(ws, "case_00185")
    (ws.data_dir / "inference_cases.json").write_text('["case_00185"]')
    assert ensure_case_00400(ws) == "not-needed"
    assert not (ws.data_dir / "case_00400").exists()


def test_raw_status_states(tmp_path):
    ws = _ws(tmp_path)
    ws.data_dir.mkdir(parents=True)
    (ws.data_dir / "inference_cases.json").write_text(
        '["case_00001", "case_00002", "case_00003", "case_00004"]'
    )
    (ws.data_dir / "calibration_cases.json").write_text('["case_00005"]')
    _put(ws, "case_00001", shape=(4, 5, 6))
    _put(ws, "case_00002", shape=(4, 5, 6), label_shape=(4, 5, 7))
    d = _put(ws, "case_00003")
    (d / "imaging.nii.gz").write_bytes(b"garbage")
    _put(ws, "case_00005")
    os.remove(ws.data_dir / "case_00005" / "segmentation.nii.gz")
    items = raw_status(ws)
    assert all(isinstance(i, ItemStatus) for i in items)
    got = {(i.group, i.name): (i.state, i.detail) for i in items}
    assert got[("inference", "case_00001")] == ("ok", "4x5x6 @ 2.5x0.8x0.8 mm")
    assert items[0].data["shape"] == [4, 5, 6] and items[0].data["spacing"] == pytest.approx([2.5, 0.8, 0.8])
    assert (
        got[("inference", "case_00002")][0] == "broken"
        and "label shape" in got[("inference", "case_00002")][1]
    )
    assert (
        got[("inference", "case_00003")][0] == "broken"
        and "imaging.nii.gz" in got[("inference", "case_00003")][1]
    )
    assert got[("inference", "case_00004")] == ("missing", "folder missing")
    assert got[("calibration", "case_00005")] == ("missing", "segmentation.nii.gz missing")
    assert all(i.fix for i in items if not i.ok)


def test_raw_status_on_shared_masks_header_only():
    """The real label headers pass the header checks (imaging absent there: reported missing)."""
    if not (SHARED / "kits19").is_dir():
        pytest.skip("shared folder absent")
    ws = Workspace.resolve(".", data_dir=SHARED / "kits19", env={})
    items = raw_status(ws)
    assert len(items) == 63
    assert {i.state for i in items} == {"missing"}
    assert nib.load(str(SHARED / "kits19" / "case_00041" / "segmentation.nii.gz")).shape == (52, 512, 512)
