"""SVG snapshot tests of the console's screens (pytest-textual-snapshot; textual pinned in pyproject).

Everything that could make a snapshot flaky is fixed: terminal 120x40, pinned theme, MockClock for ETAs,
no cursor blink, animations off, no config discovery, a fixed workspace path, UTC for dates, scripted
fake jobs. Accept changes on purpose with `pytest tests/test_console_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from textual.clock import MockClock
from textual.worker import WorkerCancelled, WorkerFailed

from console import messages as m
from console.app import UnetConsole
from console.fake import FakeJobs
from core import config as core_config
from core.benchmark import RunConfig
from core.history import Accuracy, Metrics, RunRecord
from core.workspace import Workspace

SIZE = (120, 40)
WS_ROOT = Path("/tmp/unet3d-console-snapshot-ws")  # fixed: the path is on screen


@pytest.fixture(autouse=True)
def deterministic(monkeypatch, tmp_path):
    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "no-config"])
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    shutil.rmtree(WS_ROOT, ignore_errors=True)
    yield
    shutil.rmtree(WS_ROOT, ignore_errors=True)
    monkeypatch.delenv("TZ")
    time.tzset()


def snapshot_app(jobs: FakeJobs) -> UnetConsole:
    WS_ROOT.mkdir(parents=True, exist_ok=True)  # an existing workspace: no "create it?" question
    app = UnetConsole(
        Workspace.resolve(WS_ROOT, env={}),
        settings=core_config.Settings(console={"theme": "textual-dark"}),
        jobs=jobs,
        clock=MockClock(),
        status_interval=0,
        cursor_blink=False,
    )
    app.animation_level = "none"
    return app


async def settle(pilot: Any) -> None:
    with contextlib.suppress(WorkerFailed, WorkerCancelled):
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def run_views() -> list[RunRecord]:
    """Three runs as core.history lists them: newest first."""
    logs = WS_ROOT / "build" / "logs"

    def rec(name: str, t: float, cfg: RunConfig, status: str = "complete", valid: bool | None = None,
            sps: float | None = None, dice: float | None = None) -> RunRecord:  # fmt: skip
        date = dt.datetime.fromtimestamp(t).astimezone().isoformat()
        metrics = Metrics(sps, {}, Accuracy(dice) if dice is not None else None)
        return RunRecord(name, logs / name, date, status, cfg, valid=valid, metrics=metrics)

    accuracy = RunConfig(config_ver="high_accuracy", test_mode="AccuracyOnly")
    return [
        rec("2026-11-29_05-20-00_SingleStream_PerformanceOnly", 1_795_929_600,
            RunConfig(scenario="SingleStream"), status="cancelled"),
        rec("2026-11-29_05-10-00_Offline_AccuracyOnly", 1_795_929_000, accuracy, dice=0.88214),
        rec("2026-11-29_05-00-00_Offline_PerformanceOnly", 1_795_928_400, RunConfig(), valid=True,
            sps=1.7342),
    ]  # fmt: skip


def test_dashboard_ready(snap_compare):
    async def before(pilot: Any) -> None:
        await settle(pilot)

    assert snap_compare(snapshot_app(FakeJobs(runs=run_views())), terminal_size=SIZE, run_before=before)


def test_dashboard_missing_data(snap_compare):
    jobs = FakeJobs(missing=("dataset", "preprocessed", "model", "calibration"))

    async def before(pilot: Any) -> None:
        await settle(pilot)

    assert snap_compare(snapshot_app(jobs), terminal_size=SIZE, run_before=before)


def test_run_setup(snap_compare):
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("2")
        await pilot.pause()
        pilot.app.screen.query_one("#f-min_duration").value = "60"
        await pilot.pause()

    assert snap_compare(snapshot_app(FakeJobs()), terminal_size=SIZE, run_before=before)


def test_monitor_mid_run(snap_compare):
    jobs = FakeJobs(hold=True)

    async def before(pilot: Any) -> None:
        app = pilot.app
        await settle(pilot)
        app.post_message(m.RunRequested(RunConfig(test_mode="AccuracyOnly", min_duration=60)))
        for _ in range(250):
            if app.job is not None and app.job.done == 1:
                break
            await pilot.pause(0.02)
        await pilot.pause(0.7)  # a sampling tick
        app.screen.query_one("#run-title").focus()

    assert snap_compare(snapshot_app(jobs), terminal_size=SIZE, run_before=before)
    jobs.release.set()


def test_monitor_finished_accuracy_run(snap_compare):
    async def before(pilot: Any) -> None:
        app = pilot.app
        await settle(pilot)
        app.post_message(m.RunRequested(RunConfig(test_mode="AccuracyOnly", min_duration=60)))
        await pilot.pause(0.2)
        await settle(pilot)
        await pilot.pause(1.2)  # two sampling ticks
        app.clear_notifications()
        await pilot.pause()

    assert snap_compare(snapshot_app(FakeJobs()), terminal_size=SIZE, run_before=before)


def test_history_compare(snap_compare):
    async def before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("4")
        await pilot.pause()
        await pilot.press("space", "down", "space")
        await pilot.pause()

    assert snap_compare(snapshot_app(FakeJobs(runs=run_views())), terminal_size=SIZE, run_before=before)


# The auditor screen is covered by the Pilot test
# test_console.py::test_auditor_screen_checks_acts_and_exports:
# its snapshot rendered the same content with a table one column narrower from one run to the next.
