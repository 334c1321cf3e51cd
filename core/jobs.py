"""The job protocol shared by the CLI, the console and the tests.

A job is a plain function ``job(..., report: Reporter, cancel: CancelToken) -> Result``. It reports
typed events (dataclasses below) through ``report`` and checks ``cancel`` between units of work
(cases, windows, LoadGen phases), raising :class:`core.errors.Cancelled` when asked to stop.
The CLI renders events as a progress bar on stderr; the console turns them into messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``task`` finished (unit: "case", "window", "sample")."""

    task: str
    done: int
    total: int
    unit: str = "case"
    item: str = ""  # what was just finished, e.g. a case name
    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Phase:
    """A job moved to a new phase ("loading", "preprocessing", "warmup", "running", "scoring")."""

    name: str
    detail: str = ""


@dataclass(frozen=True)
class LogLine:
    level: str  # "info" | "warning" | "error"
    text: str


Event = Progress | Phase | LogLine | object
Reporter = Callable[[Event], None]


def null_reporter(_event: Event) -> None:
    """A reporter that drops everything (library use, tests)."""


class CancelToken:
    """A cancel flag a job polls. Wraps a ``threading.Event`` so Textual's
    ``worker.cancelled_event`` can be passed straight in."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self._event = event if event is not None else threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True early if cancelled."""
        return self._event.wait(seconds)


NEVER = CancelToken()  # a token nobody cancels; for library calls that need one
