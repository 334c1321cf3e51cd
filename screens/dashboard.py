"""Dashboard: what the workspace holds and what is missing (from core.status.collect_status), the
backends on this machine with the reason when one is unavailable, the last results, and the actions
that fix what is missing. It never refuses to start: a missing item is a red row with its fix."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Header, Label, Static

from console import messages as m
from console.widgets.fit import Col, FitTable
from console.widgets.footer import ConsoleFooter
from console.widgets.job_panel import JobPanel
from core.history import RunRecord
from screens.base import ConsoleScreen

STATE_STYLE = {"ok": "green", "missing": "yellow", "broken": "bold red"}
STATE_ICON = {"ok": "✔", "missing": "✘", "broken": "✘"}


def section_rows(sec: Any, max_items: int = 8) -> list[tuple[str, str, str, str, str]]:
    """(section, item, state, detail, fix) rows; a long section (63 cases) summarised per group the way
    `unet3d status` prints it (core.status), so the dashboard and the CLI say the same thing."""
    try:
        from core.status import _table_rows  # the CLI's summariser; ask for a public name (see report)

        return _table_rows(sec, max_items)
    except ImportError:
        return [(sec.name, i.name, i.state, i.detail, i.fix) for i in sec.items]


class StatusTable(FitTable):
    HELP = (
        "Everything `unet3d status` reports: the KiTS19 cases (raw and preprocessed, both sets), the model "
        "(path, checksum, opset, parameters), the calibration cache, engines, the backends this machine can "
        "run (with the reason when one cannot) and the last runs. A missing item shows its fix."
    )


class DashboardScreen(ConsoleScreen):
    HELP = "The workspace at a glance. Use the buttons (or the palette, ctrl+p) to fix what is missing."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "job('demo')", "Demo", id="dashboard.demo", tooltip="Create the demo workspace here"),
        Binding(
            "p", "job('preprocess')", "Preprocess", id="dashboard.preprocess", tooltip="Preprocess both sets"
        ),
        Binding(
            "c", "job('calibrate')", "Calibrate", id="dashboard.calibrate", tooltip="Make the INT8 cache"
        ),
        Binding(
            "b",
            "job('engine')",
            "Build engine",
            id="dashboard.engine",
            show=False,
            tooltip="Load/build the engine of the current run setup",
        ),
    ]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="dash"):
            with Vertical(id="dash-main"):
                yield Static("", id="ws-line", markup=False)
                yield Static("", id="banner")
                yield StatusTable(id="status", cursor_type="row", zebra_stripes=True)
                yield Static("", id="item-detail", markup=False)
            with Vertical(id="actions"):
                yield Label("Actions", classes="section-title")
                yield Button("Demo workspace (d)", id="act-demo")
                yield Button("Preprocess (p)", id="act-preprocess")
                yield Button("Calibrate (c)", id="act-calibrate")
                yield Button("Build engine (b)", id="act-engine")
                yield Button("New run… (2)", id="act-run", variant="primary")
                yield Button("Refresh (ctrl+r)", id="act-refresh")
                yield Label("Last result", classes="section-title")
                yield Static("no runs yet", id="last-result", markup=False)
        yield JobPanel()
        yield ConsoleFooter()

    def on_mount(self) -> None:
        t = self.query_one(StatusTable)
        t.set_columns(  # item, detail and fix share the table's width (run ids and details whole)
            Col("section", "Section", 12),
            Col("item", "Item", None, min_width=20, weight=5, fit_content=True),
            Col("state", "State", 9),
            Col("detail", "Detail", None, min_width=16, weight=5),
            Col("fix", "Fix", None, min_width=10, weight=2),
        )
        self.query_one("#ws-line", Static).update(f"Workspace: {self.app.ws.root}")  # type: ignore[attr-defined]
        self.watch(self.app, "status_report", self.show_status, init=True)
        self.watch(self.app, "runs", self.show_runs, init=True)
        self.watch(self.app, "job", self.show_buttons, init=True)

    def show_status(self, report: Any) -> None:
        t = self.query_one(StatusTable)
        banner = self.query_one("#banner", Static)
        t.clear()
        if report is None:
            banner.update("Probing the workspace…")
            return
        missing: list[str] = []
        self._rows: dict[str, tuple[str, str, str, str, str, Any]] = {}
        for sec in report.sections:
            by_name = {i.name: i for i in sec.items}
            for n, (_sec, name, state, detail, fix) in enumerate(section_rows(sec)):
                self._rows[f"{sec.name}/{name}/{n}"] = (sec.name, name, state, detail, fix, by_name.get(name))
                style = STATE_STYLE.get(state, "red")
                t.add_row(
                    Text(sec.name if n == 0 else "", style="bold"),
                    Text(name),
                    Text(f"{STATE_ICON.get(state, '?')} {state}", style=style) if state else Text(""),
                    Text(detail, style="" if state == "ok" else style),
                    Text(fix if state != "ok" else "", style="italic"),
                    key=f"{sec.name}/{name}/{n}",
                )
            if sec.state != "ok" and sec.name not in ("engines", "runs", "backends"):
                fix = next((i.fix for i in sec.items if not i.ok and i.fix), "")
                missing.append(f"{sec.name} ({fix})" if fix else sec.name)
        t.fit()  # the item column follows its longest name (run ids)
        if missing:
            first = ", ".join(missing)
            hint = "Create demo workspace (d) builds a small synthetic one." if "dataset" in first else ""
            banner.update(Text(f"Missing: {first}. {hint}".strip(), style="bold yellow"))
        else:
            banner.update(Text("Workspace ready: start a run from the Run screen (2).", style="green"))
        self.show_buttons(self.app.job)  # type: ignore[attr-defined]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The whole of the highlighted item (the table truncates): e.g. the model's full sha256,
        opset, parameters, I/O and surgery state."""
        key = str(event.row_key.value) if event.row_key is not None else ""
        row = getattr(self, "_rows", {}).get(key)
        box = self.query_one("#item-detail", Static)
        if row is None:
            box.update("")
            return
        sec, name, state, detail, fix, item = row
        lines = [f"{sec} / {name}: {state}", detail]
        if fix and state != "ok":
            lines.append(f"fix: {fix}")
        data = dict(getattr(item, "data", {}) or {})
        if sec == "model" and state == "ok" and "surgery" not in detail:
            lines.append("surgery: none (an original export; core.surgery runs when an engine is built)")
        lines += [f"{k}: {v}" for k, v in data.items() if v not in (None, "", [], {})]
        box.update("\n".join(lines))

    def show_runs(self, runs: list[RunRecord]) -> None:
        box = self.query_one("#last-result", Static)
        if not runs:
            box.update("no runs yet")
            return
        r = runs[0]  # core.history: newest first
        lines = [
            r.when,
            f"{r.scenario or '?'} {r.config_ver or ''} {r.test_mode or '?'}",
            f"{r.backend or ''} {r.precision or ''}",
            r.outcome,
        ]
        if r.samples_per_s is not None:
            lines.append(f"{r.samples_per_s:.4g} samples/s")
        if r.mean_dice is not None:
            lines.append(f"DICE {r.mean_dice:.5f}")
        box.update("\n".join(x for x in lines if x.strip()))

    def show_buttons(self, _job: Any) -> None:
        app: Any = self.app
        busy = app.job_running
        data = app.section_ok("dataset")
        pre = app.section_ok("preprocessed")
        model = app.section_ok("model")
        self.query_one("#act-demo", Button).disabled = busy  # `d` asks first (UnetConsole.request_job)
        self.query_one("#act-demo", Button).variant = "success" if not data else "default"
        self.query_one("#act-preprocess", Button).disabled = busy or not data
        self.query_one("#act-calibrate", Button).disabled = busy or not (pre and model)
        self.query_one("#act-engine", Button).disabled = busy or not model
        self.query_one("#act-run", Button).disabled = busy

    def on_button_pressed(self, event: Button.Pressed) -> None:
        bid = event.button.id or ""
        if bid == "act-run":
            self.app.switch_mode("run")
        elif bid == "act-refresh":
            self.app.action_refresh_status()  # type: ignore[attr-defined]
        elif bid.startswith("act-"):
            self.post_message(m.JobRequested(bid[4:]))

    def action_job(self, name: str) -> None:
        self.post_message(m.JobRequested(name))
