"""core.submission: TEST01 verification, truncation, staging and the pre-check, on real LoadGen logs.

The runs are made once per module with the real LoadGen, each in a fresh process (as the CLI makes
them, so their detail logs carry no "Multiple conf files" error), on the tiny in-memory set of
tests.test_harness_fakes with the perfect engine. Layouts and formats are checked against
transcriptions of MLCommons' rules written out here, not against core.submission.rules.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from core.accuracy import score_log
from core.benchmark import RunConfig
from core.errors import MissingInputError, UsageError
from core.harness.isolated import run_benchmark_isolated
from core.jobs import CancelToken
from core.submission import check as chk
from core.submission import stage as stg
from core.submission.stage import StageOptions, relative_tree, stage
from core.submission.test01 import verify_accuracy, verify_performance, write_test01
from core.submission.truncate import truncate_tree
from core.workspace import Workspace
from tests.test_harness_fakes import make_data

FAKES = "tests.test_harness_fakes"
N = 3  # cases of the tiny set

# what the checker's accuracy.txt patterns are (tools/submission/submission_checker/constants.py)
DICE_LINE = re.compile(r"Accuracy\:\s*mean\s*=\s*([\d\.]+).*")
HASH_LINE = re.compile(r"^hash=([\w\d]+)$")
# systems/<system>.json keys the checker requires (SYSTEM_DESC_REQUIRED_FIELDS), transcribed
SYSTEM_KEYS = [
    "division",
    "submitter",
    "status",
    "system_name",
    "number_of_nodes",
    "host_processor_model_name",
    "host_processors_per_node",
    "host_processor_core_count",
    "host_memory_capacity",
    "host_storage_capacity",
    "host_storage_type",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_memory_capacity",
    "framework",
    "operating_system",
    "system_type",
    "other_software_stack",
    "host_processor_frequency",
    "host_processor_caches",
    "host_memory_configuration",
    "host_processor_interconnect",
    "host_networking",
    "host_networking_topology",
    "accelerator_frequency",
    "accelerator_host_interconnect",
    "accelerator_interconnect",
    "accelerator_interconnect_topology",
    "accelerator_memory_configuration",
    "accelerator_on-chip_memories",
    "cooling",
    "hw_notes",
    "sw_notes",
    "host_network_card_count",
    "system_type_detail",
]
MEASUREMENT_KEYS = [
    "input_data_types",
    "retraining",
    "starting_weights_filename",
    "weight_data_types",
    "weight_transformations",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ws = Workspace.resolve(tmp_path_factory.mktemp("ws"), env={})
    fast = RunConfig(scenario="Offline", offline_expected_qps=60, min_duration=0.3, min_query_count=N)
    out: dict[str, Any] = {"ws": ws}
    for name, cfg in (
        ("accuracy", RunConfig(scenario="Offline", test_mode="AccuracyOnly")),
        ("performance", fast),
        ("test01", fast.with_(audit_test="TEST01")),
    ):
        result = run_benchmark_isolated(
            ws,
            cfg,
            lambda e: None,
            CancelToken(),
            engine_factory=f"{FAKES}:perfect_engine",
            data_factory=f"{FAKES}:tiny_data",
        )
        assert result.status == "complete" and not result.loadgen_errors, (name, result.loadgen_errors)
        out[name] = result.log_dir
    return out


def scorer(ws: Workspace, config_ver: str = "default"):
    def score(log: Path, csv: Path) -> Any:
        return score_log(ws, log, None, config_ver, data=make_data(), out_csv=csv, subset=True)

    return score


def _rewrite_entries(src: Path, dst: Path, change) -> None:
    """Copy an accuracy log, passing each entry through ``change(entry, i) -> entry``."""
    lines = src.read_text().splitlines()
    out, i = [], 0
    for line in lines:
        s = line.strip().rstrip(",")
        if s.startswith("{"):
            e = change(json.loads(s), i)
            i += 1
            out.append(json.dumps(e) + ("," if line.rstrip().endswith(",") else ""))
        else:
            out.append(line)
    dst.write_text("\n".join(out) + "\n")


def _run_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- TEST01 ---------------------------------------------------------------------------------------


def test_verify_accuracy_matching_and_broken(runs: dict[str, Any], tmp_path: Path) -> None:
    acc, t01 = runs["accuracy"] / "mlperf_log_accuracy.json", runs["test01"] / "mlperf_log_accuracy.json"
    n_logged = len(json.loads(t01.read_text()))
    assert n_logged >= N  # the audit config logged the sampled responses
    ok = verify_accuracy(acc, t01)
    assert ok.passed and ok.lines[-1] == "TEST PASS"
    assert f"num_perf_log_entries = {n_logged}" in ok.lines and "num_perf_log_data_mismatch = 0" in ok.lines
    assert f"num_acc_log_entries = {N}" in ok.lines and "num_missing_qsl_idxs = 0" in ok.lines

    broken = tmp_path / "broken.json"

    def flip_first(e: dict, i: int) -> dict:  # one voxel of the first logged response changed
        if i == 0:
            e["data"] = ("01" if e["data"][:2] == "00" else "00") + e["data"][2:]
        return e

    _rewrite_entries(t01, broken, flip_first)
    bad = verify_accuracy(acc, broken)
    assert not bad.passed and bad.lines[-1] == "TEST FAIL"
    assert "num_perf_log_data_mismatch = 1" in bad.lines

    unknown = tmp_path / "unknown.json"
    _rewrite_entries(t01, unknown, lambda e, i: {**e, "qsl_idx": 40} if i == 0 else e)
    assert "num_missing_qsl_idxs = 1" in verify_accuracy(acc, unknown).lines
    assert verify_accuracy(acc, tmp_path / "nope.json").lines == (
        f"missing {tmp_path / 'nope.json'}",
        "TEST FAIL",
    )


def _detail_with(src: Path, dst: Path, **values: Any) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    lines, seen = [], set()
    for line in (src / "mlperf_log_detail.txt").read_text().splitlines():
        obj = json.loads(line[len(":::MLLOG ") :])
        if obj["key"] in values:
            obj["value"] = values[obj["key"]]
            seen.add(obj["key"])
        lines.append(":::MLLOG " + json.dumps(obj))
    meta = {"is_error": False, "is_warning": False}
    lines += [
        ":::MLLOG " + json.dumps({"key": k, "value": v, "metadata": meta})
        for k, v in values.items()
        if k not in seen
    ]
    (dst / "mlperf_log_detail.txt").write_text("\n".join(lines) + "\n")
    return dst


def test_verify_performance_delta(runs: dict[str, Any], tmp_path: Path) -> None:
    perf = runs["performance"]
    ref = _detail_with(perf, tmp_path / "ref", result_samples_per_second=50.0)
    ok = verify_performance(ref, _detail_with(perf, tmp_path / "a", result_samples_per_second=45.5))
    assert ok.passed and ok.lines == (
        "Verifying performance.",
        "Reference score = 50.0",
        "Test score = 45.5",
        "TEST PASS",
    )
    assert not verify_performance(
        ref, _detail_with(perf, tmp_path / "b", result_samples_per_second=44.9)
    ).passed
    assert not verify_performance(
        ref, _detail_with(perf, tmp_path / "c", result_samples_per_second=55.1)
    ).passed
    invalid = verify_performance(ref, _detail_with(perf, tmp_path / "d", result_validity="INVALID"))
    assert invalid.lines[-1].startswith("TEST FAIL: Invalid results")
    other = verify_performance(
        ref,
        _detail_with(perf, tmp_path / "e", effective_scenario="SingleStream", early_stopping_latency_ss=1),
    )
    assert other.lines[-1] == "TEST FAIL: Test and reference scenarios do not match!"
    # SingleStream: scored by the early-stopping latency; 20 % allowed at or under 200 us, else 10 %
    ss = {"effective_scenario": "SingleStream"}
    fast_ref = _detail_with(perf, tmp_path / "f", early_stopping_latency_ss=200_000, **ss)
    assert verify_performance(
        fast_ref, _detail_with(perf, tmp_path / "g", early_stopping_latency_ss=235_000, **ss)
    ).passed
    slow_ref = _detail_with(perf, tmp_path / "h", early_stopping_latency_ss=200_001, **ss)
    assert not verify_performance(
        slow_ref, _detail_with(perf, tmp_path / "i", early_stopping_latency_ss=225_000, **ss)
    ).passed


def test_write_test01_deterministic(runs: dict[str, Any], tmp_path: Path) -> None:
    res = write_test01(
        tmp_path, runs["accuracy"], runs["performance"], runs["test01"], score=scorer(runs["ws"])
    )
    assert res.accuracy.passed and res.fallback is None and res.out_dir == tmp_path / "TEST01"
    assert relative_tree(tmp_path) == [
        "TEST01/accuracy/accuracy.txt",
        "TEST01/accuracy/mlperf_log_accuracy.json",
        "TEST01/performance/run_1/mlperf_log_detail.txt",
        "TEST01/performance/run_1/mlperf_log_summary.txt",
        "TEST01/verify_accuracy.txt",
        "TEST01/verify_performance.txt",
    ]
    assert "TEST PASS" in [
        x.strip() for x in (tmp_path / "TEST01/verify_accuracy.txt").read_text().splitlines()
    ]
    acc_line = (tmp_path / "TEST01/accuracy/accuracy.txt").read_text()
    assert float(DICE_LINE.match(acc_line).group(1)) == 1.0  # the perfect engine's sampled responses
    assert (tmp_path / "TEST01/accuracy/mlperf_log_accuracy.json").read_bytes() == (
        runs["test01"] / "mlperf_log_accuracy.json"
    ).read_bytes()


@pytest.mark.parametrize(
    ("corrupt", "config_ver", "passes"), [("voxel", "high_accuracy", True), ("zeros", "default", False)]
)
def test_write_test01_fallback(
    runs: dict[str, Any], tmp_path: Path, corrupt: str, config_ver: str, passes: bool
) -> None:
    """A TEST01 run whose responses differ: the deterministic check fails and the documented fallback
    compares the DICE of the sampled cases (one voxel: within 0.1 %; an empty response: far off)."""
    t01 = _run_copy(runs["test01"], tmp_path / "t01")

    def change(e: dict, i: int) -> dict:
        if corrupt == "voxel" and i == 0:
            e["data"] = ("01" if e["data"][:2] == "00" else "00") + e["data"][2:]
        elif corrupt == "zeros" and e["qsl_idx"] == 0:
            e["data"] = "00" * (len(e["data"]) // 2)
        return e

    _rewrite_entries(runs["test01"] / "mlperf_log_accuracy.json", t01 / "mlperf_log_accuracy.json", change)
    out = tmp_path / "out"
    res = write_test01(
        out,
        runs["accuracy"],
        runs["performance"],
        t01,
        config_ver=config_ver,
        score=scorer(runs["ws"], config_ver),
    )
    assert not res.accuracy.passed and res.fallback is not None
    assert res.fallback.allowed_percent == (0.1 if config_ver == "high_accuracy" else 1.0)
    assert res.fallback.passed is passes and res.accuracy_passed is passes
    names = sorted(p.name for p in (out / "TEST01/accuracy").iterdir())
    assert names == [
        "accuracy.txt",
        "baseline_accuracy.txt",
        "compliance_accuracy.txt",
        "mlperf_log_accuracy.json",
    ]
    base = float(DICE_LINE.match((out / "TEST01/accuracy/baseline_accuracy.txt").read_text()).group(1))
    comp = float(DICE_LINE.match((out / "TEST01/accuracy/compliance_accuracy.txt").read_text()).group(1))
    assert res.fallback.baseline == base == 1.0 and res.fallback.compliance < 1.0
    assert comp == round(res.fallback.compliance, 5)  # the line the checker parses
    assert (abs(1 - base / comp) * 100 <= res.fallback.allowed_percent) is passes  # the checker's formula


# --- truncation -----------------------------------------------------------------------------------


def test_truncate_tree_as_the_official_tool(tmp_path: Path) -> None:
    tree = tmp_path / "sub"
    acc = tree / "open/ORG/results/S/3d-unet-99/Offline/accuracy"
    acc.mkdir(parents=True)
    log = bytes(range(48, 58)) * 2000  # 20,000 ASCII bytes
    (acc / "mlperf_log_accuracy.json").write_bytes(log)
    (acc / "accuracy.txt").write_text("Accuracy: mean = 0.86000, kidney = 0.9, tumor = 0.8\n")
    small = tree / "open/ORG/results/S/3d-unet-99/Offline/TEST01/accuracy"
    small.mkdir(parents=True)
    (small / "mlperf_log_accuracy.json").write_bytes(b"[\n]\n")
    (small / "accuracy.txt").write_text("Accuracy: mean = 1.00000\n")
    done = truncate_tree(tree)
    assert sorted(p.parent for p in done) == sorted([acc, small])
    assert (acc / "mlperf_log_accuracy.json").read_bytes() == log[:4096] + b"\n\n...\n\n" + log[-4096:]
    assert (small / "mlperf_log_accuracy.json").read_bytes() == b"[\n]\n"  # under 4,096 bytes: kept whole
    full = tmp_path / "sub.full/open/ORG/results/S/3d-unet-99/Offline/accuracy/mlperf_log_accuracy.json"
    assert full.read_bytes() == log
    text = (acc / "accuracy.txt").read_text()
    assert text == (
        f"Accuracy: mean = 0.86000, kidney = 0.9, tumor = 0.8\n\nhash={hashlib.sha256(log).hexdigest()}\n"
    )
    assert truncate_tree(tree) == []  # hashed and small: left alone


# --- staging --------------------------------------------------------------------------------------

SCEN = "open/ORG/results/SYS/3d-unet-99/Offline"
V6_FILES = sorted(
    [
        "open/ORG/calibration.md",
        "open/ORG/src/README.md",
        "open/ORG/systems/SYS.json",
        f"{SCEN}/README.md",
        f"{SCEN}/measurements.json",
        f"{SCEN}/user.conf",
        f"{SCEN}/performance/run_1/mlperf_log_detail.txt",
        f"{SCEN}/performance/run_1/mlperf_log_summary.txt",
        f"{SCEN}/accuracy/accuracy.txt",
        f"{SCEN}/accuracy/mlperf_log_accuracy.json",
        f"{SCEN}/accuracy/mlperf_log_detail.txt",
        f"{SCEN}/accuracy/mlperf_log_summary.txt",
        f"{SCEN}/TEST01/verify_accuracy.txt",
        f"{SCEN}/TEST01/verify_performance.txt",
        f"{SCEN}/TEST01/accuracy/accuracy.txt",
        f"{SCEN}/TEST01/accuracy/mlperf_log_accuracy.json",
        f"{SCEN}/TEST01/performance/run_1/mlperf_log_detail.txt",
        f"{SCEN}/TEST01/performance/run_1/mlperf_log_summary.txt",
    ]
)


@pytest.fixture(scope="module")
def staged(runs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> stg.StageResult:
    out = tmp_path_factory.mktemp("stage") / "sub"
    return stage(runs["ws"], StageOptions(out=out, submitter="ORG", system_name="SYS"), data=make_data())


def test_stage_tree_file_by_file(runs: dict[str, Any], staged: stg.StageResult) -> None:
    out = staged.out
    assert staged.division == "open"  # the runs' model is not the official one
    assert staged.version == "v6.1"  # the seeds of the installed LoadGen's mlperf.conf
    assert relative_tree(out) == V6_FILES
    assert relative_tree(staged.full_logs) == [
        f"{SCEN}/TEST01/accuracy/mlperf_log_accuracy.json",
        f"{SCEN}/accuracy/mlperf_log_accuracy.json",
    ]
    for rel, run in ((f"{SCEN}/accuracy", runs["accuracy"]), (f"{SCEN}/TEST01/accuracy", runs["test01"])):
        full = (run / "mlperf_log_accuracy.json").read_bytes()
        assert (staged.full_logs / rel / "mlperf_log_accuracy.json").read_bytes() == full
        assert (out / rel / "mlperf_log_accuracy.json").read_bytes() == full[:4096] + b"\n\n...\n\n" + full[
            -4096:
        ]
        lines = (out / rel / "accuracy.txt").read_text().splitlines()
        assert float(DICE_LINE.match(lines[0]).group(1)) == 1.0
        assert [HASH_LINE.match(x).group(1) for x in lines if HASH_LINE.match(x)] == [
            hashlib.sha256(full).hexdigest()
        ]
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (out / SCEN / "performance/run_1" / name).read_bytes() == (
            runs["performance"] / name
        ).read_bytes()
        assert (out / SCEN / "TEST01/performance/run_1" / name).read_bytes() == (
            runs["test01"] / name
        ).read_bytes()
    assert (out / SCEN / "user.conf").read_bytes() == (runs["performance"] / "user.conf").read_bytes()
    m = json.loads((out / SCEN / "measurements.json").read_text())
    assert sorted(m) == sorted(MEASUREMENT_KEYS) and all(m.values())
    assert m["weight_data_types"] == "fp32" and m["retraining"] == "No"
    desc = json.loads((out / "open/ORG/systems/SYS.json").read_text())
    assert sorted(desc) == sorted(SYSTEM_KEYS)
    assert (desc["division"], desc["submitter"], desc["system_name"], desc["system_type"]) == (
        "open",
        "ORG",
        "SYS",
        "datacenter",
    )
    assert desc["cooling"].startswith("TO BE FILLED") and "cooling" in staged.to_fill
    readme = (out / SCEN / "README.md").read_text()
    assert "shortened: min_duration 0.3 s < 600 s" in readme and runs["performance"].name in readme
    assert "unet3d run --benchmarks=3d-unet --scenarios=Offline" in readme
    assert "TEST PASS" in (out / SCEN / "TEST01/verify_accuracy.txt").read_text()
    assert not list(out.parent.glob(".sub*"))  # no temporary folders left


def test_stage_v51_layout(runs: dict[str, Any], tmp_path: Path) -> None:
    res = stage(
        runs["ws"],
        StageOptions(out=tmp_path / "s", submitter="ORG", system_name="SYS", version="v5.1"),
        data=make_data(),
    )
    assert res.version == "v5.1" and any("seeds of v6.1" in n for n in res.notes)
    comp = "open/ORG/compliance/SYS/3d-unet-99/Offline"
    meas = "open/ORG/measurements/SYS/3d-unet-99/Offline"
    v51 = []
    for f in V6_FILES:
        if f.startswith(f"{SCEN}/TEST01/"):
            f = f.replace(SCEN, comp)
        elif f.endswith(("/README.md", "/user.conf", "/measurements.json")) and f.startswith(SCEN):
            f = f.replace(SCEN, meas).replace("measurements.json", "SYS_Offline.json")
        v51.append(f.replace("open/ORG/src/", "open/ORG/code/"))
    assert relative_tree(res.out) == sorted(v51)


def test_stage_refusals_leave_nothing(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = runs["ws"]
    with pytest.raises(UsageError, match="no compliant runs for the closed division"):
        stage(ws, StageOptions(out=tmp_path / "c", submitter="ORG", system_name="SYS", division="closed"))
    (tmp_path / "exists").mkdir()
    with pytest.raises(UsageError, match="exists"):
        stage(ws, StageOptions(out=tmp_path / "exists", submitter="ORG", system_name="SYS"))
    with pytest.raises(UsageError, match="not a usable folder name"):
        stage(ws, StageOptions(out=tmp_path / "x", submitter="A/B", system_name="SYS"))
    empty = Workspace.resolve(tmp_path / "empty", env={})
    with pytest.raises(MissingInputError, match="no runs to stage"):
        stage(empty, StageOptions(out=tmp_path / "y", submitter="ORG", system_name="SYS"))

    def boom(**_: Any) -> dict:
        raise OSError(28, "No space left on device", "systems/SYS.json")

    monkeypatch.setattr(stg, "system_description", boom)
    with pytest.raises(OSError, match="No space left"):
        stage(ws, StageOptions(out=tmp_path / "half", submitter="ORG", system_name="SYS"), data=make_data())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]  # no half tree, no temp folder


def test_force_replaces_a_tree_whole(runs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    res = stage(
        runs["ws"], StageOptions(out=out, submitter="ORG", system_name="SYS", force=True), data=make_data()
    )
    assert relative_tree(res.out) == V6_FILES
    # the tree, its full logs and its manifest; no stale check record of the old tree
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "s.full", "s.stage.json"]


# --- pre-check ------------------------------------------------------------------------------------


def test_precheck_of_the_staged_tree(staged: stg.StageResult) -> None:
    findings = chk.precheck(staged.out)
    assert [f.line for f in findings if f.level == "error"] == []
    warnings = [f.line for f in findings]
    assert any("shortened: min_duration 0.3 s < 600 s" in w for w in warnings)
    assert any("a person must fill in: " in w and "cooling" in w for w in warnings)
    assert any(f"accuracy run covers {N} samples, not 43" in w for w in warnings)


def _broken_copy(staged: stg.StageResult, tmp_path: Path) -> Path:
    root = tmp_path / "b"
    shutil.copytree(staged.out, root)
    shutil.copytree(staged.full_logs, tmp_path / "b.full")
    return root


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda r: (r / SCEN / "accuracy/mlperf_log_detail.txt").unlink(),
            f"{SCEN}/accuracy/mlperf_log_detail.txt: missing",
        ),
        (lambda r: (r / SCEN / "user.conf").write_text(""), f"{SCEN}/user.conf: is empty"),
        (
            lambda r: shutil.copy(
                r.with_name("b.full") / SCEN / "accuracy/mlperf_log_accuracy.json",
                r / SCEN / "accuracy/mlperf_log_accuracy.json",
            ),
            "is not truncated",
        ),
        (
            lambda r: (r / SCEN / "accuracy/accuracy.txt").write_text("Accuracy: mean = 1.0\nhash=00\n"),
            "hash does not match the full log",
        ),
        (
            lambda r: (r / SCEN / "accuracy/accuracy.txt").write_text("DICE 1.0\n"),
            "has no 'Accuracy: mean = ...' line",
        ),
        (lambda r: (r / "open/ORG/systems/SYS.json").unlink(), "open/ORG/systems/SYS.json: missing"),
        (lambda r: shutil.rmtree(r / "open/ORG/src"), "open/ORG/src: the source folder is missing"),
        (lambda r: (r / "stray.txt").write_text("x"), "files outside the division folders"),
        (
            lambda r: (r / SCEN / "TEST01/verify_accuracy.txt").write_text("TEST FAIL\n"),
            # the open division needs no TEST01: a warning
            f"warning: {SCEN}/TEST01/accuracy: deterministic check failed and the fallback files differ",
        ),
        (
            lambda r: (r / SCEN / "measurements.json").write_text('{"retraining": "No"}'),
            "measurements.json: field input_data_types needs a value",
        ),
    ],
)
def test_precheck_finds_each_defect(staged: stg.StageResult, tmp_path: Path, damage, expected: str) -> None:
    root = _broken_copy(staged, tmp_path)
    damage(root)
    found = [f.line for f in chk.precheck(root)]
    level = "warning" if expected.startswith("warning: ") else "error"
    assert any(
        line.startswith(f"{level}: ") and expected.removeprefix("warning: ") in line for line in found
    ), found


def test_precheck_against_another_rounds_seeds(staged: stg.StageResult) -> None:
    errors = [f.line for f in chk.precheck(staged.out, version="v6.0") if f.level == "error"]
    assert any("RNG seeds are v6.1's, the v6.0 checker expects v6.0's" in e for e in errors), errors
    assert chk.detect_version(staged.out) == "v6.1"


def test_official_checker_plumbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker runs as a module of a folder named `inference` from its parent; its ERROR log lines
    come back one per entry (a stand-in checker here: tests never depend on MLCommons' code)."""
    fake = tmp_path / "mlc-checkout"
    main = fake / "tools/submission/submission_checker/main.py"
    main.parent.mkdir(parents=True)
    main.write_text(
        "import sys\n"
        "args = sys.argv[1:]\n"
        "print('[2026-12-03 10:00:00,000 main.py:1 INFO] args ' + ' '.join(args), file=sys.stderr)\n"
        "print('[2026-12-03 10:00:00,000 performance_check.py:9 ERROR] T Test duration less than 600s',\n"
        "      file=sys.stderr)\n"
        "print('ERROR:main:SUMMARY: submission has errors', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setattr(chk, "require_yaml", lambda python: None)
    run = chk.run_official_checker(tmp_path / "tree", fake, version="v6.1", submitter="ORG")
    assert run.returncode == 1
    assert run.errors == ("T Test duration less than 600s", "SUMMARY: submission has errors")
    assert "--version v6.1" in run.output and "--submitter ORG" in run.output
    assert not list(Path("/tmp").glob("unet3d-checker-*/inference/tools"))  # the temporary link is gone
    with pytest.raises(MissingInputError, match="not a checkout of mlcommons/inference"):
        chk.run_official_checker(tmp_path, tmp_path, version="v6.1")


def test_cli_check_and_stage_exit_codes(
    staged: stg.StageResult, runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import main

    assert main(["submission", "check", str(staged.out)]) == 0
    out = capsys.readouterr().out
    assert "pre-check: 0 error(s)" in out
    root = _broken_copy(staged, tmp_path)
    (root / SCEN / "user.conf").unlink()
    assert main(["submission", "check", str(root)]) == 1
    assert f"error: {SCEN}/user.conf: missing" in capsys.readouterr().out
    assert main(["submission", "check", str(tmp_path / "none")]) == 3
    ws = runs["ws"]
    assert (
        main(
            [
                "submission",
                "stage",
                f"--workspace={ws.root}",
                "--out",
                str(staged.out),
                "--submitter",
                "ORG",
                "--system-name",
                "SYS",
            ]
        )
        == 2
    )  # exists
    assert (
        main(
            [
                "submission",
                f"--workspace={tmp_path}",
                "stage",
                "--out",
                str(tmp_path / "o"),
                "--submitter",
                "O",
                "--system-name",
                "S",
            ]
        )
        == 3
    )  # no runs
    assert main(["submission"]) == 2
    assert "give a step" in capsys.readouterr().err


def test_checker_python_without_yaml_is_one_line(tmp_path: Path) -> None:
    bare = tmp_path / "python-without-yaml"
    bare.write_text(
        f"#!/bin/sh\nexec {sys.executable} -I -c \"import sys; sys.modules['yaml'] = None; "
        'exec(sys.argv[2]) if len(sys.argv) > 2 else None" "$@"\n'
    )
    bare.chmod(0o755)
    with pytest.raises(MissingInputError, match="needs PyYAML"):
        chk.require_yaml(str(bare))


# --- system description ---------------------------------------------------------------------------

LSCPU = """Architecture:            x86_64
Model name:              Intel(R) Xeon(R) Platinum 8480C
Thread(s) per core:      2
Core(s) per socket:      56
Socket(s):               2
CPU max MHz:             3800.0000
L1d cache:               5.3 MiB (112 instances)
L2 cache:                224 MiB (112 instances)
L3 cache:                210 MiB (2 instances)
"""
SMI = "\n".join(["NVIDIA H200, 143771, 570.86.15, 1980, 5, 16"] * 8) + "\n"
SMI_HEAD = "| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: 12.8     |\n"


def probe(gpus: bool) -> Any:
    from core.submission.sysdesc import Probe

    def run(cmd: list[str]) -> str | None:
        if cmd[0] == "lscpu":
            return LSCPU
        if cmd[0] == "nvidia-smi" and gpus:
            return SMI if len(cmd) > 1 else SMI_HEAD
        if cmd[0] == "lsblk":
            return "nvme0n1 0\nnvme1n1 0\n"
        return None

    files = {
        "/proc/meminfo": "MemTotal:       2113451820 kB\n",
        "/etc/os-release": 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\n',
    }
    return Probe(run=run, read=files.get, net_devices=lambda: ["enp1s0", "ib0"])


def test_system_description_from_the_machine() -> None:
    from core.submission.sysdesc import machine_facts, system_description, to_fill

    versions = {
        "unet3d-console": "0.1.0",
        "Python": "3.11.9",
        "NumPy": "2.1.0",
        "LoadGen": "6.0.17",
        "PyTorch": "2.11.0",
        "Triton": "3.6.0",
    }
    d = system_description(
        division="closed",
        submitter="ORG",
        system_name="H200x8",
        system_type="datacenter",
        backend="torch",
        facts=machine_facts(probe(True)),
        versions=versions,
    )
    assert sorted(d) == sorted(SYSTEM_KEYS)
    assert d["host_processor_model_name"] == "Intel(R) Xeon(R) Platinum 8480C"
    assert (d["host_processors_per_node"], d["host_processor_core_count"]) == (2, 56)
    assert d["host_processor_frequency"] == "3800 MHz" and d["host_memory_capacity"] == "2.2 TB"
    assert d["host_processor_caches"].startswith("L1d 5.3 MiB (112 instances)")
    assert (d["accelerators_per_node"], d["accelerator_model_name"]) == (8, "NVIDIA H200")
    assert d["accelerator_memory_capacity"] == "140 GB" and d["accelerator_memory_configuration"] == "HBM3e"
    assert d["accelerator_host_interconnect"] == "PCIe Gen5 x16" and d["accelerator_frequency"] == "1980 MHz"
    assert d["host_storage_type"] == "NVMe SSD" and d["host_network_card_count"] == 2
    assert d["framework"] == "PyTorch 2.11.0, Triton 3.6.0, unet3d-console 0.1.0"
    assert d["other_software_stack"] == (
        "Python 3.11.9, NumPy 2.1.0, LoadGen 6.0.17, NVIDIA driver 570.86.15, CUDA 12.8"
    )
    assert d["operating_system"].startswith("Ubuntu 24.04.1 LTS (kernel ")
    assert to_fill(d) == [
        "host_processor_interconnect",
        "host_memory_configuration",
        "host_storage_capacity",  # no storage path given to machine_facts
        "host_networking",
        "accelerator_interconnect",
        "cooling",
    ]
    cpu = system_description(
        division="open",
        submitter="ORG",
        system_name="cpu",
        system_type="datacenter",
        backend="ort",
        facts=machine_facts(probe(False)),
        versions=versions,
    )
    # a CPU-only system: "0" accelerators (the checker takes a number 0 for an empty answer)
    assert (cpu["accelerators_per_node"], cpu["accelerator_model_name"]) == ("0", "N/A")
    assert all(
        cpu[k]
        for k in (
            "accelerator_memory_capacity",
            "accelerator_host_interconnect",
            "accelerator_memory_configuration",
            "accelerator_interconnect",
        )
    )


# --- run selection ---------------------------------------------------------------------------------


def test_select_runs_from_records_prefers_compliant_then_best() -> None:
    """One selection rule over RunRecords (core.submission.select): each record's own compliance."""
    import dataclasses

    from core.history import Accuracy, Metrics, RunRecord
    from core.submission.select import role, select_runs
    from tests.test_compliance import ACCURACY, OFFLINE, SHORT, SINGLE, SYNTHETIC_DATA, record

    def rr(name: str, scenario: str, mode: str, *, audit: str | None = None, qps: float | None = None,
           p90: float | None = None, precision: str = "fp8", config_ver: str = "default", hour: int = 1,
           valid: bool | None = True, bad: bool = False, **kw: Any) -> RunRecord:  # fmt: skip
        cfg = RunConfig(scenario=scenario, test_mode=mode, audit_test=audit, config_ver=config_ver,
                        backend="torch", precision=precision, gpu_batch_size=8)  # fmt: skip
        settings = SINGLE if scenario == "SingleStream" else OFFLINE
        facts: dict[str, Any] = {}
        if mode == "AccuracyOnly":
            settings = dataclasses.replace(ACCURACY, scenario=scenario)
            metrics = Metrics(accuracy=Accuracy(0.86112, 0.93, 0.79, passed=True))
            valid = None
            if bad:
                facts["dataset"] = SYNTHETIC_DATA
        else:
            metrics = Metrics(qps, {"p90": p90} if p90 else {})
            if bad:
                settings = SHORT
        if audit == "TEST01":
            settings = dataclasses.replace(settings, audit_config_found=True, accuracy_log_sampling_target=64)
        return record(name, cfg, settings=settings, metrics=metrics, valid=valid,
                      started=f"2026-12-01T{hour:02d}:00:00+00:00", **facts, **kw)  # fmt: skip

    recs = [
        rr("perf_fast_short", "Offline", "PerformanceOnly", qps=7.0, bad=True),
        rr("perf_slow_ok", "Offline", "PerformanceOnly", qps=6.5),
        rr("perf_invalid", "Offline", "PerformanceOnly", qps=9.0, valid=False),
        rr("perf_fp16", "Offline", "PerformanceOnly", qps=9.5, precision="fp16"),
        rr("acc_old", "Offline", "AccuracyOnly", hour=1),
        rr("acc_new", "Offline", "AccuracyOnly", hour=2, bad=True),
        rr("acc_999", "Offline", "AccuracyOnly", config_ver="high_accuracy"),
        rr("t01", "Offline", "PerformanceOnly", audit="TEST01", qps=6.4),
        rr("t05", "Offline", "PerformanceOnly", audit="TEST05", qps=6.4, hour=5),
        rr("cancelled", "Offline", "PerformanceOnly", qps=99.0, status="cancelled", hour=6),
        rr("ss_a", "SingleStream", "PerformanceOnly", p90=300.0),
        rr("ss_b", "SingleStream", "PerformanceOnly", p90=250.0),
    ]
    foreign = RunRecord("foreign", Path("/logs/foreign"), scenario="Offline", test_mode="PerformanceOnly",
                        valid=True, metrics=Metrics(99.0), settings=OFFLINE)  # fmt: skip
    recs.append(foreign)
    assert [r.compliance.label for r in recs[:2]] == ["shortened", "compliant"]
    assert [role(r) for r in recs] == [
        "performance", "performance", None, "performance", "accuracy", "accuracy", "accuracy", "TEST01",
        None, None, "performance", "performance", None,
    ]  # fmt: skip
    sel = select_runs(recs)
    got = {
        (s.scenario, s.benchmark): (s.performance.run_id, s.accuracy.run_id, s.test01 and s.test01.run_id)
        for s in sel.chosen
    }
    # compliant first (not the faster shortened run), then samples/s, among the runs that have an
    # accuracy run of their backend/precision/batch/model (not the fp16 one); compliant accuracy runs
    # first, then the newest; one result per accuracy target; the TEST01 run of the same set-up
    assert got == {
        ("Offline", "3d-unet-99"): ("perf_slow_ok", "acc_old", "t01"),
        ("Offline", "3d-unet-99.9"): ("perf_slow_ok", "acc_999", "t01"),
    }
    assert sel.for_scenario("Offline") is sel.chosen[0] and sel.chosen[0].compliant
    assert sel.skipped == ("SingleStream: no accuracy run of ss_b's backend/precision/batch/model",)
    recs.append(rr("acc_ss", "SingleStream", "AccuracyOnly"))
    sel = select_runs(recs)
    ss = [s for s in sel.chosen if s.scenario == "SingleStream"]
    assert [(s.performance.run_id, s.accuracy.run_id, s.test01) for s in ss] == [
        ("ss_b", "acc_ss", None)
    ]  # lower p90
    assert not ss[0].compliant  # no TEST01
    assert "SingleStream 3d-unet-99: no TEST01 run (staged without TEST01)" in sel.skipped
    closed = select_runs(recs, compliant_only=True)
    assert {s.performance.run_id for s in closed.chosen} == {"perf_slow_ok", "ss_b"}
    assert {s.accuracy.run_id for s in closed.chosen} == {"acc_old", "acc_999", "acc_ss"}
    none = select_runs([rr("x", "Offline", "PerformanceOnly", qps=1.0, bad=True)], compliant_only=True)
    assert none.chosen == () and none.skipped == (
        "Offline: no complete VALID performance run that is compliant",
    )


# --- the submission steps as the checklist runs them ---------------------------------------------------


def fake_checker(root: Path) -> Path:
    """A stand-in for mlcommons/inference's checker (tests never depend on MLCommons' code)."""
    main = root / "tools/submission/submission_checker/main.py"
    main.parent.mkdir(parents=True)
    main.write_text(
        "import sys\n"
        "args = sys.argv[1:]\n"
        "print('[2026-12-03 10:00:00,000 main.py:1 INFO] args ' + ' '.join(args), file=sys.stderr)\n"
        "print('[2026-12-03 10:00:00,000 performance_check.py:9 ERROR] T Test duration less than 600s',\n"
        "      file=sys.stderr)\n"
        "print('ERROR:main:SUMMARY: submission has errors', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    return root


def test_submission_steps_feed_the_checklist(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify-test01, stage and check through core.submission.steps (what `unet3d submission` and the
    console run) leave the evidence the checklist's last three steps read: shortened runs make each of
    them "not compliant", never "passed"; a changed tree needs a new check."""
    import os

    from core import audit as A  # noqa: N812
    from core.harness.logs import parse_detail
    from core.submission.stage import manifest_path, read_manifest
    from core.submission.steps import SubmissionRequest, run_request
    from core.submission.test01 import RUNS_RECORD

    # the fixture's runs in a workspace of their own; the TEST01 copy reports the performance run's
    # score, so that the verification's performance check does not depend on two timed runs
    ws = Workspace.resolve(tmp_path / "ws", env={})
    mine = {k: ws.log_dir / runs[k].name for k in ("accuracy", "performance", "test01")}
    for k, dst in mine.items():
        shutil.copytree(runs[k], dst)
    score = parse_detail(runs["performance"]).results["samples_per_second"]
    _detail_with(runs["test01"], mine["test01"], result_samples_per_second=score)
    audit = A.Audit(ws, "Offline")
    for sid in ("submission.test01", "submission.stage", "submission.check"):
        assert audit.check(sid, save=False).state == A.PENDING
    short = f"performance run {runs['performance'].name}: shortened: min_duration 0.3 s < 600 s"

    done = run_request(ws, SubmissionRequest("verify-test01"), data=make_data())
    assert done.passed and done.out == ws.compliance_dir / "Offline"
    assert {k: r.path for k, r in done.runs.items()} == {
        "performance": mine["performance"],
        "accuracy": mine["accuracy"],
        "TEST01": mine["test01"],
    }  # the runs the stage chooses
    record = json.loads((done.out / RUNS_RECORD).read_text())
    assert record["runs"]["performance"]["compliance"]["label"] == "shortened"
    r = audit.check("submission.test01", save=False)
    assert (r.state, r.evidence) == (
        A.NOT_COMPLIANT,
        f"build/compliance/Offline/TEST01: TEST01 accuracy PASS; performance PASS; {short} (+2 more)",
    )  # the accuracy and TEST01 runs too

    with pytest.raises(UsageError, match="stage needs submitter, system_name"):
        run_request(ws, SubmissionRequest("stage"))
    staged = run_request(ws, SubmissionRequest("stage", submitter="ORG", system_name="SYS"), data=make_data())
    tree = ws.submission_dir
    assert staged.result.out == tree and not [f for f in staged.findings if f.level == "error"]
    manifest = read_manifest(tree)
    assert manifest is not None and manifest_path(tree) == tree.with_name("submission-staging.stage.json")
    assert manifest["files"] == relative_tree(tree) and manifest["division"] == "open"
    perf = manifest["staged"][0]["runs"]["performance"]
    assert (perf["run"], perf["compliance"]["label"]) == (runs["performance"].name, "shortened")
    r = audit.check("submission.stage", save=False)
    assert r.state == A.NOT_COMPLIANT
    assert r.evidence == (
        "build/submission-staging: open division, layout v6.1, 3d-unet-99 Offline; "
        f"3d-unet-99 Offline: {short} (+2 more)"
    )

    checked = run_request(ws, SubmissionRequest("check"))
    assert checked.passed and checked.checker is None
    r = audit.check("submission.check", save=False)
    assert (r.state, r.evidence) == (
        A.NOT_COMPLIANT,
        f"checked {checked.checked_at} (layout v6.1): pre-check 0 error(s), official checker not run "
        f"(--checker PATH); 3d-unet-99 Offline: {short} (+2 more)",
    )
    # the official checker's errors on a tree of shortened runs: not compliant, with the first error
    monkeypatch.setattr(chk, "require_yaml", lambda python: None)
    checker = fake_checker(ws.root / "mlc")
    from core.cli import main

    assert main(["submission", "check", f"--workspace={ws.root}", f"--checker={checker}"]) == 1
    assert "checker error: T Test duration less than 600s" in capsys.readouterr().out
    r = audit.check("submission.check", save=False)
    at = chk.read_check_record(tree)["checked_at"]
    assert (r.state, r.evidence) == (
        A.NOT_COMPLIANT,
        f"checked {at} (layout v6.1): pre-check 0 error(s), official checker 2 error(s): T Test duration "
        f"less than 600s; the staged runs are not compliant (3d-unet-99 Offline: {short})",
    )
    # the tree edited after the check (a person fills in the system JSON): check again
    sysjson = tree / "open/ORG/systems/SYS.json"
    t = sysjson.stat().st_mtime + 10
    os.utime(sysjson, (t, t))
    r = audit.check("submission.check", save=False)
    assert r.state == A.PENDING and "changed after the check" in r.evidence

    # the same evidence from compliant runs passes (the manifest's verdicts stand in for full-length runs)
    ok = {"compliant": True, "label": "compliant", "shortened": False, "reasons": []}
    for s in manifest["staged"]:
        for d in s["runs"].values():
            d["compliance"] = ok
    manifest_path(tree).write_text(json.dumps(manifest))
    assert audit.check("submission.stage", save=False).state == A.PASSED
    again = run_request(ws, SubmissionRequest("check"))
    r = audit.check("submission.check", save=False)
    assert (r.state, r.evidence) == (
        A.PASSED,
        f"checked {again.checked_at} (layout v6.1): pre-check 0 error(s), official checker not run "
        "(--checker PATH)",
    )
    # staging again replaces the tree: the old check record goes with it
    again_stage = SubmissionRequest("stage", submitter="ORG", system_name="SYS", force=True)
    run_request(ws, again_stage, data=make_data())
    assert audit.check("submission.check", save=False).evidence == "build/submission-staging not checked yet"
