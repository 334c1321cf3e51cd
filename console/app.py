"""The operator console: a Textual app over the same core package as the `unet3d` CLI.

Modes (keys 1-5): dashboard, run setup, live monitor, history, auditor. Every long job is a thread worker
(``@work(thread=True, exclusive=True, group=..., exit_on_error=False)``) that receives the worker's
``cancelled_event`` as its CancelToken and posts typed messages (console.messages); the App's handlers
own all state. The benchmark itself runs in a child process (core.harness.isolated, via console.workers).
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.clock import Clock
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input
from textual.worker import Worker, WorkerState, get_current_worker

from console import messages as m
from console import textual_compat
from console.commands import ConsoleCommands
from console.heap import HeapFreezer
from console.state import JOB_TITLES, JobState
from console.widgets.footer import ConsoleFooter
from console.workers import Jobs, LiveFeed, RealJobs, core_reporter
from core import config as core_config
from core.benchmark import RunConfig
from core.errors import Cancelled as CoreCancelled
from core.errors import ExitCode, UnetError
from core.history import RunRecord
from core.jobs import CancelToken, Reporter
from core.workspace import Workspace
from screens.auditor import AuditScreen
from screens.base import ConsoleScreen
from screens.dashboard import DashboardScreen
from screens.help import HelpScreen
from screens.history import HistoryScreen
from screens.modals import ConfirmModal, ErrorModal
from screens.monitor import MonitorScreen
from screens.run_setup import RunSetupScreen

DEMO_WORKSPACE = "unet3d-demo"  # the CLI's `unet3d demo` default, relative to the working directory
SCREENS = Binding.Group("Screens", compact=True)
MODE_KEYS = {"1": "dashboard", "2": "run", "3": "monitor", "4": "history", "5": "audit"}


class UnetConsole(App[None], inherit_bindings=False):
    TITLE = "unet3d console"
    SUB_TITLE = "MLPerf Inference 3D-UNet KiTS19"
    CSS_PATH = "console.tcss"
    MODES: ClassVar[dict[str, Any]] = {
        "dashboard": DashboardScreen,
        "run": RunSetupScreen,
        "monitor": MonitorScreen,
        "history": HistoryScreen,
        "audit": AuditScreen,
    }
    DEFAULT_MODE = "dashboard"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDING_GROUP_TITLE = "Console"
    BINDINGS: ClassVar[list[BindingType]] = [
        # one footer entry for the five screens ("12345 Screens"): the footer fits 80 columns
        Binding(
            "1",
            "mode('dashboard')",
            "Dashboard",
            id="mode.dashboard",
            tooltip="Dashboard: workspace status and actions",
            group=SCREENS,
        ),
        Binding(
            "2",
            "mode('run')",
            "Run",
            id="mode.run",
            tooltip="Run: set up a LoadGen run; shows the equivalent command",
            group=SCREENS,
        ),
        Binding(
            "3",
            "mode('monitor')",
            "Monitor",
            id="mode.monitor",
            tooltip="Monitor: live QPS, latency, DICE and log",
            group=SCREENS,
        ),
        Binding(
            "4", "mode('history')", "History", id="mode.history", tooltip="History: past runs", group=SCREENS
        ),
        Binding(
            "5",
            "mode('audit')",
            "Audit",
            id="mode.audit",
            tooltip="Audit: the auditor checklist",
            group=SCREENS,
        ),
        # Esc in a text field only leaves the field (it used to cancel the run); shown only there
        Binding(
            "escape",
            "leave_field",
            "Leave field",
            id="field.leave",
            show=False,
            tooltip="Leave the text field (Esc in a field never cancels a job)",
        ),
        Binding(
            "escape",
            "cancel_job",
            "Cancel",
            id="job.cancel",
            tooltip="Cancel the running job, after a confirmation (stops LoadGen)",
        ),
        Binding("f1", "help('context')", "Help", id="help.context", tooltip="Help for the focused panel"),
        Binding(
            "question_mark", "help('keys')", "Keys", id="help.keys", show=False, tooltip="All key bindings"
        ),
        Binding(
            "r", "rerun", "Re-run", id="run.rerun", show=False, tooltip="Re-run the last run configuration"
        ),
        Binding(
            "ctrl+e", "export", "Export", id="run.export", show=False, tooltip="Export the last run summary"
        ),
        Binding(
            "ctrl+r",
            "refresh_status",
            "Refresh",
            id="status.refresh",
            show=False,
            tooltip="Probe the workspace again",
        ),
        Binding(
            "ctrl+p",
            "command_palette",
            "Palette",
            id="app.palette",
            show=False,
            tooltip="Every action, by name",
        ),
        Binding(
            "ctrl+s",
            "save_screen",
            "Screenshot",
            id="app.screenshot",
            show=False,
            tooltip="Save an SVG screenshot under build/screenshots",
        ),
        Binding("q", "quit_console", "Quit", id="app.quit", tooltip="Quit (asks while a job runs)"),
        Binding(
            "ctrl+q",
            "quit_console",
            "Quit",
            id="app.quit_now",
            show=False,
            priority=True,
            tooltip="Quit (asks while a job runs)",
        ),
    ]

    job: reactive[JobState | None] = reactive(None, always_update=True)
    status_report: reactive[Any] = reactive(None, always_update=True)
    runs: reactive[list[RunRecord]] = reactive(list, always_update=True)  # newest first
    last_result: reactive[dict[str, Any] | None] = reactive(None, always_update=True)
    log_seq: reactive[int] = reactive(0)

    def __init__(
        self,
        ws: Workspace,
        *,
        settings: core_config.Settings | None = None,
        jobs: Jobs | None = None,
        clock: Clock | None = None,
        status_interval: float = 30.0,
        demo_default: bool = False,
        cursor_blink: bool = True,
        prebuild: bool = True,
    ) -> None:
        super().__init__()
        self.cursor_blink = cursor_blink  # off in snapshot tests
        self.prebuild = prebuild
        self.heap = HeapFreezer()
        self.ws = ws
        self.settings = settings or core_config.Settings()
        self.jobs: Jobs = jobs or RealJobs()
        self.clock = clock or Clock()
        self.status_interval = status_interval
        self.demo_default = demo_default
        self._run_config: RunConfig = self._initial_config()
        self.last_config: RunConfig | None = None
        self.run_form_error = ""  # the run form's current error ("" when it is valid)
        self.running_config: RunConfig | None = None
        self.live = LiveFeed()
        self.logs: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=2000)
        self._log_n = 0
        self._job_worker: Worker[Any] | None = None
        self._status_timer: Any = None
        self.theme = str(self.settings.console.get("theme", "textual-dark"))
        if self.settings.keymap:
            self.set_keymap(self.settings.keymap)

    @property
    def run_config(self) -> RunConfig:
        """The run setup's configuration (the form, the palette's run commands and audit actions use it);
        the header shows it next to the workspace name."""
        return self._run_config

    @run_config.setter
    def run_config(self, cfg: RunConfig) -> None:
        self._run_config = cfg
        if self.is_running:
            self._show_config()

    def _initial_config(self) -> RunConfig:
        try:
            return self.settings.run_config()
        except UnetError:
            return RunConfig()

    # ------------------------------------------------------------------------------ lifecycle
    async def on_mount(self) -> None:
        self._show_config()
        self.refresh_status()
        if not self.ws.root.is_dir() and not self.demo_default:
            self.call_after_refresh(self.ask_to_create_workspace)
        # console.heap: fewer objects per rendered line, less cyclic garbage (same results); only on
        # the Textual they were written for, else said here and in Help
        compat = textual_compat.apply()
        if not compat.ok:
            self.add_log("warning", compat.summary())
            self.notify(compat.summary(), title="Textual", severity="warning", timeout=20)
        if self.prebuild:
            await self.build_screens()
        self.heap.start()  # console.heap: frozen long-lived heap, full collections when quiet
        self.call_after_refresh(self.heap.maybe_freeze)
        self.set_interval(1.0, self.heap.tick)

    async def build_screens(self) -> None:
        """Compose every mode's screen once, at start-up, then show the first one again.

        Screens are kept for the whole session (MODES) and only updated afterwards; building the run
        form or the monitor on its first visit took 150-300 ms of UI-thread CPU, in the middle of a
        run. Nothing is painted in between (batch_update)."""
        first = self.current_mode
        with self.batch_update():
            for mode in self.MODES:
                if mode != first:
                    await self.switch_mode(mode)
            await self.switch_mode(first)

    def on_unmount(self) -> None:
        self.heap.release()

    def ask_to_create_workspace(self) -> None:
        """A --workspace (or config) naming a folder that does not exist is more often a typo than a
        new workspace: nothing is written there until the user says so (the auditor used to create
        build/audit in it at start-up)."""
        root = self.ws.root

        def answer(yes: bool | None) -> None:
            if not yes:
                self.exit(message=f"{root} does not exist: nothing was created (check --workspace)")
                return
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self.exit(return_code=int(ExitCode.BAD_INPUT), message=f"error: {root}: {exc.strerror}")
                return
            self.refresh_status()

        self.push_screen(
            ConfirmModal(f"The workspace {root} does not exist. Create it? (n quits: check --workspace)"),
            answer,
        )

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.Resize, events.MouseDown)):
            self.heap.input_seen()  # no full collection right after input (console.heap)
        if isinstance(event, events.Resize):
            self.drop_hidden_render_state()
            self.drop_stale_renders()
            for footer in self.screen.query(ConsoleFooter):  # fitted before the layout, not after
                footer.fit(event.size.width)
        await super().on_event(event)

    def drop_hidden_render_state(self) -> int:
        """The terminal was resized: the hidden mode screens' rendered lines are for the old size and
        are rendered afresh when shown; until then every full collection would walk them (console.heap:
        ~70 % of the screens' render state after a resize)."""
        n = 0
        for mode, stack in textual_compat.screen_stacks(self).items():
            if mode != self.current_mode:
                n += sum(s.drop_render_state() for s in stack if isinstance(s, ConsoleScreen))
        return n

    def drop_stale_renders(self) -> int:
        """The terminal is being resized: the shown screens' live tables and log forget their cached
        renders for the old size now, before the screen is laid out and rendered at the new one
        (console.widgets.live). Returns how many widgets dropped theirs."""
        n = 0
        for screen in self.screen_stack:  # the current mode's: the palette or a modal may be on top
            for widget in screen.walk_children(with_self=False):
                drop = getattr(widget, "drop_stale_renders", None)  # LiveTable, LogTail
                if drop is not None:
                    drop()
                    n += 1
        return n

    @property
    def job_running(self) -> bool:
        return self.job is not None and self.job.running

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc leaves a text field when one has the focus, else asks to cancel the running job; with
        no job the Cancel key is not offered (nor shown in the footer)."""
        if action == "leave_field":
            return isinstance(self.focused, Input)
        if action == "cancel_job":
            return self.job_running
        return True

    def watch_job(self, old: JobState | None, new: JobState | None) -> None:
        if (old is not None and old.running) != (new is not None and new.running):
            self.refresh_bindings()  # the footer's Cancel key comes and goes with a job

    # -------------------------------------------------------------------------------- status
    def refresh_status(self) -> None:
        if self._status_timer is not None:
            self._status_timer.stop()
            self._status_timer = None
        self._status_worker()

    @work(thread=True, exclusive=True, group="status", exit_on_error=False, description="status probe")
    def _status_worker(self) -> None:
        report = self.jobs.status(self.ws)  # never raises (core.status)
        try:
            runs = self.jobs.history(self.ws)
        except Exception as exc:  # a broken log folder must not blank the dashboard
            runs = []
            self.call_from_thread(
                self.notify, f"run history unreadable: {exc}", severity="error", markup=False
            )
        if not get_current_worker().is_cancelled:
            self.post_message(m.StatusRefreshed(report, runs))

    @on(m.StatusRefreshed)
    def _on_status(self, msg: m.StatusRefreshed) -> None:
        self.status_report = msg.report
        self.runs = list(msg.runs)
        # polls never overlap: the next one is scheduled only after this one finished (dolphie)
        if self.status_interval > 0:
            self._status_timer = self.set_timer(self.status_interval, self.refresh_status)

    def section_ok(self, name: str) -> bool:
        rep = self.status_report
        if rep is None:
            return False
        try:
            return rep.section(name).state == "ok"
        except KeyError:
            return False

    def case_list(self) -> list[str]:
        """Inference cases in QSL order (the DICE table's rows, created up front)."""
        if hasattr(self.jobs, "case_list"):
            return list(self.jobs.case_list(self.ws))
        try:
            from core.cases import case_lists

            return list(case_lists(self.ws).inference)
        except Exception:
            return []

    # ---------------------------------------------------------------------------------- jobs
    def _start(self, name: str, start: Callable[[], Worker[Any]]) -> bool:
        if self.job_running:
            assert self.job is not None
            self.notify(f"{self.job.description} is running: Esc cancels it first.", severity="warning")
            return False
        self.job = JobState(name, JOB_TITLES.get(name, name))
        self._job_worker = start()
        return True

    def _job_body(self, job: str, fn: Callable[[Reporter, CancelToken], Any]) -> Any:
        """Runs in the worker thread. Expected outcomes become messages; anything else propagates to
        the worker (ERROR state), which on_worker_state_changed turns into a Failed message."""
        worker = get_current_worker()
        token = CancelToken(worker.cancelled_event)
        self.post_message(m.JobStarted(job, worker.description))
        try:
            result = fn(core_reporter(job, self.post_message), token)
        except CoreCancelled:
            self.post_message(m.Cancelled(job))
            return None
        except UnetError as exc:
            self.post_message(m.Failed(job, str(exc), int(exc.exit_code)))
            return None
        self.post_message(m.RunFinished(job, result))
        return result

    @work(thread=True, exclusive=True, group="demo", exit_on_error=False, description="Create demo workspace")
    def _demo_worker(self) -> Any:
        return self._job_body("demo", lambda r, c: self.jobs.demo(self.ws, r, c))

    @work(thread=True, exclusive=True, group="preprocess", exit_on_error=False, description="Preprocess")
    def _preprocess_worker(self) -> Any:
        return self._job_body("preprocess", lambda r, c: self.jobs.preprocess(self.ws, r, c))

    @work(thread=True, exclusive=True, group="calibrate", exit_on_error=False, description="Calibrate")
    def _calibrate_worker(self) -> Any:
        return self._job_body("calibrate", lambda r, c: self.jobs.calibrate(self.ws, r, c))

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False, description="Build engine")
    def _engine_worker(self, cfg: RunConfig) -> Any:
        return self._job_body("engine", lambda r, c: self.jobs.build_engine(self.ws, cfg, r, c))

    @work(thread=True, exclusive=True, group="benchmark", exit_on_error=False, description="Run")
    def _benchmark_worker(self, cfg: RunConfig, live: LiveFeed) -> Any:
        return self._job_body("benchmark", lambda r, c: self.jobs.benchmark(self.ws, cfg, r, c, live))

    def start_job(self, name: str, cfg: RunConfig | None = None) -> bool:
        cfg = cfg or self.run_config
        starters: dict[str, Callable[[], Worker[Any]]] = {
            "demo": self._demo_worker,
            "preprocess": self._preprocess_worker,
            "calibrate": self._calibrate_worker,
            "engine": lambda: self._engine_worker(cfg),
        }
        if name not in starters:
            self.notify(f"unknown job {name}", severity="error")
            return False
        return self._start(name, starters[name])

    def start_run(self, cfg: RunConfig) -> bool:
        try:
            cfg = cfg.validate()
        except UnetError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return False
        if self.job_running:
            assert self.job is not None
            self.notify(f"{self.job.description} is running: Esc cancels it first.", severity="warning")
            return False
        self.live = LiveFeed()
        self.last_result = None
        self.running_config = cfg
        self.last_config = cfg
        self.logs.clear()
        ok = self._start("benchmark", lambda: self._benchmark_worker(cfg, self.live))
        if ok:
            self.job = JobState("benchmark", f"Run {cfg.scenario} {cfg.config_ver} {cfg.test_mode}")
            self.switch_mode("monitor")
        return ok

    @on(m.RunRequested)
    def _on_run_requested(self, msg: m.RunRequested) -> None:
        self.request_run(msg.config, confirm=msg.confirm)

    @on(m.JobRequested)
    def _on_job_requested(self, msg: m.JobRequested) -> None:
        self.request_job(msg.job, msg.config)

    # --- long or overwriting actions say what they do and how long, and wait for a yes ---
    def request_run(self, cfg: RunConfig, *, confirm: bool = True) -> None:
        """Start a run; asked from anywhere but the run form (which shows the estimate), first say
        how long it will take (core.estimate) and wait for a yes."""
        if not confirm or self.job_running:  # a running job: start_run says why it cannot start
            self.start_run(cfg)
            return
        from core.estimate import run_estimate

        est = run_estimate(self.ws, cfg, self.runs)
        audit = f" {cfg.audit_test}" if cfg.audit_test else ""
        what = f"{cfg.scenario} {cfg.config_ver} {cfg.test_mode}{audit}"
        question = f"Start the run {what} on {cfg.backend}/{cfg.precision}? {est.text()}."
        self.push_screen(ConfirmModal(question), lambda yes: self.start_run(cfg) if yes else None)

    def request_job(self, name: str, cfg: RunConfig | None = None) -> None:
        """Start a job; the demo first says what it will write and how long it takes."""
        if name != "demo" or self.job_running:
            self.start_job(name, cfg)
            return
        from core.estimate import demo_estimate

        est = demo_estimate(self.ws, self.runs).text()
        if self.section_ok("dataset") or (self.ws.data_dir / "inference_cases.json").is_file():
            question = (
                f"{self.ws.root} already holds the demo. Run it again? It reuses its cases and model and "
                f"adds an AccuracyOnly run: {est}."
            )
        else:
            question = (
                f"Create the demo workspace in {self.ws.root} (synthetic cases, demo model, a run)? {est}."
            )
        self.push_screen(ConfirmModal(question), lambda yes: self.start_job("demo") if yes else None)

    # --- job messages -> state ---
    def _current(self, msg: m.JobMessage) -> JobState | None:
        return self.job if self.job is not None and self.job.name == msg.job else None

    @on(m.JobStarted)
    def _on_started(self, msg: m.JobStarted) -> None:
        if (job := self._current(msg)) is not None:
            self.job = job.with_(phase="started")

    @on(m.PhaseChanged)
    def _on_phase(self, msg: m.PhaseChanged) -> None:
        if (job := self._current(msg)) is None:
            return
        if msg.name in ("cancelling", "cancelled"):  # the end of the stage it stops: its count stays
            self.job = job.with_(phase=msg.name, detail=msg.detail)
        else:  # a count belongs to the phase it was made in
            self.job = job.with_(
                phase=msg.name, detail=msg.detail, done=0, total=0, unit="", item="", task=""
            )

    @on(m.Progress)
    def _on_progress(self, msg: m.Progress) -> None:
        if (job := self._current(msg)) is not None:
            self.job = job.with_(done=msg.done, total=msg.total, unit=msg.unit, item=msg.item, task=msg.task)

    @on(m.LogLine)
    def _on_log(self, msg: m.LogLine) -> None:
        self.add_log(msg.level, msg.text)

    def add_log(self, level: str, text: str) -> None:
        self._log_n += 1
        self.logs.append((self._log_n, level, text))
        self.log_seq = self._log_n

    def _end(self, msg: m.JobMessage, outcome: str, **kw: Any) -> None:
        job = self._current(msg)
        if job is not None:
            self.job = job.with_(running=False, outcome=outcome, **kw)
        self._job_worker = None
        self.refresh_status()

    @on(m.RunFinished)
    def _on_finished(self, msg: m.RunFinished) -> None:
        self._end(msg, "finished", result=msg.result)
        if msg.job == "benchmark":
            self.last_result = msg.result if isinstance(msg.result, dict) else {"result": msg.result}
            self.add_log("info", "run finished: LoadGen's figures replace the live ones where it has them")
        self.notify(f"{JOB_TITLES.get(msg.job, msg.job)} finished")

    @on(m.Cancelled)
    def _on_cancelled(self, msg: m.Cancelled) -> None:
        self._end(msg, "cancelled")
        self.add_log("warning", f"{JOB_TITLES.get(msg.job, msg.job)} cancelled")
        self.notify(f"{JOB_TITLES.get(msg.job, msg.job)} cancelled", severity="warning")

    @on(m.Failed)
    def _on_failed(self, msg: m.Failed) -> None:
        self._end(msg, "failed", error=msg.error)
        self.add_log("error", msg.error)
        self.push_screen(ErrorModal(f"{JOB_TITLES.get(msg.job, msg.job)} failed", msg.error))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """One place maps a worker that died of an unexpected exception to a Failed job."""
        w = event.worker
        if event.state == WorkerState.ERROR and w.group in JOB_TITLES:
            err = w.error
            text = f"{type(err).__name__}: {err}".replace("\n", " ") if err else "unknown error"
            self.post_message(m.Failed(w.group, text, 1))
        elif event.state == WorkerState.ERROR and w.group == "status":
            self.notify(f"status probe failed: {w.error}", severity="error", markup=False)

    # ------------------------------------------------------------------------------- actions
    def action_mode(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_leave_field(self) -> None:
        self.screen.set_focus(None)

    def action_cancel_job(self) -> None:
        """Ask, then cancel: one stray Esc must not throw away a run (as quitting already asks)."""
        if not self.job_running or self._job_worker is None:
            return
        assert self.job is not None
        job, worker = self.job, self._job_worker
        count = f", {job.done}/{job.total} {job.unit}s" if job.counting else ""
        what = f"{job.description} ({job.stage}{count})"

        def answer(yes: bool | None) -> None:
            if yes and self._job_worker is worker:  # still the job the question was about
                self.cancel_job_now()

        self.push_screen(
            ConfirmModal(f"Cancel {what}? Its results so far are not kept. Esc or n: keep it running."),
            answer,
        )

    def cancel_job_now(self) -> None:
        if self.job_running and self._job_worker is not None:
            self._job_worker.cancel()
            assert self.job is not None
            self.job = self.job.with_(phase="cancelling")
            self.notify("Cancelling…")

    def action_help(self, which: str = "context") -> None:
        focused = self.focused
        self.push_screen(HelpScreen(self, focused if which == "context" else None))

    def action_rerun(self) -> None:
        """Run the last configuration again: this session's, else the newest run's recorded RunConfig."""
        cfg = self.last_config or (self.runs[0].config if self.runs else None)
        if cfg is None:
            self.notify("Nothing to re-run yet: start a run from the Run screen (2).")
            return
        self.request_run(cfg)

    def action_refresh_status(self) -> None:
        self.refresh_status()
        self.notify("Refreshing status…")

    def action_export(self) -> None:
        res = self.last_result
        if not res:
            self.notify("No finished run to export yet.", severity="warning")
            return
        import json

        from core.fsio import write_text_atomic

        base = Path(str(res.get("log_dir") or self.ws.log_dir))
        target = base / "console_summary.json" if base.is_dir() else self.ws.log_dir / "console_summary.json"
        try:
            write_text_atomic(target, json.dumps(res, indent=2, default=str) + "\n")
        except OSError as exc:
            self.notify(f"{target}: {exc.strerror}", severity="error", markup=False)
            return
        self.notify(f"Summary written to {target}")

    def action_save_screen(self) -> None:
        folder = self.ws.root / "build" / "screenshots"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = self.save_screenshot(path=str(folder))
        except OSError as exc:
            self.notify(f"{folder}: {exc.strerror}", severity="error", markup=False)
            return
        self.notify(f"Screenshot saved to {path}")

    def _show_config(self) -> None:
        cfg = self.run_config
        self.sub_title = (
            f"{self.ws.root.name} | {cfg.scenario} {cfg.config_ver} {cfg.backend}/{cfg.precision}"
        )

    def open_last_logs(self) -> None:
        from screens.history import LogViewer

        res = self.last_result or {}
        if res.get("log_dir"):
            self.push_screen(LogViewer(Path(str(res["log_dir"]))))

    def export_audit(self) -> None:
        from core.audit import Audit

        try:
            path = Audit.load(self.ws).export_markdown()
        except (UnetError, OSError) as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.notify(f"Audit report written to {path}")

    def copy_command(self, text: str) -> None:
        self.copy_to_clipboard(text)
        self.notify(text, title="Copied to clipboard")

    def copy_run_command(self, which: str) -> None:
        """Copy the run form's command, with this workspace's flags; never a stale one: while the
        form has an error (run_form_error, kept by the form) nothing is copied and the error is said."""
        if self.run_form_error:
            self.notify(f"Not copied: {self.run_form_error}", severity="error")
            return
        cfg = self.run_config
        self.copy_command(cfg.cli_command(self.ws) if which == "cli" else cfg.make_command(self.ws))

    async def action_quit_console(self) -> None:
        if not self.job_running:
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                if self._job_worker is not None:
                    self._job_worker.cancel()
                shutdown = getattr(self.jobs, "shutdown", None)
                if shutdown is not None:
                    shutdown()
                self.exit()

        assert self.job is not None
        self.push_screen(ConfirmModal(f"{self.job.description} is running. Cancel it and quit?"), answer)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield SystemCommand("Quit", "Quit the console", self.action_quit_console)
        yield SystemCommand("Keys", "Show every key binding", lambda: self.action_help("keys"))
        yield SystemCommand("Theme", "Change the colour theme", self.action_change_theme)
        yield SystemCommand("Screenshot", "Save an SVG of this screen (ctrl+s)", self.action_save_screen)


def build_app(argv: list[str] | None = None) -> UnetConsole:
    ap = argparse.ArgumentParser(
        prog="unet3d-console", description="Operator console for the 3D-UNet benchmark"
    )
    ap.add_argument(
        "--workspace", metavar="DIR", help="workspace root (default: config file, else ./unet3d-demo)"
    )
    ap.add_argument("--config", metavar="PATH", help="config file (default: nearest unet3d.toml)")
    ap.add_argument(
        "--fake", action="store_true", help="scripted jobs (no data needed): a tour of the console"
    )
    from core import __version__

    ap.add_argument("--version", action="version", version=f"unet3d-console {__version__}")
    args = ap.parse_args(argv)
    settings = core_config.load(args.config)
    explicit = args.workspace or settings.workspace.get("root")
    import os

    demo = not explicit and not os.environ.get("UNET3D_WORKSPACE")
    ws = settings.resolve_workspace(root=args.workspace or (DEMO_WORKSPACE if demo else None))
    jobs: Jobs | None = None
    if args.fake:
        from console.fake import FakeJobs

        jobs = FakeJobs()
    return UnetConsole(ws, settings=settings, jobs=jobs, demo_default=demo)


def prepare_multiprocessing() -> None:
    """Start multiprocessing's helper processes while the real stderr is in place.

    Textual swaps sys.stderr for an object whose fileno() is -1; a core job that starts a process pool
    later (preprocess) would otherwise fail with "bad value(s) in fds_to_keep" when multiprocessing
    launches its resource tracker or forkserver with that descriptor."""
    import multiprocessing
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    if "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import forkserver

        forkserver.ensure_running()


def main(argv: list[str] | None = None) -> int:
    try:
        app = build_app(argv)
    except UnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    prepare_multiprocessing()
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
