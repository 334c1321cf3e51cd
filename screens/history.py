"""History: the result folders under build/logs (core.history.RunRecord, newest first), two runs side by
side, and a run's LoadGen logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Header, Label, RichLog, Select, Static

from console.widgets.footer import ConsoleFooter
from console.widgets.live import LiveTable
from core.history import RunRecord
from screens.base import ConsoleScreen

RESULT_STYLE = {"VALID": "green", "INVALID": "bold red", "complete": "green", "running": "cyan"}
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "accuracy.txt", "run.json", "user.conf")


class RunsTable(LiveTable):
    HELP = (
        "Every result folder under build/logs, newest first. Incomplete, cancelled or failed runs are shown "
        "as such, without figures. Space marks a run for comparison (two at most); Enter opens its logs; "
        "r re-runs its exact configuration."
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
            yield Select(
                [(f, f) for f in files],
                prompt="no files",
                id="log-file",
                value=files[0] if files else Select.NULL,
            )
            yield RichLog(id="log-view", max_lines=3000, markup=False, wrap=False)

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
        for key, label in (
            ("mark", " "),
            ("date", "Date"),
            ("scenario", "Scenario"),
            ("mode", "Mode"),
            ("config", "Config"),
            ("backend", "Backend"),
            ("precision", "Prec."),
            ("result", "Result"),
            ("qps", "samples/s"),
            ("dice", "DICE"),
            ("folder", "Folder"),
        ):
            t.add_column(label, key=key)
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
        left.update(describe(runs[0]) if runs else "Mark two runs with Space to compare them.")
        right.update(describe(runs[1]) if len(runs) > 1 else "")

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
        self.post_message(RunRequested(cfg))
