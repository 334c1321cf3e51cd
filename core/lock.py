"""One writing job per workspace: an advisory ``flock`` on ``ws.lock_path``.

Preprocessing, calibration and benchmark runs take the lock for their whole duration; a second one
started on the same workspace is refused at once with a :class:`WorkspaceBusyError` naming the holder
(pid, host, command, start time, written into the lock file). The kernel drops a ``flock`` when its
holder dies, so a crashed or SIGKILLed holder never leaves the workspace locked: the next job takes
the lock and overwrites the stale description. Read-only commands (status, history, accuracy) do not
lock. The lock file's descriptor is close-on-exec and our worker processes come from a forkserver, so
no child inherits (and prolongs) the lock.

Why refuse rather than run both: two benchmark runs on one machine share its cores or GPU, so both
performance results would be wrong, and two preprocessings would redo the same cases.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import ExitCode, UnetError
from core.workspace import Workspace


class WorkspaceBusyError(UnetError):
    """Another job holds the workspace lock: nothing is wrong with the command, retry when that job
    has finished (exit code 75, ExitCode.BUSY; it was 2, "usage", which sent users to their flags)."""

    exit_code = ExitCode.BUSY


# locks held by this process, by lock path: a job that calls another job (the demo: preprocess, then
# run) on the same workspace in the same thread re-enters instead of refusing itself
_held: dict[str, tuple[int, int]] = {}  # path -> (thread id, depth)
_held_guard = threading.Lock()


def holder(path: str | Path) -> dict[str, Any] | None:
    """What the lock file says about its (last) holder; None if absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not described itself yet)"
    parts = [f"pid {info.get('pid')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        parts.append(f"on {info['host']}")
    if info.get("job"):
        parts.append(f"({info['job']})")
    if info.get("started"):
        parts.append(f"since {info['started']}")
    if info.get("command"):
        parts.append(f"command: {info['command']}")
    return " ".join(parts)


def _command() -> str:
    """The holder's command line as a person would type it: `python -m core` as unet3d, the console's
    run child as unet3d-console, and a JSON argument (the child's --config) as {…}, not a JSON dump
    inside the busy message."""
    argv = list(sys.argv) or [sys.executable]
    prog = Path(argv[0])
    if prog.name == "__main__.py":  # `python -m core ...`: show it as the tool
        argv[0] = "unet3d" if prog.parent.name == "core" else prog.parent.name
    elif prog.parent.name == "console" and prog.name == "runner.py":  # the console's run child
        argv[0] = "unet3d-console"
    args = ["{…}" if a.lstrip().startswith(("{", "[")) else a for a in argv[1:]]
    return " ".join([argv[0], *args])


@contextlib.contextmanager
def workspace_lock(ws: Workspace, job: str) -> Iterator[Path]:
    """Hold the workspace lock for ``job`` ("preprocess", "run", "calibrate") or raise
    :class:`WorkspaceBusyError` at once if another process (or thread) holds it."""
    path = ws.lock_path
    key = str(path)
    me = threading.get_ident()
    with _held_guard:
        owner = _held.get(key)
        if owner is not None and owner[0] == me:
            _held[key] = (me, owner[1] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_guard:
                tid, depth = _held[key]
                _held[key] = (tid, depth - 1)
        return

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusyError(
                f"workspace is busy: {job} refused, it is in use by {_describe(holder(path))}; "
                "wait for that job to finish or stop it",
                path,
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": job,
            "command": _command(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        with _held_guard:
            _held[key] = (me, 1)
        try:
            yield path
        finally:
            with _held_guard:
                _held.pop(key, None)
    finally:
        os.close(fd)  # releases the flock


__all__ = ["WorkspaceBusyError", "holder", "workspace_lock"]
