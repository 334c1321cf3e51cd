"""Auditor checklist (core.audit): each step of NVIDIA's "Instructions for Auditors" with its state, the
evidence found on disk, its help and the action that does it (a run, a job, or what to do by hand).
State is saved in the workspace, so an audit resumes; `e` exports the Markdown report."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Header, Label, Markdown, Select, Static

from console import messages as m
from console.widgets.fit import Col, FitTable
from console.widgets.footer import ConsoleFooter
from core.audit import FAILED, ICONS, PASSED, Audit
from core.benchmark import SCENARIOS
from core.errors import UnetError
from screens.base import ConsoleScreen

STATE_STYLE = {PASSED: "green", FAILED: "bold red"}


class StepsTable(FitTable):
    HELP = (
        "The auditor steps: setup, the four runs ({default, high_accuracy} x {PerformanceOnly, "
        "AccuracyOnly}), new weights (replace model, calibrate, run high_accuracy), a new dataset (place "
        "data and case lists, preprocess, calibrate, run), compliance TEST01/TEST05, complete log folders. "
        "A step passes only on evidence found on disk. Enter/a does the selected step's action; c checks "
        "it; C checks all; e exports the Markdown report."
    )


class AuditScreen(ConsoleScreen):
    HELP = StepsTable.HELP
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "do_step", "Do step", id="audit.do", tooltip="Run the selected step's action"),
        Binding("c", "check_step", "Check", id="audit.check", tooltip="Look for the step's evidence again"),
        Binding("C", "check_all", "Check all", id="audit.check_all", tooltip="Check every step"),
        Binding("e", "export", "Export", id="audit.export", tooltip="Write build/audit/audit_report.md"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.audit: Audit | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="audit-top"):
            yield Label("Scenario ", classes="field-label")
            yield Select([(s, s) for s in SCENARIOS], value="Offline", allow_blank=False, id="audit-scenario")
            yield Static("", id="audit-counts")
        with Horizontal(id="audit-main"):
            yield StepsTable(id="steps", cursor_type="row")
            with Vertical(id="audit-detail"):
                with VerticalScroll(id="audit-help-box"):
                    yield Markdown("", id="audit-help")
                yield Static("", id="audit-evidence", markup=False)
                yield Static("", id="audit-action", markup=False)
                with Horizontal(id="audit-buttons"):
                    yield Button("Do it (a)", variant="primary", id="audit-do", compact=True)
                    yield Button("Check (c)", id="audit-check", compact=True)
                    yield Button("Check all (C)", id="audit-check-all", compact=True)
                    yield Button("Export (e)", id="audit-export", compact=True)
        yield ConsoleFooter()

    def on_mount(self) -> None:
        t = self.query_one(StepsTable)
        t.set_columns(  # the evidence takes the width that is left (it was cut at ~15 characters)
            Col("icon", "", 2),
            Col("title", "Step", None, min_width=16, weight=2, fit_content=True),
            Col("state", "State", 7),
            Col("evidence", "Evidence", None, min_width=16, weight=3),
        )
        self.load("Offline")
        t.focus()
        self._stale = True  # the saved state may be stale: look at the evidence when first shown
        self.watch(self.app, "runs", self._runs_changed, init=False)

    def _runs_changed(self, _runs: Any) -> None:
        if self.is_current:
            self.action_check_all(quiet=True)
        else:  # the console builds every screen at start-up: check when the auditor is shown
            self._stale = True

    def on_screen_resume(self) -> None:
        if self._stale and self.is_current:  # not while the console builds its screens
            self._stale = False
            self.action_check_all(quiet=True)

    def load(self, scenario: str) -> None:
        app: Any = self.app
        try:
            self.audit = Audit.load(app.ws, scenario, base=app.run_config)
        except UnetError as exc:
            self.notify(str(exc), severity="error")
            self.audit = None
            return
        t = self.query_one(StepsTable)
        t.clear()
        for s in self.audit.steps:
            t.add_row("", s.title, "", "", key=s.id)
        t.fit()  # the step column follows its longest title
        self.show_results()

    def show_results(self) -> None:
        if self.audit is None:
            return
        t = self.query_one(StepsTable)
        for s in self.audit.steps:
            r = self.audit.results[s.id]
            style = STATE_STYLE.get(r.state, "yellow")
            t.set_cells(
                s.id,
                {
                    "icon": Text(ICONS[r.state], style=style),
                    "state": Text(r.state, style=style),
                    "evidence": r.evidence,
                },
            )
        c = self.audit.counts()
        self.query_one("#audit-counts", Static).update(
            f"  {c[PASSED]} passed, {c[FAILED]} failed, {c['pending']} pending   state: "
            f"{Audit.state_path(self.audit.ws).relative_to(self.audit.ws.root)}"
        )
        self.show_detail()

    def selected(self) -> str | None:
        t = self.query_one(StepsTable)
        if t.row_count == 0:
            return None
        return str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)

    @on(DataTable.RowHighlighted)
    def show_detail(self) -> None:
        sid = self.selected()
        if self.audit is None or sid is None:
            return
        step = self.audit.step(sid)
        r = self.audit.results[sid]
        md = f"### {step.title}\n\n{step.help}"
        if step.seed_command:
            md += f"\n\nNVIDIA: `{step.seed_command}`"
        self.query_one("#audit-help", Markdown).update(md)
        ev = f"{ICONS[r.state]} {r.state}: {r.evidence}" + (
            f"\nchecked {r.checked_at}" if r.checked_at else ""
        )
        self.query_one("#audit-evidence", Static).update(ev)
        act = step.action
        ws = self.app.ws  # type: ignore[attr-defined]
        cmd = act.run.cli_command(ws) if act.run is not None else act.command()  # pasted, it works here
        text = f"Action: {act.label}\n$ {cmd}" if cmd else f"Action: {act.label}"
        if act.run is not None:
            text += f"\n$ {act.run.make_command(ws)}"
        self.query_one("#audit-action", Static).update(text)
        self.query_one("#audit-do", Button).disabled = act.kind in ("manual", "check")

    @on(Select.Changed, "#audit-scenario")
    def scenario_changed(self, event: Select.Changed) -> None:
        self.load(str(event.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_do_step()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {
            "audit-do": self.action_do_step,
            "audit-check": self.action_check_step,
            "audit-check-all": self.action_check_all,
            "audit-export": self.action_export,
        }
        if event.button.id in actions:
            actions[event.button.id]()

    # --- actions ---
    def action_do_step(self) -> None:
        sid = self.selected()
        if self.audit is None or sid is None:
            return
        act = self.audit.step(sid).action
        if act.kind == "run" and act.run is not None:  # asks first, saying how long it takes
            self.post_message(m.RunRequested(act.run, confirm=True))
        elif act.kind == "job":
            self.post_message(m.JobRequested(act.job))
        elif act.kind == "manual":
            self.notify(f"By hand: {act.text}. Then press c to check.", title=act.label, timeout=8)
        else:
            self.action_check_step()

    def action_check_step(self) -> None:
        sid = self.selected()
        if self.audit is not None and sid is not None and self._check_allowed():
            self._check([sid])

    def action_check_all(self, quiet: bool = False) -> None:
        if self.audit is not None and self._check_allowed():
            self._check(None, quiet)

    def _check_allowed(self) -> bool:
        """Checking saves the audit's state into the workspace: not into a folder that does not exist
        (a mistyped --workspace must not be created by looking at it)."""
        return bool(self.app.ws.root.is_dir())  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="audit-check", exit_on_error=False, description="audit checks")
    def _check(self, ids: list[str] | None, quiet: bool = False) -> None:
        assert self.audit is not None
        app: Any = self.app
        runs = app.runs if quiet and app.runs else None  # a status poll just brought these
        ctx = self.audit.context(status=app.status_report if quiet else None, runs=runs)
        self.audit.check_all(ids, ctx=ctx)
        self.app.call_from_thread(self.show_results)
        if not quiet:
            self.app.call_from_thread(self.notify, f"Checked {len(ids) if ids else 'all'} step(s)")

    def action_export(self) -> None:
        if self.audit is None:
            return
        try:
            path = self.audit.export_markdown()
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return
        self.notify(f"Audit report written to {path}", title="Exported")
