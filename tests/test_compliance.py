"""core.compliance: one test per 3d-unet rule, each passing and failing, from plain facts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from core.compliance import (
    Compliance,
    dataset_provenance,
    judge_run,
    judge_run_dir,
    model_provenance,
    round_of_seeds,
)
from core.harness.logs import LoadgenSettings
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


def test_judge_run_dir_reads_a_run_folder(tmp_path: Path) -> None:
    assert judge_run_dir(tmp_path).reasons == ("run.json missing or unreadable",)
    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "status": "complete",
                "scenario": "Offline",
                "test_mode": "AccuracyOnly",
                "config_ver": "default",
                "accuracy": {"mean": 0.9},
                "dataset": OFFICIAL_DATA,
                "model_provenance": OFFICIAL_MODEL,
            }
        )
    )
    (tmp_path / "user.conf").write_text("# header\n3d-unet.Offline.target_qps = 0.02\n")
    c = judge_run_dir(tmp_path)
    assert c.compliant is None and c.reasons == (
        "no effective LoadGen settings (mlperf_log_detail.txt missing or unreadable)",
    )
