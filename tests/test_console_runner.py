"""The benchmark child process: its JSON-lines protocol (console.runner) and the console side
(console.workers.BenchmarkProcess) including the SIGINT -> SIGTERM -> SIGKILL escalation on cancel."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from console import runner
from console.workers import BenchmarkProcess, LiveFeed, snapshot_from_dict, snapshot_to_dict, wait_until
from core import jobs as cj
from core.benchmark import RunConfig
from core.errors import Cancelled, MissingInputError
from core.harness.events import RunEvents
from core.workspace import Workspace

# a child started from a background job inherits SIGINT ignored; these stand-ins get Python's default
HEAD = (
    "import json, os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", HEAD + textwrap.dedent(body)]


def emit_lines() -> str:
    return """
    def out(**kw):
        print(json.dumps(kw), flush=True)
    out(type="phase", name="running", detail="Offline")
    out(type="snapshot", data={"completed": 3, "total": 43, "qps": 1.5, "dice": [["case_00000", 0.9, 0.8]]})
    out(type="progress", task="run", done=3, total=43, unit="sample", item="case_00003")
    """


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def run_proc(tmp_path: Path, argv: list[str], cancel_on_progress: bool = False, grace=(0.4, 0.4)):
    ws = Workspace.resolve(tmp_path, env={})
    proc = BenchmarkProcess(ws, RunConfig(), grace_s=grace, argv=argv)
    events: list[object] = []
    ev = threading.Event()
    token = cj.CancelToken(ev)

    def report(e: object) -> None:
        events.append(e)
        if cancel_on_progress and isinstance(e, cj.Progress):
            ev.set()

    live = LiveFeed()
    return proc, events, live, (lambda: proc.run(report, token, live))


def test_success_relays_events_snapshot_and_result(tmp_path):
    body = emit_lines() + 'out(type="result", data={"valid": True, "samples_per_s": 6.84, "log_dir": "x"})\n'
    proc, events, live, go = run_proc(tmp_path, script(body))
    result = go()
    assert result == {"valid": True, "samples_per_s": 6.84, "log_dir": "x"}
    assert [type(e).__name__ for e in events] == ["Phase", "Progress"]
    assert events[1] == cj.Progress("run", 3, 43, "sample", "case_00003", t=events[1].t)
    snap = live.snapshot()
    assert snap is not None and (snap.completed, snap.total, snap.qps) == (3, 43, 1.5)
    assert snap.dice[0].case == "case_00000" and snap.dice[0].composite == pytest.approx(0.85)
    assert proc.signals_sent == []


def test_cancel_escalates_to_sigkill_and_kills_the_whole_group(tmp_path):
    # ignores SIGINT and SIGTERM, like a LoadGen stuck in C++; its helper process must die too
    body = (
        """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    helper = subprocess.Popen(["sleep", "60"])
    print(json.dumps({"type": "log", "text": f"helper {helper.pid}"}), flush=True)
    """
        + emit_lines()
        + "time.sleep(60)\n"
    )
    proc, events, _live, go = run_proc(tmp_path, script(body), cancel_on_progress=True)
    with pytest.raises(Cancelled, match=r"SIGINT, SIGTERM, SIGKILL"):
        go()
    assert proc.signals_sent == ["SIGINT", "SIGTERM", "SIGKILL"]
    helper = int(next(e.text for e in events if isinstance(e, cj.LogLine)).split()[1])
    assert wait_until(lambda: not alive(helper), timeout=5)
    assert any(isinstance(e, cj.Phase) and e.name == "cancelling" for e in events)


def test_cancel_stops_at_sigint_when_the_child_obeys(tmp_path):
    body = emit_lines() + "time.sleep(60)\n"  # default SIGINT handler: KeyboardInterrupt, exit
    proc, _events, _live, go = run_proc(tmp_path, script(body), cancel_on_progress=True)
    with pytest.raises(Cancelled):
        go()
    assert proc.signals_sent == ["SIGINT"]


def test_child_error_maps_to_core_error_type(tmp_path):
    body = (
        'print(json.dumps({"type": "error", "message": "model not found", "exit_code": 3}), flush=True)\n'
        "sys.exit(3)\n"
    )
    _proc, _events, _live, go = run_proc(tmp_path, script(body))
    with pytest.raises(MissingInputError, match="model not found"):
        go()


def test_child_crash_without_result_names_stderr(tmp_path):
    _proc, _events, _live, go = run_proc(tmp_path, script("raise SystemExit('boom: no loadgen')\n"))
    with pytest.raises(Exception, match=r"exited with status 1: boom: no loadgen"):
        go()


def test_snapshot_json_roundtrip():
    clock = iter([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]).__next__
    ev = RunEvents(total=2, clock=clock)
    ev.phase("running")
    ev.sample_done(0, "case_00000", 0.0, 64)
    ev.dice("case_00000", 0.95, 0.85)
    ev.log("hello")
    snap = ev.snapshot()
    back = snapshot_from_dict(json.loads(json.dumps(snapshot_to_dict(snap))))
    assert back == snap


@dataclass(frozen=True)
class FakeResult:
    valid: bool
    samples_per_s: float
    log_dir: Path
    detail: object = None


def test_runner_streams_json_lines(tmp_path, monkeypatch, capsys):
    import core.harness.runner as hr

    def fake_run(ws, cfg, report, cancel, events):
        assert cfg.scenario == "SingleStream" and ws.root == tmp_path
        report(cj.Phase("running", "SingleStream"))
        events.phase("running")
        events.sample_done(0, "case_00000", events.clock(), 64)
        report(cj.Progress("run", 1, 1, "sample", "case_00000"))
        report(cj.LogLine("info", "Result is : VALID"))
        return FakeResult(True, 2.5, tmp_path / "logs", detail={"huge": "x"})

    monkeypatch.setattr(hr, "run_benchmark", fake_run)
    rc = runner.main(["--workspace", str(tmp_path), "--config", json.dumps({"scenario": "SingleStream"})])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    kinds = [x["type"] for x in lines]
    assert kinds[:3] == ["phase", "progress", "log"] and kinds[-2:] == ["snapshot", "result"]
    assert lines[-1]["data"] == {"valid": True, "samples_per_s": 2.5, "log_dir": str(tmp_path / "logs")}
    assert lines[-2]["data"]["completed"] == 1


def test_runner_reports_errors_and_cancel(tmp_path, monkeypatch, capsys):
    import core.harness.runner as hr

    def missing(*_a, **_k):
        raise MissingInputError("not found", tmp_path / "model.onnx")

    monkeypatch.setattr(hr, "run_benchmark", missing)
    assert runner.main(["--workspace", str(tmp_path), "--config", "{}"]) == 3
    err = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert err == {"type": "error", "message": f"{tmp_path / 'model.onnx'}: not found", "exit_code": 3}

    def cancelled(*_a, **_k):
        raise Cancelled("run cancelled")

    monkeypatch.setattr(hr, "run_benchmark", cancelled)
    assert runner.main(["--workspace", str(tmp_path), "--config", "{}"]) == 130
    assert runner.main(["--workspace", str(tmp_path), "--config", '{"scenario": "Server"}']) == 2


def test_runner_sigint_reaches_the_job_while_it_runs(tmp_path, monkeypatch, capsys):
    """SIGINT sets the cancel token at once although the run itself blocks (in a thread)."""
    import signal as sig

    import core.harness.runner as hr

    seen: list[float] = []

    def blocking_run(ws, cfg, report, cancel, events):
        t0 = time.monotonic()
        threading.Timer(0.2, os.kill, (os.getpid(), sig.SIGINT)).start()
        while not cancel.wait(0.01):
            if time.monotonic() - t0 > 10:
                raise AssertionError("SIGINT never reached the cancel token")
        seen.append(time.monotonic() - t0)
        raise Cancelled("run cancelled")

    monkeypatch.setattr(hr, "run_benchmark", blocking_run)
    before = sig.getsignal(sig.SIGINT)
    assert runner.main(["--workspace", str(tmp_path), "--config", "{}"]) == 130
    assert seen and seen[0] < 5
    assert sig.getsignal(sig.SIGINT) is before  # the handler is restored
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["name"] == "cancelled"
