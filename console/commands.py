"""The command palette provider: every console action by name, depending on state (posting).

Run commands come from the valid matrix (scenario x config_ver x test_mode) and are hidden while the
model or preprocessed data is missing; jobs are offered only when their inputs exist."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from core.benchmark import CONFIG_VERS, SCENARIOS, RunConfig

Command = tuple[str, str, Callable[[], Any]]


def console_commands(app: Any) -> list[Command]:
    """(name, help, callback) for the current state. Pure function of the app's state (tested)."""
    from console import messages as m

    cmds: list[Command] = []
    busy = app.job_running
    for key, mode, title in (
        ("1", "dashboard", "Dashboard"),
        ("2", "run", "Run setup"),
        ("3", "monitor", "Live monitor"),
        ("4", "history", "History"),
        ("5", "audit", "Auditor checklist"),
    ):
        cmds.append(
            (f"Go to {title}", f"Switch to the {title.lower()} ({key})", partial(app.switch_mode, mode))
        )
    if busy:
        cmds.append(("Cancel job", f"Cancel {app.job.description} (Esc)", app.action_cancel_job))
    else:
        data, pre, model = app.section_ok("dataset"), app.section_ok("preprocessed"), app.section_ok("model")
        cmds.append(
            (
                "Create demo workspace",
                "Synthetic KiTS19 cases + the demo model in this workspace",
                partial(app.request_job, "demo"),
            )
        )
        if data:
            cmds.append(
                (
                    "Preprocess",
                    "Preprocess both case sets (unet3d preprocess)",
                    partial(app.start_job, "preprocess"),
                )
            )
        if pre and model:
            cmds.append(
                (
                    "Calibrate",
                    "Make the INT8 calibration cache (unet3d calibrate)",
                    partial(app.start_job, "calibrate"),
                )
            )
        if model:
            cmds.append(
                (
                    "Build engine",
                    f"Load/build the {app.run_config.backend} engine of the run setup",
                    partial(app.start_job, "engine"),
                )
            )
        if pre and model:
            base: RunConfig = app.run_config
            for sc in SCENARIOS:
                for cv in CONFIG_VERS:
                    for tm in ("PerformanceOnly", "AccuracyOnly"):
                        cfg = base.with_(scenario=sc, config_ver=cv, test_mode=tm, audit_test=None)
                        cmds.append(
                            (
                                f"Run {sc} {cv} {tm}",
                                cfg.cli_command(app.ws),
                                partial(app.post_message, m.RunRequested(cfg, confirm=True)),
                            )
                        )
            if app.last_config is not None:
                cmds.append(("Re-run last", app.last_config.cli_command(app.ws), app.action_rerun))
    cfg = app.run_config  # the run form's state; copying refuses while the form has an error
    cmds.append(("Copy unet3d command", cfg.cli_command(app.ws), partial(app.copy_run_command, "cli")))
    cmds.append(("Copy make command", cfg.make_command(app.ws), partial(app.copy_run_command, "make")))
    if app.last_result:
        cmds.append(
            ("Export run summary", "Write the last run's figures as JSON (ctrl+e)", app.action_export)
        )
        cmds.append(
            ("Open last run's logs", "Show the LoadGen log files of the last run", app.open_last_logs)
        )
    cmds.append(("Refresh status", "Probe the workspace again (ctrl+r)", app.action_refresh_status))
    cmds.append(("Export audit report", "Write build/audit/audit_report.md", app.export_audit))
    return cmds


class ConsoleCommands(Provider):
    async def discover(self) -> Hits:
        for name, help_, cb in console_commands(self.app):
            yield DiscoveryHit(name, cb, help=help_)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_, cb in console_commands(self.app):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, help=help_)
