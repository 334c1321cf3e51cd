"""core.status: the workspace report never raises and names what is missing or broken, and how to fix it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from core import status as st
from core.benchmark import PRECISIONS
from core.status import BROKEN, MISSING, OK, ItemStatus, Section, collect_status, render_table
from core.workspace import Workspace

SECTIONS = ["dataset", "preprocessed", "model", "calibration", "engines", "backends", "runs"]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path, env={})


@pytest.fixture(autouse=True)
def quick_backends(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Backend probing imports torch and tensorrt (seconds); only the backend test needs it."""
    if "real_backends" not in request.fixturenames:
        fixed = (
            ItemStatus("ort", OK, "cpu", data={"precisions": ["fp32"]}),
            ItemStatus(
                "tensorrt", MISSING, "tensorrt is not installed", data={"precisions": list(PRECISIONS)}
            ),
        )
        monkeypatch.setattr(st, "backend_items", lambda: fixed)


def by_section(report: st.StatusReport) -> dict[str, Section]:
    return {s.name: s for s in report.sections}


def test_empty_workspace_is_all_missing_with_fixes(ws: Workspace) -> None:
    report = collect_status(ws)
    assert [s.name for s in report.sections] == SECTIONS
    sec = by_section(report)
    assert sec["dataset"].state == MISSING and len(sec["dataset"].items) == 63
    assert sec["model"].items[0] == ItemStatus(
        "model", MISSING, f"{ws.model_path} not found", st.FIX_MODEL, data={"path": str(ws.model_path)}
    )
    # a CPU workspace: no backend here reads a calibration cache, so it is not missing (issue #12 item 5)
    assert sec["calibration"].state == OK and sec["calibration"].items[0].fix == ""
    assert sec["engines"].state == MISSING
    assert sec["runs"].state == MISSING
    doc = json.loads(json.dumps(report.to_dict()))  # JSON-ready all the way down
    assert doc["sections"][2]["items"][0]["state"] == "missing"  # the model
    assert doc["paths"]["model"] == str(ws.model_path)


def test_valid_model_is_described(ws: Workspace, tiny_model_path: Path) -> None:
    ws.model_dir.mkdir(parents=True)
    shutil.copy(tiny_model_path, ws.model_path)
    (item,) = st.model_items(ws)
    assert item.state == OK
    assert item.data["sha256"] == hashlib.sha256(ws.model_path.read_bytes()).hexdigest()
    assert item.data["opset"] == 12
    assert item.data["inputs"] == "input[batch_size,1,128,128,128]"
    assert item.data["outputs"] == "output[batch_size,3,128,128,128]"
    assert item.data["params"] > 100_000
    assert f"sha256 {item.data['sha256'][:12]}" in item.detail


def test_corrupt_model_is_broken_not_raised(ws: Workspace) -> None:
    ws.model_dir.mkdir(parents=True)
    ws.model_path.write_bytes(b"not an onnx file")
    report = collect_status(ws)
    (item,) = by_section(report)["model"].items
    assert item.state == BROKEN and item.fix == st.FIX_MODEL
    assert str(ws.model_path) in item.detail or ws.model_path.name in item.detail


def test_calibration_item_says_what_each_backend_needs(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a red "missing" with `unet3d calibrate` where nothing needs the cache and calibrating fails."""
    ort = ItemStatus("ort", OK, "cpu", data={"precisions": ["fp32"]})
    torch_off = ItemStatus("torch", MISSING, "no CUDA device", data={"precisions": list(PRECISIONS)})
    torch_on = ItemStatus("torch", OK, "cuda:0 NVIDIA H200", data={"precisions": list(PRECISIONS)})
    monkeypatch.setattr(st, "_torch_installed", lambda: False)
    (item,) = st.calibration_items(ws, None, (ort, torch_off))
    assert (item.state, item.fix) == (OK, "")
    assert item.detail == (
        "not made; not needed here: ort fp32 runs without one; int8/fp8 on torch (not available here) need "
        "it; calibrating needs torch (pip install '.[gpu]')"
    )
    (item,) = st.calibration_items(ws, None, (ort, torch_on))
    assert item.state == MISSING and item.fix == "pip install '.[gpu]', then unet3d calibrate"
    assert item.detail.endswith("not found: int8/fp8 on torch need it (fp32/fp16/bf16 do not)")
    monkeypatch.setattr(st, "_torch_installed", lambda: True)
    (item,) = st.calibration_items(ws, None, (ort, torch_on))
    assert (item.state, item.fix) == (MISSING, "unet3d calibrate")
    assert st.calibration_items(ws, None, (ort, torch_off))[0].detail == (
        "not made; not needed here: ort fp32 runs without one; int8/fp8 on torch (not available here) need it"
    )


def test_calibration_cache_ok_stale_and_corrupt(ws: Workspace) -> None:
    from core.calibration_cache import CalibrationCache, save

    path = ws.calibration_cache_path
    save(
        CalibrationCache(amax={"input": 2.63979, "Conv_0": 1.5}, method="minmax", model_sha256="a" * 64), path
    )
    (item,) = st.calibration_items(ws, "a" * 64)
    assert item.state == OK and item.detail == "minmax, 2 tensors"
    (item,) = st.calibration_items(ws, "b" * 64)
    assert item.state == BROKEN and "stale" in item.detail and item.fix == "unet3d calibrate"
    path.write_text("{ not json")
    (item,) = st.calibration_items(ws, None)
    assert item.state == BROKEN and item.fix == "unet3d calibrate"


def test_engine_files_are_listed(ws: Workspace) -> None:
    ws.engine_dir.mkdir(parents=True)
    (ws.engine_dir / "b.plan").write_bytes(b"x" * 2048)
    (ws.engine_dir / "a.plan").write_bytes(b"x" * 10)
    items = st.engine_items(ws)
    assert [(i.name, i.state, i.detail) for i in items] == [("a.plan", OK, "10 B"), ("b.plan", OK, "2.0 KB")]


def test_a_failing_section_becomes_one_broken_item(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.cases
    import core.history

    def boom(_ws: Workspace) -> list:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(core.cases, "raw_status", boom)
    monkeypatch.setattr(core.history, "list_runs", boom)
    report = collect_status(ws)
    sec = by_section(report)
    assert sec["dataset"].items == (ItemStatus("dataset", BROKEN, "disk on fire second line", st.FIX_DATA),)
    assert sec["runs"].items[0].state == BROKEN
    assert sec["model"].state == MISSING  # the other sections are still there


def test_run_history_items(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import core.history
    from core.benchmark import RunConfig
    from core.history import Accuracy, Metrics, RunRecord
    from tests.test_compliance import SHORT, SYNTHETIC_DATA, record

    def rec(name: str, mode: str, status: str, valid: bool | None, sps: float | None = None,
            dice: float | None = None) -> RunRecord:  # fmt: skip
        acc = Accuracy(dice) if dice is not None else None
        return RunRecord(name, Path(f"/l/{name}"), None, status, RunConfig(test_mode=mode), valid=valid,
                         metrics=Metrics(sps, {}, acc))  # fmt: skip

    cfg = RunConfig()
    recs = [
        rec("r1", "AccuracyOnly", "complete", None, dice=0.81234),
        rec("r2", "PerformanceOnly", "broken", None),
        rec("r3", "AccuracyOnly", "incomplete", None),
        rec("r4", "PerformanceOnly", "cancelled", None, 1.5),
        rec("r5", "PerformanceOnly", "complete", False, 1.5),
        record("r6", cfg, metrics=Metrics(1.5)),  # compliant: every fact of a full-length run
        record("r7", cfg, settings=SHORT, metrics=Metrics(1.5)),  # a VALID 10 s run
        record("r8", cfg, dataset=SYNTHETIC_DATA, metrics=Metrics(1.5)),  # the demo's data
    ]
    monkeypatch.setattr(core.history, "list_runs", lambda _ws: recs)
    items = st.run_items(ws)
    # only a complete, not-INVALID run shows as ok; incomplete/cancelled/INVALID never look like results;
    # compliance is another question (r7 and r8 are ok results, not compliant ones)
    assert [(i.name, i.state) for i in items] == [
        ("r1", OK), ("r2", BROKEN), ("r3", BROKEN), ("r4", BROKEN), ("r5", BROKEN), ("r6", OK), ("r7", OK),
        ("r8", OK),
    ]  # fmt: skip
    assert items[0].detail == (
        "Offline AccuracyOnly ort fp32 complete DICE 0.81234 "
        "[unknown: no effective LoadGen settings (mlperf_log_detail.txt missing or unreadable)]"
    )
    # no throughput for a cancelled or INVALID run; LoadGen's figure for a VALID one; the compliance
    # label and its first reason
    assert [i.detail for i in items[3:]] == [
        "Offline PerformanceOnly ort fp32 cancelled [not compliant: run cancelled]",
        "Offline PerformanceOnly ort fp32 INVALID [not compliant: LoadGen result INVALID]",
        "Offline PerformanceOnly ort fp32 VALID 1.500 samples/s [compliant]",
        "Offline PerformanceOnly ort fp32 VALID 1.500 samples/s [shortened: min_duration 10 s < 600 s]",
        "Offline PerformanceOnly ort fp32 VALID 1.500 samples/s "
        "[not compliant: case list is not the official 43 cases (4 cases)]",
    ]
    # --json carries every reason
    assert items[6].data["compliance"] == {
        "compliant": False,
        "label": "shortened",
        "shortened": True,
        "reasons": ["shortened: min_duration 10 s < 600 s", "shortened: Offline min_query_count 4 < 43"],
    }
    assert items[7].data["compliance"]["reasons"][1] == "synthetic data (demo phantoms), not KiTS19"
    assert json.loads(json.dumps(dataclasses.asdict(items[6])))["data"]["run_id"] == "r7"


def test_table_summarises_long_sections(ws: Workspace) -> None:
    items = tuple(ItemStatus(f"case_{i:05d}", OK, "ok", "", "inference") for i in range(40))
    items += (ItemStatus("case_00040", BROKEN, "imaging.nii.gz: not gzip", "unet3d download", "inference"),)
    report = st.StatusReport({"root": "/w"}, (Section("dataset", items),))
    lines = render_table(report).splitlines()
    assert lines[0] == "Workspace: /w"
    rows = [[c.strip() for c in ln.split("|")] for ln in lines[3:]]
    assert rows == [
        ["dataset", "inference", "broken", "40/41 ok", st.FIX_DATA],
        ["dataset", "inference/case_00040", "broken", "imaging.nii.gz: not gzip", "unet3d download"],
    ]


@pytest.fixture
def real_backends() -> None:
    """Requested by a test that probes the real backends."""


def test_backends_report_availability_with_reason(real_backends: None) -> None:
    items = {i.name: i for i in st.backend_items()}
    assert set(items) == {"ort", "torch", "tensorrt"}
    assert items["ort"].state == OK
    for item in items.values():
        assert item.state in (OK, MISSING)
        assert item.detail  # devices when ok, the reason when not
