"""Fault injection on benchmark runs through the real CLI: two runs at once on one workspace, a
SIGKILLed lock holder, a run SIGKILLed mid-way, runs cancelled (SIGINT to the CLI, the console's cancel
of its run child), engines that return NaN or the wrong shape, and accuracy logs with missing, duplicate
or malformed entries. Runs use a tiny ONNX model (tests/reliability.py) on core.synthetic cases."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from core.errors import ExitCode
from core.lock import WorkspaceBusyError, holder, workspace_lock
from core.workspace import Workspace
from tests.reliability import start_unet3d, tiny_model, tree_digest, unet3d, workspace

QUICK = ("run", "--test_mode=PerformanceOnly", "--min_duration=0", "--min_query_count=2")
# ~1 s per sample on a loaded 2-core machine: long enough to interfere with
LONG = (
    "run",
    "--test_mode=PerformanceOnly",
    "--min_duration=0",
    "--min_query_count=40",
    "--offline_expected_qps=1",
)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _wait_for(pred, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:  # type: ignore[no-untyped-def]
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _lock_held_by(ws: Workspace, pid: int) -> bool:
    info = holder(ws.lock_path)
    return bool(info) and info.get("pid") == pid


def _running_dir(ws: Workspace) -> Path | None:
    for p in ws.log_dir.glob("*/run.json") if ws.log_dir.is_dir() else []:
        try:
            doc = json.loads(p.read_text())
        except ValueError:
            continue
        if doc.get("status") == "running" and (p.parent / "mlperf_log_detail.txt").exists():
            return p.parent
    return None


def _history(ws: Workspace) -> list[dict]:
    r = unet3d("history", "--json", ws=ws.root)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["runs"]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = workspace(tmp_path / "ws")
    tiny_model(w.model_path, "ok")
    return w


# --------------------------------------------------------------------------- the lock, in process


def test_lock_refuses_a_second_holder_and_reenters_in_the_same_thread(tmp_path: Path) -> None:
    ws = Workspace.resolve(tmp_path, env={})
    got: list[BaseException] = []
    with workspace_lock(ws, "run"):
        with workspace_lock(ws, "preprocess"):  # the demo: preprocess inside the same job
            pass

        def other() -> None:
            try:
                with workspace_lock(ws, "preprocess"):
                    pass
            except BaseException as exc:
                got.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert holder(ws.lock_path)["job"] == "run"
    assert len(got) == 1 and isinstance(got[0], WorkspaceBusyError)
    assert got[0].exit_code == ExitCode.BUSY and "in use by pid" in str(got[0])
    with workspace_lock(ws, "calibrate"):  # released
        pass


def test_busy_message_names_the_console_run_without_its_json(tmp_path: Path, monkeypatch) -> None:
    """The console's run child holds the lock with its RunConfig as a JSON argument; a refused job's
    one line names it as unet3d-console with {…}, not a JSON dump (issue #12 item 15), and exits 75."""
    ws = Workspace.resolve(tmp_path, env={})
    config = '{"scenario": "Offline", "config_ver": "default", "test_mode": "PerformanceOnly"}'
    monkeypatch.setattr("sys.argv", ["/x/console/runner.py", "--workspace", str(ws.root), "--config", config])
    got: list[BaseException] = []
    with workspace_lock(ws, "run"):

        def other() -> None:
            try:
                with workspace_lock(ws, "preprocess"):
                    pass
            except BaseException as exc:
                got.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
    (err,) = got
    assert isinstance(err, WorkspaceBusyError) and err.exit_code == ExitCode.BUSY == 75
    assert f"command: unet3d-console --workspace {ws.root} --config {{…}}; wait for" in str(err)
    assert '"scenario"' not in str(err) and "\n" not in str(err)


# --------------------------------------------------------------------------- two runs at once


@pytest.mark.slow
def test_second_run_and_preprocess_are_refused_while_a_run_holds_the_workspace(ws: Workspace) -> None:
    first = start_unet3d(*LONG, ws=ws.root)
    try:
        _wait_for(lambda: _lock_held_by(ws, first.pid), proc=first)
        for args in (QUICK, ("preprocess", "--jobs", "1")):
            r = unet3d(*args, ws=ws.root)
            assert r.returncode == ExitCode.BUSY, r.stderr
            assert "Traceback" not in r.stderr
            err = _errors(r.stderr)
            assert len(err) == 1 and "workspace is busy" in err[0] and f"pid {first.pid}" in err[0], err
            assert str(ws.lock_path) in err[0] and "command: unet3d --workspace" in err[0]
        assert len(list(ws.log_dir.iterdir())) == 1  # the refused run made no folder
        first.send_signal(signal.SIGINT)  # done with it: cancel (tested below)
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert unet3d(*QUICK, ws=ws.root).returncode == 0  # the lock is free again


@pytest.mark.slow
def test_a_sigkilled_holder_leaves_no_lock_and_its_run_is_incomplete(ws: Workspace) -> None:
    earlier = unet3d(*QUICK, ws=ws.root)
    assert earlier.returncode == 0, earlier.stderr
    (earlier_dir,) = list(ws.log_dir.iterdir())
    earlier_digest = tree_digest(earlier_dir)

    victim = start_unet3d(*LONG, ws=ws.root)
    _wait_for(lambda: _running_dir(ws) is not None and _lock_held_by(ws, victim.pid), proc=victim)
    time.sleep(1.0)  # into LoadGen's timed run
    killed_dir = _running_dir(ws)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()

    # the kernel dropped the lock with the process: the next run starts at once
    after = unet3d(*QUICK, ws=ws.root)
    assert after.returncode == 0, after.stderr
    assert tree_digest(earlier_dir) == earlier_digest  # earlier results untouched
    runs = {Path(h["path"]).name: h for h in _history(ws)}
    assert len(runs) == 3
    killed = runs[killed_dir.name]
    assert killed["status"] == "incomplete" and killed["valid"] is None and killed["result"] == ""
    assert runs[earlier_dir.name]["status"] == "complete" and runs[earlier_dir.name]["valid"] is True
    table = unet3d("history", ws=ws.root).stdout
    row = next(line for line in table.splitlines() if killed_dir.name in line)
    assert "incomplete" in row and "VALID" not in row


# --------------------------------------------------------------------------- cancel


@pytest.mark.slow
def test_sigint_cancels_the_cli_run_and_marks_it_cancelled(ws: Workspace) -> None:
    earlier = unet3d(*QUICK, ws=ws.root)
    assert earlier.returncode == 0
    (earlier_dir,) = list(ws.log_dir.iterdir())
    digest = tree_digest(earlier_dir)
    proc = start_unet3d(*LONG, ws=ws.root)
    _wait_for(lambda: _running_dir(ws) is not None, proc=proc)
    time.sleep(1.0)
    run_dir = _running_dir(ws)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    assert tree_digest(earlier_dir) == digest
    runs = {Path(h["path"]).name: h for h in _history(ws)}
    assert runs[run_dir.name]["status"] == "cancelled" and runs[run_dir.name]["valid"] is None


@pytest.mark.slow
def test_the_console_cancels_its_run_child(ws: Workspace) -> None:
    """The console's cancel path (console.workers.RealJobs -> core.harness.isolated): the run's child
    gets the cancel line, LoadGen returns, the child exits with the partial result; run.json and the
    history say cancelled, and the live feed followed the child's events up to the cancel."""
    from console.workers import LiveFeed, RealJobs
    from core.benchmark import RunConfig
    from core.harness.runner import RunCancelled
    from core.jobs import CancelToken, Phase

    cfg = RunConfig(
        scenario="Offline",
        test_mode="PerformanceOnly",
        min_duration=0,
        min_query_count=40,
        offline_expected_qps=1,
    )
    jobs, live, token = RealJobs(), LiveFeed(), CancelToken()
    phases: list[str] = []
    caught: list[BaseException] = []

    def target() -> None:
        try:
            jobs.benchmark(
                ws, cfg, lambda e: phases.append(e.name) if isinstance(e, Phase) else None, token, live
            )
        except BaseException as exc:
            caught.append(exc)

    th = threading.Thread(target=target)
    th.start()
    _wait_for(lambda: _running_dir(ws) is not None)
    _wait_for(lambda: (snap := live.snapshot()) is not None and snap.completed >= 1)
    run_dir = _running_dir(ws)
    token.cancel()
    th.join(120)
    assert not th.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], RunCancelled), caught
    assert jobs.current is None and jobs.child_argv is None
    assert "cancelling" in phases and live.snapshot().phase == "cancelled"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    assert [h["status"] for h in _history(ws)] == ["cancelled"]
    assert [h["samples_per_s"] for h in _history(ws)] == [None]


# --------------------------------------------------------------------------- bad engines


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "problem"),
    [("nan", "returned NaN/Inf logits"), ("wrong_shape", "returned shape (1, 3, 64, 128, 128)")],
)
def test_an_engine_with_bad_output_stops_the_run_naming_the_sample(
    ws: Workspace, kind: str, problem: str
) -> None:
    tiny_model(ws.model_path, kind)
    r = unet3d("run", "--test_mode=AccuracyOnly", ws=ws.root)
    assert r.returncode == ExitCode.BAD_INPUT, r.stderr
    assert "Traceback" not in r.stderr
    err = _errors(r.stderr)
    assert len(err) == 1 and problem in err[0], r.stderr
    assert err[0].startswith("error: sample ") and "(case_0000" in err[0]
    (run_dir,) = list(ws.log_dir.iterdir())
    doc = json.loads((run_dir / "run.json").read_text())
    assert doc["status"] == "failed" and problem in doc["error"] and doc["accuracy"] is None
    assert not (run_dir / "accuracy.txt").exists()
    (rec,) = _history(ws)
    assert rec["status"] == "failed" and rec["valid"] is None and rec["mean_dice"] is None


# --------------------------------------------------------------------------- accuracy logs


@pytest.fixture(scope="module")
def accuracy_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("acc") / "ws"
    w = workspace(root)
    tiny_model(w.model_path, "ok")
    r = unet3d("run", "--test_mode=AccuracyOnly", ws=w.root)
    assert r.returncode in (0, 1), r.stderr  # the tiny model is below target: exit 1
    (run_dir,) = list(w.log_dir.iterdir())
    entries = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == 2
    return root, entries


def _dump(entries: list[dict]) -> str:
    return json.dumps(entries)


MUTATIONS = {
    "missing": (lambda e: _dump(e[:1]), "1 entries for 2 cases; missing"),
    "duplicate": (lambda e: _dump([e[0], e[1], e[0]]), "duplicate qsl_idx"),
    "bad_index": (lambda e: _dump([e[0], {**e[1], "qsl_idx": 7}]), "bad qsl_idx 7"),
    "bad_hex": (lambda e: _dump([e[0], {**e[1], "data": "zz" + e[1]["data"][2:]}]), "malformed hex"),
    "short_data": (lambda e: _dump([e[0], {**e[1], "data": e[1]["data"][:1000]}]), "has 500 bytes, expected"),
    "bad_label_value": (lambda e: _dump([e[0], {**e[1], "data": "07" + e[1]["data"][2:]}]), "outside"),
    "empty_data": (lambda e: _dump([e[0], {**e[1], "data": ""}]), "empty"),
    "no_data": (lambda e: _dump([e[0], {"qsl_idx": 1}]), "no 'data'"),
    "truncated_json": (lambda e: _dump(e)[: len(_dump(e)) // 2], "malformed accuracy log"),
    "not_a_list": (lambda e: json.dumps({"entries": e}), "not a JSON array"),
    "empty_file": (lambda e: "", "malformed accuracy log"),
}


@pytest.mark.slow
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_accuracy_script_refuses_a_bad_log(
    accuracy_log: tuple[Path, list[dict]], tmp_path: Path, mutation: str
) -> None:
    root, entries = accuracy_log
    make, problem = MUTATIONS[mutation]
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(make(entries))
    r = unet3d("accuracy", "--log_file", str(log), ws=root)
    assert r.returncode == ExitCode.BAD_INPUT, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    err = _errors(r.stderr)
    assert len(err) == 1 and str(log) in err[0] and problem in err[0], err
    assert r.stdout == ""  # no table, no number


@pytest.mark.parametrize("command", [["download", "--model"], ["demo", "--skip_performance"]])
def test_download_and_demo_setup_are_refused_while_another_job_holds_the_workspace(
    tmp_path: Path, command: list[str]
) -> None:
    """Downloads and the demo's dataset/model/preprocessing take the workspace lock too: started while
    a run holds it, they stop at once with the holder named, having written nothing."""
    ws = Workspace.resolve(tmp_path / "ws", env={})
    with workspace_lock(ws, "run"):
        before = sorted(p.relative_to(ws.root) for p in ws.root.rglob("*"))
        proc = unet3d(*command, ws=ws.root, timeout=120)
        after = sorted(p.relative_to(ws.root) for p in ws.root.rglob("*"))
    assert proc.returncode == ExitCode.BUSY, proc.stderr
    assert "in use by pid" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert after == before and not ws.model_path.exists()
