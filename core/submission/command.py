"""`unet3d submission ...`: verify-test01, stage, truncate, check (NVIDIA's run_audit_harness
verification, stage_results, truncate_results and check_submission steps).

``arguments(parser)`` adds its steps to the `submission` parser; ``run(args, out, report, cancel)`` runs it
and returns the exit code (0 ok; 1 a check or verification failed; 2 usage; 3 missing input).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import ExitCode, UsageError
from core.jobs import CancelToken, LogLine

SUBCOMMANDS = ("verify-test01", "stage", "truncate", "check")
VERSIONS = ("v5.1", "v6.0", "v6.1")  # core.submission.rules.VERSIONS (not imported: keep --help light)


def arguments(p: argparse.ArgumentParser) -> None:
    """The steps of `unet3d submission`; each takes the workspace flags too."""
    from core.cli.parser import common_flags

    parents = [common_flags()]
    sub = p.add_subparsers(dest="submission_command", metavar="STEP", parser_class=type(p))

    v = sub.add_parser(
        "verify-test01",
        parents=parents,
        help="verify a TEST01 run against the accuracy and performance runs",
        description="Writes OUT/TEST01/ as compliance/TEST01/run_verification.py -o OUT does. Runs "
        "default to the newest matching ones in the log folder.",
    )
    v.add_argument("--out", required=True, metavar="DIR", help="folder that receives TEST01/")
    v.add_argument("--scenario", default="Offline", choices=("Offline", "SingleStream"))
    v.add_argument("--accuracy-run", metavar="DIR", help="the AccuracyOnly run folder")
    v.add_argument("--performance-run", metavar="DIR", help="the PerformanceOnly run folder")
    v.add_argument("--test01-run", metavar="DIR", help="the --audit_test=TEST01 run folder")
    v.add_argument("--config_ver", default=None, help="default (3d-unet-99) or high_accuracy (99.9)")

    s = sub.add_parser(
        "stage",
        parents=parents,
        help="build the results tree from the workspace's best runs",
        description="Builds DIR (closed|open/ORG/...) from the log folder's runs, truncates its accuracy "
        "logs (full logs in DIR.full/) and pre-checks it.",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="the submission root to create")
    s.add_argument("--submitter", required=True, metavar="ORG")
    s.add_argument("--system-name", "--system_name", dest="system_name", required=True, metavar="NAME")
    s.add_argument(
        "--division",
        choices=("closed", "open"),
        help="default: closed for compliant runs of the official model",
    )
    s.add_argument(
        "--version", dest="round", choices=VERSIONS, help="round layout (default: the runs' seeds)"
    )
    s.add_argument("--system-type", "--system_type", dest="system_type", help="datacenter or edge")
    s.add_argument("--status", default="available", help="available, preview or rdi")
    s.add_argument("--scenarios", metavar="LIST", help="only these scenarios (comma list)")
    s.add_argument("--force", action="store_true", help="replace DIR (and DIR.full) if they exist")

    t = sub.add_parser(
        "truncate",
        parents=parents,
        help="truncate the accuracy logs of a tree (full logs to DIR.full/)",
        description="What tools/submission/truncate_accuracy_log.py does, for logs placed by hand; "
        "logs that already have their hash are left alone.",
    )
    t.add_argument("tree", metavar="DIR")

    c = sub.add_parser(
        "check",
        parents=parents,
        help="pre-check a tree, then run MLCommons' submission checker on it",
        description="The built-in pre-check, then (with --checker) python -m "
        "inference.tools.submission.submission_checker.main on the tree.",
    )
    c.add_argument("tree", metavar="DIR")
    c.add_argument("--checker", metavar="PATH", help="a checkout of mlcommons/inference")
    c.add_argument("--version", dest="round", choices=VERSIONS, help="default: the round of the logs' seeds")
    c.add_argument("--submitter", metavar="ORG", help="only this submitter")
    c.add_argument("--python", metavar="EXE", help="interpreter for the checker (needs PyYAML)")


def _workspace(args: argparse.Namespace) -> Any:
    from core.cli.commands import workspace_of  # imported late: core.cli registers this module

    return workspace_of(args)


def _newest(ws: Any, scenario: str, want: str) -> Path:
    from core.errors import MissingInputError
    from core.submission.select import run_folders

    for path, rj in reversed(run_folders(ws.log_dir)):
        if rj.get("status") != "complete" or rj.get("scenario") != scenario:
            continue
        kind = (
            "test01"
            if rj.get("audit_test") == "TEST01"
            else "accuracy"
            if rj.get("test_mode") == "AccuracyOnly" and not rj.get("audit_test")
            else "performance"
            if rj.get("test_mode") == "PerformanceOnly"
            and not rj.get("audit_test")
            and (rj.get("result") or {}).get("valid") is True
            else None
        )
        if kind == want:
            return path
    raise MissingInputError(f"no complete {scenario} {want} run (give --{want}-run DIR)", ws.log_dir)


def _verify_test01(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    import json

    from core.accuracy import score_log
    from core.submission.test01 import write_test01

    ws = _workspace(args)
    acc = Path(args.accuracy_run) if args.accuracy_run else _newest(ws, args.scenario, "accuracy")
    perf = Path(args.performance_run) if args.performance_run else _newest(ws, args.scenario, "performance")
    t01 = Path(args.test01_run) if args.test01_run else _newest(ws, args.scenario, "test01")
    config_ver = args.config_ver
    if config_ver is None:
        try:
            config_ver = json.loads((acc / "run.json").read_text()).get("config_ver") or "default"
        except (OSError, ValueError):
            config_ver = "default"
    report(LogLine("info", f"accuracy run {acc.name}, performance run {perf.name}, TEST01 run {t01.name}"))

    def score(log: Path, csv: Path) -> Any:
        return score_log(ws, log, None, config_ver, out_csv=csv, subset=True, report=report, cancel=cancel)

    result = write_test01(Path(args.out), acc, perf, t01, config_ver=config_ver, score=score, cancel=cancel)
    if args.json:
        out.json(result.to_dict())
    else:
        out.write("\n".join(result.lines()) + "\n")
    return ExitCode.OK if result.passed else ExitCode.INVALID


def _findings_out(findings: list[Any], out: Any) -> None:
    errors = [x for x in findings if x.level == "error"]
    warnings = [x for x in findings if x.level == "warning"]
    for x in errors + warnings:
        out.write(x.line + "\n")
    out.write(f"pre-check: {len(errors)} error(s), {len(warnings)} warning(s)\n")


def _stage(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.check import precheck
    from core.submission.stage import StageOptions, stage

    scenarios = tuple(x.strip() for x in args.scenarios.split(",") if x.strip()) if args.scenarios else None
    opts = StageOptions(
        out=Path(args.out),
        submitter=args.submitter,
        system_name=args.system_name,
        division=args.division,
        version=args.round,
        system_type=args.system_type,
        status=args.status,
        scenarios=scenarios,
        force=args.force,
    )
    result = stage(_workspace(args), opts, report=report, cancel=cancel)
    findings = precheck(result.out, result.version, result.full_logs)
    if args.json:
        out.json({**result.to_dict(), "precheck": [f.line for f in findings]})
    else:
        out.write("\n".join(result.lines()) + "\n")
        _findings_out(findings, out)
    return ExitCode.OK


def _truncate(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.truncate import truncate_tree

    done = truncate_tree(Path(args.tree), cancel=cancel)
    if args.json:
        out.json({"truncated": [str(p) for p in done]})
    else:
        out.write("".join(f"truncated {p}\n" for p in done) or "nothing to truncate\n")
    return ExitCode.OK


def _check(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.check import detect_version, precheck, run_official_checker

    tree = Path(args.tree)
    version = args.round or detect_version(tree.absolute()) or "v6.0"
    findings = precheck(tree, version)
    errors = [f for f in findings if f.level == "error"]
    run = None
    if args.checker:
        cancel.check()
        report(LogLine("info", f"official checker, --version {version}"))
        run = run_official_checker(
            tree, Path(args.checker), version=version, submitter=args.submitter, python=args.python
        )
    if args.json:
        out.json(
            {
                "version": version,
                "precheck": [f.line for f in findings],
                "checker": None
                if run is None
                else {"returncode": run.returncode, "errors": list(run.errors), "command": run.command},
            }
        )
    else:
        _findings_out(findings, out)
        if run is not None:
            out.write(
                f"official checker ({run.command}): exit {run.returncode}, {len(run.errors)} error(s)\n"
            )
            out.write("".join(f"checker error: {e}\n" for e in run.errors))
    failed = bool(errors) or (run is not None and (run.returncode != 0 or bool(run.errors)))
    return ExitCode.INVALID if failed else ExitCode.OK


def run(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    step = getattr(args, "submission_command", None)
    if step is None:
        raise UsageError(f"unet3d submission: give a step ({', '.join(SUBCOMMANDS)})")
    return {"verify-test01": _verify_test01, "stage": _stage, "truncate": _truncate, "check": _check}[step](
        args, out, report, cancel
    )
