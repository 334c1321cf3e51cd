"""The console under load and on the error path (Textual Pilot, no mocks of our code):

* a long run streaming events at a high rate (a FakeJobs whose benchmark emits hundreds of samples,
  progress events and log lines per second through the real RunEvents / LiveFeed / message path)
  while the user switches screens, opens the command palette and resizes the terminal. A
  ``set_interval`` heartbeat on the UI thread records the wall-clock gaps between its ticks and the UI
  thread's own CPU time in each gap (on a shared, oversubscribed machine wall gaps measure the
  scheduler; CPU time measures our work), labelled with the action in progress. The target, < 100 ms
  of UI-thread CPU between two beats for every action, is printed (asserted with
  ``UNET3D_LOAD_STRICT=1``); the test asserts no freeze of a second (see docs/RELIABILITY.md). Start-up
  (building the screens, the status probe's imports, the first heap freeze) happens once before the
  window and is reported separately. The bounded buffers (RunEvents' ring, the app's log deque, the
  monitor's log tail) must stay within their bounds, and the process RSS must not keep growing.
* a bad input met by a console job shows the same one-line message as the CLI's ``error:`` line.

``UNET3D_LOAD_SECONDS`` / ``UNET3D_LOAD_RATE`` set the duration (default 12 s) and samples/s (200);
``tools/console_load.py`` runs this test for 10 minutes and shows the figures it prints.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from console import messages as m
from console.app import UnetConsole
from console.fake import CASES, FakeJobs
from core import config as core_config
from core import jobs as cj
from core.benchmark import RunConfig
from core.errors import Cancelled
from core.harness.events import RunEvents
from core.workspace import Workspace

SIZE = (120, 40)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class StreamingJobs(FakeJobs):
    """FakeJobs whose benchmark streams for ``seconds`` at ``rate`` samples/s on the real clock,
    each sample with a progress event, a report log line and a RunEvents log line."""

    def __init__(self, seconds: float, rate: float = 500.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.seconds, self.rate = seconds, rate
        self.sent = 0
        self.streaming = False

    def benchmark(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken, live: Any
    ) -> dict[str, Any]:
        self.calls.append("benchmark")
        ev = RunEvents(total=0)
        self.events = ev
        report(cj.Phase("running", cfg.run_args()))
        ev.phase("running")
        self.streaming = True
        t0 = time.monotonic()
        n = 0
        try:
            while time.monotonic() - t0 < self.seconds:
                if cancel.cancelled:
                    raise Cancelled()
                n += 1
                case = CASES[n % len(CASES)]
                ev.total = n
                ev.sample_done(n % len(CASES), case, ev.clock() - 0.02, windows=8)
                ev.log(f"sample {n} {case} done")
                report(cj.Progress("run", n, 0, unit="sample", item=case))
                report(cj.LogLine("info", f"sample {n} {case}: 8 windows"))
                if n % 25 == 0:
                    live.set(ev.snapshot())
                # pace to the rate (sleeping releases the GIL as a real engine's native calls do)
                ahead = n / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        finally:
            self.sent = n
            self.streaming = False
        ev.phase("finished")
        live.set(ev.snapshot())
        return {
            "valid": True,
            "samples_per_s": n / self.seconds,
            "log_dir": str(ws.log_dir / "load"),
            "config": cfg.to_dict(),
        }


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "no-config"])


ACTIONS = ("switch", "palette", "resize", "redraw")


async def warm_up(app: UnetConsole, pilot: Any) -> float:
    """What a session does once, before the measured window: every screen shown and the palette
    opened once, the lazy imports of the status probe / auditor done (torch, onnxruntime: in worker
    threads), the heap frozen after them (console.heap). Returns its worst UI-thread CPU between two
    20 ms heartbeats (reported, not asserted)."""
    cpu: list[float] = []
    timer = app.set_interval(0.02, lambda: cpu.append(time.thread_time()))
    for key in ("2", "3", "4", "5", "1"):
        await pilot.press(key)
        await pilot.pause(0.1)
    await pilot.press("ctrl+p")
    await pilot.pause(0.1)
    await pilot.press("escape")
    await pilot.pause(0.1)
    with contextlib.suppress(Exception):
        await app.workers.wait_for_complete()
    for _ in range(200):  # the freezer's 2 s check: freeze after the imports before measuring
        if not app.heap.stale:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)
    timer.stop()
    return max((b - a for a, b in itertools.pairwise(cpu)), default=0.0)


async def load_scenario(app: UnetConsole, pilot: Any, jobs: StreamingJobs) -> dict[str, Any]:
    """Start the streaming run, drive the UI while it streams, return the measurements.

    Each heartbeat gap is labelled with the UI action in progress when it ended: ``switch`` (keys
    4 1 5 2 3), ``palette`` (ctrl+p, typing, Esc), ``resize``, ``redraw`` (the monitor alone, its
    0.5 s sampling of the stream), or ``gc`` when console.heap ran a full collection in it. Each
    round ends on the monitor."""
    startup_cpu = await warm_up(app, pilot)
    label = ["start"]
    # kept in arrays (8 + 8 + 1 bytes a beat, no objects): a list of tuples of floats grew by ~6 KB/s,
    # about half of the RSS growth that this scenario used to report for the console
    names = ["start", *ACTIONS]
    walls, cpus, labels = array.array("d"), array.array("d"), array.array("b")

    def beat() -> None:  # on the UI thread: wall clock and this thread's CPU time
        walls.append(time.monotonic())
        cpus.append(time.thread_time())
        labels.append(names.index(label[0]))

    app.set_interval(0.02, beat)
    rss: list[tuple[float, float]] = []
    t_start = time.monotonic()
    app.set_interval(0.5, lambda: rss.append((time.monotonic() - t_start, rss_mb())))
    await pilot.pause()
    cfg = RunConfig(scenario="Offline", test_mode="PerformanceOnly")
    assert app.start_run(cfg)
    for _ in range(500):
        if jobs.streaming:
            break
        await pilot.pause(0.01)
    assert jobs.streaming, "the run did not start"
    t_start = time.monotonic()
    sizes = [(120, 40), (80, 24), (160, 50), (100, 30)]
    step = 0
    while jobs.streaming:
        step += 1
        label[0] = "switch"
        for key in ("4", "1", "5", "2", "3"):
            await pilot.press(key)
            await pilot.pause(0.1)
        label[0] = "palette"
        await pilot.press("ctrl+p")
        await pilot.pause(0.1)
        await pilot.press("h", "i", "s")
        await pilot.pause(0.1)
        if app.screen.__class__.__name__ == "CommandPalette":
            await pilot.press("escape")  # closes the palette (it does not reach the cancel binding)
        await pilot.pause(0.1)
        label[0] = "resize"
        await pilot.resize_terminal(*sizes[step % len(sizes)])
        await pilot.pause(0.15)
        label[0] = "redraw"
        await pilot.pause(0.6)
    with contextlib.suppress(Exception):
        await app.workers.wait_for_complete()
    await pilot.pause()
    # a gap in which console.heap ran a full collection (or a freeze) is labelled "gc" instead
    collections_at = [t for t, _kind, _took, _n in app.heap.log]

    def label_of(a: tuple[float, float, str], b: tuple[float, float, str]) -> str:
        return "gc" if any(a[0] <= t <= b[0] for t in collections_at) else b[2]

    beats = [(w, c, names[n]) for w, c, n in zip(walls, cpus, labels, strict=True)]
    measured = [(a, b, label_of(a, b)) for a, b in itertools.pairwise(beats) if b[2] in ACTIONS]
    gaps = [b[0] - a[0] for a, b, _ in measured]
    cpu = [b[1] - a[1] for a, b, _ in measured]
    by_action = {
        act: max((b[1] - a[1] for a, b, lab in measured if lab == act), default=0.0)
        for act in (*ACTIONS, "gc")
    }
    return {
        "gaps": gaps,
        "cpu": cpu,
        "rss": rss,
        "steps": step,
        "by_action": by_action,
        "startup_cpu": startup_cpu,
    }


@pytest.mark.slow
async def test_console_stays_responsive_and_bounded_under_a_streaming_run(tmp_path: Path) -> None:
    seconds = float(os.environ.get("UNET3D_LOAD_SECONDS", "12"))
    rate = float(os.environ.get("UNET3D_LOAD_RATE", "200"))
    jobs = StreamingJobs(seconds=seconds, rate=rate)
    (tmp_path / "ws").mkdir()  # an existing workspace: no "create it?" question first
    app = UnetConsole(Workspace.resolve(tmp_path / "ws", env={}), jobs=jobs, status_interval=0)
    async with app.run_test(size=SIZE) as pilot:
        out = await load_scenario(app, pilot, jobs)
        ev = jobs.events
        assert ev is not None and jobs.sent > seconds * rate / 2, jobs.sent  # it really streamed
        assert out["steps"] >= 1, "the UI did not get through one round of interaction"
        # bounded buffers: the ring, the app's log, the monitor's log widget
        assert len(ev._samples) <= ev.maxlen and len(ev._latencies) <= ev.maxlen
        assert len(app.logs) <= (app.logs.maxlen or 0)
        from textual.widgets import RichLog

        for log in app.query(RichLog):
            assert log.max_lines is None or len(log.lines) <= log.max_lines
    print("\n" + report(out, jobs.sent, seconds) + "\n" + heap_and_rss(app, out))
    # memory: after the first third (buffers filled), RSS stays flat
    settled = [r for t, r in out["rss"] if t > seconds / 3]
    assert settled and max(settled) - settled[0] < 25.0, out["rss"]
    # No freeze: nothing holds the UI thread for a second (the message flood once held it for 8.9 s).
    # The 100 ms target itself is a performance figure: measured and printed here and by
    # tools/console_load.py (docs/RELIABILITY.md), asserted only with UNET3D_LOAD_STRICT=1, since on a
    # shared 2-core CI machine its margin (3-38 ms) is within the noise.
    limit = 0.100 if os.environ.get("UNET3D_LOAD_STRICT") == "1" else 1.0
    over = {act: round(cpu * 1e3) for act, cpu in out["by_action"].items() if cpu >= limit}
    assert not over, f"UI thread busy >= {limit * 1e3:.0f} ms between two heartbeats (ms): {over}"


def report(out: dict[str, Any], sent: int, seconds: float) -> str:
    gaps, cpu, rss = out["gaps"], out["cpu"], out["rss"]
    per = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in out["by_action"].items())
    return (
        f"{sent} samples in {seconds:.0f} s ({sent / seconds:.0f}/s), {out['steps']} UI rounds "
        f"(5 screen switches, palette, resize, 0.6 s of monitor each); heartbeat every 20 ms: wall gap "
        f"median {statistics.median(gaps) * 1e3:.0f} ms, max {max(gaps) * 1e3:.0f} ms, "
        f"{sum(g > 0.1 for g in gaps)}/{len(gaps)} over 100 ms; UI-thread CPU between beats max "
        f"{max(cpu) * 1e3:.0f} ms ({per} ms), {sum(c > 0.1 for c in cpu)} over 100 ms; "
        f"start-up (once, not in the window) max {out['startup_cpu'] * 1e3:.0f} ms; "
        f"RSS {rss[0][1]:.0f} -> {max(r for _, r in rss):.0f} -> {rss[-1][1]:.0f} MB"
    )


def heap_and_rss(app: UnetConsole, out: dict[str, Any]) -> str:
    """console.heap's collections and the RSS over time: the long run's figures (tools/console_load.py)."""
    from console import textual_compat

    heap = app.heap
    lines = [textual_compat.state().summary()]  # the figures depend on whether the patches applied
    lines.append(f"console.heap: {heap.freezes} freezes, {heap.full_collections} full collections")
    for kind in ("freeze", "full"):
        took = [d * 1e3 for _t, k, d, _n in heap.log if k == kind]
        if took:
            lo, hi, mid = min(took), max(took), sorted(took)[len(took) // 2]
            lines.append(f"  {kind}: {len(took)} logged, {lo:.0f}-{hi:.0f} ms (median {mid:.0f})")
    rss = out["rss"]
    half = [r for t, r in rss if t >= rss[-1][0] / 2]
    lines.append(f"RSS over the second half: {half[0]:.1f} -> {half[-1]:.1f} MB (max {max(half):.1f})")
    lines += [f"  t={t:6.0f} s  RSS {r:6.1f} MB" for t, r in rss[:: max(1, len(rss) // 12)]]
    return "\n".join(lines)


@pytest.mark.slow
async def test_console_job_error_is_the_cli_line(tmp_path: Path) -> None:
    """A corrupt raw case met by the console's preprocess job: the console shows exactly the message
    the CLI prints after ``error:`` (both come from the same BadInputError)."""
    import json
    import shutil

    from console.workers import RealJobs
    from tests.reliability import raw_dataset, unet3d

    ws = Workspace.resolve(tmp_path / "ws", env={})
    ws.data_dir.mkdir(parents=True)
    shutil.copytree(raw_dataset() / "case_00000", ws.data_dir / "case_00000")
    (ws.data_dir / "inference_cases.json").write_text(json.dumps(["case_00000"]))
    (ws.data_dir / "calibration_cases.json").write_text("[]")
    (ws.data_dir / "case_00000" / "imaging.nii.gz").write_text("not a NIfTI file\n")
    r = unet3d("preprocess", "--jobs", "1", ws=ws.root)
    cli_line = next(line for line in r.stderr.splitlines() if line.startswith("error: "))[len("error: ") :]

    failed: list[m.Failed] = []
    jobs = RealJobs()
    app = UnetConsole(ws, jobs=jobs, status_interval=0)
    try:
        hook = lambda msg: failed.append(msg) if isinstance(msg, m.Failed) else None  # noqa: E731
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            assert app.start_job("preprocess")
            for _ in range(1500):
                if failed:
                    break
                await pilot.pause(0.02)
            assert failed, "the job did not fail"
            await pilot.pause(0.1)
            assert failed[0].error == cli_line and failed[0].exit_code == r.returncode == 4
            from screens.modals import ErrorModal

            assert isinstance(app.screen, ErrorModal)  # the banner the user sees
            assert str(app.screen.query_one("#message").render()) == cli_line
            assert any(entry[2] == cli_line for entry in app.logs)
    finally:
        jobs.shutdown()


def test_reporter_coalesces_a_flood_into_a_bounded_message_rate() -> None:
    """console.workers.core_reporter: 10,000 progress events and 1,000 info lines reported as fast as
    possible become a handful of messages; the final progress, phases, warnings and errors all pass."""
    from console.workers import core_reporter

    posted: list[Any] = []
    report = core_reporter("run", posted.append)
    report(cj.Phase("running", ""))
    for n in range(1, 10_001):
        report(cj.Progress("run", n, 10_000, unit="sample", item=f"s{n}"))
    for n in range(1_000):
        report(cj.LogLine("info", f"line {n}"))
    for n in range(50):
        report(cj.LogLine("warning", f"warn {n}"))
    report(cj.Progress("run", 1, 5))
    report(cj.Progress("run", 2, 5))  # coalesced ...
    report(cj.Phase("scoring", ""))  # ... and delivered before the next phase
    progress = [p for p in posted if isinstance(p, m.Progress)]
    infos = [p for p in posted if isinstance(p, m.LogLine) and p.level == "info"]
    warnings = [p for p in posted if isinstance(p, m.LogLine) and p.level == "warning"]
    assert len(progress) < 60 and progress[0].done == 1
    assert [(p.done, p.total) for p in progress[-2:]] == [(10_000, 10_000), (2, 5)]
    assert len(infos) <= 20 and len(warnings) == 50
    names = [p.name for p in posted if isinstance(p, m.PhaseChanged)]
    assert names == ["running", "scoring"] and isinstance(posted[-1], m.PhaseChanged)
    assert posted.index(progress[-1]) == len(posted) - 2
