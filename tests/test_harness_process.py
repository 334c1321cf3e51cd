"""Process-level harness behavior with the real LoadGen: one run per child process
(run_benchmark_isolated), cancel across processes, and SIGINT during an Offline run. Each test starts
Python subprocesses (a few seconds each), so they are marked slow."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.benchmark import RunConfig
from core.errors import BadInputError, Cancelled
from core.harness.events import RunEvents
from core.harness.isolated import run_benchmark_isolated
from core.harness.logs import parse_detail
from core.harness.runner import RunCancelled
from core.jobs import CancelToken, LogLine
from core.workspace import Workspace
from tests.test_harness_fakes import SHAPES

pytestmark = pytest.mark.slow
N = len(SHAPES)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path, env={})


def run_json(path: Path) -> dict:
    return json.loads((path / "run.json").read_text())


FAKES = "tests.test_harness_fakes"


def test_isolated_runs_are_fresh_and_relay_events(ws: Workspace) -> None:
    """Each isolated run is LoadGen's first in its process: no 'Multiple conf files' error and the
    embedded mlperf.conf applied, even after in-process runs in this test process."""
    lines: list[str] = []
    events = RunEvents()
    perf = run_benchmark_isolated(
        ws,
        RunConfig(scenario="Offline", offline_expected_qps=30, min_duration=0.05, min_query_count=N),
        lambda ev: lines.append(ev.text) if isinstance(ev, LogLine) else None,
        CancelToken(),
        events=events,
        engine_factory=f"{FAKES}:perfect_engine",
        data_factory=f"{FAKES}:tiny_data",
    )
    assert perf.status == "complete" and perf.fresh_process and perf.valid is True
    detail = parse_detail(perf.log_dir)
    assert detail.errors == () and perf.loadgen_errors == ()
    assert detail.effective["qsl_rng_seed"] == 2085463073848966840
    assert detail.effective["sample_concatenate_permutation"] is True
    assert perf.summary is not None and perf.summary.valid is True
    assert "Result is : VALID" in lines
    snap = events.snapshot()
    assert snap.completed == perf.samples_completed == snap.total and snap.phase == "done"

    acc_events = RunEvents()
    acc = run_benchmark_isolated(
        ws,
        RunConfig(scenario="SingleStream", test_mode="AccuracyOnly", single_stream_expected_latency_ms=20),
        lambda ev: None,
        CancelToken(),
        events=acc_events,
        engine_factory=f"{FAKES}:perfect_engine",
        data_factory=f"{FAKES}:tiny_data",
    )
    assert acc.fresh_process and parse_detail(acc.log_dir).errors == ()
    assert (
        acc.accuracy is not None
        and acc.accuracy.line == "Accuracy: mean = 1.00000, kidney = 1.0000, tumor = 1.0000"
    )
    assert [r.case for r in acc.accuracy.rows] == list(SHAPES)
    assert sorted(d.case for d in acc_events.snapshot().dice) == sorted(SHAPES)
    assert acc.log_dir != perf.log_dir


def test_isolated_cancel_and_error(ws: Workspace) -> None:

    token = CancelToken()
    events = RunEvents()
    caught: list[BaseException] = []

    def target() -> None:
        try:
            run_benchmark_isolated(
                ws,
                RunConfig(scenario="SingleStream", single_stream_expected_latency_ms=300, min_duration=60),
                lambda ev: None,
                token,
                events=events,
                engine_factory=f"{FAKES}:slow_engine",
                data_factory=f"{FAKES}:tiny_data",
            )
        except BaseException as exc:
            caught.append(exc)

    th = threading.Thread(target=target)
    th.start()
    deadline = time.monotonic() + 60
    while events.snapshot().completed < 1 and time.monotonic() < deadline and th.is_alive():
        time.sleep(0.02)
    token.cancel()
    th.join(60)
    assert not th.is_alive()
    (exc,) = caught
    assert isinstance(exc, RunCancelled) and exc.result.status == "cancelled"
    assert 1 <= exc.result.samples_completed <= 3
    assert run_json(exc.result.log_dir)["status"] == "cancelled"

    with pytest.raises(BadInputError, match=r"sample \d \(case_0000\d\).*NaN"):
        run_benchmark_isolated(
            ws,
            RunConfig(test_mode="AccuracyOnly"),
            lambda ev: None,
            CancelToken(),
            engine_factory=f"{FAKES}:nan_engine",
            data_factory=f"{FAKES}:tiny_data",
        )


def test_isolated_stuck_child_is_stopped(ws: Workspace) -> None:
    """An engine that ignores the cancel token: after the grace period the child's group is killed."""

    token = CancelToken()
    events = RunEvents()
    caught: list[BaseException] = []

    def target() -> None:
        try:
            run_benchmark_isolated(
                ws,
                RunConfig(test_mode="AccuracyOnly"),
                lambda ev: None,
                token,
                events=events,
                engine_factory=f"{FAKES}:stuck_engine",
                data_factory=f"{FAKES}:tiny_data",
                cancel_grace_s=0.5,
            )
        except BaseException as exc:
            caught.append(exc)

    th = threading.Thread(target=target)
    th.start()
    deadline = time.monotonic() + 60
    while events.snapshot().phase != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(1.0)  # let LoadGen issue the first sample into the stuck engine
    token.cancel()
    th.join(30)
    assert not th.is_alive()
    (exc,) = caught
    assert type(exc) is Cancelled and "stopped" in str(exc)
    (folder,) = ws.log_dir.iterdir()
    rj = run_json(folder)
    assert rj["status"] == "cancelled" and "exited with code -15" in rj["error"]  # SIGTERM


SIGINT_RUN = """
import signal, sys, time
from core.benchmark import RunConfig
from core.harness.runner import run_benchmark
from core.jobs import CancelToken
from core.workspace import Workspace
from tests.test_harness_fakes import FakeVolumeEngine, make_data
tok = CancelToken()
if sys.argv[2] == "handler":  # the console's runner: SIGINT sets the token
    signal.signal(signal.SIGINT, lambda *_: tok.cancel())
else:  # Python's default (a child of a background job would inherit SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
cfg = RunConfig(scenario="Offline", offline_expected_qps=5, min_duration=30)
engine = FakeVolumeEngine(delay=0.2)
print("start", flush=True)
t0 = time.monotonic()
try:
    ws = Workspace.resolve(sys.argv[1], env={})
    run_benchmark(ws, cfg, lambda e: None, tok, engine=engine, data=make_data())
    print("finished", flush=True)
except BaseException as exc:
    print(type(exc).__name__, round(time.monotonic() - t0, 2), engine.segmented, flush=True)
"""


@pytest.mark.parametrize("mode", ["handler", "default"])
def test_sigint_cancels_offline_promptly(tmp_path: Path, mode: str) -> None:
    """Offline blocks inside LoadGen after its one issue; SIGINT (console Esc, CLI Ctrl-C) must still
    cancel within a sample or two, not after the 150-sample query."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_RUN, str(tmp_path), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0  # a clean exit: LoadGen was never torn down under its own feet
    name, _seconds, segmented = out.split()
    assert name == "RunCancelled"
    assert int(segmented) < 30  # the query holds >= 150 samples of 0.2 s
    (folder,) = (tmp_path / "build" / "logs").iterdir()
    assert run_json(folder)["status"] == "cancelled"
