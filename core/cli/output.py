"""How `unet3d` writes: results on stdout (a table or ``--json``, copied to ``-o PATH``), progress, the
effective command and diagnostics on stderr."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from core.jobs import Event, LogLine, Phase, Progress


class Output:
    """stdout for results (and the same bytes to ``-o PATH``); stderr for everything else."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._chunks: list[str] = []

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self._chunks.append(text)

    def json(self, data: Any) -> None:
        self.write(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")

    def close(self) -> None:
        if self.path is None or not self._chunks:
            return
        from core.fsio import write_bytes_atomic

        write_bytes_atomic(self.path, "".join(self._chunks).encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


class StderrReporter:
    """Renders job events on stderr: one progress line (rewritten in place on a terminal, throttled
    plain lines otherwise), phases and log lines."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, interval: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._last: dict[str, float] = {}
        self._open_line = False
        self._lock = threading.Lock()
        self._t0: dict[str, float] = {}

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                if self.quiet and event.level == "info":
                    return
                self._end_line()
                prefix = "" if event.level == "info" else f"{event.level}: "
                self.stream.write(f"{prefix}{event.text}\n")
            elif self.quiet:
                return
            elif isinstance(event, Phase):
                self._t0.clear()  # a new phase restarts the clocks of its progress lines
                self._last.clear()
                self._end_line()
                self.stream.write(f"== {event.name}" + (f": {event.detail}" if event.detail else "") + "\n")
            elif isinstance(event, Progress):
                self._progress(event)
            self.stream.flush()

    def _progress(self, ev: Progress) -> None:
        now = time.monotonic()
        self._t0.setdefault(ev.task, now)
        final = ev.total > 0 and ev.done >= ev.total
        last = self._last.get(ev.task)
        if not final and last is not None and now - last < (0.2 if self.tty else self.interval):
            return
        self._last[ev.task] = now
        elapsed = now - self._t0[ev.task]
        if ev.total > 0:
            pct = 100.0 * ev.done / ev.total
            eta = elapsed / ev.done * (ev.total - ev.done) if ev.done else 0.0
            text = f"{ev.task}: {ev.done}/{ev.total} {ev.unit}s ({pct:3.0f}%) {elapsed:5.0f}s"
            if ev.done and not final and elapsed >= 1.0:
                text += f" eta {eta:.0f}s"
        else:
            text = f"{ev.task}: {ev.done} {ev.unit}s {elapsed:5.0f}s"
        if ev.item:
            text += f" [{ev.item}]"
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._open_line = not final
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")

    def close(self) -> None:
        with self._lock:
            self._end_line()
            self.stream.flush()


def echo(text: str) -> None:
    """The effective command, on stderr (users rely on seeing it)."""
    sys.stderr.write(f"+ {text}\n")
    sys.stderr.flush()
