"""One benchmark run in a fresh child process: the job both front ends start a run with.

LoadGen reads its embedded mlperf.conf only once per process (see core.harness.settings), so a
long-lived caller (the console, `unet3d demo`, the CLI running several configs) that wants every run to
be submittable runs each one in a child: :class:`IsolatedRun` (or :func:`run_benchmark_isolated`).

The child (``python -m core.harness.isolated --child FD``) runs :func:`core.harness.runner.run_benchmark`
and writes its events as JSON lines on the pipe FD: RunEvents writes (phase, sample, dice, log) and
Reporter events (report). The parent mirrors them into its own :class:`RunEvents` (which a live view
samples) and reporter, then returns the same :class:`RunResult` or raises the same error the run would
have in-process. The child's own stdout/stderr (tracebacks, library warnings) go to ``output``, line by
line. The child runs in its own process group; a cancel is a "cancel" line on its stdin (its token then
stops issuing work and LoadGen returns), escalated to SIGTERM and then SIGKILL of the whole group
after grace periods, so a run stuck in native code still stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.benchmark import RunConfig
from core.errors import (
    BackendUnavailableError,
    BadInputError,
    Cancelled,
    MissingInputError,
    RunInvalidError,
    UnetError,
    UsageError,
)
from core.fsio import write_text_atomic
from core.harness.events import RunEvents
from core.harness.runner import RUN_JSON, RunCancelled, RunResult, run_benchmark
from core.harness.settings import check_config
from core.jobs import CancelToken, LogLine, Phase, Progress, Reporter
from core.lock import WorkspaceBusyError
from core.workspace import Workspace

_ERRORS: dict[str, type[UnetError]] = {
    c.__name__: c
    for c in (
        UnetError,
        UsageError,
        MissingInputError,
        BadInputError,
        RunInvalidError,
        BackendUnavailableError,
        Cancelled,
        WorkspaceBusyError,
    )
}
RUN_FOLDER = "run folder "  # the runner's first log line names the run's folder


# --- the child ------------------------------------------------------------------------------------


def _import_factory(spec: str) -> Any:
    """'package.module:attribute' -> the attribute (a zero-argument factory)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UsageError(f"factory {spec!r} is not 'module:attribute'")
    return getattr(importlib.import_module(module), attr)


class _RelayEvents(RunEvents):
    """RunEvents that also sends every write to the parent process."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._send = send

    def phase(self, name: str) -> None:
        super().phase(name)
        self._send({"t": "phase", "name": name, "total": self.total})

    def sample_done(
        self, index: int, case: str, issued: float, windows: int, device: str | None = None
    ) -> Any:
        done = super().sample_done(index, case, issued, windows, device)
        self._send(
            {
                "t": "sample",
                "index": index,
                "case": case,
                "issued": issued,
                "windows": windows,
                "device": device,
                "total": self.total,
            }
        )
        return done

    def dice(self, case: str, kidney: float, tumor: float) -> None:
        super().dice(case, kidney, tumor)
        self._send({"t": "dice", "case": case, "kidney": kidney, "tumor": tumor})

    def log(self, line: str) -> None:
        super().log(line)
        self._send({"t": "log", "line": line})


def _event_to_msg(ev: object) -> dict[str, Any] | None:
    if isinstance(ev, LogLine):
        return {"t": "report", "kind": "log", "level": ev.level, "text": ev.text}
    if isinstance(ev, Phase):
        return {"t": "report", "kind": "phase", "name": ev.name, "detail": ev.detail}
    if isinstance(ev, Progress):
        return {
            "t": "report",
            "kind": "progress",
            "task": ev.task,
            "done": ev.done,
            "total": ev.total,
            "unit": ev.unit,
            "item": ev.item,
        }
    return None


def _msg_to_event(msg: dict[str, Any]) -> object | None:
    kind = msg.get("kind")
    if kind == "log":
        return LogLine(str(msg["level"]), str(msg["text"]))
    if kind == "phase":
        return Phase(str(msg["name"]), str(msg.get("detail", "")))
    if kind == "progress":
        return Progress(
            str(msg["task"]), int(msg["done"]), int(msg["total"]), str(msg["unit"]), str(msg["item"])
        )
    return None


def relay(msg: dict[str, Any], events: RunEvents, report: Reporter) -> None:
    """Apply one of the child's messages to the parent's RunEvents / reporter."""
    t = msg.get("t")
    if isinstance(msg.get("total"), int) and t != "report":
        events.total = msg["total"]
    if t == "phase":
        events.phase(str(msg["name"]))
    elif t == "sample":
        dev = msg.get("device")
        events.sample_done(
            int(msg["index"]),
            str(msg["case"]),
            float(msg["issued"]),  # CLOCK_MONOTONIC: the same clock in both processes
            int(msg["windows"]),
            device=None if dev is None else str(dev),
        )
    elif t == "dice":
        events.dice(str(msg["case"]), float(msg["kidney"]), float(msg["tumor"]))
    elif t == "log":
        events.log(str(msg["line"]))
    elif t == "report":
        ev = _msg_to_event(msg)
        if ev is not None:
            report(ev)


def _child_main(fd: int) -> int:
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    lock = threading.Lock()

    def send(obj: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(obj, default=str) + "\n")
            out.flush()

    spec = json.loads(sys.stdin.readline())
    token = CancelToken()

    def control() -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                token.cancel()
        token.cancel()  # stdin closed: the parent is gone

    threading.Thread(target=control, name="unet3d-control", daemon=True).start()

    def report(ev: object) -> None:
        msg = _event_to_msg(ev)
        if msg is not None:
            send(msg)

    try:
        ws = Workspace(**{k: Path(v) for k, v in spec["workspace"].items()})
        cfg = RunConfig.from_dict(spec["config"])
        engine = _import_factory(spec["engine_factory"])() if spec.get("engine_factory") else None
        data = _import_factory(spec["data_factory"])() if spec.get("data_factory") else None
        result = run_benchmark(ws, cfg, report, token, events=_RelayEvents(send), engine=engine, data=data)
        send({"t": "result", "result": result.to_dict()})
        return 0
    except RunCancelled as exc:
        send({"t": "error", "type": "RunCancelled", "message": str(exc), "result": exc.result.to_dict()})
        return int(exc.exit_code)
    except UnetError as exc:
        send({"t": "error", "type": type(exc).__name__, "message": str(exc)})
        return int(exc.exit_code)
    except BaseException as exc:
        traceback.print_exc()
        send({"t": "error", "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"})
        return 1


# --- the parent -----------------------------------------------------------------------------------


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class IsolatedRun:
    """One :func:`run_benchmark` in a fresh child process (see the module docstring).

    ``engine_factory`` / ``data_factory``: optional 'module:attribute' zero-argument factories the child
    calls instead of loading the configured backend / the preprocessed set (tests, demos).
    ``grace_s``: seconds the child gets after a cancel before its process group gets SIGTERM, and after
    that before SIGKILL. ``output``: where the child's own stdout/stderr lines go (default: our stderr).
    ``argv``: the child's command without the pipe's FD (tests stand in a scripted child)."""

    def __init__(
        self,
        ws: Workspace,
        cfg: RunConfig,
        *,
        engine_factory: str | None = None,
        data_factory: str | None = None,
        grace_s: tuple[float, float] = (30.0, 5.0),
        output: Callable[[str], None] | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.ws = ws
        self.cfg = cfg
        self.engine_factory = engine_factory
        self.data_factory = data_factory
        self.grace_s = grace_s
        self.output = output or _to_stderr
        self.argv = argv or [sys.executable, "-m", "core.harness.isolated", "--child"]
        self.proc: subprocess.Popen[str] | None = None
        self.signals_sent: list[str] = []  # "cancel", then "SIGTERM", "SIGKILL" as the escalation went
        self.output_tail: deque[str] = deque(maxlen=20)
        self._stop = threading.Event()
        self._started = threading.Event()

    def stop(self, grace_s: tuple[float, float] = (1.0, 1.0), timeout: float | None = None) -> None:
        """Cancel the run now with short grace periods (quitting with a run in flight) and wait up to
        ``timeout`` seconds (default: the grace periods and 5 s more) for the child to be gone."""
        self.grace_s = (min(grace_s[0], self.grace_s[0]), min(grace_s[1], self.grace_s[1]))
        self._stop.set()
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout if timeout is not None else sum(self.grace_s) + 5.0)

    def _spec(self) -> dict[str, Any]:
        return {
            "workspace": {f.name: str(getattr(self.ws, f.name)) for f in dataclasses.fields(self.ws)},
            "config": self.cfg.to_dict(),
            "engine_factory": self.engine_factory,
            "data_factory": self.data_factory,
        }

    def _wait(self, proc: subprocess.Popen[str], step: int) -> bool:
        """Wait for the child to exit for grace period ``step`` (re-read: stop() may shorten it)."""
        t0 = time.monotonic()
        while proc.poll() is None:
            limit = self.grace_s[step] if step < len(self.grace_s) else 5.0
            if time.monotonic() - t0 >= limit:
                return False
            time.sleep(0.05)
        return True

    def _escalate(self, proc: subprocess.Popen[str], report: Reporter) -> None:
        report(Phase("cancelling", "asking the run process to stop"))
        try:  # graceful: the child's token stops issuing work and LoadGen returns
            assert proc.stdin is not None
            proc.stdin.write("cancel\n")
            proc.stdin.flush()
            self.signals_sent.append("cancel")
        except (OSError, ValueError):
            pass
        for step, sig in enumerate((signal.SIGTERM, signal.SIGKILL)):
            if self._wait(proc, step):
                return
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, sig)  # stuck in native code: stop the whole group
                self.signals_sent.append(sig.name)
        self._wait(proc, 2)

    def run(self, report: Reporter, cancel: CancelToken, events: RunEvents | None = None) -> RunResult:
        """The run's result; the same exceptions as :func:`run_benchmark` (:class:`RunCancelled` with the
        partial result, :class:`Cancelled` when the child had to be killed, the run's own error)."""
        check_config(self.cfg)
        cancel.check()
        events = events if events is not None else RunEvents()
        root = str(Path(__file__).resolve().parents[2])  # the project, for factories outside core/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        r_fd, w_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                [*self.argv, str(w_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(w_fd,),
                env=env,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group, so a stuck run can be stopped as a whole
            )
        except BaseException:
            os.close(r_fd)
            raise
        finally:
            os.close(w_fd)
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(json.dumps(self._spec()) + "\n")
            proc.stdin.flush()

        def pump(stream: Any) -> None:
            for raw in stream:
                line = raw.rstrip("\n")
                if line:
                    self.output_tail.append(line)
                    self.output(line)

        pumper = threading.Thread(target=pump, args=(proc.stdout,), name="unet3d-child-output", daemon=True)
        pumper.start()
        interrupted = threading.Event()  # Ctrl-C here: the child (own session) did not get it

        def watch() -> None:
            while proc.poll() is None:
                if cancel.wait(0.1) or interrupted.is_set() or self._stop.is_set():
                    self._escalate(proc, report)
                    return

        watcher = threading.Thread(target=watch, name="unet3d-cancel-watch", daemon=True)
        watcher.start()
        final: dict[str, Any] | None = None
        run_dir: Path | None = None
        with os.fdopen(r_fd, "r", encoding="utf-8", errors="replace") as fh:
            while True:
                try:
                    line = fh.readline()
                except KeyboardInterrupt:
                    interrupted.set()  # ask the child to cancel; keep reading until it has finished
                    continue
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("t") in ("result", "error"):
                    final = msg
                    continue
                if msg.get("kind") == "log" and str(msg.get("text", "")).startswith(RUN_FOLDER):
                    run_dir = Path(str(msg["text"])[len(RUN_FOLDER) :])
                try:
                    relay(msg, events, report)
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed line must not end the relay of a running benchmark
        rc = proc.wait()
        watcher.join()
        pumper.join(5)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        stopped = cancel.cancelled or interrupted.is_set() or self._stop.is_set()
        if final is not None and final["t"] == "result":
            return RunResult.from_dict(final["result"])
        if final is not None:
            kind, message = str(final["type"]), str(final["message"])
            if kind == "RunCancelled" and isinstance(final.get("result"), dict):
                raise RunCancelled(RunResult.from_dict(final["result"]))
            raise _ERRORS.get(kind, RunInvalidError)(message)
        # the child died without a word (killed after a cancel, crashed in native code): record it
        status = "cancelled" if stopped else "failed"
        if run_dir is not None and (run_dir / RUN_JSON).is_file():
            try:
                data = json.loads((run_dir / RUN_JSON).read_text())
                if data.get("status") == "running":
                    data.update(status=status, ended=_now(), error=f"run process exited with code {rc}")
                    write_text_atomic(run_dir / RUN_JSON, json.dumps(data, indent=1, default=str) + "\n")
            except (OSError, ValueError):
                pass
        if stopped:
            events.phase("cancelled")
            how = ", ".join(self.signals_sent) or "stopped"
            raise Cancelled(f"run cancelled; the run process was stopped ({how}, exit code {rc})")
        events.phase("failed")
        last = f": {self.output_tail[-1]}" if self.output_tail else ""
        raise RunInvalidError(f"the run process exited with code {rc} without a result{last}", run_dir)


def run_benchmark_isolated(
    ws: Workspace,
    cfg: RunConfig,
    report: Reporter,
    cancel: CancelToken,
    events: RunEvents | None = None,
    *,
    engine_factory: str | None = None,
    data_factory: str | None = None,
    cancel_grace_s: float = 30.0,
) -> RunResult:
    """:func:`run_benchmark` in a fresh child process, so that LoadGen's settings (and detail log)
    are those of a first run whatever ran before in this process. Same results and exceptions."""
    run = IsolatedRun(
        ws, cfg, engine_factory=engine_factory, data_factory=data_factory, grace_s=(cancel_grace_s, 5.0)
    )
    return run.run(report, cancel, events)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        from core.harness.isolated import _child_main as _main  # the importable module, not __main__

        sys.exit(_main(int(sys.argv[2])))
    sys.stderr.write("usage: python -m core.harness.isolated --child FD (internal)\n")
    sys.exit(2)
