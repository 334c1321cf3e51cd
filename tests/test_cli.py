"""The `unet3d` CLI end to end (subprocesses on tiny workspaces) and its flag handling (in process)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import cli
from core.benchmark import RunConfig
from core.cli.parser import merge_flags
from core.errors import ExitCode, UsageError
from core.history import Accuracy, Metrics, RunRecord
from core.results import result_row, results_table

REPO = Path(__file__).resolve().parents[1]


def unet3d(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    """Run `python -m core ARGS` with a clean environment (no DATA_DIR etc. from the developer)."""
    base = {k: v for k, v in os.environ.items() if k not in _PATH_VARS}
    base["PYTHONPATH"] = str(REPO)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_PATH_VARS = ("DATA_DIR", "PREPROCESSED_DATA_DIR", "MODEL_DIR", "LOG_DIR", "UNET3D_WORKSPACE")


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


# --------------------------------------------------------------------------- subprocess: exit codes


def test_status_on_empty_workspace_lists_missing_items_and_exits_0(tmp_path: Path) -> None:
    r = unet3d("--workspace", str(tmp_path), "status", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"Workspace: {tmp_path}"
    assert [c.strip() for c in lines[1].split("|")] == ["Section", "Item", "State", "Detail", "Fix"]
    model = next(ln for ln in lines if ln.startswith("model"))
    assert "missing" in model and "unet3d download --model" in model
    assert any(ln.startswith("dataset") and "0/43 ok" in ln for ln in lines)
    # the cache is missing only where an available backend runs int8/fp8 (issue #12 item 5)
    cal = [c.strip() for c in next(ln for ln in lines if ln.startswith("calibration")).split("|")]
    states = {
        c[1]: c[2] for c in ([x.strip() for x in ln.split("|")] for ln in lines if ln.startswith("backends"))
    }
    if "ok" in (states.get("torch"), states.get("tensorrt")):
        assert cal[2] == "missing" and cal[4].endswith("unet3d calibrate")
    else:
        assert cal[2] == "ok" and "not needed here: ort fp32 runs without one" in cal[3] and len(cal) == 4


def test_status_json_is_the_report_dict(tmp_path: Path, capsys, monkeypatch) -> None:
    for var in _PATH_VARS:
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["status", "--json", "--workspace", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [s["name"] for s in doc["sections"]]
    assert names == ["dataset", "preprocessed", "model", "calibration", "engines", "backends", "runs"]
    by = {s["name"]: s for s in doc["sections"]}
    assert by["model"]["state"] == "missing"
    assert by["model"]["items"][0]["fix"] == "unet3d download --model"
    assert len(by["dataset"]["items"]) == 63  # 43 inference + 20 calibration cases, all missing
    assert {i["state"] for i in by["dataset"]["items"]} == {"missing"}
    assert doc["paths"]["model"] == str(tmp_path / "build/models/3d-unet-kits19/3dUNetKiTS19.onnx")


def test_history_and_status_show_compliance(tmp_path: Path, capsys, monkeypatch) -> None:
    """One verdict per run in `unet3d history` and `unet3d status`: the label and its first reason in
    the tables, every reason with --json; a VALID 10 s run is a result (VALID, samples/s) and "shortened"."""
    import core.status
    from tests.test_compliance import SHORT, SYNTHETIC_DATA, write_run_folder

    for var in _PATH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(core.status, "backend_items", lambda: ())  # no torch import: not what is tested
    logs = tmp_path / "build" / "logs"
    write_run_folder(logs / "full", started="2026-12-01T06:00:00+00:00")
    write_run_folder(logs / "short", settings=SHORT, started="2026-12-01T07:00:00+00:00")
    write_run_folder(logs / "demo", dataset=SYNTHETIC_DATA, started="2026-12-01T08:00:00+00:00")
    assert cli.main(["history", "--workspace", str(tmp_path)]) == 0
    head, _rule, *rows = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in head.split("|")] == ["Run", "When", "Result", "Compliance"]
    cells = [[c.strip() for c in row.split("|")] for row in rows]
    assert [(c[0], c[2], c[3]) for c in cells] == [
        ("demo", "Offline PerformanceOnly torch fp8 VALID 6.800 samples/s",
         "not compliant: case list is not the official 43 cases (4 cases)"),
        ("short", "Offline PerformanceOnly torch fp8 VALID 6.800 samples/s",
         "shortened: min_duration 10 s < 600 s"),
        ("full", "Offline PerformanceOnly torch fp8 VALID 6.800 samples/s", "compliant"),
    ]  # fmt: skip
    assert cli.main(["history", "--json", "--workspace", str(tmp_path)]) == 0
    runs = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs["short"]["compliance"]["reasons"] == [
        "shortened: min_duration 10 s < 600 s",
        "shortened: Offline min_query_count 4 < 43",
    ]
    assert runs["short"]["passes"] is True and runs["full"]["compliance"]["compliant"] is True
    assert cli.main(["status", "--workspace", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("runs")]
    assert [[c.strip() for c in ln.split("|")][1:4] for ln in lines] == [
        ["demo", "ok", "Offline PerformanceOnly torch fp8 VALID 6.800 samples/s "
         "[not compliant: case list is not the official 43 cases (4 cases)]"],
        ["short", "ok", "Offline PerformanceOnly torch fp8 VALID 6.800 samples/s "
         "[shortened: min_duration 10 s < 600 s]"],
        ["full", "ok", "Offline PerformanceOnly torch fp8 VALID 6.800 samples/s [compliant]"],
    ]  # fmt: skip
    assert cli.main(["status", "--json", "--workspace", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    items = next(s for s in doc["sections"] if s["name"] == "runs")["items"]
    assert items[0]["data"]["compliance"]["label"] == "not compliant"
    assert items[1]["data"]["compliance"]["reasons"][1] == "shortened: Offline min_query_count 4 < 43"


def test_output_file_has_the_same_bytes_as_stdout(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dry.txt"
    assert cli.main(["run", "--dry-run", "--scenarios=Offline,SingleStream", "-o", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 4 and out.read_text() == stdout


def test_bad_flag_exits_2_with_one_line(tmp_path: Path) -> None:
    r = unet3d("run", "--scenarios=Server", cwd=tmp_path)
    assert r.returncode == ExitCode.USAGE
    assert r.stdout == ""
    assert r.stderr == "error: --scenarios=Server is not one of Offline, SingleStream\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["run", "--gpu_batch_size=x"],
        ["run", "--gpu_batch_size=-1"],
        ["run", "--test_mode=Perf"],
        ["run", "--benchmarks=resnet50"],
        ["run", "--action=generate_conf_files"],
        ["run", "--run-args", "--scenarios=Offline --no_such_flag=1"],
        ["run", "--run-args", "--scenarios='Offline"],
        ["preprocess", "--sets=training"],
        ["calibrate", "--method=entropy"],
        ["accuracy"],
        [],
    ],
)
def test_bad_flags_exit_2_with_one_line_in_process(
    tmp_path: Path, args: list[str], capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err


def test_run_without_model_exits_3_naming_the_model(tmp_path: Path) -> None:
    r = unet3d("--workspace", str(tmp_path), "run", "--test_mode=AccuracyOnly", cwd=tmp_path)
    assert r.returncode == ExitCode.MISSING, r.stderr
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and "3dUNetKiTS19.onnx" in errs[0]
    assert "Traceback" not in r.stderr
    # the effective command is echoed on stderr, stdout stays empty
    assert "+ unet3d run --benchmarks=3d-unet --scenarios=Offline" in r.stderr
    assert r.stdout == ""


def test_accuracy_with_missing_log_exits_3(tmp_path: Path) -> None:
    r = unet3d("accuracy", "--log_file", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert r.returncode == ExitCode.MISSING
    assert error_lines(r.stderr) == [f"error: {tmp_path / 'nope.json'}: accuracy log not found"]


def _write_case_lists(data_dir: Path, inference: list[str], calibration: list[str]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "inference_cases.json").write_text(json.dumps(inference))
    (data_dir / "calibration_cases.json").write_text(json.dumps(calibration))


def test_corrupt_nifti_exits_4_naming_the_file(tmp_path: Path) -> None:
    import nibabel as nib

    data = tmp_path / "build" / "data" / "KiTS19"
    _write_case_lists(data, ["case_00000"], [])
    case = data / "case_00000"
    case.mkdir(parents=True)
    aff = np.diag([-0.8, -0.8, -3.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), aff), str(case / "segmentation.nii.gz"))
    (case / "imaging.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    r = unet3d("--workspace", str(tmp_path), "preprocess", "--sets", "inference", "--jobs", "1", cwd=tmp_path)
    assert r.returncode == ExitCode.BAD_INPUT, r.stderr
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and "imaging.nii.gz" in errs[0], r.stderr
    assert "Traceback" not in r.stderr


def test_download_without_network_exits_3_and_leaves_no_file(tmp_path: Path) -> None:
    # an unroutable proxy makes every request fail fast, whether or not this machine is online
    env = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    r = unet3d("--workspace", str(tmp_path), "download", "--model", cwd=tmp_path, env=env)
    assert r.returncode == ExitCode.MISSING, r.stderr
    errs = error_lines(r.stderr)
    assert len(errs) == 1 and "cannot download" in errs[0] and "zenodo.org" in errs[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "build" / "models").exists()
    r = unet3d(
        "--workspace", str(tmp_path), "download", "--data", "--cases", "case_00000", cwd=tmp_path, env=env
    )
    assert r.returncode == ExitCode.MISSING, r.stderr
    assert "huggingface.co" in error_lines(r.stderr)[0]
    # nothing but the workspace lock file (downloads take the workspace lock)
    lock = tmp_path / "build" / ".unet3d.lock"
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p != lock] == []


def test_dry_run_prints_the_cli_and_make_commands(tmp_path: Path) -> None:
    r = unet3d(
        "run",
        "--dry-run",
        "--scenarios=Offline,SingleStream",
        "--config_ver=default,high_accuracy",
        "--test_mode=AccuracyOnly",
        "--fast",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 8  # 2 scenarios x 2 config_vers, two lines each
    cfg = RunConfig(
        scenario="SingleStream",
        config_ver="high_accuracy",
        test_mode="AccuracyOnly",
        min_duration=60.0,
        min_query_count=1,
    )
    from core.workspace import Workspace

    ws = Workspace.resolve(tmp_path, env={})
    assert lines[6] == cfg.cli_command(ws)
    assert lines[7] == cfg.make_command(ws)
    assert lines[6].startswith(f"unet3d --workspace={tmp_path} run --benchmarks=3d-unet ")
    assert lines[7].startswith("make run RUN_ARGS='--benchmarks=3d-unet --scenarios=SingleStream ")
    assert lines[7].endswith(f" UNET3D_ARGS=--workspace={tmp_path}")
    # each effective command is echoed on stderr too
    assert r.stderr.count(f"+ unet3d --workspace={tmp_path} run ") == 4


def test_dry_run_commands_work_pasted_in_another_folder(tmp_path: Path) -> None:
    """The printed commands carry the workspace and its non-default paths (issue #12 item 6): run from
    elsewhere, `unet3d ...` and `make run ... UNET3D_ARGS=...` print the same commands again."""
    ws_dir, data, elsewhere = tmp_path / "my ws", tmp_path / "kits", tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = unet3d("--workspace", str(ws_dir), "run", "--dry-run", "--gpu_batch_size=2", cwd=tmp_path,
                   env={"DATA_DIR": str(data)})  # fmt: skip
    assert first.returncode == 0, first.stderr
    cli_line, make_line = first.stdout.splitlines()
    assert f"'--workspace={ws_dir}' --data_dir={data} run " in cli_line
    assert "UNET3D_ARGS=" in make_line and "--data_dir=" in make_line
    argv = shlex.split(cli_line)
    assert argv[0] == "unet3d"
    again = unet3d(*argv[1:], "--dry-run", cwd=elsewhere)  # no DATA_DIR here: the flags carry it
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in _PATH_VARS} | {"PYTHONPATH": str(REPO)}
    made = subprocess.run(
        ["bash", "-c", f"{make_line} DRY_RUN=1 PYTHON={shlex.quote(sys.executable)} --no-print-directory -s"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout == first.stdout


def test_python_m_core_and_console_script_agree(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("unet3d")
    if not script.exists():
        pytest.skip("console script not installed")
    a = unet3d("run", "--dry-run", "--gpu_batch_size=4", cwd=tmp_path)
    b = subprocess.run(
        [str(script), "run", "--dry-run", "--gpu_batch_size=4"], cwd=tmp_path, capture_output=True, text=True
    )
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


# --------------------------------------------------------------------------- in process: flags


def test_run_args_parsing_and_explicit_flags_win() -> None:
    flags = cli.parse_run_args(
        "--benchmarks=3d-unet --scenarios=Offline --config_ver=high_accuracy --test_mode=AccuracyOnly "
        "--gpu_batch_size=8 --offline_expected_qps=6.8 --gpu_copy_streams=2"
    )
    assert flags["scenarios"] == "Offline" and flags["gpu_batch_size"] == 8
    assert flags["offline_expected_qps"] == 6.8 and flags["min_duration"] is None
    merged = merge_flags(
        {"gpu_batch_size": 2, "scenarios": None}, "--scenarios=SingleStream --gpu_batch_size=8"
    )
    assert merged["gpu_batch_size"] == 2 and merged["scenarios"] == "SingleStream"
    (cfg,) = cli.configs_from_flags(flags)
    assert cfg == RunConfig(
        scenario="Offline",
        config_ver="high_accuracy",
        test_mode="AccuracyOnly",
        gpu_batch_size=8,
        offline_expected_qps=6.8,
        extra={"gpu_copy_streams": "2"},
    )


def test_run_args_value_may_start_with_dashes() -> None:
    argv = cli._join_run_args(["run", "--run-args", "--scenarios=Offline --fast", "--dry-run"])
    assert argv == ["run", "--run-args=--scenarios=Offline --fast", "--dry-run"]


@pytest.mark.parametrize(
    "cfg",
    [
        RunConfig(),
        RunConfig(scenario="SingleStream", config_ver="high_accuracy", test_mode="AccuracyOnly"),
        RunConfig(
            backend="torch",
            precision="int8",
            gpu_batch_size=8,
            min_duration=60.0,
            max_duration=600.5,
            min_query_count=1,
            max_query_count=100,
            offline_expected_qps=6.8,
            single_stream_expected_latency_ms=572.434,
            audit_test="TEST01",
            gpus=2,
        ),
        RunConfig(precision="fp8", extra={"gpu_inference_streams": "2", "end_on_device": "true"}),
    ],
)
def test_run_args_round_trip_with_runconfig(cfg: RunConfig) -> None:
    assert cli.configs_from_flags(cli.parse_run_args(cfg.run_args())) == [cfg]
    # and through the make command's quoting
    make = cfg.make_command()
    assert make.startswith("make run RUN_ARGS=")
    text = shlex.split(make[len("make run ") :])[0].split("=", 1)[1]
    assert cli.configs_from_flags(cli.parse_run_args(text)) == [cfg]


def test_comma_lists_run_every_combination_and_fast_defaults() -> None:
    cfgs = cli.configs_from_flags(
        {"scenarios": "Offline,SingleStream", "config_ver": "default,high_accuracy", "fast": True}
    )
    assert [(c.scenario, c.config_ver) for c in cfgs] == [
        ("Offline", "default"),
        ("Offline", "high_accuracy"),
        ("SingleStream", "default"),
        ("SingleStream", "high_accuracy"),
    ]
    assert {(c.min_duration, c.min_query_count) for c in cfgs} == {(60.0, 1)}
    (c,) = cli.configs_from_flags({"fast": True, "min_duration": 5.0})
    assert (c.min_duration, c.min_query_count) == (5.0, 1)
    (c,) = cli.configs_from_flags({"accuracy_target": "99.9", "single_stream_expected_latency_ns": 572434000})
    assert c.config_ver == "high_accuracy" and c.single_stream_expected_latency_ms == pytest.approx(572.434)


@pytest.mark.parametrize(
    "flags",
    [{"benchmarks": "bert"}, {"accuracy_target": "98"}, {"backend": "cuda"}, {"precision": "int4"}],
)
def test_invalid_run_flags_are_usage_errors(flags: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        cli.configs_from_flags(flags)


def test_interrupt_exits_130_and_unet_errors_print_one_line(monkeypatch, capsys) -> None:
    def interrupted(*_a: object) -> int:
        raise KeyboardInterrupt

    def missing(*_a: object) -> int:
        from core.errors import MissingInputError

        raise MissingInputError("engine not found", "/x/engine.plan")

    status = cli.COMMANDS["status"]
    monkeypatch.setitem(cli.COMMANDS, "status", dataclasses.replace(status, run=interrupted))
    assert cli.main(["status"]) == ExitCode.INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"
    monkeypatch.setitem(cli.COMMANDS, "status", dataclasses.replace(status, run=missing))
    assert cli.main(["status"]) == ExitCode.MISSING
    assert capsys.readouterr().err == "error: /x/engine.plan: engine not found\n"


def test_results_table_and_exit_status_of_a_failed_accuracy_run() -> None:
    rec = RunRecord(
        "run1",
        Path("/logs/run1"),
        config=RunConfig(test_mode="AccuracyOnly"),
        metrics=Metrics(accuracy=Accuracy(0.8, 0.85, 0.75, target=0.85, passed=False)),
    )
    row = result_row(rec)
    assert row["ok"] is False and row["accuracy"] == 0.8 and row["accuracy_target"] == 0.85
    text = results_table([row])
    head, _rule, line = text.splitlines()
    assert [c.strip() for c in head.split("|")] == [
        "Model",
        "Scenario",
        "Accuracy",
        "Throughput",
        "Latency (ms)",
        "Compliance",
    ]
    assert [c.strip() for c in line.split("|")] == [
        "3d-unet-99",
        "Offline",
        "0.80000 (FAIL >= 0.85000)",
        "-",
        "-",
        "unknown",  # a record without provenance: nothing proven compliant
    ]


def test_results_table_shows_no_throughput_for_an_invalid_or_cancelled_run() -> None:
    def row(status: str, valid: bool | None) -> list[str]:
        metrics = Metrics(1.573, {"p90": 700.0})
        rec = RunRecord("r", Path("/logs/r"), status=status, config=RunConfig(), valid=valid, metrics=metrics)
        line = results_table([result_row(rec)]).splitlines()[-1]
        return [c.strip() for c in line.split("|")][3:]

    assert row("complete", True) == ["1.573 samples/s VALID", "700.0", "unknown"]  # no facts recorded
    assert row("complete", False) == ["- INVALID", "-", "not compliant"]
    assert row("cancelled", None) == ["- cancelled", "-", "not compliant"]


def test_stderr_progress_is_throttled_plain_lines() -> None:
    import io

    from core.jobs import Progress

    buf = io.StringIO()
    rep = cli.StderrReporter(stream=buf, interval=3600)
    for i in range(1, 11):
        rep(Progress("preprocess", i, 10, item=f"case_{i:05d}"))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # the first update and the final one; everything between is throttled
    assert lines[-1].startswith("preprocess: 10/10 cases (100%)") and lines[-1].endswith("[case_00010]")


def test_make_run_passes_run_args_to_the_cli(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    run_args = "--benchmarks=3d-unet --scenarios=Offline --config_ver=high_accuracy --test_mode=AccuracyOnly"
    r = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO),
            "run",
            f"RUN_ARGS={run_args}",
            "DRY_RUN=1",
            f"PYTHON={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    cfg = RunConfig(config_ver="high_accuracy", test_mode="AccuracyOnly")
    from core.workspace import Workspace

    ws = Workspace.resolve(os.environ.get("UNET3D_WORKSPACE") or REPO)  # make -C: the repo is "."
    assert r.stdout.splitlines() == [cfg.cli_command(ws), cfg.make_command(ws)]
