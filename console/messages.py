"""Typed messages between job workers and the App.

Workers never touch widgets: they post these (``post_message`` is thread-safe) and the App's
``@on`` handlers own all state. A job's life is

    RunRequested / JobRequested -> JobStarted -> PhaseChanged ... Progress ... LogLine ...
        -> RunFinished | Cancelled | Failed

Live benchmark numbers do not travel as messages: the monitor samples the job's live feed on a timer.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from core.benchmark import RunConfig


class RunRequested(Message):
    """Start a LoadGen run with ``config`` (from the setup form, the palette, the auditor, re-run);
    ``confirm``: first say how long it takes and wait for a yes (runs not started from the form)."""

    def __init__(self, config: RunConfig, confirm: bool = False) -> None:
        super().__init__()
        self.config = config
        self.confirm = confirm


class JobRequested(Message):
    """Start a non-run job by name: "demo", "preprocess", "calibrate", "engine", "audit"."""

    def __init__(self, job: str, config: RunConfig | None = None) -> None:
        super().__init__()
        self.job = job
        self.config = config


class JobMessage(Message):
    """Base: every job message names its job (the worker group) so handlers can tell jobs apart."""

    def __init__(self, job: str) -> None:
        super().__init__()
        self.job = job


class JobStarted(JobMessage):
    def __init__(self, job: str, description: str) -> None:
        super().__init__(job)
        self.description = description


class PhaseChanged(JobMessage):
    def __init__(self, job: str, name: str, detail: str = "") -> None:
        super().__init__(job)
        self.name = name
        self.detail = detail


class Progress(JobMessage):
    """``done`` of ``total`` ``unit``s. A newer one replaces an unprocessed older one (toolong)."""

    def __init__(self, job: str, task: str, done: int, total: int, unit: str = "", item: str = "") -> None:
        super().__init__(job)
        self.task = task
        self.done = done
        self.total = total
        self.unit = unit
        self.item = item

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Progress) and message.job == self.job and message.task == self.task


class LogLine(JobMessage):
    def __init__(self, job: str, level: str, text: str) -> None:
        super().__init__(job)
        self.level = level
        self.text = text


class RunFinished(JobMessage):
    """The job returned ``result`` (for a run: a dict with valid, samples_per_s, log_dir, ...)."""

    def __init__(self, job: str, result: Any) -> None:
        super().__init__(job)
        self.result = result


class Cancelled(JobMessage):
    pass


class Failed(JobMessage):
    def __init__(self, job: str, error: str, exit_code: int = 1) -> None:
        super().__init__(job)
        self.error = error
        self.exit_code = exit_code


class StatusRefreshed(Message):
    """A status probe finished (``report``: a core.status.StatusReport; ``runs``: core.history.RunRecords,
    newest first)."""

    def __init__(self, report: Any, runs: list[Any]) -> None:
        super().__init__()
        self.report = report
        self.runs = runs
