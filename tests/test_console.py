"""Console (Textual Pilot) tests: scripted fake jobs drive the app; we assert the message flow
(started -> phase -> progress -> finished / cancelled / failed) and the widgets' state."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from textual.binding import BindingType
from textual.widgets import Button, DataTable, Static
from textual.worker import WorkerCancelled, WorkerFailed

from console import messages as m
from console.app import UnetConsole
from console.commands import console_commands
from console.fake import CASES, FakeJobs
from core import config as core_config
from core.benchmark import RunConfig
from core.history import Accuracy, Metrics, RunRecord
from core.workspace import Workspace
from screens.modals import ConfirmModal, ErrorModal

JOB_MESSAGES = (m.JobStarted, m.PhaseChanged, m.Progress, m.LogLine, m.RunFinished, m.Cancelled, m.Failed)
SIZE = (120, 40)


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch, tmp_path):
    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "no-config"])


def make_app(tmp_path: Path, jobs: FakeJobs, **kw: Any) -> UnetConsole:
    (tmp_path / "ws").mkdir(exist_ok=True)  # an existing workspace: no "create it?" question first
    ws = Workspace.resolve(tmp_path / "ws", env={})
    return UnetConsole(ws, jobs=jobs, status_interval=0, **kw)


def flow(msgs: list[Any], job: str) -> list[str]:
    """The job's message sequence as names, consecutive duplicates collapsed (progress coalesces)."""
    out: list[str] = []
    for msg in msgs:
        if isinstance(msg, JOB_MESSAGES) and msg.job == job and not isinstance(msg, m.LogLine):
            name = type(msg).__name__
            if isinstance(msg, m.PhaseChanged):
                name += f":{msg.name}"
            if not out or out[-1] != name:
                out.append(name)
    return out


async def settle(app: UnetConsole, pilot: Any) -> None:
    # a worker that died is reported by the app (see its test); a superseded one is cancelled
    with contextlib.suppress(WorkerFailed, WorkerCancelled):
        await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def until(pilot: Any, pred: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached")


def cell(table: DataTable[Any], row: str, col: str) -> str:
    return str(table.get_cell(row, col))


async def test_dashboard_names_missing_items_and_demo_fixes_them(tmp_path):
    jobs = FakeJobs(missing=("dataset", "preprocessed", "model", "calibration"))
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        banner = str(app.screen.query_one("#banner", Static).render())
        assert banner.startswith(
            "Missing: dataset (unet3d demo), preprocessed (unet3d preprocess), "
            "model (unet3d download --model), calibration (unet3d calibrate)."
        )
        assert "Create demo workspace (d)" in banner
        table = app.screen.query_one("#status", DataTable)
        assert cell(table, "dataset/inference/0", "detail") == "case_00400 missing (copy of case_00185)"
        assert cell(table, "dataset/inference/0", "fix") == "unet3d demo"
        assert cell(table, "backends/tensorrt/2", "detail") == "tensorrt is not installed"
        assert app.screen.query_one("#act-preprocess", Button).disabled
        assert not app.screen.query_one("#act-demo", Button).disabled
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)  # it writes a workspace and takes a minute: ask
        assert app.screen.question == (
            f"Create the demo workspace in {app.ws.root} (synthetic cases, demo model, a run)? about 65 s "
            "(4 synthetic cases built and run on ort/fp32; 2-core machine)."
        )
        await pilot.press("y")
        await settle(app, pilot)
        assert flow(msgs, "demo") == ["JobStarted", "PhaseChanged:demo", "Progress", "RunFinished"]
        assert jobs.calls == ["demo"]
        assert app.job is not None and app.job.outcome == "finished"
        assert str(app.screen.query_one("#banner", Static).render()).startswith("Workspace ready")
        assert not app.screen.query_one("#act-preprocess", Button).disabled


async def test_accuracy_run_streams_then_official_summary_replaces_live(tmp_path):
    jobs = FakeJobs()
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        app.screen.query_one("#f-test_mode").value = "AccuracyOnly"
        await pilot.pause()
        assert "--test_mode=AccuracyOnly" in str(app.screen.query_one("#cmd-cli", Static).render())
        assert str(app.screen.query_one("#cmd-make", Static).render()).startswith("$ make run RUN_ARGS='")
        await pilot.press("s")
        await settle(app, pilot)
        await pilot.pause(0.7)  # one sampling tick of the monitor
        assert app.current_mode == "monitor"
        assert flow(msgs, "benchmark") == [
            "JobStarted", "PhaseChanged:loading", "PhaseChanged:running", "Progress", "RunFinished"
        ]  # fmt: skip
        finished = [x for x in msgs if isinstance(x, m.RunFinished)][-1]
        assert finished.result["accuracy"]["mean"] == pytest.approx(0.88214, abs=1e-5)
        scr = app.screen
        dice = scr.query_one("#dice", DataTable)
        assert dice.row_count == len(CASES) + 1  # rows made up front; never added or removed
        assert cell(dice, "case_00012", "tumor") == "0.5120"
        assert cell(dice, "case_00012", "99") == ""  # no per-case verdict: the target is the mean's
        assert cell(dice, "case_00041", "99.9") == ""
        assert cell(dice, "mean", "composite") == "0.88214"
        assert cell(dice, "mean", "99") == "✔ pass" and cell(dice, "mean", "99.9") == "✔ pass"
        lat = scr.query_one("#latency", DataTable)
        assert cell(lat, "p90", "ms") == "702.9"
        assert cell(lat, "p90", "source") == "LoadGen summary"
        assert "VALID" in str(scr.query_one("#verdict", Static).render())
        assert "1.7342 samples/s (LoadGen)" in str(scr.query_one("#verdict", Static).render())
        log = "\n".join(str(line.text) for line in scr.query_one("#log").lines)
        assert "LoadGen Offline AccuracyOnly started" in log  # RunEvents.log lines reach the log tail
        assert app.last_config == RunConfig(test_mode="AccuracyOnly")


async def test_esc_cancels_a_running_benchmark(tmp_path):
    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        app.post_message(m.RunRequested(RunConfig()))
        await until(pilot, lambda: app.job is not None and app.job.done == 1)
        assert app.job.running and app.job.total == len(CASES)
        await pilot.pause(0.6)
        assert str(app.screen.query_one("#job-hint").render()) == "Esc to cancel"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal) and app.job.running
        await pilot.press("y")
        await settle(app, pilot)
        await until(pilot, lambda: app.job is not None and not app.job.running)
        assert flow(msgs, "benchmark")[-1] == "Cancelled"
        assert "RunFinished" not in flow(msgs, "benchmark")
        assert app.job.outcome == "cancelled"
        assert app.last_result is None
        assert jobs.events is not None and jobs.events.snapshot().completed == 1


async def test_expected_failure_shows_error_modal(tmp_path):
    jobs = FakeJobs(fail="preprocess")
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await settle(app, pilot)
        assert flow(msgs, "preprocess") == ["JobStarted", "PhaseChanged:preprocess", "Progress", "Failed"]
        failed = next(x for x in msgs if isinstance(x, m.Failed))
        assert failed.error == "case_00003/imaging.nii.gz: truncated gzip stream"
        assert failed.exit_code == 4
        assert isinstance(app.screen, ErrorModal)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ErrorModal)
        assert app.job is not None and app.job.outcome == "failed"


async def test_unexpected_exception_becomes_failed_not_a_crash(tmp_path):
    class Broken(FakeJobs):
        def calibrate(self, ws, report, cancel):
            raise RuntimeError("kaboom")

    app = make_app(tmp_path, Broken())
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        app.start_job("calibrate")
        await settle(app, pilot)
        await until(pilot, lambda: any(isinstance(x, m.Failed) for x in msgs))
        failed = next(x for x in msgs if isinstance(x, m.Failed))
        assert failed.error == "RuntimeError: kaboom"
        await pilot.pause()
        assert isinstance(app.screen, ErrorModal)
        assert app.is_running


async def test_one_job_at_a_time(tmp_path):
    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.start_job("preprocess")
        await until(pilot, lambda: app.job is not None and app.job.done == 1)
        assert not app.start_job("calibrate")
        assert not app.start_run(RunConfig())
        jobs.release.set()
        await settle(app, pilot)
        assert jobs.calls == ["preprocess"]
        assert app.job is not None and app.job.outcome == "finished"


async def test_palette_commands_depend_on_state(tmp_path):
    jobs = FakeJobs(missing=("preprocessed",), hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        names = [c[0] for c in console_commands(app)]
        assert "Preprocess" in names and "Create demo workspace" in names
        assert not any(n.startswith("Run ") for n in names)  # hidden while data is missing
        assert "Calibrate" not in names
        jobs.missing = ()
        app.refresh_status()
        await settle(app, pilot)
        names = [c[0] for c in console_commands(app)]
        runs = [n for n in names if n.startswith("Run ")]
        assert len(runs) == 8 and "Run SingleStream high_accuracy AccuracyOnly" in runs
        assert "Cancel job" not in names
        app.start_job("preprocess")
        await until(pilot, lambda: app.job is not None and app.job.done == 1)
        names = [c[0] for c in console_commands(app)]
        assert "Cancel job" in names and not any(n.startswith("Run ") for n in names)
        jobs.release.set()
        await settle(app, pilot)


async def test_keymap_from_config_rebinds_cancel(tmp_path):
    jobs = FakeJobs(hold=True)
    settings = core_config.Settings(keymap={"job.cancel": "x"})
    app = make_app(tmp_path, jobs, settings=settings)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        app.start_job("calibrate")
        await until(pilot, lambda: app.job is not None and app.job.done == 1)
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")  # the confirmation
        await settle(app, pilot)
        await until(pilot, lambda: app.job is not None and not app.job.running)
        assert flow(msgs, "calibrate")[-1] == "Cancelled"


async def test_help_lists_binding_ids_and_context(tmp_path):
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#status").focus()
        await pilot.press("f1")
        await pilot.pause()
        text = app.screen.text  # type: ignore[attr-defined]
        assert "## This panel" in text and "the backends this machine can run" in text
        for ident in ("job.cancel", "help.context", "mode.audit", "app.quit", "dashboard.demo"):
            assert f"`{ident}`" in text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "DashboardScreen"


def view(
    tmp_path: Path,
    name: str,
    t: float,
    *,
    status: str = "complete",
    valid: bool | None = True,
    samples_per_s: float | None = None,
    dice: float | None = None,
    **config: Any,
) -> RunRecord:
    """A run record as core.history reads it from a run.json, started at epoch ``t``."""
    import datetime as dt

    cfg = RunConfig(**config)
    metrics = Metrics(samples_per_s, {}, Accuracy(dice) if dice is not None else None)
    date = dt.datetime.fromtimestamp(t).astimezone().isoformat()
    path = tmp_path / "ws" / "build" / "logs" / name
    return RunRecord(name, path, date, status, cfg, valid=valid, metrics=metrics)


async def test_history_table_compare_and_logs(tmp_path):
    runs = [  # core.history's order: newest first
        view(tmp_path, "run-c", 1_764_391_200, status="cancelled", valid=None, samples_per_s=1.573),
        view(tmp_path, "run-b", 1_764_390_600, test_mode="AccuracyOnly", valid=None, dice=0.86231),
        view(tmp_path, "run-a", 1_764_390_000, samples_per_s=1.7342),
    ]
    d = runs[2].path
    d.mkdir(parents=True)
    (d / "mlperf_log_summary.txt").write_text("Result is : VALID\nSamples per second: 1.7342\n")
    app = make_app(tmp_path, FakeJobs(runs=runs))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("4")
        await pilot.pause()
        t = app.screen.query_one("#runs", DataTable)
        assert t.row_count == 3
        keys = [str(k.value) for k in t.rows]
        assert [cell(t, k, "folder") for k in keys] == ["run-c", "run-b", "run-a"]  # newest first
        assert [cell(t, k, "result") for k in keys] == ["cancelled", "complete", "VALID"]
        assert [cell(t, k, "qps") for k in keys] == ["-", "-", "1.7342"]  # none for the cancelled run
        assert cell(t, keys[1], "dice") == "0.86231"
        await pilot.press("down", "down", "space")  # run-a, the oldest
        await pilot.pause()
        left = str(app.screen.query_one("#cmp-left", Static).render())
        assert "run-a" in left and "samples/s 1.7342" in left  # one run: its figures
        await pilot.press("up", "space")  # run-b
        await pilot.pause()
        right = str(app.screen.query_one("#cmp-right", Static).render())
        assert "A run-a  VALID" in right and "B run-b  complete" in right  # two: their differences
        assert "test_mode: PerformanceOnly -> AccuracyOnly" in right
        await pilot.press("down", "enter")  # run-a's logs
        await pilot.pause()
        assert app.screen.__class__.__name__ == "LogViewer"
        shown = "\n".join(str(x.text) for x in app.screen.query_one("#log-view").lines)
        assert "Result is : VALID" in shown


async def test_rerun_from_history_reproduces_the_exact_config(tmp_path):
    """Re-running a TEST01 fp8 batch-8 run from History came back as a plain batch-1 run without its
    audit test (the console rebuilt the config from five fields)."""
    exact = RunConfig(scenario="SingleStream", test_mode="PerformanceOnly", backend="torch", precision="fp8",
                      gpu_batch_size=8, audit_test="TEST01", min_duration=60.0, min_query_count=2048,
                      single_stream_expected_latency_ms=140.0, gpus=2,
                      extra={"gpu_inference_streams": "2"})  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws", env={})
    folder = ws.log_dir / "20261129-050000_SingleStream_PerformanceOnly_TEST01"
    folder.mkdir(parents=True)
    doc = {"run_id": folder.name, "status": "complete", "started": "2026-11-29T05:00:00+00:00",
           "scenario": exact.scenario, "test_mode": exact.test_mode, "config_ver": exact.config_ver,
           "audit_test": exact.audit_test, "backend": exact.backend, "precision": exact.precision,
           "config": exact.to_dict(), "result": {"valid": True, "samples_per_s": 7.1}}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(doc))

    class HistoryJobs(FakeJobs):  # the console's real history of this workspace
        def history(self, ws: Workspace) -> list[RunRecord]:
            from console.workers import RealJobs

            return RealJobs().history(ws)

    jobs = HistoryJobs()
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        await pilot.press("4")
        await pilot.pause()
        assert app.screen.query_one("#runs", DataTable).row_count == 1
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)  # a re-run asks first, with its estimate
        await pilot.press("y")
        await settle(app, pilot)
        reqs = {id(x): x.config for x in msgs if isinstance(x, m.RunRequested)}  # seen as it bubbles
        assert list(reqs.values()) == [exact]
        assert app.last_config == exact and jobs.calls == ["benchmark"]
        # the app's own re-run (no run in this session yet) takes the newest run's recorded config
        app.last_config = None
        await pilot.press("1")
        await pilot.pause()
        app.action_rerun()
        await pilot.pause()
        if isinstance(app.screen, ConfirmModal):
            await pilot.press("y")
        await settle(app, pilot)
        assert app.last_config == exact and jobs.calls == ["benchmark", "benchmark"]


async def test_auditor_screen_checks_acts_and_exports(tmp_path, monkeypatch):
    import dataclasses

    from tests.test_compliance import OFFICIAL_DATA, OFFICIAL_MODEL, OFFLINE

    # a compliant run (every fact of a full-length one): the step passes
    facts = {"settings": OFFLINE, "dataset": OFFICIAL_DATA, "model_provenance": OFFICIAL_MODEL,
             "user_conf": {"target_qps": "7.23"}}  # fmt: skip
    runs = [dataclasses.replace(view(tmp_path, "run-a", 1_764_390_000, samples_per_s=1.7342), **facts)]
    monkeypatch.setattr("core.history.list_runs", lambda ws: runs)
    from console.fake import fake_status

    monkeypatch.setattr("core.status.collect_status", lambda ws: fake_status(ws))
    jobs = FakeJobs(runs=runs)
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        await pilot.press("5")
        await pilot.pause()
        await pilot.press("C")
        await settle(app, pilot)
        await pilot.pause()
        t = app.screen.query_one("#steps", DataTable)
        assert cell(t, "run.default.PerformanceOnly", "state") == "passed"
        assert cell(t, "run.default.PerformanceOnly", "evidence").startswith("build/logs/run-a: VALID")
        assert cell(t, "compliance.TEST01", "state") == "pending"
        t.move_cursor(row=list(str(k.value) for k in t.rows).index("run.high_accuracy.AccuracyOnly"))
        await pilot.pause()
        assert "make run RUN_ARGS=" in str(app.screen.query_one("#audit-action", Static).render())
        await pilot.press("a")
        await settle(app, pilot)
        req = [x for x in msgs if isinstance(x, m.RunRequested)]
        assert (
            req
            and req[-1].config.config_ver == "high_accuracy"
            and req[-1].config.test_mode == "AccuracyOnly"
            and req[-1].confirm
        )
        assert isinstance(app.screen, ConfirmModal) and "AccuracyOnly" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert jobs.calls == []  # not started
        await asyncio.sleep(0)
        await pilot.press("5", "e")
        await pilot.pause()
        report = tmp_path / "ws" / "build" / "audit" / "audit_report.md"
        assert report.is_file() and "run.default.PerformanceOnly" in report.read_text()
        assert (tmp_path / "ws" / "build" / "audit" / "audit_state.json").is_file()


async def test_palette_runs_a_job_and_question_mark_opens_keys(tmp_path):
    jobs = FakeJobs()
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Calibrate")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(app, pilot)
        assert jobs.calls == ["calibrate"]
        assert app.job is not None and app.job.outcome == "finished"


async def test_quit_asks_while_a_job_runs(tmp_path):
    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.start_job("preprocess")
        await until(pilot, lambda: app.job is not None and app.job.done == 1)
        await pilot.press("q")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmModal"
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and app.job.running
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        await settle(app, pilot)
    assert app.return_code == 0
    assert app.job is not None and app.job.outcome != "finished"  # cancelled, never finished


async def test_export_and_log_filter_after_a_run(tmp_path):
    jobs = FakeJobs()
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.start_run(RunConfig())
        await settle(app, pilot)
        await pilot.pause(0.7)
        await pilot.press("ctrl+e")
        await pilot.pause()
        out = tmp_path / "ws" / "build" / "logs" / "console_summary.json"
        import json

        assert json.loads(out.read_text())["samples_per_s"] == 1.7342
        await pilot.press("slash")
        await pilot.press(*"case_00041")
        await pilot.pause(0.3)
        shown = [str(x.text) for x in app.screen.query_one("#log").lines]
        assert shown == ["sample 6/7 case_00041 done"]


# a stand-in for the run's child process (core.harness.isolated's protocol): it ignores the cancel line
# and SIGINT, like a LoadGen stuck in native code
STUBBORN_CHILD = """
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pipe = os.fdopen(int(sys.argv[-1]), "w", buffering=1)
spec = json.loads(sys.stdin.readline())
def out(**kw):
    pipe.write(json.dumps(kw) + "\\n")
    pipe.flush()
print(f"pid {os.getpid()}", flush=True)
out(t="phase", name="running", total=7)
out(t="sample", index=0, case="case_00000", issued=time.monotonic() - 0.4, windows=64, total=7)
out(t="report", kind="progress", task="run", done=1, total=7, unit="sample", item="case_00000")
time.sleep(60)
"""


class ChildJobs(FakeJobs):
    """FakeJobs' probes, RealJobs' benchmark (core.harness.isolated) with a scripted child."""

    def __init__(self, grace_s: tuple[float, float], **kw: Any) -> None:
        import sys

        from console.workers import RealJobs

        super().__init__(**kw)
        self.real = RealJobs(grace_s=grace_s, child_argv=[sys.executable, "-c", STUBBORN_CHILD])

    def benchmark(self, ws, cfg, report, cancel, live):
        self.calls.append("benchmark")
        return self.real.benchmark(ws, cfg, report, cancel, live)

    def shutdown(self) -> None:
        self.real.shutdown()


async def test_esc_stops_a_real_child_process_group(tmp_path):
    """The app's benchmark path with a real child: the live view follows its relayed events; Esc ->
    the cancel line -> SIGTERM of its group; the process is gone and the job ends Cancelled."""
    import os

    from console.workers import wait_until

    jobs = ChildJobs(grace_s=(0.3, 2.0))
    app = make_app(tmp_path, jobs)
    msgs: list[Any] = []
    async with app.run_test(size=SIZE, message_hook=msgs.append) as pilot:
        await settle(app, pilot)
        app.start_run(RunConfig())
        await until(pilot, lambda: app.job is not None and app.job.done == 1, timeout=30)
        snap = app.live.snapshot()
        assert snap is not None and (snap.completed, snap.total) == (1, 7)  # the child's relayed events
        run = jobs.real.current
        pid = run.proc.pid
        assert any(text == f"pid {pid}" for _n, _level, text in app.logs)  # the child's own output
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("y")
        await until(pilot, lambda: app.job is not None and not app.job.running, timeout=10)
        assert flow(msgs, "benchmark")[-1] == "Cancelled"
        assert run.signals_sent == ["cancel", "SIGTERM"]
        assert wait_until(lambda: run.proc.poll() is not None, timeout=5)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


async def test_quit_with_a_run_in_flight_stops_its_child_within_a_short_grace(tmp_path):
    """Quitting (q, y) with a run whose grace is 30 s: the child gets the cancel line and, a second
    later, SIGTERM; the console does not wait the run's grace period."""
    import os
    import time

    from console.workers import wait_until

    jobs = ChildJobs(grace_s=(30.0, 5.0))
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.start_run(RunConfig())
        await until(pilot, lambda: app.job is not None and app.job.done == 1, timeout=30)
        run = jobs.real.current
        pid = run.proc.pid
        await pilot.press("q")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmModal"
        t0 = time.monotonic()
        await pilot.press("y")
        await pilot.pause()
    assert wait_until(lambda: run.proc.poll() is not None, timeout=10)
    assert time.monotonic() - t0 < 10 and run.signals_sent[:2] == ["cancel", "SIGTERM"]
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_build_app_opens_the_demo_workspace_unless_configured(tmp_path, monkeypatch, capsys):
    from console.app import DEMO_WORKSPACE, build_app, main
    from console.workers import RealJobs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNET3D_WORKSPACE", raising=False)
    for var in ("DATA_DIR", "PREPROCESSED_DATA_DIR", "MODEL_DIR", "LOG_DIR"):
        monkeypatch.delenv(var, raising=False)
    cfg_dir = tmp_path / "no-config"
    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [cfg_dir])
    app = build_app([])
    assert app.ws.root == tmp_path / DEMO_WORKSPACE and app.demo_default
    assert isinstance(app.jobs, RealJobs)
    cfg_dir.mkdir()
    (cfg_dir / "unet3d.toml").write_text('[workspace]\nroot = "ws2"\n[run]\nbackend = "torch"\n')
    app = build_app(["--fake"])
    assert app.ws.root == cfg_dir / "ws2" and not app.demo_default
    assert app.run_config.backend == "torch" and isinstance(app.jobs, FakeJobs)
    assert build_app(["--workspace", str(tmp_path / "w3")]).ws.root == tmp_path / "w3"
    (cfg_dir / "unet3d.toml").write_text("[run]\nscenario = 'Server'\n")
    assert main([]) == 2
    assert "error: --scenarios=Server is not one of Offline, SingleStream" in capsys.readouterr().err


async def test_unreadable_history_still_shows_status(tmp_path):
    class BadHistory(FakeJobs):
        def history(self, ws):
            raise OSError("build/logs/x/run.json: permission denied")

    app = make_app(tmp_path, BadHistory())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.status_report is not None and app.runs == []
        assert str(app.screen.query_one("#banner", Static).render()).startswith("Workspace ready")


async def test_header_shows_config_and_ctrl_s_saves_a_screenshot(tmp_path):
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.sub_title == "ws | Offline default ort/fp32"
        await pilot.press("2")
        await pilot.pause()
        app.screen.query_one("#f-scenario").value = "SingleStream"
        await pilot.pause()
        assert app.sub_title == "ws | SingleStream default ort/fp32"
        await pilot.press("ctrl+s")
        await pilot.pause()
        shots = list((tmp_path / "ws" / "build" / "screenshots").glob("*.svg"))
        assert len(shots) == 1 and "SingleStream" in shots[0].read_text()


async def test_footer_is_built_once_per_screen_and_leaks_no_keys(tmp_path, monkeypatch):
    """Textual's Footer rebuilt ~20 FooterKeys on every screen switch and palette close, and each
    removed key stayed referenced from the Footer's watcher list (Textual #6666): ~1 MB per pair of
    switches. ConsoleFooter keeps its keys while the bindings are the same and prunes the rest."""
    import gc
    import weakref

    from textual.widgets._footer import FooterKey

    made: weakref.WeakSet[FooterKey] = weakref.WeakSet()  # every FooterKey this app creates
    init = FooterKey.__init__

    def tracked_init(self: FooterKey, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.add(self)

    monkeypatch.setattr(FooterKey, "__init__", tracked_init)
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await pilot.pause()
        before = [id(k) for k in app.screen.query(FooterKey)]
        assert any(k.description == "Pause" for k in app.screen.query(FooterKey))
        for _ in range(3):
            for key in ("4", "1", "5", "2", "3"):
                await pilot.press(key)
                await pilot.pause()
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
        assert app.screen.__class__.__name__ == "MonitorScreen"
        assert [id(k) for k in app.screen.query(FooterKey)] == before  # the same widgets, not rebuilt
        gc.collect()
        alive = list(made)
        screens = [s for stack in app._screen_stacks.values() for s in stack]
        in_dom = [k for s in screens for k in s.query(FooterKey)]
        assert len(alive) == len(in_dom), (len(alive), len(in_dom))


async def test_footer_follows_a_binding_that_changes():
    """The footer is rebuilt when what it shows changes: a key disabled, then hidden, by check_action."""
    from textual.app import App
    from textual.widgets._footer import FooterKey

    from console.widgets.footer import ConsoleFooter

    class Tiny(App[None]):
        BINDINGS: ClassVar[list[BindingType]] = [("x", "go", "Go"), ("y", "other", "Other")]
        allowed: bool | None = True

        def compose(self) -> Any:
            yield ConsoleFooter()

        def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
            return self.allowed if action == "go" else True

    app = Tiny()
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        keys = {k.description: k for k in app.screen.query(FooterKey)}
        assert {"Go", "Other"} <= set(keys) and not keys["Go"].disabled
        app.allowed = None  # shown, disabled
        app.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        keys = {k.description: k for k in app.screen.query(FooterKey)}
        assert keys["Go"].has_class("-disabled") and not keys["Other"].has_class("-disabled")
        app.allowed = False  # hidden
        app.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        assert "Go" not in {k.description for k in app.screen.query(FooterKey)}


async def test_live_table_writes_changed_cells_and_keeps_no_dead_renders():
    """console.widgets.live.LiveTable: an unchanged value is not rewritten, and the render caches hold
    the current frame only (Textual keeps up to 10,000 dead cell renders after update_cell)."""
    from textual.app import App

    from console.widgets.live import LiveTable

    class Tiny(App[None]):
        def compose(self) -> Any:
            yield LiveTable(id="t")

    app = Tiny()
    async with app.run_test(size=(60, 15)) as pilot:
        t = app.query_one(LiveTable)
        t.add_column("name", key="name")
        t.add_column("ms", key="ms")
        for r in ("p50", "p90", "p99"):
            t.add_row(r, "-", key=r)
        await pilot.pause()
        assert t.set_cells("p50", {"ms": "1.0"}) == 1
        assert t.set_cells("p50", {"ms": "1.0", "name": "p50"}) == 0  # nothing changed
        for n in range(300):
            t.set_cells("p90", {"ms": f"{n}.0"})
            if n % 30 == 0:
                await pilot.pause()
        await pilot.pause()
        assert cell(t, "p90", "ms") == "299.0" and cell(t, "p50", "ms") == "1.0"
        caches = [t._cell_render_cache, t._row_render_cache, t._line_cache]
        assert all(len(c) <= 12 for c in caches), [len(c) for c in caches]  # one frame: 3 rows x 2 cols


async def test_log_tail_bounds_its_line_cache():
    from textual.app import App

    from console.widgets.live import LOG_LINE_CACHE, LogTail

    class Tiny(App[None]):
        def compose(self) -> Any:
            yield LogTail(id="log", max_lines=500)

    app = Tiny()
    async with app.run_test(size=(60, 15)) as pilot:
        log = app.query_one(LogTail)
        for n in range(40):
            log.write("\n".join(f"line {n}.{k}" for k in range(50)))
            await pilot.pause()
        assert len(log.lines) == 500 and str(log.lines[-1].text).rstrip() == "line 39.49"
        assert len(log._line_cache) <= LOG_LINE_CACHE


async def test_monitor_rates_line_lays_out_only_when_its_height_changes():
    """screens.monitor.set_text: a new text of the same height is written without a layout pass of
    the screen (one each monitor tick before); one that wraps to more lines, or has more lines, is laid
    out, and the widget's height follows."""
    from textual.app import App
    from textual.containers import Vertical

    from screens.monitor import set_text

    class Tiny(App[None]):
        CSS = "#box { width: 30; } #rates { padding: 0 1; }"

        def compose(self) -> Any:
            with Vertical(id="box"):
                yield Static("", id="rates", markup=False)

    app = Tiny()
    async with app.run_test(size=(60, 15)) as pilot:
        rates = app.query_one("#rates", Static)
        await pilot.pause()
        assert rates.size.height == 1
        assert set_text(rates, "1.0 windows/s") is False
        assert set_text(rates, "2.5 windows/s") is False
        assert set_text(rates, "2.5 windows/s") is False  # unchanged: nothing written
        await pilot.pause()
        assert rates.size.height == 1 and str(rates.render()) == "2.5 windows/s"
        assert set_text(rates, "12345.6 windows/s   12345 windows   phase: running") is True  # wraps
        await pilot.pause()
        assert rates.size.height == 2
        assert set_text(rates, "2 windows/s\ncuda:0 5 done\ncuda:1 4 done") is True
        await pilot.pause()
        assert rates.size.height == 3 and str(rates.render()).endswith("cuda:1 4 done")


async def test_qps_plot_renders_once_per_change():
    from textual.app import App

    from screens.monitor import QpsPlot

    class Tiny(App[None]):
        def compose(self) -> Any:
            yield QpsPlot()

    app = Tiny()
    async with app.run_test(size=(60, 15)) as pilot:
        plot = app.query_one(QpsPlot)
        points = ((0.0, 1.0), (0.5, 2.0), (1.0, 3.0))
        plot.show(points)
        await pilot.pause()
        first = plot.render()
        assert plot.render() is first  # same data, size and theme: plotext is not asked again
        plot.show(points)
        assert plot.render() is first
        plot.show((*points, (1.5, 2.5)))
        assert plot.render() is not first


def test_heap_freezer_freezes_once_per_import_burst():
    import gc
    import sys
    import types

    from console.heap import HeapFreezer

    heap = HeapFreezer()
    try:
        assert heap.maybe_freeze() and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        assert not heap.stale and not heap.maybe_freeze()  # nothing imported since
        sys.modules["_unet3d_fake_module"] = types.ModuleType("_unet3d_fake_module")
        assert heap.stale and heap.maybe_freeze() and gc.get_freeze_count() >= frozen
    finally:
        sys.modules.pop("_unet3d_fake_module", None)
        heap.release()
    assert gc.get_freeze_count() == 0


async def test_screens_are_built_once_and_restyled_after_a_theme_change(tmp_path):
    """All five screens exist after start-up (no compose on a first visit); switching back skips the
    full restyle, but a theme changed while a screen was hidden still reaches it."""
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        built = {name: stack[0] for name, stack in app._screen_stacks.items()}
        assert set(built) == set(app.MODES)
        for key in ("2", "3", "4", "5", "1"):
            await pilot.press(key)
            await pilot.pause()
        assert {name: stack[0] for name, stack in app._screen_stacks.items()} == built  # the same objects
        monitor = built["monitor"]
        restyles: list[bool] = []
        full_restyle = monitor.update_node_styles

        def counted(animate: bool = True) -> None:
            restyles.append(True)
            full_restyle(animate)

        monitor.update_node_styles = counted  # type: ignore[method-assign]
        await pilot.press("3")
        await pilot.pause()
        await pilot.press("1")
        await pilot.pause()
        assert restyles == []  # nothing app-wide changed: no full restyle on resume
        app.add_class("-probe")  # an app-wide class changes while the monitor is hidden
        await pilot.press("3")
        await pilot.pause()
        assert restyles == [True]
        await pilot.press("1")
        await pilot.pause()
        before = monitor.query_one("#title-row").styles.background
        app.theme = "textual-light"  # while the monitor is hidden
        await pilot.pause()
        await pilot.press("3")
        await pilot.pause()
        await pilot.pause()
        assert monitor.query_one("#title-row").styles.background != before


def test_strip_no_longer_caches_itself():
    """console.textual_compat.break_strip_cycles: same results as Textual's Strip, but a Strip is never in its
    own caches (that reference cycle made every discarded line wait for a full collection)."""
    import gc
    import types

    from rich.segment import Segment
    from textual.strip import Strip

    from console import textual_compat

    assert textual_compat.apply().ok
    s = Strip([Segment("hello "), Segment("world")])
    n = s.cell_length
    assert s.divide([n]) == [s] and s.crop_extend(0, n, None) is s
    assert [str(p.text) for p in s.divide([5, n])] == ["hello", " world"]
    assert str(s.crop_extend(6, n + 3, None).text) == "world   "
    assert str(s.crop_extend(0, 5, None).text) == "hello"

    def reaches_itself(obj: object) -> bool:
        stack, seen = list(gc.get_referents(obj)), set()
        while stack:
            x = stack.pop()
            if x is obj:
                return True
            if id(x) in seen or isinstance(x, (str, int, type, types.ModuleType)):
                continue  # (types lead to modules and everything else)
            seen.add(id(x))
            stack.extend(gc.get_referents(x))
        return False

    assert not reaches_itself(s)


def test_full_collections_wait_for_a_quiet_moment(monkeypatch):
    import gc

    from console import heap as heap_mod

    now = [1000.0]
    monkeypatch.setattr(heap_mod.time, "monotonic", lambda: now[0])
    h = heap_mod.HeapFreezer(full_every=10.0, quiet=0.3)
    try:
        h.start()
        assert gc.get_threshold()[2] == heap_mod.NEVER  # the collector no longer starts them itself
        h.tick()  # first tick: freezes (modules changed since "never")
        assert h.freezes == 1 and h.full_collections == 0
        now[0] += 11
        h.input_seen()  # a key just now: not yet
        h.tick()
        assert h.full_collections == 0
        now[0] += 0.5
        h.tick()
        assert h.full_collections == 1
        now[0] += 9
        h.tick()
        assert h.full_collections == 1  # not due yet
        for _ in range(25):  # input all the time: still one after 3 intervals
            now[0] += 1
            h.input_seen()
            h.tick()
        assert h.full_collections == 2
    finally:
        h.release()
    assert gc.get_threshold()[2] != heap_mod.NEVER and gc.get_freeze_count() == 0


def test_strip_caches_are_made_on_first_store():
    """console.textual_compat.lazy_strip_caches: a new Strip holds none of its seven FIFOCaches (7 of the ~9
    objects a rendered line cost each full collection); crops, divisions and styles give the same
    results as the segments say and are cached in the Strip's own cache once stored."""
    import gc

    from rich.segment import Segment
    from rich.style import Style
    from textual.cache import FIFOCache
    from textual.strip import Strip

    from console import textual_compat
    from console.textual_compat import STRIP_CACHES

    assert textual_compat.apply().ok and textual_compat.apply().ok  # idempotent
    bold = Style(bold=True)
    s = Strip([Segment("hello "), Segment("world", bold)])
    assert not any(isinstance(r, FIFOCache) for r in gc.get_referents(s))
    assert all(len(getattr(s, name)) == 0 for name in STRIP_CACHES)
    text = "hello world"
    for a, b in [(0, 5), (2, 9), (6, 11), (3, 4)]:
        c = s.crop(a, b)
        assert c.text == text[a:b] and c.cell_length == b - a
        assert s.crop(a, b) is c  # the second time from the cache
    assert isinstance(s._crop_cache, FIFOCache) and len(s._crop_cache) == 4
    parts = s.divide([3, 8, 11])
    assert [p.text for p in parts] == ["hel", "lo wo", "rld"] and s.divide([3, 8, 11]) is parts
    red = Style(color="red")
    styled = s.apply_style(red)
    assert [(seg.text, seg.style) for seg in styled] == [("hello ", red), ("world", red + bold)]
    assert s.apply_style(red) is styled
    assert s.adjust_cell_length(13).text == "hello world  " and s.adjust_cell_length(4).text == "hell"
    assert not isinstance(s._offsets_cache, FIFOCache)  # never written: still none
    assert not any(isinstance(r, FIFOCache) for r in gc.get_referents(Strip([Segment("x")])))


def test_lru_cache_clear_leaves_no_garbage_cycle():
    """console.textual_compat.unlink_lru_on_clear: LRUCache.clear used to leave its ring of entries (and every
    value) as cyclic garbage; now reference counting frees them at once. Eviction is unchanged."""
    import gc
    import weakref

    from textual.cache import LRUCache

    from console import textual_compat

    class Value:
        pass

    assert textual_compat.apply().ok and textual_compat.unlink_lru_on_clear() == ""  # idempotent
    for size in (1, 3):
        cache: LRUCache[int, Value] = LRUCache(size)
        values = [Value() for _ in range(size + 1)]
        refs = [weakref.ref(v) for v in values]
        for i in range(size + 1):
            cache[i] = values[i]
        assert 0 not in cache and cache.get(size) is values[size]  # the oldest was evicted
        del values
        gc.disable()  # nothing but reference counting frees them
        try:
            assert refs[0]() is None
            cache.clear()
            assert [r() for r in refs] == [None] * (size + 1)
        finally:
            gc.enable()
        cache[7] = Value()
        assert isinstance(cache.get(7), Value) and len(cache) == 1


def screen_cells(app: UnetConsole) -> list[tuple[str, Any, Any]]:
    """Every cell the shown screen renders now: character, foreground and background."""
    strips = app.screen._compositor.render_strips()
    return [
        (ch, seg.style and seg.style.color, seg.style and seg.style.bgcolor)
        for s in strips
        for seg in s
        for ch in seg.text
    ]


async def test_hidden_screens_forget_their_renders_on_resize_and_render_afresh(tmp_path):
    """After a resize the hidden mode screens drop their rendered lines (for the old size; every
    full collection walked them); shown again, a screen renders exactly what a full re-render gives."""
    from textual.widget import Widget
    from textual.widgets import ProgressBar

    def cached_lines(screen: Any) -> int:
        return sum(len(w._styles_cache._cache) for w in screen.walk_children(Widget, with_self=True))

    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for key in ("2", "3", "4", "5", "1"):
            await pilot.press(key)
            await pilot.pause()
        hidden = [stack[0] for mode, stack in app._screen_stacks.items() if mode != app.current_mode]
        for screen in hidden:  # an indeterminate bar is animated: its cells change by themselves
            for bar in screen.query(ProgressBar):
                bar.update(total=100, progress=40)
        await pilot.pause()
        assert len(hidden) == 4 and all(cached_lines(s) > 0 for s in hidden)
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        await pilot.pause()
        assert [cached_lines(s) for s in hidden] == [0, 0, 0, 0]
        assert cached_lines(app.screen) > 0  # the shown one is not touched
        for key in ("2", "3", "4", "5"):
            await pilot.press(key)
            await pilot.pause()
            await pilot.pause()
            shown = screen_cells(app)
            assert len(shown) == 100 * 30
            for w in app.screen.walk_children(Widget, with_self=True):
                w.refresh(layout=True)
            await pilot.pause()
            await pilot.pause()
            assert screen_cells(app) == shown, key


async def test_a_resize_or_a_switch_lays_the_screen_out_once_and_renders_what_a_full_pass_gives(
    tmp_path, monkeypatch
):
    """screens.base.ConsoleScreen: the Resize a screen posts itself after a layout that changed its
    size is not answered with a second layout at the same size (Textual's handler did: 2-15 ms of
    UI-thread CPU per resize or switch); what is shown equals a full relayout and re-render."""
    from textual.screen import Screen
    from textual.widget import Widget
    from textual.widgets import ProgressBar

    sized: list[tuple[str, Any]] = []
    original = Screen._screen_resized

    def counting(self: Screen[Any], size: Any) -> None:
        sized.append((type(self).__name__, tuple(size)))
        original(self, size)

    monkeypatch.setattr(Screen, "_screen_resized", counting)

    async def same_as_a_full_pass(app: UnetConsole, pilot: Any, size: tuple[int, int]) -> None:
        shown = screen_cells(app)
        assert len(shown) == size[0] * size[1]
        for w in app.screen.walk_children(Widget, with_self=True):
            w.refresh(layout=True)
        await pilot.pause()
        await pilot.pause()
        assert screen_cells(app) == shown, type(app.screen).__name__

    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for stack in app._screen_stacks.values():  # an indeterminate bar animates by itself
            for bar in stack[0].query(ProgressBar):
                bar.update(total=100, progress=40)
        await pilot.pause()
        sized.clear()
        await pilot.resize_terminal(100, 30)
        for _ in range(4):
            await pilot.pause()
        assert sized == [("DashboardScreen", (100, 30))]  # was twice: the app's Resize, then its own
        await same_as_a_full_pass(app, pilot, (100, 30))
        for key, name in (("2", "RunSetupScreen"), ("3", "MonitorScreen"), ("1", "DashboardScreen")):
            sized.clear()
            await pilot.press(key)
            for _ in range(4):
                await pilot.pause()
            assert sized == [(name, (100, 30))], key  # App.switch_mode's layout only
            await same_as_a_full_pass(app, pilot, (100, 30))


async def test_live_tables_drop_the_old_size_renders_before_the_resize_not_after(tmp_path, monkeypatch):
    """console.widgets.live: the monitor's tables and log forget their cached renders when the resize
    arrives (UnetConsole.drop_stale_renders), not in on_resize, which Textual sends after rendering at
    the new size (that threw the new renders away and rendered the tables twice)."""
    from console.widgets.live import LiveTable, LogTail

    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await pilot.pause(0.2)
        live = [w for w in app.screen.query("*") if isinstance(w, (LiveTable, LogTail))]
        assert len(live) == 3
        dropped: list[str] = []
        for w in live:
            drop = w.drop_stale_renders
            monkeypatch.setattr(w, "drop_stale_renders", lambda w=w, d=drop: (dropped.append(w.id), d()))
        await pilot.resize_terminal(100, 30)
        for _ in range(4):
            await pilot.pause()
        assert sorted(dropped) == ["dice", "latency", "log"]  # once each, at the resize event
        tables = [w for w in live if isinstance(w, LiveTable)]
        assert all(len(t._line_cache) > 0 for t in tables)  # the new size's lines are kept
        assert app.drop_stale_renders() == 3
        assert all(len(t._line_cache) == 0 for t in tables)


def test_geometry_caches_are_emptied_before_a_full_collection(monkeypatch):
    """console.textual_compat.clear_geometry_caches: Textual's memoised Region operations are emptied (their
    tuples of Regions were walked by every full collection) and still give the same answers."""
    import gc

    from textual.geometry import Region

    from console import heap as heap_mod

    a, b = Region(0, 0, 10, 5), Region(4, 2, 10, 10)
    assert a.intersection(b) == Region(4, 2, 6, 3) and a.union(b) == Region(0, 0, 14, 12)
    assert heap_mod.clear_geometry_caches() >= 2
    assert Region.intersection.cache_info().currsize == 0 and Region.union.cache_info().currsize == 0
    assert a.intersection(b) == Region(4, 2, 6, 3)  # recomputed
    now = [1000.0]
    monkeypatch.setattr(heap_mod.time, "monotonic", lambda: now[0])
    h = heap_mod.HeapFreezer(full_every=10.0, quiet=0.3)
    try:
        h.start()
        h.tick()  # freezes
        a.intersection(b)
        now[0] += 11
        h.tick()  # a full collection, after emptying the caches
        assert h.full_collections == 1 and Region.intersection.cache_info().currsize == 0
    finally:
        h.release()
    assert gc.get_freeze_count() == 0


async def test_an_install_hint_keeps_its_brackets(tmp_path):
    """A failed job's line reached the job strip through Rich markup: "pip install '.[gpu]'" was shown
    as "pip install '.'" (the [gpu] taken for a style tag)."""
    from console.widgets.job_panel import JobPanel
    from core.errors import MissingInputError

    message = "calibration needs torch (pip install '.[gpu]')"

    class NoTorch(FakeJobs):
        def calibrate(self, ws, report, cancel):
            raise MissingInputError(message)

    app = make_app(tmp_path, NoTorch())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.start_job("calibrate")
        await until(pilot, lambda: app.job is not None and not app.job.running)
        await pilot.pause()
        assert isinstance(app.screen, ErrorModal)
        assert str(app.screen.query_one("#message").render()) == message
        await pilot.press("escape")
        await pilot.pause()
        label = app.screen.query_one(JobPanel).query_one("#job-label")
        assert str(label.render()) == f"Calibrate: failed: {message}"
