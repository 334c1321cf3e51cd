"""Run history: run.json records, LoadGen-only folders, incomplete and broken folders, order."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path

import pytest

from core.history import list_runs, read_run
from core.workspace import Workspace

SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : LWIS_Server
Scenario : Offline
Mode     : PerformanceOnly
Samples per second: 54.7212
Result is : VALID
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: Yes

No warnings encountered during test.

No errors encountered during test.
"""


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.resolve(tmp_path, env={})
    w.log_dir.mkdir(parents=True)
    return w


def write_run(ws: Workspace, name: str, **fields) -> Path:
    folder = ws.log_dir / name
    folder.mkdir()
    doc = {
        "run_id": name,
        "status": "complete",
        "started": "2026-11-29T06:00:00+00:00",
        "scenario": "Offline",
        "test_mode": "PerformanceOnly",
        "config_ver": "default",
        "backend": "torch",
        "precision": "int8",
        "pid": 1,
        "host": "elsewhere",
        "result": {"valid": True, "samples_per_s": 6.8, "latency_ms": {"p50": 140.0, "p90": 150.5}},
        "accuracy": None,
    }
    doc.update(fields)
    (folder / "run.json").write_text(json.dumps(doc))
    return folder


def test_records_newest_first_with_fields(ws: Workspace) -> None:
    write_run(ws, "a", started="2026-11-29T06:00:00+00:00")
    write_run(
        ws,
        "b",
        started="2026-11-29T07:00:00+00:00",
        test_mode="AccuracyOnly",
        config_ver="high_accuracy",
        result={"valid": None},
        accuracy={"mean": 0.86112, "passed": True},
    )
    runs = list_runs(ws)
    assert [r.run_id for r in runs] == ["b", "a"]
    b, a = runs
    assert (a.scenario, a.test_mode, a.backend, a.precision, a.status) == (
        "Offline",
        "PerformanceOnly",
        "torch",
        "int8",
        "complete",
    )
    assert a.valid is True and a.result == "VALID" and a.samples_per_s == 6.8 and a.mean_dice is None
    assert a.latency_p90_ms == 150.5
    assert b.config_ver == "high_accuracy" and b.mean_dice == 0.86112 and b.valid is None and b.result == ""
    assert b.accuracy_pass is True and a.accuracy_pass is None
    assert b.to_dict()["path"] == str(ws.log_dir / "b")


def test_running_without_a_live_process_is_incomplete(ws: Workspace) -> None:
    dead = write_run(ws, "dead", status="running", result=None, pid=1, host="elsewhere")
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    live = write_run(ws, "live", status="running", result=None, started=now, **me)
    # a pid alive now but started after the run began: the run's process died and the pid was reused
    reused = write_run(ws, "reused", status="running", result=None, started="2020-01-01T00:00:00+00:00", **me)
    assert read_run(dead).status == "incomplete"
    assert read_run(live).status == "running"
    assert read_run(reused).status == "incomplete"
    # the process died after LoadGen wrote its summary: its figures are shown, never as VALID
    (dead / "mlperf_log_summary.txt").write_text(SUMMARY)
    rec = read_run(dead)
    assert rec.status == "incomplete" and rec.valid is None and rec.samples_per_s == 54.7212


def test_cancelled_and_failed_are_kept(ws: Workspace) -> None:
    write_run(ws, "c", status="cancelled", result=None)
    write_run(ws, "f", status="failed", result=None, error="sample 3 (case_00041): engine returned NaN")
    by_id = {r.run_id: r for r in list_runs(ws)}
    assert by_id["c"].status == "cancelled"
    assert by_id["f"].status == "failed" and "NaN" in by_id["f"].error


def test_loadgen_only_and_broken_folders(ws: Workspace) -> None:
    nv = ws.log_dir / "nvidia_run"
    nv.mkdir()
    (nv / "mlperf_log_summary.txt").write_text(SUMMARY)
    (nv / "accuracy.txt").write_text("Accuracy: mean = 0.86112, kidney = 0.9340, tumor = 0.7882\n")
    broken = ws.log_dir / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    half = ws.log_dir / "half"
    half.mkdir()
    (half / "mlperf_log_detail.txt").write_text(":::MLLOG {")
    (ws.log_dir / "empty").mkdir()  # not a run: skipped
    (ws.log_dir / "stray.txt").write_text("x")
    by_id = {r.run_id: r for r in list_runs(ws)}
    assert set(by_id) == {"nvidia_run", "broken", "half"}
    nv_rec = by_id["nvidia_run"]
    assert (nv_rec.status, nv_rec.scenario, nv_rec.valid, nv_rec.samples_per_s, nv_rec.mean_dice) == (
        "complete",
        "Offline",
        True,
        54.7212,
        0.86112,
    )
    assert by_id["broken"].status == "broken" and "run.json" in by_id["broken"].error
    assert by_id["half"].status == "incomplete"


def test_missing_log_dir(tmp_path: Path) -> None:
    assert list_runs(Workspace.resolve(tmp_path, env={})) == []
