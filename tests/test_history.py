"""Run history: one typed RunRecord per folder (run.json records, LoadGen-only folders, incomplete and
broken folders), newest first; the one rule for a passing run and for the throughput a user may see."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path

import pytest

from core.benchmark import RunConfig, target_dice
from core.harness.logs import LoadgenSettings
from core.history import Accuracy, Metrics, RunRecord, list_runs, read_run
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

# effective settings as LoadGen 6 writes them (values of a TEST01 Offline run)
EFFECTIVE = {
    "scenario": "Offline",
    "test_mode": "PerformanceOnly",
    "samples_per_query": 1440,
    "target_qps": 2.4,
    "target_latency_ns": 0,
    "target_latency_percentile": 0.99,
    "min_duration_ms": 600000,
    "max_duration_ms": 0,
    "min_query_count": 1,
    "max_query_count": 0,
    "min_sample_count": 1440,
    "qsl_rng_seed": 2085463073848966840,
    "sample_index_rng_seed": 2747215439041700203,
    "schedule_rng_seed": 16159082839903944936,
    "accuracy_log_rng_seed": 720381539243781796,
    "accuracy_log_probability": 0,
    "accuracy_log_sampling_target": 64,
    "performance_sample_count": 43,
    "accuracy_sample_count": 43,
    "sample_concatenate_permutation": True,
}


def mllog(key: str, value: object, error: bool = False) -> str:
    meta = {"is_error": error, "is_warning": False, "file": "x.cc", "line_no": 1, "pid": 1, "tid": 1}
    doc = {"key": key, "value": value, "time_ms": 0.1, "namespace": "mlperf::logging",
           "event_type": "POINT_IN_TIME", "metadata": meta}  # fmt: skip
    return ":::MLLOG " + json.dumps(doc) + "\n"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.resolve(tmp_path, env={})
    w.log_dir.mkdir(parents=True)
    return w


def write_run(ws: Workspace, name: str, cfg: RunConfig | None = None, **fields) -> Path:
    """A run.json as core.harness.runner writes it."""
    cfg = cfg or RunConfig(backend="torch", precision="int8")
    folder = ws.log_dir / name
    folder.mkdir()
    doc = {
        "version": 1,
        "run_id": name,
        "status": "complete",
        "started": "2026-11-29T06:00:00+00:00",
        "scenario": cfg.scenario,
        "test_mode": cfg.test_mode,
        "config_ver": cfg.config_ver,
        "audit_test": cfg.audit_test,
        "backend": cfg.backend,
        "precision": cfg.precision,
        "run_args": cfg.run_args(),
        "config": cfg.to_dict(),
        "pid": 1,
        "host": "elsewhere",
        "result": {"valid": True, "samples_per_s": 6.8, "latency_ms": {"p50": 140.0, "p90": 150.5}},
        "accuracy": None,
    }
    doc.update(fields)
    (folder / "run.json").write_text(json.dumps(doc))
    return folder


def test_records_newest_first_with_the_full_config(ws: Workspace) -> None:
    audit = RunConfig(backend="torch", precision="fp8", gpu_batch_size=8, audit_test="TEST01",
                      min_duration=60, extra={"gpu_inference_streams": "2"})  # fmt: skip
    write_run(ws, "a", audit, started="2026-11-29T06:00:00+00:00")
    acc_cfg = RunConfig(test_mode="AccuracyOnly", config_ver="high_accuracy")
    scored = {"mean": 0.86112, "kidney": 0.93, "tumor": 0.79, "target": 0.8608, "passed": True}
    write_run(ws, "b", acc_cfg, started="2026-11-29T07:00:00+00:00", result={"valid": None}, accuracy=scored)
    runs = list_runs(ws)
    assert [r.run_id for r in runs] == ["b", "a"]
    b, a = runs
    assert a.config == audit  # every field, as it ran: what a re-run starts
    assert (a.scenario, a.test_mode, a.backend, a.precision, a.audit_test, a.status) == (
        "Offline", "PerformanceOnly", "torch", "fp8", "TEST01", "complete"
    )  # fmt: skip
    assert a.valid is True and a.result == "VALID" and a.outcome == "VALID"
    assert a.samples_per_s == 6.8 and a.latency_ms == {"p50": 140.0, "p90": 150.5} and a.mean_dice is None
    assert b.config == acc_cfg and b.config_ver == "high_accuracy" and b.valid is None and b.result == ""
    assert b.outcome == "complete" and b.samples_per_s is None
    assert b.accuracy == Accuracy(0.86112, 0.93, 0.79, 0.8608, True) and b.mean_dice == 0.86112
    d = b.to_dict()
    assert d["path"] == str(ws.log_dir / "b") and d["config"] == acc_cfg.to_dict() and d["passes"] is True
    assert json.loads(json.dumps(a.to_dict()))["config"]["audit_test"] == "TEST01"


def test_throughput_is_shown_only_for_a_complete_valid_run(ws: Workspace) -> None:
    """Issue: a cancelled or INVALID run showed 'cancelled 1.573 samples/s' in History."""
    result = {"valid": False, "samples_per_s": 1.573, "latency_ms": {"p90": 700.0}}
    invalid = read_run(write_run(ws, "invalid", result=result))
    cancelled = read_run(write_run(ws, "cancelled", status="cancelled", result={**result, "valid": None}))
    for rec in (invalid, cancelled):
        assert rec.metrics.samples_per_s == 1.573  # what LoadGen measured is kept ...
        assert rec.samples_per_s is None and rec.latency_ms == {}  # ... but is not a result to show
        assert "samples/s" not in rec.summary() and rec.to_dict()["samples_per_s"] is None
        assert not rec.passes()
    assert invalid.outcome == "INVALID" and cancelled.outcome == "cancelled" and cancelled.valid is None


def test_one_rule_for_passing(ws: Workspace) -> None:
    perf = RunRecord("p", ws.log_dir / "p", config=RunConfig(), valid=True)
    assert perf.passes()
    assert not RunRecord("p", ws.log_dir / "p", config=RunConfig(), valid=None).passes()  # no result line
    assert not RunRecord("p", ws.log_dir / "p", status="incomplete", config=RunConfig(), valid=True).passes()
    lo = target_dice("default") - 1e-4

    def acc_run(mean: float, passed: bool | None, mode: str = "AccuracyOnly", valid: bool | None = None,
                **kw) -> RunRecord:  # fmt: skip
        cfg = RunConfig(test_mode=mode, **kw)
        metrics = Metrics(accuracy=Accuracy(mean, passed=passed))
        return RunRecord("a", ws.log_dir / "a", config=cfg, valid=valid, metrics=metrics)

    assert acc_run(0.87, True).passes() and not acc_run(0.87, False).passes()  # the recorded verdict wins
    assert acc_run(0.87, None).passes() and not acc_run(lo, None).passes()  # else the config_ver target
    assert not acc_run(0.86, None, config_ver="high_accuracy").passes()  # 0.86 < 99.9 % of 0.86170
    assert not acc_run(0.87, None).passes(fp32_reference=0.9)  # the model's own FP32 reference
    assert not acc_run(0.87, True, valid=False).passes()  # LoadGen said INVALID
    assert not acc_run(0.87, True, "SubmissionRun").passes()  # a submission run also needs VALID
    assert acc_run(0.87, True, "SubmissionRun", valid=True).passes()
    assert not acc_run(lo, False, "SubmissionRun", valid=True).passes()
    # a TEST01 run is a performance run: its accuracy log is not scored, VALID is what counts
    test01 = RunRecord("t", ws.log_dir / "t", config=RunConfig(audit_test="TEST01"), valid=True)
    assert not test01.scored and test01.passes()


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
    # the process died after LoadGen wrote its summary: its figures are kept, never shown or VALID
    (dead / "mlperf_log_summary.txt").write_text(SUMMARY)
    rec = read_run(dead)
    assert rec.status == "incomplete" and rec.valid is None and rec.metrics.samples_per_s == 54.7212
    assert rec.samples_per_s is None


def test_cancelled_and_failed_are_kept(ws: Workspace) -> None:
    write_run(ws, "c", status="cancelled", result=None)
    write_run(ws, "f", status="failed", result=None, error="sample 3 (case_00041): engine returned NaN")
    by_id = {r.run_id: r for r in list_runs(ws)}
    assert by_id["c"].status == "cancelled" and by_id["c"].config is not None
    assert by_id["f"].status == "failed" and "NaN" in by_id["f"].error and "NaN" in by_id["f"].summary()


def test_effective_loadgen_settings_from_the_detail_log(ws: Workspace) -> None:
    folder = write_run(ws, "t", RunConfig(audit_test="TEST01"))
    lines = [mllog("loadgen_version", "6.0.17 @ abc")]
    lines += [mllog(f"effective_{k}", v) for k, v in EFFECTIVE.items()]
    lines += [mllog("error_invalid_config", "Multiple conf files are used", error=True)]
    (folder / "mlperf_log_detail.txt").write_text("".join(lines))
    rec = read_run(folder)
    assert rec.settings == LoadgenSettings(
        scenario="Offline", test_mode="PerformanceOnly", min_duration_ms=600000, max_duration_ms=0,
        min_query_count=1, max_query_count=0, min_sample_count=1440, samples_per_query=1440,
        target_qps=2.4, target_latency_ns=0, target_latency_percentile=0.99, performance_sample_count=43,
        accuracy_sample_count=43, sample_concatenate_permutation=True, qsl_rng_seed=2085463073848966840,
        sample_index_rng_seed=2747215439041700203, schedule_rng_seed=16159082839903944936,
        accuracy_log_rng_seed=720381539243781796, accuracy_log_probability=0.0,
        accuracy_log_sampling_target=64, loadgen_version="6.0.17 @ abc",
        errors=("error_invalid_config: Multiple conf files are used",),
    )  # fmt: skip
    assert rec.loadgen_errors == ("error_invalid_config: Multiple conf files are used",)
    assert rec.to_dict()["settings"]["min_duration_ms"] == 600000
    assert read_run(write_run(ws, "no-detail")).settings is None


def test_a_config_this_version_cannot_run_is_not_guessed(ws: Workspace) -> None:
    folder = write_run(ws, "odd", config={**RunConfig().to_dict(), "scenario": "Server"}, scenario="Server")
    rec = read_run(folder)
    assert rec.config is None and rec.scenario == "Server" and rec.backend is None


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
    assert (nv_rec.status, nv_rec.scenario, nv_rec.test_mode, nv_rec.valid, nv_rec.samples_per_s) == (
        "complete", "Offline", "PerformanceOnly", True, 54.7212
    )  # fmt: skip
    assert nv_rec.config is None and nv_rec.backend is None  # a foreign folder: nothing is guessed
    assert nv_rec.metrics.accuracy == Accuracy(0.86112, 0.934, 0.7882)
    assert by_id["broken"].status == "broken" and "run.json" in by_id["broken"].error
    assert by_id["half"].status == "incomplete"


def test_missing_log_dir(tmp_path: Path) -> None:
    assert list_runs(Workspace.resolve(tmp_path, env={})) == []
