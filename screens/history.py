"""History: the result folders under build/logs (core.history.RunRecord, newest first), two runs
compared (core.compare: each figure's difference and the settings that differed), and a run's LoadGen
logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Header, Label, RichLog, Select, Static

from console.widgets.fit import Col, FitTable
from console.widgets.footer import ConsoleFooter
from core.history import RunRecord
from screens.base import ConsoleScreen

RESULT_STYLE = {"VALID": "green", "INVALID": "bold red", "complete": "green", "running": "cyan"}
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "run.json", "user.conf")


class RunsTable(FitTable):
    HELP = (
        "Every result folder under build/logs, newest first. Incomplete, cancelled or failed runs are shown "
        "as such, without figures. Space marks a run for comparison (two at most: the figures' differences "
        "and the settings that differed are shown); Enter opens its logs; r re-runs its exact configuration."
    )


def describe(r: RunRecord) -> str:
    cfg = r.config
    lines = [
        f"{r.when}  {r.outcome}",
        f"folder   {r.path}",
        f"scenario {r.scenario or '?'}  mode {r.test_mode or '?'}",
        f"config   {r.config_ver or '-'}  audit {r.audit_test or '-'}",
        f"backend  {r.backend or '-'} {r.precision or ''}".rstrip(),
    ]
    if cfg is not None:
        lines.append(f"batch    {cfg.gpu_batch_size}  gpus {cfg.gpus}")
    lines += [
        f"samples/s {r.samples_per_s:.4f}" if r.samples_per_s is not None else "samples/s -",
        f"DICE     {r.mean_dice:.5f}" if r.mean_dice is not None else "DICE     -",
    ]
    lat = r.latency_ms
    lines += [f"{k:<8} {lat[k]:,.1f} ms" for k in ("p50", "p90", "p99", "p99.9", "mean", "max") if k in lat]
    return "\n".join(lines)


def compare_table(a: RunRecord, b: RunRecord) -> Table:
    """Each figure of A and B with B - A and the change in % (core.compare)."""
    from core.compare import compare_figures, fmt_delta, fmt_value

    t = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    for name, justify in (("", "left"), ("A", "right"), ("B", "right"), ("B - A", "right"), ("%", "right")):
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for d in compare_figures(a, b):
        delta, pct = fmt_delta(d)
        unit = f" {d.unit}" if d.unit else ""
        t.add_row(f"{d.name}{unit}", fmt_value(d.a), fmt_value(d.b), delta, pct)
    if not t.row_count:
        t.add_row("no figures in either run", "", "", "", "")
    return t


def settings_text(a: RunRecord, b: RunRecord) -> Text:
    """Which run is A and B, and the settings that differed between them."""
    from core.compare import differing_settings

    out = Text()
    out.append("A ", style="bold").append(f"{a.run_id}  {a.outcome}\n")
    out.append("B ", style="bold").append(f"{b.run_id}  {b.outcome}\n")
    diffs = differing_settings(a, b)
    if not diffs:
        out.append("Same settings.", style="green")
        return out
    out.append("Settings that differ:\n", style="bold")
    for name, va, vb in diffs:
        out.append(f"  {name}: {'-' if va is None else va} -> {'-' if vb is None else vb}\n")
    return out


class LogViewer(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close", id="logs.close", tooltip="Close the log viewer")
    ]
    DEFAULT_CSS = """
    LogViewer { align: center middle; }
    LogViewer > Vertical { width: 95%; height: 90%; border: thick $accent; background: $surface; }
    LogViewer RichLog { height: 1fr; }
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def compose(self) -> ComposeResult:
        files = [p.name for p in sorted(self.folder.iterdir()) if p.is_file()] if self.folder.is_dir() else []
        files.sort(key=lambda n: (LOG_FILES.index(n) if n in LOG_FILES else 99, n))
        with Vertical():
            yield Label(f"Logs of {self.folder}")
            if files:  # the files only: no blank "no files" entry among them
                yield Select([(f, f) for f in files], allow_blank=False, id="log-file", value=files[0])
            else:
                yield Select([], prompt="no log files", id="log-file", disabled=True)
            # opened at the top of a file (a summary is read from its first line)
            yield RichLog(id="log-view", max_lines=3000, markup=False, wrap=False, auto_scroll=False)

    def on_mount(self) -> None:
        self.show(self.query_one("#log-file", Select).value)

    def on_select_changed(self, event: Select.Changed) -> None:
        self.show(event.value)

    def show(self, name: Any) -> None:
        log = self.query_one("#log-view", RichLog)
        log.clear()
        if name is Select.NULL or not name:
            log.write(f"{self.folder}: no log files (the run may not have started)")
            return
        path = self.folder / str(name)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            log.write(f"{path}: {exc.strerror}")
            return
        if len(lines) > 3000:
            log.write(f"... {len(lines) - 3000} earlier lines not shown ...")
        for line in lines[-3000:]:
            log.write(line)
        log.scroll_home(animate=False)


class HistoryScreen(ConsoleScreen):
    HELP = RunsTable.HELP
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Compare", id="history.mark", tooltip="Mark/unmark the run for comparison"),
        Binding("enter", "open", "Logs", id="history.open", tooltip="Open the run's log files"),
        Binding("r", "rerun_selected", "Re-run", id="history.rerun", tooltip="Run this configuration again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.marked: list[str] = []
        self._runs: dict[str, RunRecord] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="compare"):
            yield Static("Mark two runs with Space to compare them.", id="cmp-left", markup=False)
            yield Static("", id="cmp-right", markup=False)
        yield ConsoleFooter()

    def on_mount(self) -> None:
        t = self.query_one(RunsTable)
        t.set_columns(  # the folder (run id) takes the width left; whole where it fits
            Col("mark", " ", 1),
            Col("date", "Date", 19),
            Col("scenario", "Scenario", None, min_width=7, weight=0, fit_content=True),
            Col("mode", "Mode", None, min_width=12, weight=0, fit_content=True),
            Col("config", "Config", None, min_width=7, weight=0, fit_content=True),
            Col("backend", "Backend", None, min_width=3, weight=0, fit_content=True),
            Col("precision", "Prec.", 5),
            Col("result", "Result", None, min_width=5, weight=0, fit_content=True),
            Col("qps", "samples/s", 9),
            Col("dice", "DICE", 7),
            Col("folder", "Folder", None, min_width=12, fit_content=True),
        )
        self.watch(self.app, "runs", self.show_runs, init=True)

    def show_runs(self, runs: list[RunRecord]) -> None:
        t = self.query_one(RunsTable)
        t.clear()
        self._runs = {}
        for n, r in enumerate(runs):  # core.history: newest first
            key = f"{n}:{r.path}"
            self._runs[key] = r
            res = r.outcome
            t.add_row(
                "●" if key in self.marked else " ",
                r.when,
                r.scenario or "?",
                (r.test_mode or "?") + (f" {r.audit_test}" if r.audit_test else ""),
                r.config_ver or "-",
                r.backend or "-",
                r.precision or "-",
                Text(res, style=RESULT_STYLE.get(res, "yellow")),
                f"{r.samples_per_s:.4f}" if r.samples_per_s is not None else "-",
                f"{r.mean_dice:.5f}" if r.mean_dice is not None else "-",
                r.path.name,
                key=key,
            )
        self.marked = [k for k in self.marked if k in self._runs]
        t.fit()
        self.show_compare()

    def _selected(self) -> str | None:
        t = self.query_one(RunsTable)
        if t.row_count == 0:
            return None
        return str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)

    def action_mark(self) -> None:
        key = self._selected()
        if key is None:
            return
        t = self.query_one(RunsTable)
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked = [*self.marked, key][-2:]
        for k in self._runs:
            t.set_cells(k, {"mark": "●" if k in self.marked else " "})
        self.show_compare()

    def show_compare(self) -> None:
        left = self.query_one("#cmp-left", Static)
        right = self.query_one("#cmp-right", Static)
        runs = [self._runs[k] for k in self.marked]
        if len(runs) < 2:
            left.update(describe(runs[0]) if runs else "Mark two runs with Space to compare them.")
            right.update("Mark a second run with Space to compare." if runs else "")
            return
        left.update(compare_table(runs[0], runs[1]))
        right.update(settings_text(runs[0], runs[1]))

    def action_open(self) -> None:
        key = self._selected()
        if key is not None:
            self.app.push_screen(LogViewer(self._runs[key].path))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_rerun_selected(self) -> None:
        """Run the selected run's recorded RunConfig again, exactly (audit test, batch, durations...)."""
        from console.messages import RunRequested

        key = self._selected()
        cfg = self._runs[key].config if key is not None else None
        if cfg is None:
            self.notify(
                "This run's configuration is not known (a folder made by another tool).", severity="warning"
            )
            return
        self.post_message(RunRequested(cfg, confirm=True))
