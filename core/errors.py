"""Typed errors and the exit-code table: the one place that maps a failure to a process status.

Every error carries a one-line message that names the file (or item) and the problem. The CLI
prints ``error: <message>`` and exits with ``exit_code``; the console shows the same line.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    INVALID = 1  # LoadGen run INVALID, or accuracy below target
    USAGE = 2  # bad flags, bad config
    MISSING = 3  # missing dataset, model, engine, preprocessed data
    BAD_INPUT = 4  # input present but unusable (corrupt, wrong shape, NaN, wrong model)
    BUSY = 75  # the workspace is in use by another job: try again when it ends (sysexits EX_TEMPFAIL)
    INTERRUPTED = 130


class UnetError(Exception):
    """Base of all expected failures. ``str(err)`` is the one-line message."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        msg = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(msg.replace("\n", " "))


class UsageError(UnetError):
    exit_code = ExitCode.USAGE


class MissingInputError(UnetError):
    exit_code = ExitCode.MISSING


class BadInputError(UnetError):
    exit_code = ExitCode.BAD_INPUT


class RunInvalidError(UnetError):
    exit_code = ExitCode.INVALID


class BackendUnavailableError(MissingInputError):
    """A backend was chosen whose library or device is not on this machine."""


class Cancelled(UnetError):  # noqa: N818 - reads as a state, like asyncio.CancelledError
    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
