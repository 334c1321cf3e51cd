"""core.audit: the auditor checklist as data, evidence-based checks, resumable state, Markdown export."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

import core.status
from core import audit as A  # noqa: N812 - short name for many uses
from core.benchmark import RunConfig, target_dice
from core.errors import BadInputError, Cancelled
from core.fsio import sha256_file
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
    monkeypatch.setattr(A, "list_run_views", lambda _ws: [])
    return w


def set_runs(monkeypatch, runs: list[A.RunView]) -> None:
    monkeypatch.setattr(A, "list_run_views", lambda _ws: sorted(runs, key=lambda r: r.started))


def rv(tmp_path: Path, name: str, t: float, **kw) -> A.RunView:
    d = tmp_path / "build" / "logs" / name
    defaults = dict(scenario="Offline", config_ver="default", test_mode="PerformanceOnly", valid=True,
                    complete=True, backend="ort", precision="fp32")  # fmt: skip
    defaults.update(kw)
    return A.RunView(log_dir=d, started=t, **defaults)


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


def test_run_view_normalizes_history_records(tmp_path):
    d = {"log_dir": str(tmp_path / "r1"), "started": "2026-11-29T05:00:00", "scenario": "Offline",
         "config_ver": "high_accuracy", "test_mode": "AccuracyOnly", "valid": True,
         "accuracy": {"mean": 0.87, "kidney": 0.9, "tumor": 0.8}}  # fmt: skip
    v = A.run_view(d)
    assert (v.scenario, v.config_ver, v.test_mode, v.valid, v.dice, v.complete) == (
        "Offline",
        "high_accuracy",
        "AccuracyOnly",
        True,
        0.87,
        True,
    )
    assert v.when == "2026-11-29 05:00:00"
    assert v.passes()  # 0.87 >= 0.8608383

    class Rec:  # attribute-style record with the config nested and no summary yet
        log_dir = tmp_path / "r2"
        config = RunConfig(scenario="SingleStream", test_mode="AccuracyOnly")
        valid = None

    (tmp_path / "r2").mkdir()
    v2 = A.run_view(Rec())
    assert (v2.scenario, v2.test_mode, v2.result, v2.complete) == (
        "SingleStream",
        "AccuracyOnly",
        "incomplete",
        False,
    )
    assert v2.started == pytest.approx((tmp_path / "r2").stat().st_mtime)
    assert A.run_view({"log_dir": "x", "valid": "INVALID", "complete": True}).result == "INVALID"


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
        touch(r.log_dir / A.SUMMARY, 1.0)
        touch(r.log_dir / A.DETAIL, 1.0)
    set_runs(monkeypatch, [a, b])
    audit = A.Audit.load(ws)
    r = audit.check("logs")
    assert r.state == A.FAILED
    assert r.evidence == "1 of 2 incomplete: build/logs/b lacks mlperf_log_accuracy.json"
    touch(b.log_dir / A.ACCURACY, 1.0)
    assert audit.check("logs").state == A.PASSED
    touch(a.log_dir / A.SUMMARY, 1.0, b"")  # an empty summary is no summary
    assert audit.check("logs").evidence == "1 of 2 incomplete: build/logs/a lacks mlperf_log_summary.txt"
    touch(a.log_dir / A.SUMMARY, 1.0)
    cancelled = rv(tmp_path, "c", 3.0, status="cancelled", complete=False)
    set_runs(monkeypatch, [a, b, cancelled])
    r = audit.check("logs")
    assert (r.state, r.evidence) == (
        A.PASSED,
        "2 result folders complete (summary, detail, accuracy log); 1 unfinished run folder not counted",
    )


def test_a_crashing_check_fails_with_reason(ws, monkeypatch):
    def boom(_ws):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(A, "list_run_views", boom)
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


def test_run_view_of_core_history_records(tmp_path):
    from core.history import RunRecord

    acc = RunRecord(run_id="r1", path=tmp_path / "r1", date="2026-11-29T05:00:00", scenario="Offline",
                    test_mode="AccuracyOnly", config_ver="default", backend="ort", precision="fp32",
                    status="complete", valid=None, samples_per_s=None, mean_dice=0.8600)  # fmt: skip
    v = A.run_view(acc)
    assert (v.log_dir, v.result, v.dice, v.complete) == (tmp_path / "r1", "complete", 0.86, True)
    assert v.passes()  # accuracy mode has no VALID line; DICE 0.86 >= 0.853083
    assert not v.passes(fp32_reference=0.9)  # the demo model's own reference would be higher
    cancelled = RunRecord(run_id="r2", path=tmp_path / "r2", date=None, scenario="Offline",
                          test_mode="PerformanceOnly", config_ver="default", backend="ort", precision="fp32",
                          status="cancelled", valid=None, samples_per_s=None, mean_dice=None)  # fmt: skip
    c = A.run_view(cancelled)
    assert (c.result, c.complete, c.passes()) == ("cancelled", False, False)
