"""Bridges from core jobs to the console: reporters that turn core events into messages, the live feed the
monitor samples, and the jobs themselves (real ones call core; tests use console.fake.FakeJobs).

The benchmark runs in a child process (``python -m console.runner``) started in its own process group, so
Esc can stop LoadGen for real: SIGINT to the group, then SIGTERM, then SIGKILL after grace periods.
The child streams JSON lines (phase, progress, log, snapshot, result) on stdout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from core import jobs as cj
from core.audit import RunView, list_run_views
from core.benchmark import RunConfig
from core.errors import Cancelled, ExitCode, UnetError
from core.harness.events import CaseDice, DeviceStat, RunSnapshot
from core.workspace import Workspace

Post = Callable[[Any], object]


# ---------------------------------------------------------------------------------- live feed
class LiveFeed:
    """The latest RunSnapshot of the running benchmark, read by the monitor on its timer.

    Either wraps a source callable (an in-process RunEvents.snapshot) or holds the last snapshot a child
    process streamed. Thread-safe; the writer never sees widgets."""

    def __init__(self, source: Callable[[], RunSnapshot | None] | None = None) -> None:
        self._source = source
        self._last: RunSnapshot | None = None
        self._lock = threading.Lock()

    def set(self, snap: RunSnapshot) -> None:
        with self._lock:
            self._last = snap

    def snapshot(self) -> RunSnapshot | None:
        if self._source is not None:
            return self._source()
        with self._lock:
            return self._last


def snapshot_to_dict(s: RunSnapshot) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["dice"] = [[c.case, c.kidney, c.tumor] for c in s.dice]
    return d


def snapshot_from_dict(d: dict[str, Any]) -> RunSnapshot:
    return RunSnapshot(
        t=float(d.get("t", 0.0)),
        started=d.get("started"),
        completed=int(d.get("completed", 0)),
        total=int(d.get("total", 0)),
        windows_done=int(d.get("windows_done", 0)),
        qps=float(d.get("qps", 0.0)),
        windows_per_s=float(d.get("windows_per_s", 0.0)),
        latency_ms={str(k): float(v) for k, v in (d.get("latency_ms") or {}).items()},
        qps_history=tuple(float(x) for x in d.get("qps_history") or ()),
        dice=tuple(CaseDice(str(c[0]), float(c[1]), float(c[2])) for c in d.get("dice") or ()),
        log_tail=tuple(str(x) for x in d.get("log_tail") or ()),
        phase=str(d.get("phase", "")),
        devices=tuple(
            DeviceStat(str(x["device"]), int(x["completed"]), float(x["qps"]), float(x["windows_per_s"]))
            for x in d.get("devices") or ()
            if isinstance(x, dict)
        ),
    )


def jsonable(obj: Any) -> Any:
    """Plain JSON data from result dataclasses (Paths -> str, nested dataclasses -> dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        with contextlib.suppress(Exception):
            return obj.item()
    return str(obj)


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
    def history(self, ws: Workspace) -> list[RunView]: ...
    def demo(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any: ...
    def preprocess(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any: ...
    def calibrate(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any: ...
    def build_engine(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken
    ) -> Any: ...
    def benchmark(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken, live: LiveFeed
    ) -> dict[str, Any]: ...


def core_module(name: str) -> Any:
    """Import a core module a job needs; a module not in this build is a MissingInputError with one line
    (shown in the error modal), not a traceback."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            from core.errors import MissingInputError

            raise MissingInputError(f"{name} is not in this build yet") from None
        raise


class RealJobs:
    """The jobs of the core package. The benchmark runs in a child process (see BenchmarkProcess)."""

    def __init__(self, grace_s: tuple[float, float] = (30.0, 5.0)) -> None:
        self.grace_s = grace_s
        self.current: BenchmarkProcess | None = None

    def shutdown(self) -> None:
        """Quitting with a run in flight: stop its process group now (short grace periods)."""
        proc = self.current
        if proc is not None:
            proc.grace_s = (1.0, 1.0)
            proc.stop()

    def status(self, ws: Workspace) -> Any:
        from core.status import collect_status

        return collect_status(ws)

    def history(self, ws: Workspace) -> list[RunView]:
        return list_run_views(ws)

    def demo(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        demo = core_module("core.demo")
        # The console builds the workspace here and runs the benchmark itself (cancellable child).
        make = getattr(demo, "prepare_demo", None) or getattr(demo, "create_demo_workspace", None)
        if make is not None:
            return make(ws, report=report, cancel=cancel)
        return demo.run_demo(ws, report=report, cancel=cancel, performance=False)

    def preprocess(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        return core_module("core.preprocess").run_preprocess(ws, report=report, cancel=cancel)

    def calibrate(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        return core_module("core.calibration").run_calibration(ws, report=report, cancel=cancel)

    def build_engine(self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        from core.engine import build_engine

        return build_engine(ws, cfg, report, cancel).to_dict()

    def benchmark(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken, live: LiveFeed
    ) -> dict[str, Any]:
        self.current = BenchmarkProcess(ws, cfg, grace_s=self.grace_s)
        try:
            return self.current.run(report, cancel, live)
        finally:
            self.current = None


# --------------------------------------------------------------------------- child process
class BenchmarkProcess:
    """Runs ``python -m console.runner`` in its own process group and relays its JSON-lines stream."""

    def __init__(
        self,
        ws: Workspace,
        cfg: RunConfig,
        grace_s: tuple[float, float] = (30.0, 5.0),
        argv: list[str] | None = None,
    ) -> None:
        self.ws = ws
        self.cfg = cfg
        self.grace_s = grace_s
        self.argv = argv or [
            sys.executable,
            "-m",
            "console.runner",
            "--workspace",
            str(ws.root),
            "--config",
            json.dumps(jsonable(cfg.to_dict())),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.signals_sent: list[str] = []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATA_DIR=str(self.ws.data_dir),
            PREPROCESSED_DATA_DIR=str(self.ws.preprocessed_dir),
            MODEL_DIR=str(self.ws.model_dir),
            LOG_DIR=str(self.ws.log_dir),
            PYTHONUNBUFFERED="1",
        )
        return env

    def stop(self) -> None:
        """SIGINT the group, then SIGTERM, then SIGKILL, waiting the grace periods between."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        for sig, wait in (
            (signal.SIGINT, self.grace_s[0]),
            (signal.SIGTERM, self.grace_s[1]),
            (signal.SIGKILL, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
                self.signals_sent.append(sig.name)
            try:
                p.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def run(self, report: cj.Reporter, cancel: cj.CancelToken, live: LiveFeed) -> dict[str, Any]:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: signals reach LoadGen and its helpers
            env=self._env(),
            cwd=str(self.ws.root) if self.ws.root.is_dir() else None,
        )
        lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

        def pump(name: str, stream: Any) -> None:
            for line in stream:
                lines.put((name, line))
            lines.put((name, None))

        threads = [
            threading.Thread(target=pump, args=("out", self.proc.stdout), daemon=True),
            threading.Thread(target=pump, args=("err", self.proc.stderr), daemon=True),
        ]
        for t in threads:
            t.start()
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        was_cancelled = False
        stderr_tail: list[str] = []
        open_streams = 2
        while open_streams:
            if cancel.cancelled and not was_cancelled:
                was_cancelled = True
                report(cj.Phase("cancelling", "SIGINT to the LoadGen process group"))
                threading.Thread(target=self.stop, daemon=True).start()
            try:
                name, line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if name == "err":
                text = line.rstrip()
                if text:
                    stderr_tail = [*stderr_tail[-19:], text]
                    report(cj.LogLine("info", text))
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                report(cj.LogLine("info", line.rstrip()))
                continue
            kind = msg.get("type")
            if kind == "snapshot":
                live.set(snapshot_from_dict(msg["data"]))
            elif kind == "progress":
                report(
                    cj.Progress(
                        msg.get("task", "run"),
                        msg["done"],
                        msg["total"],
                        msg.get("unit", ""),
                        msg.get("item", ""),
                    )
                )
            elif kind == "phase":
                report(cj.Phase(msg.get("name", ""), msg.get("detail", "")))
            elif kind == "log":
                report(cj.LogLine(msg.get("level", "info"), msg.get("text", "")))
            elif kind == "result":
                result = msg.get("data") or {}
            elif kind == "error":
                error = msg
        rc = self.proc.wait()
        if was_cancelled or cancel.cancelled or rc == int(ExitCode.INTERRUPTED):
            raise Cancelled(f"run cancelled ({', '.join(self.signals_sent) or 'stopped'})")
        if error is not None:
            raise error_for(int(error.get("exit_code", 1)), str(error.get("message", "run failed")))
        if result is None:
            tail = stderr_tail[-1] if stderr_tail else "no output"
            raise UnetError(f"benchmark process exited with status {rc}: {tail}")
        return result


def error_for(exit_code: int, message: str) -> UnetError:
    """The core error type for a child's exit code (so the console shows the same class the CLI would)."""
    from core.errors import BadInputError, MissingInputError, RunInvalidError, UsageError

    cls = {1: RunInvalidError, 2: UsageError, 3: MissingInputError, 4: BadInputError}.get(
        exit_code, UnetError
    )
    return cls(message)


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Small polling helper (tests and the runner)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
