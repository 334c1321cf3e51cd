"""Bridges from core jobs to the console: reporters that turn core events into messages, the live feed the
monitor samples, and the jobs themselves (real ones call core; tests use console.fake.FakeJobs).

The console runs nothing of its own: a benchmark is core.harness.isolated.IsolatedRun (a child process in
its own process group, its events relayed into a RunEvents the monitor samples; a cancel asks the child
to stop, then SIGTERM, then SIGKILL), an engine is core.engine.build_engine, and so on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from core import jobs as cj
from core.benchmark import RunConfig
from core.harness.events import RunEvents, RunSnapshot
from core.history import RunRecord
from core.workspace import Workspace

Post = Callable[[Any], object]
TICK_S = 0.5  # the live QPS history gets one point per tick (the monitor's plot)


# ---------------------------------------------------------------------------------- live feed
class LiveFeed:
    """The latest RunSnapshot of the running benchmark, read by the monitor on its timer.

    Either follows a source callable (the RunEvents.snapshot of the run's relayed events) or holds the
    last snapshot a job set (FakeJobs). Thread-safe; the writer never sees widgets."""

    def __init__(self, source: Callable[[], RunSnapshot | None] | None = None) -> None:
        self._source = source
        self._last: RunSnapshot | None = None
        self._lock = threading.Lock()

    def follow(self, source: Callable[[], RunSnapshot | None]) -> None:
        with self._lock:
            self._source = source

    def set(self, snap: RunSnapshot) -> None:
        with self._lock:
            self._last = snap

    def snapshot(self) -> RunSnapshot | None:
        with self._lock:
            source = self._source
            if source is None:
                return self._last
        return source()


# ---------------------------------------------------------------------------------- reporters
def core_reporter(job: str, post: Post, min_interval: float = 0.1, info_lines_per_s: int = 20) -> cj.Reporter:
    """A core Reporter that turns core.jobs events into console messages for ``job``.

    Every message is handled on the UI thread, so a job reporting faster than the UI can handle them
    would build an unbounded backlog (input lagging by minutes, memory growing). Progress is therefore
    coalesced to one message per task per ``min_interval`` (the latest wins and is delivered with the
    next event of any kind; a final ``done == total`` passes at once), and info log lines are capped at
    ``info_lines_per_s`` (the skipped count is reported; the full log is in the run's files).
    Phases, warnings and errors always pass, in order."""
    from console import messages as m

    lock = threading.Lock()
    pending: dict[str, cj.Progress] = {}
    last: dict[str, float] = {}
    window = [0.0, 0, 0]  # start of the current second, info lines sent in it, lines skipped

    def send(ev: cj.Progress) -> None:  # with the lock held: keeps progress messages in order
        last[ev.task] = time.monotonic()
        post(m.Progress(job, ev.task, ev.done, ev.total, ev.unit, ev.item))

    def flush() -> None:  # with the lock held
        for ev in list(pending.values()):
            send(ev)
        pending.clear()

    def report(event: cj.Event) -> None:
        if isinstance(event, cj.Progress):
            with lock:
                final = event.total > 0 and event.done >= event.total
                if final or time.monotonic() - last.get(event.task, -1e9) >= min_interval:
                    pending.pop(event.task, None)
                    send(event)
                else:
                    pending[event.task] = event
        elif isinstance(event, cj.Phase):
            with lock:
                flush()  # the last progress of the previous phase first
                post(m.PhaseChanged(job, event.name, event.detail))
        elif isinstance(event, cj.LogLine):
            with lock:
                if event.level == "info":
                    now = time.monotonic()
                    if now - window[0] >= 1.0:
                        if window[2]:
                            post(m.LogLine(job, "info", f"({window[2]} more log lines not shown here)"))
                        window[:] = [now, 0, 0]
                    if window[1] >= info_lines_per_s:
                        window[2] += 1
                        return
                    window[1] += 1
                post(m.LogLine(job, event.level, event.text))

    return report


# -------------------------------------------------------------------------------- the job set
class Jobs(Protocol):
    """What the console can do. RealJobs calls core; FakeJobs scripts events for tests."""

    def status(self, ws: Workspace) -> Any: ...
    def history(self, ws: Workspace) -> list[RunRecord]: ...
    def demo(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any: ...
    def preprocess(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any: ...
    def calibrate(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any: ...
    def build_engine(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken
    ) -> Any: ...
    def benchmark(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken, live: LiveFeed
    ) -> dict[str, Any]: ...


class RealJobs:
    """The jobs of the core package, called as the CLI calls them."""

    def __init__(
        self, grace_s: tuple[float, float] = (30.0, 5.0), child_argv: list[str] | None = None
    ) -> None:
        self.grace_s = grace_s  # a cancelled run's child: seconds before SIGTERM, then before SIGKILL
        self.child_argv = child_argv  # tests: a scripted stand-in for the run's child process
        self.current: Any = None  # the IsolatedRun in flight

    def shutdown(self) -> None:
        """Quitting with a run in flight: stop its process group now (short grace periods)."""
        run = self.current
        if run is not None:
            run.stop(grace_s=(1.0, 1.0))

    def status(self, ws: Workspace) -> Any:
        from core.status import collect_status

        return collect_status(ws)

    def history(self, ws: Workspace) -> list[RunRecord]:
        from core.history import list_runs

        return list_runs(ws)

    def demo(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        from core.demo import run_demo

        return run_demo(ws, report=report, cancel=cancel, performance=False)

    def preprocess(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        from core.preprocess import run_preprocess

        return run_preprocess(ws, report=report, cancel=cancel)

    def calibrate(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        from core.calibration import run_calibration

        return run_calibration(ws, report=report, cancel=cancel)

    def build_engine(self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        from core.engine import build_engine

        return build_engine(ws, cfg, report, cancel).to_dict()

    def benchmark(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken, live: LiveFeed
    ) -> dict[str, Any]:
        """One run in its own child process (core.harness.isolated); the monitor reads the relayed
        events through ``live``; the child's own output lines become log lines."""
        from core.harness.isolated import IsolatedRun

        events = RunEvents()
        live.follow(events.snapshot)
        run = IsolatedRun(
            ws,
            cfg,
            grace_s=self.grace_s,
            output=lambda line: report(cj.LogLine("info", line)),
            argv=self.child_argv,
        )
        self.current = run
        stop = threading.Event()

        def tick() -> None:  # one point of the QPS history per tick, as long as the run lasts
            while not stop.wait(TICK_S):
                events.tick()

        ticker = threading.Thread(target=tick, name="unet3d-live-tick", daemon=True)
        ticker.start()
        try:
            return run.run(report, cancel, events).to_dict()
        finally:
            stop.set()
            self.current = None


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Small polling helper (tests)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
