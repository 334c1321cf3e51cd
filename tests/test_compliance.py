"""core.compliance: one test per 3d-unet rule, each passing and failing, from plain facts; and the one
verdict per run, RunRecord.compliance, read from a run folder's own facts. The run-folder and record
helpers here are shared with the history, status, CLI, audit and submission tests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from core.benchmark import RunConfig
from core.compliance import (
    Compliance,
    dataset_provenance,
    judge_dataset,
    judge_model,
    judge_run,
    model_provenance,
    round_of_seeds,
)
from core.harness.logs import LoadgenSettings
from core.history import Accuracy, Metrics, RunRecord, list_runs, read_run
from core.workspace import Workspace

# the values LoadGen 6.0.17 logs for a full-length Offline run (mlperf.conf applied), transcribed
SEEDS = (2085463073848966840, 2747215439041700203, 16159082839903944936)
OFFLINE = LoadgenSettings(
    scenario="Offline",
    test_mode="PerformanceOnly",
    min_duration_ms=600000,
    max_duration_ms=0,
    min_query_count=1,
    requested_min_query_count=43,
    max_query_count=0,
    samples_per_query=4773,
    performance_sample_count=43,
    accuracy_sample_count=43,
    sample_concatenate_permutation=True,
    qsl_rng_seed=SEEDS[0],
    sample_index_rng_seed=SEEDS[1],
    schedule_rng_seed=SEEDS[2],
    accuracy_log_rng_seed=0,
    accuracy_log_sampling_target=0,
    target_qps=7.23,
    query_count=1,
)
SINGLE = dataclasses.replace(
    OFFLINE,
    scenario="SingleStream",
    min_query_count=7955,
    requested_min_query_count=100,
    samples_per_query=1,
    target_qps=1 / 0.2265,
    query_count=7955,
    early_stopping_met=True,
)
ACCURACY = dataclasses.replace(OFFLINE, test_mode="AccuracyOnly", samples_per_query=43)
OFFICIAL_DATA = {"cases": 43, "official_case_list": True, "synthetic": False}
OFFICIAL_MODEL = {"file": "3dUNetKiTS19.onnx", "md5": "82f0618fde78f9839e7c712274019b4a", "official": True}


def perf(**changes: Any) -> Compliance:
    facts: dict[str, Any] = {
        "scenario": "Offline",
        "test_mode": "PerformanceOnly",
        "status": "complete",
        "valid": True,
        "settings": OFFLINE,
        "dataset": OFFICIAL_DATA,
        "model": OFFICIAL_MODEL,
        "user_conf": {"target_qps": "7.23"},
    }
    facts.update(changes)
    return judge_run(**facts)


def acc(**changes: Any) -> Compliance:
    facts: dict[str, Any] = {
        "scenario": "Offline",
        "test_mode": "AccuracyOnly",
        "status": "complete",
        "settings": ACCURACY,
        "dataset": OFFICIAL_DATA,
        "model": OFFICIAL_MODEL,
        "user_conf": {"target_qps": "7.23"},
        "accuracy_mean": 0.86112,
    }
    facts.update(changes)
    return judge_run(**facts)


def test_compliant_runs() -> None:
    for c in (
        perf(),
        perf(scenario="SingleStream", settings=SINGLE, user_conf={"target_latency": "226.5"}),
        acc(),
        acc(config_ver="high_accuracy"),  # 0.86112 >= 0.999 * 0.86170 = 0.8608383
        perf(
            audit_test="TEST01",
            settings=dataclasses.replace(OFFLINE, audit_config_found=True, accuracy_log_sampling_target=64),
        ),
    ):
        assert c.compliant is True and c.reasons == () and c.label == "compliant", c


@pytest.mark.parametrize(
    ("changes", "reason", "shortened"),
    [
        (
            {"settings": dataclasses.replace(OFFLINE, min_duration_ms=10000)},
            "shortened: min_duration 10 s < 600 s",
            True,
        ),
        (
            {"settings": dataclasses.replace(OFFLINE, requested_min_query_count=4)},
            "shortened: Offline min_query_count 4 < 43",
            True,
        ),
        (
            {"settings": dataclasses.replace(OFFLINE, samples_per_query=4)},
            "Offline samples per query 4 < 43",
            False,
        ),
        (
            {"settings": dataclasses.replace(OFFLINE, max_query_count=100)},
            "shortened: max_query_count 100",
            True,
        ),
        (
            {"settings": dataclasses.replace(OFFLINE, max_duration_ms=60000)},
            "shortened: max_duration 60 s",
            True,
        ),
        (
            {"settings": dataclasses.replace(OFFLINE, performance_sample_count=4)},
            "performance_sample_count 4 != 43",
            False,
        ),
        (
            {"settings": dataclasses.replace(OFFLINE, sample_concatenate_permutation=False)},
            "sample_concatenate_permutation (equal issue) is off",
            False,
        ),
        ({"settings": dataclasses.replace(OFFLINE, qsl_rng_seed=1)}, "RNG seeds are no round's", False),
        (
            {"settings": dataclasses.replace(OFFLINE, errors=("error_invalid_config: Multiple conf files",))},
            "LoadGen logged an error: error_invalid_config",
            False,
        ),
        ({"valid": False}, "LoadGen result INVALID", False),
        ({"status": "cancelled"}, "run cancelled", False),
        (
            {"dataset": {"cases": 4, "official_case_list": False, "synthetic": False}},
            "case list is not the official 43 cases (4 cases)",
            False,
        ),
        ({"dataset": {"cases": 43, "official_case_list": True, "synthetic": True}}, "synthetic data", False),
        ({"model": {"md5": "abc", "official": False}}, "model is not the official", False),
        (
            {"user_conf": {"target_qps": "7", "min_duration": "10000"}},
            "user.conf overrides min_duration",
            False,
        ),
        ({"audit_test": "TEST05"}, "TEST05 is retired", False),
        (
            {"settings": dataclasses.replace(OFFLINE, audit_config_found=True)},
            "an audit.config was applied",
            False,
        ),
        ({"audit_test": "TEST01"}, "TEST01 audit.config not applied", False),
    ],
)
def test_offline_performance_rules(changes: dict[str, Any], reason: str, shortened: bool) -> None:
    c = perf(**changes)
    assert c.compliant is False and c.shortened is shortened
    assert any(r.startswith(reason) for r in c.reasons), c.reasons
    assert len(c.reasons) == 1, c.reasons  # each rule is judged on its own
    assert c.label == ("shortened" if shortened else "not compliant")


def test_single_stream_rules() -> None:
    ok = {"scenario": "SingleStream", "user_conf": {"target_latency": "226.5"}}
    c = perf(settings=dataclasses.replace(SINGLE, query_count=215, min_duration_ms=60000), **ok)
    assert c.compliant is False and c.shortened
    assert c.reasons == ("shortened: min_duration 60 s < 600 s", "SingleStream ran 215 queries < 1,024")
    c = perf(settings=dataclasses.replace(SINGLE, early_stopping_met=False), **ok)
    assert c.reasons == ("SingleStream early-stopping estimate not met",)
    # the Offline query-count rules do not apply to SingleStream, nor the 1,024 to Offline
    assert perf(settings=dataclasses.replace(SINGLE, requested_min_query_count=4), **ok).compliant is True
    assert perf(settings=dataclasses.replace(OFFLINE, query_count=1)).compliant is True


def test_accuracy_rules() -> None:
    c = acc(accuracy_mean=0.85)
    assert c.compliant is False and c.reasons == ("accuracy 0.85000 < 0.853083 (99 % of 0.86170)",)
    c = acc(accuracy_mean=0.8605, config_ver="high_accuracy")
    assert c.reasons == ("accuracy 0.86050 < 0.860838 (99.9 % of 0.86170)",)
    assert acc(accuracy_mean=0.8531).compliant is True  # just above 0.853083
    c = acc(accuracy_mean=None)
    assert c.reasons == ("no accuracy result",)
    c = acc(settings=dataclasses.replace(ACCURACY, accuracy_sample_count=4))
    assert c.reasons == ("accuracy run covers 4 samples, the dataset has 43",)
    # not the official model: no closed-division target to judge, the model rule says why
    c = acc(accuracy_mean=0.45, model={"md5": "abc", "official": False})
    assert len(c.reasons) == 1 and c.reasons[0].startswith("model is not the official")
    # an accuracy run is not held to the performance rules (its min_duration is never reached)
    assert (
        acc(settings=dataclasses.replace(ACCURACY, min_duration_ms=10, samples_per_query=4)).compliant is True
    )


def test_unknown_evidence_is_not_compliant_nor_broken() -> None:
    assert perf(status="running") == Compliance(None, ("run not finished",))
    c = perf(settings=None)
    assert c.compliant is None and c.label == "unknown" and c.reasons[0].startswith("no effective LoadGen")
    c = perf(dataset=None, model=None, user_conf=None)
    assert c.compliant is None
    assert c.reasons == (
        "dataset provenance not recorded",
        "model provenance not recorded",
        "user.conf not found",
    )
    assert perf(dataset={**OFFICIAL_DATA, "synthetic": None}).compliant is None
    # a broken rule wins over missing evidence
    assert perf(dataset=None, valid=False).compliant is False


def test_round_of_seeds_and_dict_round_trip() -> None:
    assert round_of_seeds(SEEDS) == "v6.1"
    assert round_of_seeds((2465351861681999779, 14276810075590677512, 3936089224930324775)) == "v6.0"
    assert round_of_seeds((1, 2, 3)) is None
    c = perf(valid=False)
    assert Compliance.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.line == "not compliant: LoadGen result INVALID"


def test_provenance(tmp_path: Path) -> None:
    ws = Workspace.resolve(tmp_path, env={})
    from core.cases import OFFICIAL_INFERENCE

    assert dataset_provenance(ws, OFFICIAL_INFERENCE) == {
        "cases": 43,
        "official_case_list": True,
        "synthetic": None,
    }
    (ws.data_dir / "case_00000").mkdir(parents=True)
    assert dataset_provenance(ws, ["case_00000"])["synthetic"] is False
    (ws.data_dir / "synthetic.json").write_text("{}")  # the demo generator's manifest
    assert dataset_provenance(ws, ["case_00000"]) == {
        "cases": 1,
        "official_case_list": False,
        "synthetic": True,
    }
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not the model")
    prov = model_provenance(model)
    assert prov == {"file": "m.onnx", "md5": "d5057c67494afc55ff285468b872702f", "official": False}
    assert model_provenance(None) == {"file": None, "md5": None, "official": None}


# --- the verdict of a run record --------------------------------------------------------------------

SYNTHETIC_DATA = {"cases": 4, "official_case_list": False, "synthetic": True}  # the demo workspace
SHORT = dataclasses.replace(OFFLINE, min_duration_ms=10000, requested_min_query_count=4)  # the demo's run

# LoadgenSettings field -> the detail-log key LoadGen writes it under
_DETAIL_KEYS = {
    "requested_min_query_count": "requested_min_query_count",
    "query_count": "result_query_count",
    "early_stopping_met": "early_stopping_met",
}
_NOT_LOGGED = ("loadgen_version", "mean_latency_ns", "audit_config_found", "errors")


def detail_log(settings: LoadgenSettings) -> str:
    """mlperf_log_detail.txt lines that LoadGen would write for ``settings`` (a transcription of its
    :::MLLOG layout: effective_*, requested_*, result_* keys)."""
    out = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None or f.name in _NOT_LOGGED:
            continue
        key = _DETAIL_KEYS.get(f.name, f"effective_{f.name}")
        meta = {"is_error": False, "is_warning": False, "file": "x.cc", "line_no": 1, "pid": 1, "tid": 1}
        doc = {"key": key, "value": value, "time_ms": 0.1, "namespace": "mlperf::logging",
               "event_type": "POINT_IN_TIME", "metadata": meta}  # fmt: skip
        out.append(":::MLLOG " + json.dumps(doc))
    return "\n".join(out) + "\n"


def write_run_folder(
    folder: Path,
    cfg: RunConfig | None = None,
    *,
    settings: LoadgenSettings | None = OFFLINE,
    dataset: dict[str, Any] | None = OFFICIAL_DATA,
    model: dict[str, Any] | None = OFFICIAL_MODEL,
    user_conf: str | None = "# unet3d\n3d-unet.Offline.target_qps = 7.23\n",
    **fields: Any,
) -> Path:
    """A run folder as core.harness.runner leaves it: run.json with the provenance, user.conf and the
    detail log LoadGen wrote (a compliant full-length Offline run unless told otherwise)."""
    cfg = cfg or RunConfig(backend="torch", precision="fp8", gpu_batch_size=8)
    folder.mkdir(parents=True)
    doc: dict[str, Any] = {
        "version": 1,
        "run_id": folder.name,
        "status": "complete",
        "started": "2026-12-01T06:00:00+00:00",
        "scenario": cfg.scenario,
        "test_mode": cfg.test_mode,
        "config_ver": cfg.config_ver,
        "audit_test": cfg.audit_test,
        "backend": cfg.backend,
        "precision": cfg.precision,
        "run_args": cfg.run_args(),
        "config": cfg.to_dict(),
        "model_sha256": "m" * 64,
        "dataset": dataset,
        "model_provenance": model,
        "result": {"valid": True, "samples_per_s": 6.8, "latency_ms": {"p90": 150.5}},
        "accuracy": None,
    }
    doc.update(fields)
    (folder / "run.json").write_text(json.dumps(doc))
    if user_conf is not None:
        (folder / "user.conf").write_text(user_conf)
    if settings is not None:
        (folder / "mlperf_log_detail.txt").write_text(detail_log(settings))
    return folder


def record(
    name: str,
    cfg: RunConfig | None = None,
    *,
    settings: LoadgenSettings | None = OFFLINE,
    dataset: dict[str, Any] | None = OFFICIAL_DATA,
    model: dict[str, Any] | None = OFFICIAL_MODEL,
    user_conf: dict[str, str] | None = None,
    started: str = "2026-12-01T06:00:00+00:00",
    path: Path | None = None,
    model_sha256: str = "m",
    **kw: Any,
) -> RunRecord:
    """A RunRecord with the facts of a compliant full-length Offline run unless told otherwise."""
    cfg = cfg or RunConfig(backend="torch", precision="fp8", gpu_batch_size=8)
    if "metrics" not in kw and cfg.test_mode == "AccuracyOnly":
        kw["metrics"] = Metrics(accuracy=Accuracy(0.86112, 0.93, 0.79, passed=True))
    kw.setdefault("valid", None if cfg.test_mode == "AccuracyOnly" else True)
    if user_conf is None:
        user_conf = {"target_qps": "7.23"}
    return RunRecord(
        name,
        path or Path("/logs") / name,
        started,
        config=cfg,
        settings=settings,
        dataset=dataset,
        model_provenance=model,
        user_conf=user_conf,
        model_sha256=model_sha256,
        **kw,
    )


def test_detail_log_transcription_reads_back(tmp_path: Path) -> None:
    from core.harness.logs import loadgen_settings

    for n, s in enumerate((OFFLINE, SINGLE, SHORT)):
        (tmp_path / f"{n}").mkdir()
        (tmp_path / f"{n}" / "mlperf_log_detail.txt").write_text(detail_log(s))
        assert loadgen_settings(tmp_path / f"{n}") == s


def test_run_record_compliance_from_its_own_folder(tmp_path: Path) -> None:
    """One verdict per run, from the record's facts (settings from the detail log, run.json provenance,
    user.conf, DICE): compliant, shortened (and still passing), synthetic data."""
    ok = read_run(write_run_folder(tmp_path / "full"))
    assert ok is not None and ok.compliance == Compliance(True) and ok.compliance.label == "compliant"
    assert ok.compliance is ok.compliance  # computed once
    assert ok.user_conf == {"target_qps": "7.23"} and ok.settings == OFFLINE
    assert ok.dataset == OFFICIAL_DATA and ok.model_provenance == OFFICIAL_MODEL
    d = ok.to_dict()
    assert d["compliance"] == {"compliant": True, "label": "compliant", "shortened": False, "reasons": []}

    short = read_run(write_run_folder(tmp_path / "short", settings=SHORT))
    assert short is not None and short.passes() is True  # a VALID 10 s run passes ...
    assert short.compliance.label == "shortened" and short.compliance.compliant is False  # ... shortened
    assert short.compliance.reasons == (
        "shortened: min_duration 10 s < 600 s",
        "shortened: Offline min_query_count 4 < 43",
    )
    assert short.compliance.line == "shortened: min_duration 10 s < 600 s"

    demo_acc = RunConfig(test_mode="AccuracyOnly")
    scored = {"mean": 0.454, "kidney": 0.6, "tumor": 0.3, "target": 0.45, "passed": True}
    demo = read_run(
        write_run_folder(
            tmp_path / "demo",
            demo_acc,
            settings=dataclasses.replace(ACCURACY, accuracy_sample_count=4, performance_sample_count=4),
            dataset=SYNTHETIC_DATA,
            model={"file": "3dUNetKiTS19.onnx", "md5": "abc", "official": False},
            result={"valid": None},
            accuracy=scored,
        )
    )
    assert demo is not None and demo.passes() is True  # the demo model's own target is met
    assert demo.compliance.label == "not compliant" and not demo.compliance.shortened
    assert demo.compliance.reasons == (
        "accuracy run covers 4 samples, the dataset has 43",
        "case list is not the official 43 cases (4 cases)",
        "synthetic data (demo phantoms), not KiTS19",
        "model is not the official 3dunet_kits19_128x128x128_dynbatch.onnx (md5 abc): open division only",
    )
    # the auditor's new-dataset / new-weights runs set those rules aside, and only those
    assert demo.judge(waive=("dataset", "model")) == Compliance(True)
    assert demo.judge(waive=("dataset",)).reasons == (demo.compliance.reasons[-1],)
    with pytest.raises(ValueError, match="cannot waive"):
        demo.judge(waive=("duration",))

    # a run made before provenance was recorded: nothing broken, nothing proven
    old = read_run(write_run_folder(tmp_path / "old", dataset=None, model=None, user_conf=None))
    assert old is not None and old.compliance.label == "unknown"
    assert old.compliance.reasons == (
        "dataset provenance not recorded",
        "model provenance not recorded",
        "user.conf not found",
    )
    # an unfinished or broken folder is never compliant
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    broken = read_run(tmp_path / "broken")
    assert broken is not None and broken.compliance.compliant is False
    assert broken.compliance.reasons[0].startswith("run folder broken: run.json:")
    cancelled = read_run(write_run_folder(tmp_path / "cancelled", status="cancelled"))
    assert cancelled is not None and cancelled.compliance.reasons == ("run cancelled",)
    ws = Workspace.resolve(tmp_path / "ws", env={})
    write_run_folder(ws.log_dir / "a", settings=SHORT)
    assert [r.compliance.label for r in list_runs(ws)] == ["shortened"]


def test_dataset_and_model_alone() -> None:
    assert judge_dataset(OFFICIAL_DATA) == Compliance(True)
    assert judge_dataset(SYNTHETIC_DATA).reasons == (
        "case list is not the official 43 cases (4 cases)",
        "synthetic data (demo phantoms), not KiTS19",
    )
    assert judge_dataset(None).compliant is None
    assert judge_model(OFFICIAL_MODEL) == Compliance(True)
    assert judge_model({"md5": "abc", "official": False}).compliant is False
