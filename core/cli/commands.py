"""`unet3d`'s subcommands: one function each, and the :data:`COMMANDS` registry the parser and ``main``
read. Adding a subcommand: write ``arguments(parser)`` and ``run(args, out, report, cancel) -> exit
code`` (here, or in its own module) and add one :class:`Command` to :data:`COMMANDS`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.benchmark import RunConfig
from core.cli.output import Output, StderrReporter, echo
from core.cli.parser import (
    ACTIONS,
    PATH_FLAGS,
    PROG,
    add_run_flags,
    configs_from_flags,
    merge_flags,
    parse_run_args,
    positive_int,
    run_flag_names,
    split_list,
)
from core.errors import ExitCode, MissingInputError, UsageError
from core.jobs import CancelToken
from core.submission import command as submission
from core.workspace import Workspace

DEMO_WORKSPACE = "unet3d-demo"

Run = Callable[[argparse.Namespace, Output, StderrReporter, CancelToken], int]


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Command:
    """One `unet3d` subcommand: its name and help, its own arguments (the workspace and output flags
    are added for every command), and the function that runs it and returns the exit code."""

    name: str
    help: str
    run: Run
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


def workspace_of(args: argparse.Namespace, default_root: str | None = None) -> Workspace:
    root = getattr(args, "workspace", None) or default_root
    # the demo is self-contained: DATA_DIR & co. of a real set-up must not leak into it
    env: dict[str, str] | None = {} if default_root is not None else None
    return Workspace.resolve(
        root,
        data_dir=getattr(args, "data_dir", None),
        preprocessed_dir=getattr(args, "preprocessed_data_dir", None),
        model_dir=getattr(args, "model_dir", None),
        log_dir=getattr(args, "log_dir", None),
        env=env,
    )


def _fp32_reference(ws: Workspace) -> float:
    """The FP32 DICE targets are relative to (core.accuracy: the model's own reference file beside it,
    else the official value)."""
    from core.audit import fp32_reference

    return fp32_reference(ws)


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.status import collect_status, render_table

    st = collect_status(workspace_of(args))
    if args.json:
        out.json(st.to_dict())
    else:
        out.write(render_table(st))
    return ExitCode.OK


# --------------------------------------------------------------------------- download


def _download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="store_true", help="only the model")
    p.add_argument("--data", action="store_true", help="only the dataset")
    p.add_argument("--sets", default="inference,calibration", help="case sets (comma list)")
    p.add_argument("--cases", metavar="LIST", help="only these cases (comma list)")
    p.add_argument("--labels_from", metavar="DIR", help="copy segmentation.nii.gz from a KiTS19 folder")
    p.add_argument("--no_verify", action="store_true", help="skip checksum verification")
    p.add_argument("--force", action="store_true", help="download even if the file exists")


def cmd_download(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core import download
    from core.lock import workspace_lock

    ws = workspace_of(args)
    both = not args.model and not args.data
    done: dict[str, Any] = {}
    with workspace_lock(ws, "download"):  # never while a job reads the model or the raw cases
        if args.model or both:
            echo(f"{PROG} download --model -> {ws.model_path}")
            done["model"] = download.download_model(
                ws, report=report, cancel=cancel, verify=not args.no_verify, force=args.force
            )
        if args.data or both:
            echo(f"{PROG} download --data -> {ws.data_dir}")
            done["data"] = download.download_data(
                ws,
                sets=split_list(args.sets),
                cases=split_list(args.cases) or None,
                labels_from=args.labels_from,
                report=report,
                cancel=cancel,
                verify=not args.no_verify,
                force=args.force,
            )
    if args.json:
        out.json(done)
    else:
        for key, value in done.items():
            out.write(f"{key}: {value}\n")
    return ExitCode.OK


# --------------------------------------------------------------------------- preprocess, calibrate


def _preprocess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sets", default="inference,calibration", help="case sets (comma list)")
    p.add_argument("--jobs", type=positive_int, metavar="N", help="worker processes (default: cores)")


def cmd_preprocess(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.preprocess import run_preprocess

    ws = workspace_of(args)
    sets = tuple(split_list(args.sets))
    for s in sets:
        if s not in ("inference", "calibration"):
            raise UsageError(f"--sets: unknown set {s!r} (inference, calibration)")
    echo(f"{PROG} preprocess --sets={','.join(sets)}" + (f" --jobs={args.jobs}" if args.jobs else ""))
    result = run_preprocess(ws, sets=sets, jobs=args.jobs or None, report=report, cancel=cancel)
    if args.json:
        out.json(result)
    else:
        out.write(result.summary().rstrip("\n") + "\n")
    return ExitCode.OK


def _calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        default="percentile",
        choices=("minmax", "percentile"),
        help="percentile (default: 99.99th, meets 99.9 %% of FP32 at fp8) or minmax (NVIDIA's INT8 choice)",
    )
    p.add_argument("--run-args", "--run_args", dest="run_args", metavar="STR", help="NVIDIA RUN_ARGS string")
    p.add_argument("--benchmarks", metavar="LIST", help="3d-unet")


def cmd_calibrate(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.calibration import run_calibration

    if args.run_args:
        flags = parse_run_args(args.run_args)
        configs_from_flags({"benchmarks": flags.get("benchmarks")})  # validates --benchmarks
    if args.benchmarks:
        configs_from_flags({"benchmarks": args.benchmarks})
    ws = workspace_of(args)
    echo(f"{PROG} calibrate --method={args.method}")
    path = run_calibration(ws, method=args.method, report=report, cancel=cancel)
    if args.json:
        out.json({"calibration_cache": str(path), "method": args.method})
    else:
        out.write(f"calibration cache: {path}\n")
    return ExitCode.OK


# --------------------------------------------------------------------------- run


def _run_arguments(p: argparse.ArgumentParser) -> None:
    add_run_flags(p)
    p.add_argument("--run-args", "--run_args", dest="run_args", metavar="STR", help="NVIDIA RUN_ARGS string")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print, do not run")


def cmd_run(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.results import results_table

    explicit = {n: getattr(args, n, None) for n in run_flag_names()}
    flags = merge_flags(explicit, args.run_args)
    for name in PATH_FLAGS:
        if flags.get(name) and getattr(args, name, None) is None:
            setattr(args, name, flags[name])
    action = flags.get("action") or "run_harness"
    if action not in ACTIONS:
        raise UsageError(f"--action={action} is not one of {', '.join(ACTIONS)}")
    configs = configs_from_flags(flags)
    if action == "run_audit_harness" and not all(c.audit_test for c in configs):
        raise UsageError("--action=run_audit_harness needs --audit_test=TEST01|TEST04|TEST05")

    ws = workspace_of(args)
    if args.dry_run:  # with the workspace flags: the printed commands work pasted anywhere
        for cfg in configs:
            echo(cfg.cli_command(ws))
            out.write(f"{cfg.cli_command(ws)}\n{cfg.make_command(ws)}\n")
        return ExitCode.OK

    if action == "calibrate":
        from core.calibration import run_calibration

        echo(f"{PROG} calibrate")
        out.write(f"calibration cache: {run_calibration(ws, report=report, cancel=cancel)}\n")
        return ExitCode.OK
    if action == "generate_engines":
        return _generate_engines(ws, configs, out, report, cancel)

    if len(configs) > 1:
        # LoadGen takes its configuration once per process (a second FromConfig marks the run's log
        # invalid), so each combination runs in a fresh `unet3d run` process
        rows, code = _run_each_in_child(ws, configs, args)
    else:
        rows, code = _run_here(ws, configs[0], args, report, cancel), ExitCode.OK
    if rows:
        if args.json:
            out.json({"results": rows})
        else:
            out.write(results_table(rows))
    if code != ExitCode.OK:
        return code
    return ExitCode.OK if all(r["ok"] for r in rows) else ExitCode.INVALID


def _run_here(
    ws: Workspace, cfg: RunConfig, args: argparse.Namespace, report: StderrReporter, cancel: CancelToken
) -> list[dict[str, Any]]:
    from core.harness.runner import run_benchmark
    from core.history import record_of
    from core.results import result_row

    cancel.check()
    echo(cfg.cli_command())
    result = run_benchmark(ws, cfg, report=report, cancel=cancel)
    report.close()
    if result.summary_text and not args.quiet:
        sys.stderr.write(result.summary_text.rstrip("\n") + "\n")
    return [result_row(record_of(result.log_dir), _fp32_reference(ws))]


def _run_each_in_child(
    ws: Workspace, configs: list[RunConfig], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    """One child process per configuration; its JSON row comes back on stdout, its progress and errors
    go straight to our stderr. Stops at the first child that fails for a reason other than INVALID."""
    import subprocess

    paths = [
        f"--workspace={ws.root}",
        f"--data_dir={ws.data_dir}",
        f"--preprocessed_data_dir={ws.preprocessed_dir}",
        f"--model_dir={ws.model_dir}",
        f"--log_dir={ws.log_dir}",
    ]
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        cmd = [sys.executable, "-m", "core", *paths, "run", f"--run-args={cfg.run_args()}", "--json"]
        if args.quiet:
            cmd.append("--quiet")
        for key, value in cfg.extra.items():
            cmd.append(f"--{key}={value}")
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        except KeyboardInterrupt:  # the child got the same Ctrl-C and stops on its own
            return rows, ExitCode.INTERRUPTED
        if proc.returncode not in (ExitCode.OK, ExitCode.INVALID):
            return rows, proc.returncode  # the child already printed its `error:` line
        try:
            rows += json.loads(proc.stdout)["results"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"run of {cfg.cli_command()} returned no result") from None
    return rows, ExitCode.OK


def _generate_engines(
    ws: Workspace, configs: list[RunConfig], out: Output, report: StderrReporter, cancel: CancelToken
) -> int:
    from core.engine import build_engine

    seen = set()
    for cfg in configs:
        key = (cfg.backend, cfg.precision, cfg.gpu_batch_size)
        if key in seen:
            continue
        seen.add(key)
        echo(f"{PROG} run --action=generate_engines --backend={cfg.backend} --precision={cfg.precision}")
        built = build_engine(ws, cfg, report, cancel)
        out.write(f"engine ready: {built.backend} {built.precision} batch {built.batch_size}\n")
    return ExitCode.OK


# --------------------------------------------------------------------------- accuracy, history, demo


def _accuracy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log_file", required=True, metavar="PATH", help="mlperf_log_accuracy.json")


def cmd_accuracy(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.accuracy import score_log
    from core.results import text_table

    ws = workspace_of(args)
    log = Path(args.log_file)
    if not log.exists():
        raise MissingInputError("accuracy log not found", log)
    echo(f"{PROG} accuracy --log_file={log}")
    rep = score_log(ws, log)
    if args.json:
        out.json(rep)
        return ExitCode.OK
    rows = [(r.case, f"{r.kidney:.4f}", f"{r.tumor:.4f}", f"{r.composite:.4f}") for r in rep.rows]
    if rows:
        out.write(text_table(("Case", "Kidney", "Tumor", "Composite"), rows))
    out.write(f"{rep.line}\n")
    ref = f" of FP32 {rep.fp32_reference:.5f} ({rep.reference_source})"
    sys.stderr.write(f"target {rep.target:.5f}{ref}: {'PASS' if rep.passed else 'FAIL'}\n")
    return ExitCode.OK if rep.passed else ExitCode.INVALID  # exit 1: accuracy below target


def cmd_history(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.history import list_runs
    from core.results import text_table

    runs = list_runs(workspace_of(args))  # newest first
    if args.json:
        out.json({"runs": [r.to_dict() for r in runs]})
        return ExitCode.OK
    if not runs:
        sys.stderr.write("no runs yet\n")
    rows = [(r.run_id, r.when, r.summary(), r.compliance.line) for r in runs]
    out.write(text_table(("Run", "When", "Result", "Compliance"), rows))
    return ExitCode.OK


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip_performance", action="store_true", help="accuracy run only")


def cmd_demo(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.demo import render_demo, run_demo

    ws = workspace_of(args, default_root=DEMO_WORKSPACE)
    echo(f"{PROG} demo --workspace={ws.root}")
    result = run_demo(ws, report=report, cancel=cancel, performance=not args.skip_performance)
    if args.json:
        out.json(result)
    else:
        out.write(render_demo(result))
    return ExitCode.OK if result.ok else ExitCode.INVALID


# --------------------------------------------------------------------------- the registry

# The subcommands in `unet3d --help` order. A new subcommand is one more line here.
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("status", "what is in the workspace and what is missing", cmd_status),
        Command(
            "download", "download the model (Zenodo) and the KiTS19 cases", cmd_download, _download_arguments
        ),
        Command(
            "preprocess",
            "preprocess the raw cases (the reference preprocessing)",
            cmd_preprocess,
            _preprocess_arguments,
        ),
        Command("calibrate", "build the INT8 calibration cache", cmd_calibrate, _calibrate_arguments),
        Command("run", "run the benchmark through LoadGen", cmd_run, _run_arguments),
        Command(
            "accuracy",
            "score a LoadGen accuracy log (the accuracy script)",
            cmd_accuracy,
            _accuracy_arguments,
        ),
        Command("history", "past runs in the log folder, newest first", cmd_history),
        Command(
            "demo",
            "build a synthetic demo workspace and run the benchmark on it (CPU)",
            cmd_demo,
            _demo_arguments,
        ),
        Command(
            "submission",
            "TEST01 verification, staging and checking of a submission tree",
            submission.run,
            submission.arguments,
        ),
    )
}
