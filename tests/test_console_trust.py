"""Issue #12 ("the console an auditor can trust"): Pilot tests of the console's items 1, 2, 6-11, 13-15.

Each test drives the app with scripted fake jobs (console.fake) and asserts what the operator sees."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from console import messages as m
from console.app import UnetConsole
from console.fake import CASES, FakeJobs
from core import config as core_config
from core.benchmark import RunConfig
from core.history import Metrics, RunRecord
from core.workspace import Workspace
from screens.modals import ConfirmModal
from tests.test_console import cell, settle, until

SIZE = (120, 40)


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch, tmp_path):
    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "no-config"])


def make_app(tmp_path: Path, jobs: FakeJobs, create: bool = True, **kw: Any) -> UnetConsole:
    if create:
        (tmp_path / "ws").mkdir(exist_ok=True)
    return UnetConsole(Workspace.resolve(tmp_path / "ws", env={}), jobs=jobs, status_interval=0, **kw)


def record(path: Path, t: float, cfg: RunConfig | None = None, *, valid: bool | None = True,
           sps: float | None = None, status: str = "complete",
           latency: dict[str, float] | None = None) -> RunRecord:  # fmt: skip
    """A history record as core.history reads it (ort/fp32 Offline by default)."""
    date = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
    return RunRecord(path.name, path, date, status, cfg or RunConfig(), valid=valid,
                     metrics=Metrics(sps, latency or {}))  # fmt: skip


def text(app: UnetConsole, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def footer_keys(app: UnetConsole) -> list[str]:
    from textual.widgets._footer import FooterKey

    return [k.description for k in app.screen.query(FooterKey) if k.display]


async def start_held_run(app: UnetConsole, pilot: Any, cfg: RunConfig | None = None) -> None:
    app.post_message(m.RunRequested(cfg or RunConfig()))
    await until(pilot, lambda: app.job is not None and app.job.done == 1)
    await pilot.pause(0.6)  # a monitor tick


# ------------------------------------------------------------------ 1: Esc and cancelling
async def test_esc_in_the_log_filter_leaves_it_and_cancelling_asks_first(tmp_path):
    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await start_held_run(app, pilot)
        assert app.current_mode == "monitor"
        await pilot.press("slash", *"case", "escape")  # typing in the filter, then Esc
        await pilot.pause()
        assert app.job.running and not isinstance(app.screen, ConfirmModal)  # the run goes on
        assert not isinstance(app.focused, Input)  # Esc left the field
        assert app.screen.query_one("#log-filter", Input).value == "case"
        await pilot.press("escape")  # outside a field: asks
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal) and "Cancel Run Offline default" in app.screen.question
        await pilot.press("escape")  # a second Esc answers no
        await pilot.pause()
        assert app.job.running and not isinstance(app.screen, ConfirmModal)
        await pilot.press("escape", "y")
        await until(pilot, lambda: not app.job.running)
        assert app.job.outcome == "cancelled"
        assert text(app, "#job-label") == "Run Offline default PerformanceOnly: cancelled at 1/7 samples"
        assert "Cancel" not in footer_keys(app)  # no job: Esc cancels nothing, the footer says so


# ------------------------------------------------------------------ 2: pause
async def test_pause_shows_a_badge_offers_resume_and_a_new_run_starts_clean(tmp_path):
    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await start_held_run(app, pilot, RunConfig(test_mode="AccuracyOnly"))
        scr = app.screen
        assert cell(scr.query_one("#dice", DataTable), "case_00000", "kidney") == "0.9610"
        assert "Pause" in footer_keys(app) and "Resume" not in footer_keys(app)
        await pilot.press("space")
        await pilot.pause()
        assert scr.query_one("#paused", Label).display and "PAUSED" in text(app, "#paused")
        assert "Resume" in footer_keys(app) and "Pause" not in footer_keys(app)
        await pilot.press("escape", "y")  # cancel the paused run
        await until(pilot, lambda: not app.job.running)
        jobs.release.set()  # the next run goes through
        jobs.hold = False
        app.post_message(m.RunRequested(RunConfig()))
        await until(pilot, lambda: app.job.running or app.job.outcome == "finished")
        await pilot.pause()
        # the new run: not paused, and nothing of the cancelled accuracy run is left
        assert not scr.paused and not scr.query_one("#paused", Label).display
        assert "Pause" in footer_keys(app)
        dice = scr.query_one("#dice", DataTable)
        assert cell(dice, "case_00000", "kidney") == "-" and cell(dice, "mean", "composite") == "-"
        log = [str(x.text) for x in scr.query_one("#log").lines]
        assert "LoadGen Offline AccuracyOnly started" not in "\n".join(log)


# ------------------------------------------------------------------ 6: equivalent commands
async def test_run_form_commands_carry_the_workspace_and_are_never_stale(tmp_path):
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        ws = app.ws.root
        assert text(app, "#cmd-cli").startswith(f"$ unet3d --workspace={ws} run --benchmarks=3d-unet ")
        assert text(app, "#cmd-make").endswith(f" UNET3D_ARGS=--workspace={ws}")
        await pilot.press("y")
        assert app.clipboard.startswith(f"unet3d --workspace={ws} run ")
        batch = app.screen.query_one("#f-gpu_batch_size", Input)
        batch.value = "4"
        await pilot.pause()
        await pilot.press("y")
        assert "--gpu_batch_size=4" in app.clipboard
        batch.value = "0"  # refused: nothing shown, nothing copied (it copied the last valid one)
        await pilot.pause()
        assert text(app, "#cmd-cli") == ""
        assert "--gpu_batch_size=0 must be at least 1" in text(app, "#cmd-error")
        app.copy_to_clipboard("")
        await pilot.press("y")
        assert app.clipboard == ""
        await pilot.press("ctrl+p")
        await pilot.press(*"Copy unet3d")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.clipboard == ""  # the palette's copy refuses too


# ------------------------------------------------------------------ 7: one progress, true stage
async def test_one_progress_with_the_true_stage_and_nothing_moves_after_a_cancel(tmp_path):
    from console.workers import LiveFeed

    class MovingFeed(FakeJobs):
        """An in-process feed whose clock keeps going (RunEvents.snapshot read live)."""

        def benchmark(self, ws, cfg, report, cancel, live: LiveFeed):
            def source() -> Any:
                assert self.events is not None
                snap = self.events.snapshot()
                return dataclasses.replace(snap, t=time.monotonic() - self.t0 + snap.t)

            self.t0 = time.monotonic()
            live._source = source
            return super().benchmark(ws, cfg, report, cancel, live)

    jobs = MovingFeed(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        # idle: no widget redraws itself on a timer (an indeterminate bar animated 15 times a second)
        for mode in ("monitor", "dashboard"):
            await app.switch_mode(mode)
            await pilot.pause()
            assert [w for w in app.screen.walk_children() if w.auto_refresh] == []
        await start_held_run(app, pilot)
        # LoadGen loads the samples after the run phase has begun: the stage says so, not "running"
        app.post_message(m.Progress("benchmark", "load", 2, 4, "case", "case_00001"))
        await pilot.pause()
        label = "Run Offline default PerformanceOnly - loading samples 2/4 cases (case_00001)"
        assert text(app, "#job-label") == label
        assert "[loading samples]" in text(app, "#run-title")
        app.post_message(m.Progress("benchmark", "load", 4, 4, "case"))
        await pilot.pause()
        assert "4/4 cases" not in text(app, "#job-label") and "100 %" not in text(app, "#job-bar")
        assert "[running]" in text(app, "#run-title")
        app.post_message(m.Progress("benchmark", "run", 1, 7, "sample", "case_00000"))
        await pilot.pause()
        assert text(app, "#job-bar").startswith("━" * 16 + "  14 %")  # 1/7 samples
        assert len(app.screen.query("ProgressBar")) == 0  # one progress: the job strip's
        await pilot.press("escape", "y")
        await until(pilot, lambda: not app.job.running)
        await pilot.pause(0.6)
        frozen = [text(app, s) for s in ("#rates", "#run-title", "#job-label", "#job-bar")]
        assert "[cancelled]" in frozen[1]
        await pilot.pause(1.5)  # three monitor ticks; the feed's clock has moved on
        assert [text(app, s) for s in ("#rates", "#run-title", "#job-label", "#job-bar")] == frozen


# ------------------------------------------------------------------ 8: plot and DICE verdicts
async def test_plot_spans_the_runs_seconds_and_shows_no_axes_before_a_sample(tmp_path):
    from screens.monitor import QpsPlot

    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await pilot.pause()
        plot = app.screen.query_one(QpsPlot)
        assert str(plot.render()) == "samples/s: no sample completed yet"  # not a -1..1 axis
        await start_held_run(app, pilot)
        assert jobs.events is not None
        clock = jobs.clock
        for _ in range(5):  # five ticks, 10 s apart on the run's clock
            clock.advance(10.0)
            jobs.events.tick()
            app.live.set(jobs.events.snapshot())
            await pilot.pause(0.55)
        xs = [x for x, _ in plot._data]
        started = jobs.events.snapshot().started
        assert xs[-1] == pytest.approx(clock() - started)  # seconds since the run started
        assert xs == sorted(xs) and len(xs) >= 5 and xs[-1] > 50
        assert "seconds since the run started" in str(plot.render())
        jobs.release.set()


async def test_dice_verdicts_are_the_means_only(tmp_path):
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.post_message(m.RunRequested(RunConfig(test_mode="AccuracyOnly")))
        await settle(app, pilot)
        await pilot.pause(0.7)
        dice = app.screen.query_one("#dice", DataTable)
        # case_00012's composite (0.721) is below both targets: a case is not judged, the mean is
        assert cell(dice, "case_00012", "composite") == "0.72100"
        assert [cell(dice, c, "99") for c in CASES] == [""] * len(CASES)
        assert cell(dice, "mean", "99") == "✔ pass"


async def test_a_partial_mean_has_no_verdict(tmp_path):
    jobs = FakeJobs(hold=True)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await start_held_run(app, pilot, RunConfig(test_mode="AccuracyOnly"))
        dice = app.screen.query_one("#dice", DataTable)
        assert cell(dice, "mean", "case") == "mean (1/7)" and cell(dice, "mean", "composite") == "0.91650"
        assert cell(dice, "mean", "99") == "pending" == cell(dice, "mean", "99.9")  # was "✔ pass" on 1 case
        jobs.release.set()


# ------------------------------------------------------------------ 9: the run form adapts
async def test_run_form_shows_the_fields_that_apply_and_outlines_a_bad_one(tmp_path):
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        scr = app.screen

        def shown() -> list[str]:
            return [w.id.removeprefix("row-") for w in scr.query(".field") if w.display]

        assert shown() == ["scenario", "config_ver", "test_mode", "backend", "precision", "gpu_batch_size",
                           "min_duration", "max_duration", "min_query_count", "max_query_count",
                           "offline_expected_qps", "audit_test"]  # fmt: skip
        assert scr.query_one("#f-gpu_batch_size", Input).placeholder == "required"
        assert scr.query_one("#f-min_duration", Input).placeholder == "600 (mlperf.conf)"
        scr.query_one("#f-offline_expected_qps", Input).value = "3"
        scr.query_one("#f-scenario", Select).value = "SingleStream"
        await pilot.pause()
        assert "offline_expected_qps" not in shown() and "single_stream_expected_latency_ms" in shown()
        assert "--offline_expected_qps" not in text(app, "#cmd-cli")  # a hidden field is not in the run
        scr.query_one("#f-test_mode", Select).value = "AccuracyOnly"
        await pilot.pause()
        assert shown() == ["scenario", "config_ver", "test_mode", "backend", "precision", "gpu_batch_size",
                           "audit_test"]  # fmt: skip
        scr.query_one("#f-test_mode", Select).value = "PerformanceOnly"
        scr.query_one("#f-min_duration", Input).value = "60"
        scr.query_one("#f-max_duration", Input).value = "30"
        await pilot.pause()
        bad = [w.id for w in scr.query(Input) if w.has_class("-invalid")]
        assert bad == ["f-max_duration"]
        assert "--max_duration=30 is less than --min_duration=60" in text(app, "#cmd-error")
        assert scr.query_one("#start", Button).disabled
        scr.query_one("#f-max_duration", Input).value = ""
        await pilot.pause()
        assert [w.id for w in scr.query(Input) if w.has_class("-invalid")] == []


@pytest.mark.parametrize("size", [(100, 30), (80, 24)])
async def test_start_button_is_on_screen(tmp_path, size):
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        start = app.screen.query_one("#start", Button)
        region = start.region
        assert region.height >= 1 and region.bottom <= size[1] - 1  # above the footer, not scrolled off
        assert app.screen.get_widget_at(region.x + 1, region.y)[0] is start


# ------------------------------------------------------------------ 10: confirm and say how long
def test_estimates_say_how_long_and_on_what(tmp_path):
    from core.estimate import fmt_duration, run_estimate

    ws = Workspace.resolve(tmp_path, env={})
    past = [record(tmp_path / "a", 1.0, sps=0.1)]
    est = run_estimate(ws, RunConfig(test_mode="AccuracyOnly"), past)
    assert est.seconds == pytest.approx(430.0)  # the 43 official cases at 0.1 samples/s
    assert est.text() == "about 7 min (43 cases once at 0.1 samples/s of the last ort/fp32 run here)"
    perf = run_estimate(ws, RunConfig(min_duration=20, min_query_count=4, offline_expected_qps=0.1), past)
    assert perf.seconds == pytest.approx(40.0)  # max(4, 1.1 x 20 s x 0.1/s) = 4 samples... at 0.1/s
    unknown = run_estimate(ws, RunConfig(backend="torch"), past)
    assert unknown.seconds == 600.0 and "no earlier torch/fp32 run here" in unknown.basis
    assert run_estimate(ws, RunConfig(backend="torch", test_mode="AccuracyOnly"), past).seconds is None
    shown = [fmt_duration(s) for s in (3, 42, 300, 5400, 7260)]
    assert shown == ["3 s", "40 s", "5 min", "1 h 30 min", "2 h 1 min"]


async def test_demo_and_checklist_runs_ask_and_say_how_long(tmp_path):
    runs = [record(tmp_path / "ws/build/logs/a", 1.0, sps=0.5)]
    jobs = FakeJobs(runs=runs)
    app = make_app(tmp_path, jobs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("d")  # the dataset is there (fake status): the demo would run again
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        assert app.screen.question.startswith(f"{app.ws.root} already holds the demo. Run it again?")
        await pilot.press("n")
        await pilot.pause()
        assert jobs.calls == []
        app.post_message(m.RunRequested(RunConfig(test_mode="AccuracyOnly"), confirm=True))  # checklist
        await pilot.pause()
        assert app.screen.question == (
            "Start the run Offline default AccuracyOnly on ort/fp32? about 85 s "
            "(43 cases once at 0.5 samples/s of the last ort/fp32 run here)."
        )
        await pilot.press("y")
        await settle(app, pilot)
        assert jobs.calls == ["benchmark"]


async def test_a_missing_workspace_is_created_only_after_a_yes(tmp_path):
    app = make_app(tmp_path, FakeJobs(), create=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for key in ("5", "4", "1"):  # the auditor used to write build/audit/ into it at start-up
            await pilot.press(key) if not isinstance(app.screen, ConfirmModal) else None
        assert isinstance(app.screen, ConfirmModal) and "does not exist. Create it?" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
    assert not (tmp_path / "ws").exists()
    app = make_app(tmp_path, FakeJobs(), create=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        assert (tmp_path / "ws").is_dir()


# ------------------------------------------------------------------ 11: width
async def test_tables_use_the_width_and_the_footer_fits(tmp_path):
    long_run = "20261203-175202_Offline_PerformanceOnly"
    runs = [record(tmp_path / "ws/build/logs" / long_run, 1.0, sps=0.5)]
    app = make_app(tmp_path, FakeJobs(runs=runs))
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(app, pilot)
        t = app.screen.query_one("#status", DataTable)
        widths = {str(c.key.value): c.width for c in t.columns.values()}
        assert widths["detail"] >= 60  # was 40 whatever the width
        assert widths["detail"] + widths["fix"] >= 60
        await pilot.press("4")
        await pilot.pause()
        runs_t = app.screen.query_one("#runs", DataTable)
        assert {str(c.key.value): c.width for c in runs_t.columns.values()}["folder"] >= len(long_run)
        await pilot.press("5")
        await pilot.pause()
        steps = app.screen.query_one("#steps", DataTable)
        assert {str(c.key.value): c.width for c in steps.columns.values()}["evidence"] >= 40
    for size in ((80, 24), (100, 30)):
        app = make_app(tmp_path, FakeJobs(hold=True))
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            for key in ("1", "2", "3", "4", "5"):
                await pilot.press(key)
                await pilot.pause()
                keys = footer_keys(app)
                assert "Help" in keys and "Quit" in keys, (size, key, keys)
                footer = app.screen.query_one("ConsoleFooter")
                assert footer.virtual_size.width <= size[0], (size, key)  # nothing cut or left over


# ------------------------------------------------------------------ 13: log viewer
async def test_log_viewer_lists_only_files_and_opens_at_the_top(tmp_path):
    folder = tmp_path / "ws" / "build" / "logs" / "run-a"
    folder.mkdir(parents=True)
    summary = ["Result is : VALID"] + [f"line {n}" for n in range(200)]
    (folder / "mlperf_log_summary.txt").write_text("\n".join(summary) + "\n")
    (folder / "run.json").write_text("{}\n")
    runs = [record(folder, 1.0)]
    app = make_app(tmp_path, FakeJobs(runs=runs))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("4", "enter")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "LogViewer"
        sel = app.screen.query_one("#log-file", Select)
        assert [str(o[0]) for o in sel._options] == ["mlperf_log_summary.txt", "run.json"]  # no "no files"
        log = app.screen.query_one("#log-view")
        await pilot.pause()
        assert log.scroll_y == 0 and str(log.lines[0].text).startswith("Result is : VALID")


# ------------------------------------------------------------------ 14: compare
async def test_history_compare_shows_differences_and_the_settings_that_differed(tmp_path):
    logs = tmp_path / "ws" / "build" / "logs"
    views = []
    for name, qps, p90, batch in (("run-a", 0.1173, 30076.2, 1), ("run-b", 0.1330, 25000.0, 2)):
        cfg = RunConfig(gpu_batch_size=batch, min_duration=20 if batch == 2 else None)
        views.append(record(logs / name, 1.0 + batch, cfg, sps=qps, latency={"p90": p90}))
    app = make_app(tmp_path, FakeJobs(runs=views))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("4", "space", "down", "space")
        await pilot.pause()
        from rich.console import Console

        console = Console(width=60, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(app.screen.query_one("#cmp-left", Static).content)
        left = console.export_text()
        right = text(app, "#cmp-right")
        rows = {ln.split()[0]: ln.split() for ln in left.splitlines() if ln.strip()}
        assert "samples/s" in rows, left
        assert rows["samples/s"] == ["samples/s", "0.1173", "0.133", "+0.0157", "+13.4", "%"]
        assert rows["p90"][1:] == ["latency", "ms", "30,076.2", "25,000.0", "-5,076.2", "-16.9", "%"]
        assert "Settings that differ:" in right
        assert "gpu_batch_size: 1 -> 2" in right and "min_duration: - -> 20" in right
        assert "scenario" not in right and "model sha256" not in right  # the same in both


# ------------------------------------------------------------------ 15: version, help
def test_console_version(capsys):
    from console.app import build_app

    with pytest.raises(SystemExit) as exc:
        build_app(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == "unet3d-console 0.1.0\n"


async def test_help_names_the_config_file(tmp_path):
    cfg = tmp_path / "unet3d.toml"
    cfg.write_text('[keymap]\n"job.cancel" = "escape"\n')
    app = make_app(tmp_path, FakeJobs(), settings=core_config.load(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert f"The config file: `{cfg}`." in app.screen.text
    app = make_app(tmp_path, FakeJobs())
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert f"No config file is in use; create `{core_config.default_path()}`" in app.screen.text
