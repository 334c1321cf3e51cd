"""`unet3d submission ...`: verify-test01, stage, truncate, check (NVIDIA's run_audit_harness
verification, stage_results, truncate_results and check_submission steps).

``arguments(parser)`` adds its steps to the `submission` parser; ``run(args, out, report, cancel)`` runs it
through the jobs of core.submission.steps (the ones the console runs) and returns the exit code (0 ok; 1
a check or verification failed; 2 usage; 3 missing input). Folders default to the workspace's:
``build/compliance/<scenario>`` for TEST01, ``build/submission-staging`` for the tree.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.errors import ExitCode, UsageError
from core.jobs import CancelToken

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
        description="Writes OUT/TEST01/ as compliance/TEST01/run_verification.py -o OUT does, and "
        "OUT/test01_runs.json (the runs verified, with their compliance). Runs default to the ones "
        "`submission stage` would choose for the scenario.",
    )
    v.add_argument(
        "--out", metavar="DIR", help="folder that receives TEST01/ (default: build/compliance/SCENARIO)"
    )
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
        "logs (full logs in DIR.full/), writes its manifest DIR.stage.json and pre-checks it.",
    )
    s.add_argument(
        "--out", metavar="DIR", help="the submission root to create (default: build/submission-staging)"
    )
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
    t.add_argument("tree", metavar="DIR", nargs="?", help="default: build/submission-staging")

    c = sub.add_parser(
        "check",
        parents=parents,
        help="pre-check a tree, then run MLCommons' submission checker on it",
        description="The built-in pre-check, then (with --checker) python -m "
        "inference.tools.submission.submission_checker.main on the tree; what both said is kept in "
        "DIR.check.json.",
    )
    c.add_argument("tree", metavar="DIR", nargs="?", help="default: build/submission-staging")
    c.add_argument("--checker", metavar="PATH", help="a checkout of mlcommons/inference")
    c.add_argument("--version", dest="round", choices=VERSIONS, help="default: the round of the logs' seeds")
    c.add_argument("--submitter", metavar="ORG", help="only this submitter")
    c.add_argument("--python", metavar="EXE", help="interpreter for the checker (needs PyYAML)")


def _workspace(args: argparse.Namespace) -> Any:
    from core.cli.commands import workspace_of  # imported late: core.cli registers this module

    return workspace_of(args)


def _verify_test01(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.steps import verify_test01

    done = verify_test01(
        _workspace(args),
        scenario=args.scenario,
        out=args.out,
        accuracy_run=args.accuracy_run,
        performance_run=args.performance_run,
        test01_run=args.test01_run,
        config_ver=args.config_ver,
        report=report,
        cancel=cancel,
    )
    if args.json:
        out.json(done.to_dict())
    else:
        out.write("\n".join(done.lines()) + "\n")
    return ExitCode.OK if done.passed else ExitCode.INVALID


def _findings_out(findings: list[Any], out: Any) -> None:
    errors = [x for x in findings if x.level == "error"]
    warnings = [x for x in findings if x.level == "warning"]
    for x in errors + warnings:
        out.write(x.line + "\n")
    out.write(f"pre-check: {len(errors)} error(s), {len(warnings)} warning(s)\n")


def _stage(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.stage import StageOptions
    from core.submission.steps import stage_submission

    ws = _workspace(args)
    scenarios = tuple(x.strip() for x in args.scenarios.split(",") if x.strip()) if args.scenarios else None
    opts = StageOptions(
        out=Path(args.out) if args.out else ws.submission_dir,
        submitter=args.submitter,
        system_name=args.system_name,
        division=args.division,
        version=args.round,
        system_type=args.system_type,
        status=args.status,
        scenarios=scenarios,
        force=args.force,
    )
    done = stage_submission(ws, opts, report=report, cancel=cancel)
    if args.json:
        out.json(done.to_dict())
    else:
        out.write("\n".join(done.result.lines()) + "\n")
        _findings_out(list(done.findings), out)
    return ExitCode.OK


def _truncate(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.truncate import truncate_tree

    tree = Path(args.tree) if args.tree else _workspace(args).submission_dir
    done = truncate_tree(tree, cancel=cancel)
    if args.json:
        out.json({"truncated": [str(p) for p in done]})
    else:
        out.write("".join(f"truncated {p}\n" for p in done) or "nothing to truncate\n")
    return ExitCode.OK


def _check(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    from core.submission.steps import check_submission

    tree = Path(args.tree) if args.tree else _workspace(args).submission_dir
    done = check_submission(
        tree,
        checker=args.checker,
        version=args.round,
        submitter=args.submitter,
        python=args.python,
        report=report,
        cancel=cancel,
    )
    if args.json:
        out.json(done.to_dict())
    else:
        _findings_out(list(done.findings), out)
        run = done.checker
        if run is not None:
            out.write(
                f"official checker ({run.command}): exit {run.returncode}, {len(run.errors)} error(s)\n"
            )
            out.write("".join(f"checker error: {e}\n" for e in run.errors))
    return ExitCode.OK if done.passed else ExitCode.INVALID


def run(args: argparse.Namespace, out: Any, report: Any, cancel: CancelToken) -> int:
    step = getattr(args, "submission_command", None)
    if step is None:
        raise UsageError(f"unet3d submission: give a step ({', '.join(SUBCOMMANDS)})")
    return {"verify-test01": _verify_test01, "stage": _stage, "truncate": _truncate, "check": _check}[step](
        args, out, report, cancel
    )
