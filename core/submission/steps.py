"""The submission steps as jobs both front ends run: TEST01 verification, stage, check.

`unet3d submission verify-test01 | stage | check` (core.submission.command) parse their flags and call
:func:`verify_test01`, :func:`stage_submission` and :func:`check_submission`; the auditor checklist's
last three steps carry a :class:`SubmissionRequest` (their Action), which the console runs through
:func:`run_request` — the same functions, the same defaults:

- TEST01 verification writes ``<workspace>/build/compliance/<scenario>/TEST01/`` and, beside it,
  ``test01_runs.json`` (the runs it verified and their compliance), from the runs the stage would choose
  (core.submission.select) unless runs are named;
- the stage builds ``<workspace>/build/submission-staging`` with its manifest beside it
  (``submission-staging.stage.json``) and pre-checks it;
- the check keeps what the pre-check and MLCommons' checker said in ``submission-staging.check.json``.

Each is a job: it reports progress and honours its CancelToken.
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import MissingInputError, UsageError
from core.fsio import write_text_atomic
from core.jobs import NEVER, CancelToken, LogLine, Phase, Reporter, null_reporter

if TYPE_CHECKING:
    from core.harness.qsl import DataSource
    from core.history import RunRecord
    from core.submission.check import CheckReport, Finding
    from core.submission.stage import StageOptions, StageResult
    from core.submission.test01 import Test01Result
    from core.workspace import Workspace

STEPS = ("verify-test01", "stage", "check")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# --- TEST01 verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Test01Verification:
    """A TEST01 verification of a workspace's runs: the verdict, where it was written, which runs."""

    result: Test01Result
    out: Path  # the folder holding TEST01/ and test01_runs.json
    scenario: str
    config_ver: str
    runs: dict[str, RunRecord] = field(default_factory=dict)  # accuracy, performance, TEST01

    @property
    def passed(self) -> bool:
        return self.result.passed

    def lines(self) -> list[str]:
        out = [f"{role:<11} {r.run_id}  [{r.compliance.line}]" for role, r in self.runs.items()]
        return out + self.result.lines()

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "config_ver": self.config_ver,
            "out": str(self.out),
            "passed": self.passed,
            "result": self.result.to_dict(),
            "runs": {
                role: {"run": r.run_id, "path": str(r.path), "compliance": r.compliance.to_dict()}
                for role, r in self.runs.items()
            },
        }


def _record_at(path: str | Path) -> RunRecord:
    from core.history import read_run

    rec = read_run(Path(path))
    if rec is None:
        raise MissingInputError("not a run folder (no run.json or LoadGen logs)", path)
    return rec


def verify_test01(
    ws: Workspace,
    *,
    scenario: str = "Offline",
    out: str | Path | None = None,
    accuracy_run: str | Path | None = None,
    performance_run: str | Path | None = None,
    test01_run: str | Path | None = None,
    config_ver: str | None = None,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    data: DataSource | None = None,
) -> Test01Verification:
    """Verify a TEST01 run against its accuracy and performance runs (core.submission.test01) into
    ``out`` (default ``ws.compliance_dir / scenario``). Runs not named are the ones the stage would
    choose for ``scenario`` (core.submission.select: one backend/precision/batch/model). ``data``: the
    inference set the sampled responses are scored against (default: the workspace's)."""
    from core.accuracy import score_log
    from core.history import list_runs
    from core.submission.select import select_runs
    from core.submission.test01 import RUNS_RECORD, write_test01

    report(Phase("select", scenario))
    named = {"accuracy": accuracy_run, "performance": performance_run, "TEST01": test01_run}
    runs: dict[str, RunRecord] = {role: _record_at(p) for role, p in named.items() if p is not None}
    if len(runs) < len(named):
        sel = select_runs(list_runs(ws), scenarios=[scenario])
        chosen = sel.for_scenario(scenario)
        if chosen is None:
            why = "; ".join(sel.skipped) or f"no {scenario} runs"
            raise MissingInputError(
                f"no runs to verify TEST01 with ({why}); "
                "give --accuracy-run, --performance-run, --test01-run",
                ws.log_dir,
            )
        for role, rec in chosen.roles():
            if role in runs:
                continue
            if rec is None:
                raise MissingInputError(
                    f"no complete {scenario} TEST01 run of {chosen.performance.run_id}'s "
                    "backend/precision/batch/model (run it with --audit_test=TEST01)",
                    ws.log_dir,
                )
            runs[role] = rec
    runs = {role: runs[role] for role in ("performance", "accuracy", "TEST01")}
    config_ver = config_ver or runs["accuracy"].config_ver or "default"
    out = Path(out) if out is not None else ws.compliance_dir / scenario
    report(LogLine("info", ", ".join(f"{role} run {r.run_id}" for role, r in runs.items())))
    report(Phase("TEST01", str(out / "TEST01")))

    def score(log: Path, csv: Path) -> Any:
        return score_log(
            ws, log, None, config_ver, data=data, out_csv=csv, subset=True, report=report, cancel=cancel
        )

    result = write_test01(
        out,
        runs["accuracy"].path,
        runs["performance"].path,
        runs["TEST01"].path,
        config_ver=config_ver,
        score=score,
        cancel=cancel,
    )
    done = Test01Verification(result, out, scenario, config_ver, runs)
    record = {**done.to_dict(), "verified_at": _now()}
    write_text_atomic(out / RUNS_RECORD, json.dumps(record, indent=2) + "\n")
    return done


# --- stage -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageOutcome:
    """The staged tree (its manifest is beside it) and what the pre-check found in it."""

    result: StageResult
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "precheck": [f.line for f in self.findings]}


def stage_submission(
    ws: Workspace,
    opts: StageOptions,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    data: DataSource | None = None,
) -> StageOutcome:
    """core.submission.stage.stage (``data`` as there), then the pre-check of the new tree."""
    from core.submission.check import precheck
    from core.submission.stage import stage

    result = stage(ws, opts, report=report, cancel=cancel, data=data)
    report(Phase("pre-check", str(result.out)))
    return StageOutcome(result, tuple(precheck(result.out, result.version, result.full_logs)))


# --- check -------------------------------------------------------------------------------------------


def check_submission(
    tree: str | Path,
    *,
    checker: str | Path | None = None,
    version: str | None = None,
    submitter: str | None = None,
    python: str | None = None,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
) -> CheckReport:
    """Pre-check ``tree``, run MLCommons' checker on it when ``checker`` (a checkout of
    mlcommons/inference) is given, and keep what both said in ``<tree>.check.json``."""
    from core.submission.check import (
        CheckReport,
        detect_version,
        precheck,
        run_official_checker,
        tree_fingerprint,
        write_check_record,
    )

    tree = Path(tree).absolute()
    report(Phase("pre-check", str(tree)))
    version = version or detect_version(tree) or "v6.0"
    findings = tuple(precheck(tree, version))
    fingerprint = tree_fingerprint(tree)  # of the tree the checks saw
    run = None
    if checker is not None:
        cancel.check()
        report(Phase("official checker", f"--version {version}"))
        run = run_official_checker(tree, Path(checker), version=version, submitter=submitter, python=python)
    result = CheckReport(tree, version, findings, run, _now(), fingerprint)
    write_check_record(result)
    return result


# --- the checklist's requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmissionRequest:
    """One submission step as the auditor checklist offers it (its Action): :meth:`command` is what
    it runs, :func:`run_request` runs it. Paths are the workspace's defaults (``--workspace`` chooses
    the workspace). ``submitter`` and ``system_name`` must be given before a stage can run
    (:meth:`needs`); ``force`` replaces a staged tree (ask first); ``checker`` is a checkout of
    mlcommons/inference for the check (optional)."""

    step: str  # one of STEPS
    scenario: str = "Offline"  # verify-test01
    submitter: str = ""
    system_name: str = ""
    force: bool = False
    checker: str = ""

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise UsageError(f"unknown submission step {self.step!r} (one of {', '.join(STEPS)})")

    def needs(self) -> tuple[str, ...]:
        """Fields a person must fill in before it can run."""
        if self.step != "stage":
            return ()
        return tuple(k for k in ("submitter", "system_name") if not getattr(self, k))

    def argv(self) -> list[str]:
        """`unet3d submission ...`'s arguments (ORG / NAME stand for fields still to fill in)."""
        if self.step == "verify-test01":
            return ["verify-test01", f"--scenario={self.scenario}"]
        if self.step == "stage":
            args = [
                "stage",
                f"--submitter={self.submitter or 'ORG'}",
                f"--system-name={self.system_name or 'NAME'}",
            ]
            return args + (["--force"] if self.force else [])
        return ["check"] + ([f"--checker={self.checker}"] if self.checker else [])

    def command(self) -> str:
        return "unet3d submission " + shlex.join(self.argv())


def run_request(
    ws: Workspace,
    req: SubmissionRequest,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    data: DataSource | None = None,
) -> Test01Verification | StageOutcome | CheckReport:
    """Run a checklist step's request with the workspace's defaults (what its :meth:`command` does).
    ``data``: the inference set TEST01's responses are scored against (default: the workspace's)."""
    if req.needs():
        raise UsageError(f"{req.step} needs {', '.join(req.needs())}")
    if req.step == "verify-test01":
        return verify_test01(ws, scenario=req.scenario, report=report, cancel=cancel, data=data)
    if req.step == "stage":
        from core.submission.stage import StageOptions

        opts = StageOptions(
            out=ws.submission_dir, submitter=req.submitter, system_name=req.system_name, force=req.force
        )
        return stage_submission(ws, opts, report=report, cancel=cancel, data=data)
    if not ws.submission_dir.is_dir():
        raise MissingInputError("no staged tree to check (stage it first)", ws.submission_dir)
    return check_submission(ws.submission_dir, checker=req.checker or None, report=report, cancel=cancel)
