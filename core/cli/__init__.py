"""`unet3d`: the headless CLI over core (no Textual, no rich).

Flags follow NVIDIA's `make run RUN_ARGS="..."` spelling (underscores). stdout carries results only (a
table or ``--json``); the effective command, progress and diagnostics go to stderr. Every expected
failure is a :class:`core.errors.UnetError`, printed as one ``error: <message>`` line with its exit code
(0 ok, 1 invalid/below target, 2 usage, 3 missing input, 4 bad input, 130 interrupted).

  core.cli.parser    the flags and the RunConfigs they ask for
  core.cli.commands  one function per subcommand and the COMMANDS registry (add a subcommand there)
  core.cli.output    stdout/stderr rendering (results, progress, the effective command)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import NoReturn

from core.cli import parser as _parser
from core.cli.commands import COMMANDS, Command
from core.cli.output import Output, StderrReporter
from core.cli.parser import PROG, configs_from_flags, parse_run_args
from core.errors import ExitCode, UnetError, UsageError
from core.jobs import CancelToken


def build_parser() -> argparse.ArgumentParser:
    return _parser.build_parser(COMMANDS.values())


@contextlib.contextmanager
def _sigint_cancels(cancel: CancelToken) -> Iterator[None]:
    """First Ctrl-C asks the job to stop after its current unit; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        sys.stderr.write("\ninterrupt: stopping after the current step (Ctrl-C again to abort)\n")

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _join_run_args(argv: list[str]) -> list[str]:
    """`--run-args "--scenarios=..."`: argparse would take the value for an option; glue it on with '='."""
    out: list[str] = []
    it = iter(argv)
    for tok in it:
        if tok in ("--run-args", "--run_args"):
            nxt = next(it, None)
            out.append(tok if nxt is None else f"{tok}={nxt}")
        else:
            out.append(tok)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_run_args(list(sys.argv[1:] if argv is None else argv))
    cancel = CancelToken()
    reporter: StderrReporter | None = None
    out: Output | None = None
    code: int = ExitCode.OK
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("json", False), ("output", None), ("quiet", False)):
            if not hasattr(args, name):
                setattr(args, name, default)
        if not args.command:
            raise UsageError(f"no command given (one of {', '.join(COMMANDS)}; see {PROG} --help)")
        reporter = StderrReporter(quiet=args.quiet)
        out = Output(args.output)
        with _sigint_cancels(cancel):
            code = COMMANDS[args.command].run(args, out, reporter, cancel)
        out.close()
    except UnetError as err:
        code = err.exit_code
        _fail(reporter, str(err))
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
        _fail(reporter, "interrupted")
    except BrokenPipeError:
        # `unet3d status | head`: the reader went away; not an error of ours
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.OK
    except FileNotFoundError as err:
        code = ExitCode.MISSING
        _fail(reporter, f"{err.filename}: {err.strerror}" if err.filename else str(err))
    except OSError as err:
        code = ExitCode.BAD_INPUT
        _fail(reporter, f"{err.filename}: {err.strerror}" if err.filename else str(err))
    except MemoryError:
        code = ExitCode.BAD_INPUT
        _fail(reporter, "out of memory (try a smaller --gpu_batch_size or fewer --jobs)")
    except Exception as err:  # a bug: keep the traceback, it is what a bug report needs
        if reporter is not None:
            reporter.close()
        traceback.print_exc()
        sys.stderr.write(f"error: internal error: {type(err).__name__}: {err}\n")
        code = 1
    return int(code)


def _fail(reporter: StderrReporter | None, message: str) -> None:
    if reporter is not None:
        reporter.close()
    if isinstance(message, str) and message.startswith("error: "):
        message = message[len("error: ") :]
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def entry() -> NoReturn:
    sys.exit(main())


__all__ = [
    "COMMANDS",
    "Command",
    "Output",
    "StderrReporter",
    "build_parser",
    "configs_from_flags",
    "main",
    "parse_run_args",
]
