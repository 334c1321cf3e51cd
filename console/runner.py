"""Child process that runs one LoadGen benchmark for the console and streams it as JSON lines.

    python -m console.runner --workspace ROOT --config '{"scenario": "Offline", ...}'

stdout carries one JSON object per line: {"type": "phase"|"progress"|"log", ...} as the core reports,
{"type": "snapshot", "data": RunSnapshot} twice a second, then {"type": "result", "data": RunResult}
or {"type": "error", "message", "exit_code"}. SIGINT (the console's Esc) sets the cancel token; the core
stops between samples and the process exits 130. Path variables (DATA_DIR, ...) come from the env.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from core import jobs as cj
from core.benchmark import RunConfig
from core.errors import Cancelled, ExitCode, UnetError
from core.harness.events import RunEvents
from core.workspace import Workspace

_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    from console.workers import jsonable

    line = json.dumps(jsonable(obj))
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def reporter(event: cj.Event) -> None:
    if isinstance(event, cj.Progress):
        emit(
            {
                "type": "progress",
                "task": event.task,
                "done": event.done,
                "total": event.total,
                "unit": event.unit,
                "item": event.item,
            }
        )
    elif isinstance(event, cj.Phase):
        emit({"type": "phase", "name": event.name, "detail": event.detail})
    elif isinstance(event, cj.LogLine):
        emit({"type": "log", "level": event.level, "text": event.text})


def run_in_thread(fn: Any) -> Any:
    """Run ``fn`` in a thread while the main thread waits in Python.

    Python runs signal handlers only in the main thread, between bytecodes; if the main thread sat in
    LoadGen's StartTest (C++) the SIGINT handler, and so the cancel, would wait until the run ended."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the main thread
            out["error"] = exc

    t = threading.Thread(target=target, name="benchmark", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def main(argv: list[str] | None = None) -> int:
    from console.workers import snapshot_to_dict

    ap = argparse.ArgumentParser(prog="python -m console.runner")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--config", required=True, help="RunConfig as JSON")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between snapshots")
    args = ap.parse_args(argv)
    cancel = cj.CancelToken()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    events = RunEvents()
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(args.interval):
            events.tick()
            emit({"type": "snapshot", "data": snapshot_to_dict(events.snapshot())})

    try:
        cfg = RunConfig.from_dict(json.loads(args.config)).validate()
        ws = Workspace.resolve(args.workspace)
        from core.harness.runner import run_benchmark

        t = threading.Thread(target=sampler, daemon=True)
        t.start()
        result = run_in_thread(lambda: run_benchmark(ws, cfg, reporter, cancel, events))
        stop.set()
        emit({"type": "snapshot", "data": snapshot_to_dict(events.snapshot())})
        from console.workers import jsonable

        data = jsonable(result)
        data.pop("detail", None)  # the MLLOG entries are large; the console reads the files when needed
        emit({"type": "result", "data": data})
        return 0
    except Cancelled as exc:
        emit({"type": "phase", "name": "cancelled", "detail": str(exc)})
        return int(ExitCode.INTERRUPTED)
    except UnetError as exc:
        emit({"type": "error", "message": str(exc), "exit_code": int(exc.exit_code)})
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
