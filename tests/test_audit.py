"""core.audit: the auditor checklist as data, evidence-based checks that state compliance (passed / not
compliant / failed / pending), resumable state, Markdown export."""

from __future__ import annotations

import dataclasses
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
from tests.test_compliance import (
    ACCURACY,
    OFFICIAL_DATA,
    OFFICIAL_MODEL,
    OFFLINE,
    SHORT,
    SINGLE,
    SYNTHETIC_DATA,
)


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
       samples_per_s: float | None = None, dice: float | None = None, facts: dict | None = None,
       **config) -> RunRecord:  # fmt: skip
    """A run record as core.history reads it from a run.json, started at epoch ``t``: the facts of a
    compliant full-length run (effective settings, official data and model, user.conf) unless ``facts``
    replaces some."""
    cfg = RunConfig(**{"backend": "ort", "precision": "fp32", **config})
    date = dt.datetime.fromtimestamp(t).astimezone().isoformat()
    metrics = Metrics(samples_per_s, {}, Accuracy(dice) if dice is not None else None)
    settings = SINGLE if cfg.scenario == "SingleStream" else OFFLINE
    if cfg.test_mode == "AccuracyOnly":
        settings = dataclasses.replace(ACCURACY, scenario=cfg.scenario)
    if cfg.audit_test == "TEST01":
        settings = dataclasses.replace(settings, audit_config_found=True, accuracy_log_sampling_target=64)
    known = {"settings": settings, "dataset": OFFICIAL_DATA, "model_provenance": OFFICIAL_MODEL,
             "user_conf": {"target_qps": "7.23"}, **(facts or {})}  # fmt: skip
    return RunRecord(
        name, tmp_path / "build" / "logs" / name, date, status, cfg, valid=valid, metrics=metrics, **known
    )


def kits19_here(ws: Workspace) -> None:
    """A DATA_DIR holding KiTS19 case folders and no synthetic manifest (what the data step reads)."""
    (ws.data_dir / "case_00000").mkdir(parents=True)


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
        "submission.test01", "submission.stage", "submission.check",
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
    # the submission steps end the list; their actions are `unet3d submission` commands the console can
    # run through core.submission.steps.run_request
    sub = {s.id: s.action for s in singles if s.group == "submission"}
    assert {k: (a.kind, a.command()) for k, a in sub.items()} == {
        "submission.test01": ("submission", "unet3d submission verify-test01 --scenario=SingleStream"),
        "submission.stage": ("submission", "unet3d submission stage --submitter=ORG --system-name=NAME"),
        "submission.check": ("submission", "unet3d submission check"),
    }
    assert sub["submission.stage"].submission.needs() == ("submitter", "system_name")
    filled = dataclasses.replace(sub["submission.stage"].submission, submitter="Acme", system_name="h200",
                                 force=True)  # fmt: skip
    assert filled.needs() == () and filled.command() == (
        "unet3d submission stage --submitter=Acme --system-name=h200 --force"
    )


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
    kits19_here(ws)
    audit = A.Audit.load(ws, "Offline")
    res = audit.check_all()
    assert res["run.default.PerformanceOnly"].state == A.PASSED
    assert res["run.default.PerformanceOnly"].evidence == (
        "build/logs/a: VALID 6.8 samples/s (ort fp32); compliant"
    )
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
    # the new weights are not the official model: the point of the step, so that rule is set aside
    new_model = {"file": "3dUNetKiTS19.onnx", "md5": "abc", "official": False}
    set_runs(monkeypatch, [rv(tmp_path, "new", t0 + 30, config_ver="high_accuracy", samples_per_s=1.5,
                              facts={"model_provenance": new_model})])  # fmt: skip
    assert audit.check("weights.run").state == A.PASSED
    set_runs(monkeypatch, [rv(tmp_path, "new", t0 + 30, config_ver="high_accuracy", samples_per_s=1.5,
                              facts={"model_provenance": new_model, "settings": SHORT})])  # fmt: skip
    r = audit.check("weights.run")  # ... but not the others
    assert r.state == A.NOT_COMPLIANT and "shortened: min_duration 10 s < 600 s" in r.evidence


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
    new_data = {"cases": 1, "official_case_list": False, "synthetic": False}
    set_runs(monkeypatch, [rv(tmp_path, "r", t0 + 40, config_ver="high_accuracy", valid=True,
                              facts={"dataset": new_data})])  # fmt: skip
    assert audit.check("dataset.run").state == A.PASSED  # a new case list is the point of the step


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
    assert (
        f"- Steps: {c['passed']} passed, {c['not compliant']} not compliant, {c['failed']} failed, "
        f"{c['pending']} pending"
    ) in md
    assert "## submission" in md and "- Action: `unet3d submission verify-test01 --scenario=Offline`" in md


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
        audit.check("run.default.PerformanceOnly").evidence
        == "build/logs/v: VALID 2.5 samples/s (ort fp32); compliant"
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


def demo_workspace(ws: Workspace) -> None:
    """What `unet3d demo` leaves: 4 synthetic cases (the generator's manifest, its own case lists) and a
    model that is not the official one."""
    touch(ws.data_dir / "synthetic.json", 1.0, b"{}")
    (ws.data_dir / "case_00000").mkdir(parents=True)
    for name in ("inference_cases.json", "calibration_cases.json"):
        touch(ws.data_dir / name, 1.0, json.dumps([f"case_0000{i}" for i in range(4)]).encode())
    touch(ws.model_path, 1.0, b"the demo model")


def test_demo_evidence_is_not_compliant(ws, tmp_path, monkeypatch):
    """Issue #12 item 4: "KiTS19 dataset present" passed on the 4-case synthetic demo and "Offline default
    PerformanceOnly" on a 10 s run with --min_query_count=4; both are "not compliant", with the reason."""
    demo_workspace(ws)
    demo_model = {"file": "3dUNetKiTS19.onnx", "md5": "abc", "official": False}
    short_demo = {"settings": dataclasses.replace(SHORT, performance_sample_count=4),
                  "dataset": SYNTHETIC_DATA, "model_provenance": demo_model}  # fmt: skip
    acc_settings = dataclasses.replace(ACCURACY, accuracy_sample_count=4, performance_sample_count=4)
    demo_acc = {"settings": acc_settings, "dataset": SYNTHETIC_DATA, "model_provenance": demo_model}
    set_runs(monkeypatch, [
        rv(tmp_path, "perf", 2.0, samples_per_s=0.107, facts=short_demo),
        rv(tmp_path, "acc", 1.0, test_mode="AccuracyOnly", valid=None, dice=0.9, facts=demo_acc),
        rv(tmp_path, "cancelled", 3.0, config_ver="high_accuracy", status="cancelled", valid=None),
    ])  # fmt: skip
    audit = A.Audit.load(ws)
    res = audit.check_all()
    assert res["data"].state == A.NOT_COMPLIANT
    assert res["data"].evidence == (
        "not compliant: case list is not the official 43 cases (4 cases) (+1 more); 1 item ok: dataset detail"
    )
    assert res["preprocessed"].state == A.NOT_COMPLIANT
    assert res["model"].state == A.NOT_COMPLIANT and "model is not the official" in res["model"].evidence
    perf = res["run.default.PerformanceOnly"]
    assert (perf.state, perf.evidence) == (
        A.NOT_COMPLIANT,
        "shortened: min_duration 10 s < 600 s (+5 more); build/logs/perf: VALID 0.107 samples/s (ort fp32)",
    )
    acc = res["run.default.AccuracyOnly"]  # passes its own target, on synthetic data
    assert acc.state == A.NOT_COMPLIANT
    assert acc.evidence == (
        "not compliant: accuracy run covers 4 samples, the dataset has 43 (+3 more); "
        "build/logs/acc: complete DICE 0.90000 (ort fp32)"
    )
    assert res["run.high_accuracy.PerformanceOnly"].state == A.PENDING  # a cancel is no evidence
    assert res["run.high_accuracy.AccuracyOnly"].state == A.PENDING
    assert res["submission.test01"].state == A.PENDING
    assert res["submission.stage"].evidence == "no staged tree in build/submission-staging yet"
    assert audit.counts()[A.NOT_COMPLIANT] == 5
    # a compliant run, even an older one, is the evidence that passes the step
    set_runs(monkeypatch, [rv(tmp_path, "perf", 2.0, samples_per_s=0.107, facts=short_demo),
                           rv(tmp_path, "full", 1.0, samples_per_s=0.1)])  # fmt: skip
    assert audit.check("run.default.PerformanceOnly").evidence == (
        "build/logs/full: VALID 0.1 samples/s (ort fp32); compliant"
    )
    # the exported report says so too
    set_runs(monkeypatch, [rv(tmp_path, "perf", 2.0, samples_per_s=0.107, facts=short_demo)])
    audit.check("run.default.PerformanceOnly")
    md = audit.to_markdown()
    assert "- Steps: 2 passed, 5 not compliant, 1 failed, 14 pending" in md  # logs: no log files here
    assert "- Not compliant: 5 steps rest on evidence that does not meet the MLPerf submission rules" in md
    assert (
        "| KiTS19 dataset present (`data`) | ⚠ not compliant | not compliant: case list is not the "
        "official 43 cases (4 cases) (+1 more); 1 item ok: dataset detail |"
    ) in md
    assert (
        "- State: **not compliant** — shortened: min_duration 10 s < 600 s (+5 more); build/logs/perf: VALID "
        "0.107 samples/s (ort fp32)"
    ) in md
    assert "✔ passed | build/logs/perf" not in md
    # the state survives a reload
    assert A.Audit.load(ws).results["data"].state == A.NOT_COMPLIANT


def test_test01_verification_step(ws, tmp_path):
    """Evidence: verify_accuracy.txt / verify_performance.txt in build/compliance/<scenario>/TEST01 and
    the runs they verified (test01_runs.json, written by `unet3d submission verify-test01`)."""
    audit = A.Audit.load(ws)
    out = ws.compliance_dir / "Offline"
    r = audit.check("submission.test01")
    assert (r.state, r.evidence) == (
        A.PENDING, "no TEST01 verification in build/compliance/Offline/TEST01 yet"
    )  # fmt: skip
    touch(out / "TEST01/verify_accuracy.txt", 1.0, b"num_perf_log_data_mismatch = 0\nTEST PASS\n")
    touch(out / "TEST01/verify_performance.txt", 1.0, b"Verifying performance.\nTEST FAIL: Test score\n")
    r = audit.check("submission.test01")
    assert (r.state, r.evidence) == (
        A.FAILED, "build/compliance/Offline/TEST01: TEST01 accuracy PASS; performance FAIL"
    )  # fmt: skip
    touch(out / "TEST01/verify_performance.txt", 1.0, b"Verifying performance.\nTEST PASS\n")
    r = audit.check("submission.test01")
    assert r.state == A.NOT_COMPLIANT and r.evidence.endswith(
        "unknown: test01_runs.json missing (which runs were verified is not recorded)"
    )

    def runs_record(perf: dict) -> None:
        ok = {"compliant": True, "label": "compliant", "shortened": False, "reasons": []}
        roles = {"performance": {"run": "p", "compliance": perf}, "accuracy": {"run": "a", "compliance": ok},
                 "TEST01": {"run": "t", "compliance": ok}}  # fmt: skip
        doc = {"config_ver": "default", "runs": roles}
        touch(out / "test01_runs.json", 1.0, json.dumps(doc).encode())

    runs_record({"compliant": False, "shortened": True, "reasons": ["shortened: min_duration 10 s < 600 s"]})
    r = audit.check("submission.test01")
    assert (r.state, r.evidence) == (
        A.NOT_COMPLIANT,
        "build/compliance/Offline/TEST01: TEST01 accuracy PASS; performance PASS; performance run p: "
        "shortened: min_duration 10 s < 600 s",
    )
    runs_record({"compliant": True, "reasons": []})
    r = audit.check("submission.test01")
    assert r.state == A.PASSED and r.evidence.endswith("; the verified runs are compliant")
    # the deterministic check failed: the fallback's DICE delta decides (1 % for 3d-unet-99)
    touch(out / "TEST01/verify_accuracy.txt", 1.0, b"TEST FAIL\n")
    touch(out / "TEST01/accuracy/baseline_accuracy.txt", 1.0, b"Accuracy: mean = 0.86000\n")
    touch(out / "TEST01/accuracy/compliance_accuracy.txt", 1.0, b"Accuracy: mean = 0.85000\n")
    r = audit.check("submission.test01")
    assert r.state == A.FAILED and "fallback FAIL (delta 1.1765 %, allowed 1 %)" in r.evidence
    touch(out / "TEST01/accuracy/compliance_accuracy.txt", 1.0, b"Accuracy: mean = 0.85990\n")
    assert audit.check("submission.test01").state == A.PASSED
