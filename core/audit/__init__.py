"""The auditor checklist: NVIDIA's "Instructions for Auditors" turned into steps whose state is decided
by evidence found on disk (status probes, the runs' records, file times and checksums).

  core.audit.checklist  the steps as data: titles, help texts, actions, NVIDIA's commands
  core.audit.checks     the evidence checks and the context they share

:class:`Audit` runs the checks, keeps each step's :class:`StepResult` in
``<root>/build/audit/audit_state.json`` (so an audit resumes where it stopped) and exports a Markdown
report. A step's state is ``pending``, ``passed``, ``not compliant`` (the evidence works but does not
meet the submission rules: a shortened run, the demo's data, a model that is not the official one) or
``failed``; the report says which and why. The CLI and the console both drive this package; neither
re-implements a check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.audit.checklist import Action, Step, checklist
from core.audit.checks import (
    FAILED,
    ICONS,
    NOT_CHECKED,
    NOT_COMPLIANT,
    PASSED,
    PENDING,
    STATES,
    Context,
    StepResult,
    case_lists_digest,
)
from core.benchmark import FP32_REFERENCE_DICE, RunConfig
from core.errors import BadInputError, UsageError
from core.fsio import sha256_file
from core.fsio import write_text_atomic as _atomic_write
from core.history import RunRecord
from core.jobs import NEVER, CancelToken, Progress, Reporter, null_reporter
from core.workspace import Workspace

STATE_FILE = "audit_state.json"
STATE_VERSION = 1

__all__ = [
    "FAILED",
    "ICONS",
    "NOT_CHECKED",
    "NOT_COMPLIANT",
    "PASSED",
    "PENDING",
    "STATES",
    "Action",
    "Audit",
    "Context",
    "Step",
    "StepResult",
    "checklist",
    "fp32_reference",
    "run_audit",
]


class Audit:
    """A checklist bound to a workspace, with results persisted in ``<root>/build/audit``."""

    def __init__(self, ws: Workspace, scenario: str = "Offline", base: RunConfig | None = None) -> None:
        self.ws = ws
        self.scenario = scenario
        self.steps = checklist(scenario, base)
        self.results: dict[str, StepResult] = {s.id: NOT_CHECKED for s in self.steps}
        self.baseline: dict[str, str] = {}
        self.started_at = ""

    # --- persistence ---
    @staticmethod
    def state_path(ws: Workspace) -> Path:
        return ws.root / "build" / "audit" / STATE_FILE

    @classmethod
    def load(cls, ws: Workspace, scenario: str | None = None, base: RunConfig | None = None) -> Audit:
        """Resume the saved audit (same scenario) or start a new one; a corrupt file is a BadInputError."""
        path = cls.state_path(ws)
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                    raise ValueError("unknown format")
            except (ValueError, OSError) as exc:
                raise BadInputError(
                    f"unreadable audit state ({exc}); delete it to start over", path
                ) from None
        saved_scenario = str(data.get("scenario") or "Offline")
        audit = cls(ws, scenario or saved_scenario, base)
        if data and audit.scenario == saved_scenario:
            audit.baseline = {str(k): str(v) for k, v in (data.get("baseline") or {}).items()}
            audit.started_at = str(data.get("started_at", ""))
            for sid, res in (data.get("steps") or {}).items():
                if sid in audit.results and isinstance(res, dict):
                    audit.results[sid] = StepResult.from_dict(res)
        if not audit.baseline:
            audit.record_baseline()
        return audit

    def record_baseline(self) -> None:
        """Remember the model and case lists the audit started with (for the 'new weights/data' steps)."""
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.baseline = {"case_lists": case_lists_digest(self.ws)}
        if self.ws.model_path.is_file():
            self.baseline["model_sha256"] = sha256_file(self.ws.model_path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "scenario": self.scenario,
            "started_at": self.started_at,
            "baseline": dict(self.baseline),
            "steps": {sid: r.to_dict() for sid, r in self.results.items()},
        }

    def save(self) -> Path:
        path = self.state_path(self.ws)
        _atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    # --- checks ---
    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise UsageError(f"unknown audit step {step_id!r}")

    def context(self, status: Any = None, runs: list[RunRecord] | None = None) -> Context:
        """A check context; a caller that already holds a fresh status report or run list (the console
        polls both) passes them so the checks do not probe the workspace again."""
        ctx = Context(self.ws, self.scenario, self.baseline, fp32_reference(self.ws))
        ctx._status, ctx._runs = status, runs
        return ctx

    def check(self, step_id: str, ctx: Context | None = None, save: bool = True) -> StepResult:
        step = self.step(step_id)
        ctx = ctx or self.context()
        try:
            res = step.check(ctx)
        except Exception as exc:  # a check must never take the audit down; show why it failed
            res = StepResult(FAILED, f"check failed: {type(exc).__name__}: {exc}".replace("\n", " "))
        res = StepResult(res.state, res.evidence, res.paths, time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.results[step_id] = res
        if save:
            self.save()
        return res

    def check_all(
        self,
        ids: Iterable[str] | None = None,
        report: Reporter = null_reporter,
        cancel: CancelToken = NEVER,
        ctx: Context | None = None,
    ) -> dict[str, StepResult]:
        """Check steps (all by default) sharing one context; a job: reports progress, honours cancel."""
        todo = list(ids) if ids is not None else [s.id for s in self.steps]
        ctx = ctx or self.context()
        for n, sid in enumerate(todo, 1):
            cancel.check()
            self.check(sid, ctx, save=False)
            report(Progress("audit", n, len(todo), unit="step", item=sid))
        self.save()
        return dict(self.results)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for r in self.results.values():
            out[r.state] += 1
        return out

    # --- report ---
    def to_markdown(self) -> str:
        c = self.counts()
        lines = [
            "# MLPerf Inference 3D-UNet audit",
            "",
            f"- Workspace: `{self.ws.root}`",
            f"- Scenario: {self.scenario}",
            f"- Audit started: {self.started_at or '-'}; report written {time.strftime('%Y-%m-%dT%H:%M:%S')}",
            f"- Model sha256 at start: `{self.baseline.get('model_sha256', '-')}`",
            f"- Steps: {c[PASSED]} passed, {c[NOT_COMPLIANT]} not compliant, {c[FAILED]} failed, "
            f"{c[PENDING]} pending",
        ]
        if c[NOT_COMPLIANT]:
            n = c[NOT_COMPLIANT]
            lines.append(
                f"- Not compliant: {n} step{'s' if n != 1 else ''} rest on evidence that does not meet the "
                "MLPerf submission rules (a shortened run, synthetic or partial data, a model that is not "
                "the official one); the evidence says why. They are not passed."
            )
        lines += [
            "",
            "| Step | State | Evidence | Checked |",
            "|---|---|---|---|",
        ]
        for s in self.steps:
            r = self.results[s.id]
            ev = r.evidence.replace("|", "\\|")
            lines.append(
                f"| {s.title} (`{s.id}`) | {ICONS[r.state]} {r.state} | {ev} | {r.checked_at or '-'} |"
            )
        lines.append("")
        group = ""
        for s in self.steps:
            if s.group != group:
                group = s.group
                lines += [f"## {group}", ""]
            r = self.results[s.id]
            lines += [f"### {s.title}", "", s.help, "", f"- State: **{r.state}** — {r.evidence}"]
            if s.action.command():
                lines.append(f"- Action: `{s.action.command()}`")
                if s.action.run is not None:
                    lines.append(f"- Make: `{s.action.run.make_command()}`")
            if s.seed_command:
                lines.append(f"- NVIDIA: `{s.seed_command}`")
            lines += [f"- Evidence file: `{p}`" for p in r.paths]
            lines.append("")
        return "\n".join(lines)

    def export_markdown(self, path: Path | None = None) -> Path:
        path = path or self.ws.root / "build" / "audit" / "audit_report.md"
        _atomic_write(path, self.to_markdown())
        return path


def fp32_reference(ws: Workspace) -> float:
    """The FP32 DICE that targets are relative to (core.accuracy: the model's own reference file beside
    it, e.g. the demo model's, else the official 0.86170)."""
    try:
        from core.accuracy import fp32_reference_for

        ref, _source = fp32_reference_for(ws.model_path)
    except Exception:  # an unreadable reference file: the official value, as the CLI falls back
        return FP32_REFERENCE_DICE
    return float(ref)


def run_audit(
    ws: Workspace, scenario: str = "Offline", report: Reporter = null_reporter, cancel: CancelToken = NEVER
) -> Audit:
    """Job form (for `unet3d audit`): load/resume, check every step, save."""
    audit = Audit.load(ws, scenario)
    audit.check_all(report=report, cancel=cancel)
    return audit
