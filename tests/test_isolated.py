"""The benchmark child process (core.harness.isolated), the one job layer both front ends run a
benchmark with: its JSON-lines relay into a RunEvents and a reporter, the errors it maps back, and the
cancel escalation ("cancel" on stdin -> SIGTERM -> SIGKILL of the whole process group), including the
short grace on quit. Scripted children stand in for LoadGen (tests/test_harness_process.py runs the
real one)."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from console.workers import wait_until
from core import jobs as cj
from core.benchmark import RunConfig
from core.errors import Cancelled, MissingInputError, RunInvalidError
from core.harness.events import DeviceStat, RunEvents
from core.harness.isolated import IsolatedRun, _RelayEvents, relay
from core.harness.runner import RunCancelled, RunResult
from core.workspace import Workspace

# the child's side of the protocol: the pipe is the last argument, the spec the first stdin line
HEAD = """
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
pipe = os.fdopen(int(sys.argv[-1]), "w", buffering=1)
spec = json.loads(sys.stdin.readline())
def out(**kw):
    pipe.write(json.dumps(kw) + "\\n")
    pipe.flush()
"""

EVENTS = """
out(t="report", kind="log", level="info", text="scenario " + spec["config"]["scenario"])
out(t="phase", name="running", total=43)
out(t="sample", index=0, case="case_00000", issued=time.monotonic() - 0.5, windows=64, device="cuda:1",
    total=43)
out(t="dice", case="case_00000", kidney=0.9, tumor=0.8)
out(t="log", line="sample 1/43 case_00000 done")
out(t="report", kind="progress", task="run", done=1, total=43, unit="sample", item="case_00000")
"""


def script(body: str) -> list[str]:
    return [sys.executable, "-c", HEAD + body]


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


def result_dict(log_dir: Path, status: str = "complete") -> dict:
    return RunResult(
        status=status, log_dir=log_dir, scenario="SingleStream", test_mode="PerformanceOnly",
        config_ver="default", audit_test=None, valid=True, result_line="Result is : VALID",
        samples_per_s=6.84, latency_ms={"p90": 150.5}, min_duration_met=True, min_queries_met=True,
        early_stopping_met=True, reasons=(), accuracy=None, samples_completed=43,
    ).to_dict()  # fmt: skip


class Harness:
    """An IsolatedRun with a recording reporter; ``cancel_on_progress`` cancels at the first Progress."""

    def __init__(self, tmp_path: Path, body: str, *, cancel_on_progress: bool = False, grace=(0.4, 0.4)):
        self.ws = Workspace.resolve(tmp_path, env={})
        self.output: list[str] = []
        self.run = IsolatedRun(
            self.ws,
            RunConfig(scenario="SingleStream"),
            grace_s=grace,
            output=self.output.append,
            argv=script(body),
        )
        self.reported: list[object] = []
        self.token = cj.CancelToken()
        self.events = RunEvents()
        self.cancel_on_progress = cancel_on_progress

    def report(self, e: object) -> None:
        self.reported.append(e)
        if self.cancel_on_progress and isinstance(e, cj.Progress):
            self.token.cancel()

    def go(self) -> RunResult:
        return self.run.run(self.report, self.token, self.events)


def test_success_relays_events_and_the_result(tmp_path: Path) -> None:
    body = (
        EVENTS + f"out(t='result', result={result_dict(tmp_path / 'logs')!r})\nprint('a library says hi')\n"
    )
    h = Harness(tmp_path, body)
    result = h.go()
    assert (result.status, result.valid, result.samples_per_s, result.log_dir) == (
        "complete", True, 6.84, tmp_path / "logs"
    )  # fmt: skip
    assert [type(e).__name__ for e in h.reported] == ["LogLine", "Progress"]
    assert h.reported[0] == cj.LogLine("info", "scenario SingleStream")  # the child got the config
    assert h.reported[1] == cj.Progress("run", 1, 43, "sample", "case_00000", t=h.reported[1].t)
    snap = h.events.snapshot()
    assert (snap.completed, snap.total, snap.phase, snap.windows_done) == (1, 43, "running", 64)
    assert snap.latency_ms["p50"] >= 500.0  # issued on the same monotonic clock, half a second earlier
    assert snap.dice[0].case == "case_00000" and snap.dice[0].composite == pytest.approx(0.85)
    assert [d.device for d in snap.devices] == ["cuda:1"] and snap.log_tail == (
        "sample 1/43 case_00000 done",
    )
    assert h.output == ["a library says hi"] and h.run.signals_sent == []


def test_the_relay_keeps_every_event_across_json() -> None:
    """What the child's RunEvents records, the parent's RunEvents holds after the JSON round trip."""
    sent: list[dict] = []
    child = _RelayEvents(lambda msg: sent.append(json.loads(json.dumps(msg))))
    child.total = 4
    child.phase("running")
    t0 = time.monotonic()
    for i, dev in enumerate(("cuda:0", "cuda:1", "cuda:0")):
        child.sample_done(i, f"case_{i:05d}", t0, windows=8, device=dev)
    child.dice("case_00000", 0.95, 0.85)
    child.log("hello")
    parent = RunEvents()
    for msg in sent:
        relay(msg, parent, lambda _e: None)
    a, b = child.snapshot(), parent.snapshot()
    assert (b.completed, b.total, b.windows_done, b.phase, b.dice, b.log_tail) == (
        a.completed, a.total, a.windows_done, a.phase, a.dice, a.log_tail
    )  # fmt: skip
    assert [(d.device, d.completed) for d in b.devices] == [("cuda:0", 2), ("cuda:1", 1)]
    assert all(isinstance(d, DeviceStat) for d in b.devices)


def test_cancel_escalates_to_sigkill_and_kills_the_whole_group(tmp_path: Path) -> None:
    # ignores the cancel line, SIGINT and SIGTERM, like a LoadGen stuck in C++; its helper must die too
    run_dir = tmp_path / "build" / "logs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": "r1", "status": "running"}))
    stubborn = textwrap.dedent(f"""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        helper = subprocess.Popen(["sleep", "60"])
        out(t="report", kind="log", level="info", text="run folder {run_dir}")
        out(t="report", kind="log", level="info", text=f"helper {{helper.pid}}")
    """)
    body = stubborn + EVENTS + "time.sleep(60)\n"
    h = Harness(tmp_path, body, cancel_on_progress=True)
    with pytest.raises(Cancelled, match=r"cancel, SIGTERM, SIGKILL") as caught:
        h.go()
    assert not isinstance(caught.value, RunCancelled)  # the child never said a word: no partial result
    assert h.run.signals_sent == ["cancel", "SIGTERM", "SIGKILL"]
    helper = int(
        next(e.text for e in h.reported if isinstance(e, cj.LogLine) and "helper" in e.text).split()[1]
    )
    assert wait_until(lambda: not alive(helper), timeout=5)
    assert any(isinstance(e, cj.Phase) and e.name == "cancelling" for e in h.reported)
    doc = json.loads((run_dir / "run.json").read_text())  # the dead child's run is recorded as cancelled
    assert doc["status"] == "cancelled" and "exited with code -9" in doc["error"]
    assert h.events.snapshot().phase == "cancelled"


def test_cancel_stops_at_the_cancel_line_when_the_child_obeys(tmp_path: Path) -> None:
    partial = result_dict(tmp_path / "logs", "cancelled")
    body = EVENTS + textwrap.dedent(f"""
        for line in sys.stdin:
            if line.strip() == "cancel":
                out(t="error", type="RunCancelled", message="run cancelled", result={partial!r})
                sys.exit(130)
    """)
    h = Harness(tmp_path, body, cancel_on_progress=True)
    with pytest.raises(RunCancelled) as caught:
        h.go()
    assert caught.value.result.status == "cancelled" and caught.value.result.samples_completed == 43
    assert h.run.signals_sent == ["cancel"]


def test_child_error_maps_to_the_core_error_type(tmp_path: Path) -> None:
    h = Harness(
        tmp_path, 'out(t="error", type="MissingInputError", message="model.onnx: not found")\nsys.exit(3)\n'
    )
    with pytest.raises(MissingInputError, match=r"model\.onnx: not found"):
        h.go()


def test_child_crash_without_result_names_its_last_output(tmp_path: Path) -> None:
    h = Harness(tmp_path, "raise SystemExit('boom: no loadgen')\n")
    with pytest.raises(RunInvalidError, match=r"exited with code 1 without a result: boom: no loadgen"):
        h.go()
    assert h.output == ["boom: no loadgen"] and h.events.snapshot().phase == "failed"


def test_stop_on_quit_shortens_the_grace(tmp_path: Path) -> None:
    """Quitting the console with a run in flight: stop() asks the child to cancel and escalates after
    one second, although the run's own grace period is 30 s."""
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + EVENTS + "time.sleep(60)\n"
    h = Harness(tmp_path, body, grace=(30.0, 5.0))
    caught: list[BaseException] = []

    def target() -> None:
        try:
            h.go()
        except BaseException as exc:
            caught.append(exc)

    th = threading.Thread(target=target)
    th.start()
    assert wait_until(lambda: h.events.snapshot().completed == 1, timeout=30)
    t0 = time.monotonic()
    h.run.stop(grace_s=(0.3, 0.3))
    assert h.run.proc is not None and h.run.proc.poll() is not None  # stop() waits for the child
    th.join(10)
    assert time.monotonic() - t0 < 10 and not th.is_alive()
    assert h.run.signals_sent == ["cancel", "SIGTERM", "SIGKILL"]
    assert len(caught) == 1 and isinstance(caught[0], Cancelled)
