"""core.audit: the auditor checklist as data, evidence-based checks, resumable state, Markdown export."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

import pytest

import core.history
import core.status
from core import audit as A  # noqa: N812 - short name for many uses
from core.benchmark import RunConfig, target_dice
from core.errors import BadInputError, Cancelled
from core.fsio import sha256_file
from core.harness.logs import ACCURACY_NAME, DETAIL_NAME, SUMMARY_NAME
from core.history import Accuracy, Metrics, RunRecord
from core.jobs import CancelToken, Progress
from core.status import ItemStatus, Section, StatusReport
from core.workspace import Workspace


def fake_status(**states: str) -> StatusReport:
    names = ("dataset", "preprocessed", "model", "calibration", "engines", "backends", "runs")
    secs = []
    for n in names:
        st = states.get(n, "ok")
        secs.append(Section(n, (ItemStatus(f"{n}-item", st, f"{n} detail"),)))
    return StatusReport({}, tuple(secs))


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    w = Workspace.resolve(tmp_path, env={})
    monkeypatch.setattr(core.status, "collect_status", lambda _ws: fake_status())
    monkeypatch.setattr(core.history, "list_runs", lambda _ws: [])
    return w


def set_runs(monkeypatch, runs: list[RunRecord]) -> None:
    """core.history lists runs newest first."""
    monkeypatch.setattr(core.history, "list_runs", lambda _ws: sorted(runs, key=lambda r: -r.started))


def rv(tmp_path: Path, name: str, t: float, *, status: str = "complete", valid: bool | None = True,
       samples_per_s: float | None = None, dice: float | None = None, **config) -> RunRecord:  # fmt: skip
    """A run record as core.history reads it from a run.json, started at epoch ``t``."""
    cfg = RunConfig(**{"backend": "ort", "precision": "fp32", **config})
    date = dt.datetime.fromtimestamp(t).astimezone().isoformat()
    metrics = Metrics(samples_per_s, {}, Accuracy(dice) if dice is not None else None)
    return RunRecord(
        name, tmp_path / "build" / "logs" / name, date, status, cfg, valid=valid, metrics=metrics
    )


def touch(path: Path, t: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (t, t))
    return path


def test_checklist_follows_the_auditor_instructions():
    steps = A.checklist("Offline", RunConfig(backend="torch", precision="int8", gpu_batch_size=4))
    ids = [s.id for s in steps]
    assert ids == [
        "env", "data", "preprocessed", "model", "calibration",
        "run.default.PerformanceOnly", "run.default.AccuracyOnly",
        "run.high_accuracy.PerformanceOnly", "run.high_accuracy.AccuracyOnly",
        "weights.replace", "weights.calibrate", "weights.run",
        "dataset.place", "dataset.preprocess", "dataset.calibrate", "dataset.run",
        "compliance.TEST01", "compliance.TEST05", "logs",
    ]  # fmt: skip
    by = {s.id: s for s in steps}
    run = by["run.high_accuracy.AccuracyOnly"].action.run
    assert run == RunConfig(scenario="Offline", config_ver="high_accuracy", test_mode="AccuracyOnly",
                            backend="torch", precision="int8", gpu_batch_size=4)  # fmt: skip
    assert by["run.default.PerformanceOnly"].seed_command == (
        'make run RUN_ARGS="--benchmarks=3d-unet --scenarios=Offline --config_ver=default '
        '--test_mode=PerformanceOnly"'
    )
    assert by["weights.run"].seed_command.endswith('--config_ver=high_accuracy"')
    assert by["weights.calibrate"].action.command() == "unet3d calibrate"
    assert by["dataset.preprocess"].action.job == "preprocess"
    assert by["compliance.TEST05"].action.run.audit_test == "TEST05"
    assert by["compliance.TEST01"].action.command().startswith("unet3d run --benchmarks=3d-unet")
    assert "--audit_test=TEST01" in by["compliance.TEST01"].action.command()
    assert "0.8608383" in by["run.high_accuracy.AccuracyOnly"].help
    singles = A.checklist("SingleStream")
    assert all(s.action.run.scenario == "SingleStream" for s in singles if s.action.run)


def test_four_runs_pass_fail_pending(ws, tmp_path, monkeypatch):
    t = 1_700_000_000.0
    lo = target_dice("default") - 0.001
    set_runs(monkeypatch, [
        rv(tmp_path, "a", t, samples_per_s=6.8),
        rv(tmp_path, "b", t + 1, test_mode="AccuracyOnly", dice=lo),  # below the 99 % target
        rv(tmp_path, "c", t + 2, config_ver="high_accuracy", valid=False),
        rv(tmp_path, "d", t + 3, config_ver="high_accuracy", test_mode="AccuracyOnly", dice=0.8700),
        rv(tmp_path, "e", t + 4, audit_test="TEST01", samples_per_s=6.7),
        rv(tmp_path, "f", t + 5, scenario="SingleStream"),  # other scenario: ignored
    ])  # fmt: skip
    audit = A.Audit.load(ws, "Offline")
    res = audit.check_all()
    assert res["run.default.PerformanceOnly"].state == A.PASSED
    assert res["run.default.PerformanceOnly"].evidence == "build/logs/a: VALID 6.8 samples/s (ort fp32)"
    assert res["run.default.AccuracyOnly"].state == A.FAILED
    assert f"DICE {lo:.5f}" in res["run.default.AccuracyOnly"].evidence
    assert res["run.high_accuracy.PerformanceOnly"].state == A.FAILED
    assert "INVALID" in res["run.high_accuracy.PerformanceOnly"].evidence
    assert res["run.high_accuracy.AccuracyOnly"].state == A.PASSED
    assert res["compliance.TEST01"].state == A.PASSED
    assert res["compliance.TEST05"].state == A.PENDING
    assert res["compliance.TEST05"].evidence == "no Offline TEST05 run yet"
    assert res["data"].state == A.PASSED and res["env"].state == A.PASSED
    assert res["run.high_accuracy.AccuracyOnly"].paths == (str(tmp_path / "build/logs/d"),)


def test_setup_failure_names_the_item(ws, monkeypatch):
    monkeypatch.setattr(core.status, "collect_status", lambda _ws: fake_status(preprocessed="missing"))
    audit = A.Audit.load(ws)
    r = audit.check("preprocessed")
    assert r.state == A.FAILED
    assert r.evidence == "preprocessed-item: missing, preprocessed detail"


def test_new_weights_flow(ws, tmp_path, monkeypatch):
    t0 = 1_700_000_000.0
    touch(ws.model_path, t0, b"old model")
    audit = A.Audit.load(ws)
    assert audit.baseline["model_sha256"] == sha256_file(ws.model_path)
    assert audit.check("weights.replace").state == A.PENDING
    touch(ws.model_path, t0 + 10, b"new model")
    r = audit.check("weights.replace")
    assert r.state == A.PASSED and "->" in r.evidence
    touch(ws.calibration_cache_path, t0 + 5)  # older than the new model
    assert audit.check("weights.calibrate").evidence.startswith("calibration cache is older than the model")
    touch(ws.calibration_cache_path, t0 + 20)
    assert audit.check("weights.calibrate").state == A.PASSED
    set_runs(monkeypatch, [rv(tmp_path, "old", t0 + 15, config_ver="high_accuracy")])
    assert audit.check("weights.run").state == A.PENDING  # run before the new calibration
    set_runs(monkeypatch, [rv(tmp_path, "new", t0 + 30, config_ver="high_accuracy", samples_per_s=1.5)])
    assert audit.check("weights.run").state == A.PASSED


def test_new_dataset_flow(ws, tmp_path, monkeypatch):
    t0 = 1_700_000_000.0
    audit = A.Audit.load(ws)
    assert audit.check("dataset.place").state == A.PENDING
    for n in ("inference_cases.json", "calibration_cases.json"):
        touch(ws.data_dir / n, t0 + 10, b'["case_00001"]')
    r = audit.check("dataset.place")
    assert r.state == A.PASSED and r.evidence.startswith("case lists changed since the audit started")
    idx = [ws.preprocessed_dir / s / "preprocessed_files.json" for s in ("inference", "calibration")]
    for p in idx:
        touch(p, t0 + 5)
    assert "older than the case lists" in audit.check("dataset.preprocess").evidence
    for p in idx:
        touch(p, t0 + 20)
    assert audit.check("dataset.preprocess").state == A.PASSED
    touch(ws.calibration_cache_path, t0 + 30)
    assert audit.check("dataset.calibrate").state == A.PASSED
    set_runs(monkeypatch, [rv(tmp_path, "r", t0 + 40, config_ver="high_accuracy", valid=True)])
    assert audit.check("dataset.run").state == A.PASSED


def test_state_resumes_and_resets_on_other_scenario(ws, tmp_path, monkeypatch):
    set_runs(monkeypatch, [rv(tmp_path, "a", 1.0)])
    audit = A.Audit.load(ws)
    audit.check("run.default.PerformanceOnly")
    path = A.Audit.state_path(ws)
    saved = json.loads(path.read_text())
    assert saved["steps"]["run.default.PerformanceOnly"]["state"] == "passed"
    assert saved["scenario"] == "Offline"
    again = A.Audit.load(ws)
    assert again.results["run.default.PerformanceOnly"].state == A.PASSED
    assert again.results["env"] == A.NOT_CHECKED
    assert again.baseline == audit.baseline
    other = A.Audit.load(ws, "SingleStream")
    assert other.results["run.default.PerformanceOnly"] == A.NOT_CHECKED
    path.write_text("{not json")
    with pytest.raises(BadInputError, match=r"audit_state\.json"):
        A.Audit.load(ws)


def test_logs_check_finds_missing_files(ws, tmp_path, monkeypatch):
    a = rv(tmp_path, "a", 1.0)
    b = rv(tmp_path, "b", 2.0, test_mode="AccuracyOnly", dice=0.9)
    for r in (a, b):
        touch(r.path / SUMMARY_NAME, 1.0)
        touch(r.path / DETAIL_NAME, 1.0)
    set_runs(monkeypatch, [a, b])
    audit = A.Audit.load(ws)
    r = audit.check("logs")
    assert r.state == A.FAILED
    assert r.evidence == "1 of 2 incomplete: build/logs/b lacks mlperf_log_accuracy.json"
    touch(b.path / ACCURACY_NAME, 1.0)
    assert audit.check("logs").state == A.PASSED
    touch(a.path / SUMMARY_NAME, 1.0, b"")  # an empty summary is no summary
    assert audit.check("logs").evidence == "1 of 2 incomplete: build/logs/a lacks mlperf_log_summary.txt"
    touch(a.path / SUMMARY_NAME, 1.0)
    cancelled = rv(tmp_path, "c", 3.0, status="cancelled", valid=None)
    set_runs(monkeypatch, [a, b, cancelled])
    r = audit.check("logs")
    assert (r.state, r.evidence) == (
        A.PASSED,
        "2 result folders complete (summary, detail, accuracy log); 1 unfinished run folder not counted",
    )


def test_a_crashing_check_fails_with_reason(ws, monkeypatch):
    def boom(_ws):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(core.history, "list_runs", boom)
    r = A.Audit.load(ws).check("run.default.AccuracyOnly")
    assert r.state == A.FAILED and r.evidence == "check failed: RuntimeError: disk on fire"


def test_check_all_reports_and_cancels(ws):
    events: list[object] = []
    audit = A.Audit.load(ws)
    audit.check_all(report=events.append)
    prog = [e for e in events if isinstance(e, Progress)]
    assert [p.done for p in prog] == list(range(1, len(audit.steps) + 1))
    assert prog[-1].total == len(audit.steps) and prog[0].item == "env"
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        audit.check_all(cancel=CancelToken(ev))


def test_markdown_export(ws, tmp_path, monkeypatch):
    set_runs(monkeypatch, [rv(tmp_path, "a", 1.0, samples_per_s=2.0)])
    audit = A.Audit.load(ws)
    audit.check_all()
    path = audit.export_markdown()
    md = path.read_text()
    assert path == tmp_path / "build" / "audit" / "audit_report.md"
    assert md.startswith("# MLPerf Inference 3D-UNet audit")
    assert (
        "| Offline default PerformanceOnly (`run.default.PerformanceOnly`) | ✔ passed | build/logs/a:" in md
    )
    assert "- Make: `make run RUN_ARGS='--benchmarks=3d-unet --scenarios=Offline --config_ver=default" in md
    assert "## compliance" in md and "### Compliance TEST05" in md
    c = audit.counts()
    assert sum(c.values()) == len(audit.steps)
    assert f"- Steps: {c['passed']} passed, {c['failed']} failed, {c['pending']} pending" in md


def test_a_cancelled_run_leaves_its_step_pending(ws, tmp_path, monkeypatch):
    """A user cancel is not a failure: the step waits for a finished run; an INVALID one fails it."""
    audit = A.Audit.load(ws)
    set_runs(monkeypatch, [rv(tmp_path, "c", 2.0, status="cancelled", valid=None, samples_per_s=1.573)])
    r = audit.check("run.default.PerformanceOnly")
    assert (r.state, r.evidence) == (
        A.PENDING,
        "no Offline default PerformanceOnly run yet (1 cancelled or still running)",
    )
    invalid = rv(tmp_path, "i", 1.0, valid=False, samples_per_s=1.2)
    set_runs(monkeypatch, [rv(tmp_path, "c", 2.0, status="cancelled", valid=None), invalid])
    r = audit.check("run.default.PerformanceOnly")
    assert (r.state, r.evidence) == (A.FAILED, "build/logs/i: INVALID (ort fp32)")  # no samples/s shown
    set_runs(monkeypatch, [invalid, rv(tmp_path, "v", 3.0, samples_per_s=2.5)])
    assert (
        audit.check("run.default.PerformanceOnly").evidence == "build/logs/v: VALID 2.5 samples/s (ort fp32)"
    )


def test_the_calibration_step_needs_the_cache_itself(ws, monkeypatch):
    """core.status calls an absent cache fine on a CPU workspace (nothing there reads it); the audit step
    "Calibration cache present" still waits for the file."""
    not_needed = ItemStatus("calibration cache", "ok", "not made; not needed here: ort fp32 runs without one")
    report = fake_status()
    report = StatusReport({}, tuple(Section("calibration", (not_needed,)) if s.name == "calibration" else s
                                    for s in report.sections))  # fmt: skip
    monkeypatch.setattr(core.status, "collect_status", lambda _ws: report)
    audit = A.Audit.load(ws)
    r = audit.check("calibration")
    assert r.state == A.PENDING
    assert r.evidence == (
        "build/calibration/calibration_cache.json not found; status: not made; not needed here: ort fp32 "
        "runs without one"
    )
    touch(ws.calibration_cache_path, 1.0)
    assert audit.check("calibration").state == A.PASSED
