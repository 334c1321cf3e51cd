"""Live monitor of a LoadGen run: samples/s (Digits + a plot over the run's seconds), windows/s,
latency percentiles, the per-case DICE table (all rows created up front; cells updated by key) with
the mean's pass/fail against the 99 % and 99.9 % targets, and the log tail. It samples the App's live
feed on a timer (never one message per sample). When LoadGen finishes, the official summary figures
(VALID/INVALID, samples/s, percentiles) replace the live estimates.

One run at a time: a new run starts from a clean view (no figure, plot, log line or pause left from
the last one); an ended run's figures stay as they were when it ended (nothing keeps moving). The
progress (stage, count, ETA) is the job strip's, the console's only one (console.widgets.job_panel).
Space pauses the view (a PAUSED badge; the footer then offers Resume); the run goes on regardless."""

from __future__ import annotations

import collections
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Digits, Header, Input, Label, Static
from textual_plotext import PlotextPlot

from console.widgets.footer import ConsoleFooter
from console.widgets.job_panel import JobPanel
from console.widgets.live import LiveTable, LogTail
from core.audit import fp32_reference
from core.benchmark import target_dice
from core.harness.events import RunSnapshot
from screens.base import ConsoleScreen

LOG_TAIL_LINES = 200  # the run's full log is in its files; each kept line costs ~20 objects (console.heap)
PLOT_POINTS = 2400  # (seconds, samples/s) points kept for the plot: 20 minutes at two samples a second
LAT_ROWS = ("p50", "p90", "p95", "p97", "p99", "p99.9", "mean", "min", "max")
TARGET_COLS = ("99", "99.9")


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def set_text(static: Static, text: str) -> bool:
    """Write ``text`` into ``static`` with a layout pass only when its height changes (a changed line
    count, or different wrapping at its width); its width does not depend on the text. Static.update
    lays the whole screen out and re-renders what moved: ~10 ms of UI-thread CPU per monitor tick for
    the rates line, whose height almost never changes. Returns whether a layout was asked for."""
    if str(static.content) == text:
        return False
    before = static.content_size
    static.update(text, layout=False)  # repaints, and forgets its measured height
    after = static.get_content_height(static.container_size, static.app.size, before.width)
    layout = not before.width or after != before.height
    if layout:
        static.refresh(layout=True)
    return layout


def badge(ok: bool | None) -> Text:
    if ok is None:
        return Text("-", style="dim")
    return Text("✔ pass", style="green") if ok else Text("✘ fail", style="bold red")


class QpsPlot(PlotextPlot):
    HELP = (
        "Samples per second (LoadGen completions in a sliding 10 s window) against the seconds since the "
        "run started (LoadGen's run phase, or its first sample), one point per sampling tick."
    )
    EMPTY = "samples/s: no sample completed yet"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._data: tuple[tuple[float, float], ...] = ()
        self._drawn: tuple[Any, ...] | None = None
        self._text: Any = None

    def on_mount(self) -> None:
        self.plt.title("samples/s")
        self.plt.xlabel("seconds since the run started")

    def show(self, points: tuple[tuple[float, float], ...]) -> None:
        """Plot (seconds, samples/s) ``points``; nothing happens when it is what the plot shows."""
        if points == self._data:
            return
        self._data = points
        self.plt.clear_data()
        if points:
            self.plt.plot([x for x, _ in points], [y for _, y in points], marker="braille")
            self.plt.ylim(0, max(y for _, y in points) * 1.1 or 1.0)  # from 0, never a -1..1 axis
            self.plt.xlim(0, max(points[-1][0], 1.0))
        self.refresh()

    def render(self) -> Any:
        if not self._data:  # no axes before there is something to plot
            return Text(self.EMPTY, style="dim", justify="center")
        # plotext rebuilds the whole figure (~12 ms at 70x13) on every render; Textual asks again on
        # each screen switch, resize and repaint, so reuse it while data, size and theme are the same
        key = (self._data, self.size, self.app.theme, self.theme)
        if key != self._drawn or self._text is None:
            self._text = super().render()
            self._drawn = key
        return self._text


class DiceTable(LiveTable):
    HELP = (
        "Per-case DICE of an accuracy run: kidney (label 1), tumor (label 2) and their mean; the `mean` row "
        "is the benchmark's figure and the only one with a verdict: the targets (99 % and 99.9 % of the "
        "model's FP32 reference; officially 0.853083 and 0.8608383 for the full-width model) apply to the "
        "mean over all cases, not to a single case."
    )


class LatencyTable(LiveTable):
    HELP = "Latency percentiles in ms: live estimates while running, LoadGen's summary values afterwards."


class MonitorScreen(ConsoleScreen):
    HELP = (
        "The running (or last) LoadGen run. Esc asks, then cancels it: SIGINT to its process group, then "
        "SIGTERM, then SIGKILL. Space pauses the live view (the run goes on; PAUSED shows it) and resumes "
        "it; / filters the log (Esc leaves the filter)."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        # one key, two bindings: the footer shows the one that applies (check_action)
        Binding("space", "pause", "Pause", id="live.pause", tooltip="Freeze the live view (the run goes on)"),
        Binding("space", "resume", "Resume", id="live.pause", tooltip="Show the live view again"),
        Binding("slash", "filter", "Filter log", id="logs.filter", tooltip="Focus the log filter"),
    ]

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__()
        self.interval = interval
        self.paused = False
        self._points: collections.deque[tuple[float, float]] = collections.deque(maxlen=PLOT_POINTS)
        self._last_t: float | None = None
        self._ended_drawn = False  # the ended run's last state is on screen: nothing moves any more
        self._log_seen = 0
        self._rows: list[str] = []
        self._official = False
        self._ref = 0.8617
        self._tail: tuple[str, ...] = ()
        self._feed: Any = None
        self._title = ""

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="title-row"):
            yield Static("No run yet: set one up on the Run screen (2).", id="run-title", markup=False)
            yield Label(" PAUSED: space resumes ", id="paused")
        with Horizontal(id="mon-top"):
            with Vertical(id="qps-box"):
                yield Label("samples/s", id="qps-label")
                yield Digits("-", id="qps")
                yield Static("", id="rates", markup=False)
                yield QpsPlot(id="qps-plot")
            with Vertical(id="mon-right"):
                yield Static("", id="verdict")
                yield LatencyTable(id="latency", cursor_type="none")
        with Horizontal(id="mon-bottom"):
            yield DiceTable(id="dice", cursor_type="row", zebra_stripes=True)
            with Vertical(id="log-box"):
                yield Input(placeholder="filter the log (/)", id="log-filter")
                yield LogTail(id="log", max_lines=LOG_TAIL_LINES, wrap=False, markup=False)
        yield JobPanel()
        yield ConsoleFooter()

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "cursor_blink", True)
        lat = self.query_one(LatencyTable)
        lat.add_column("Latency", key="name", width=8)
        lat.add_column("ms", key="ms", width=12)
        lat.add_column("source", key="source", width=16)
        for r in LAT_ROWS:
            lat.add_row(r, "-", "", key=r)
        dice = self.query_one(DiceTable)
        for key, label, width in (
            ("case", "Case", 11),
            ("kidney", "Kidney", 7),
            ("tumor", "Tumor", 7),
            ("composite", "Mean", 8),
            ("99", "mean≥99%", 8),  # the targets apply to the mean over all cases only
            ("99.9", "≥99.9%", 8),
        ):
            dice.add_column(label, key=key, width=width)
        self._build_dice_rows()
        self.set_interval(self.interval, self.sample)
        self.watch(self.app, "last_result", self.show_official, init=False)
        self.watch(self.app, "job", self._job_changed, init=True)

    # --- DICE rows: created once, then only cells change ---
    def _build_dice_rows(self) -> None:
        dice = self.query_one(DiceTable)
        dice.clear()
        self._rows = list(self.app.case_list())  # type: ignore[attr-defined]
        for case in self._rows:  # no verdict per case: the targets are the mean's
            dice.add_row(case, "-", "-", "-", "", "", key=case)
        dice.add_row(Text("mean", style="bold"), "-", "-", "-", "-", "-", key="mean")
        try:
            self._ref = fp32_reference(self.app.ws)  # type: ignore[attr-defined]
        except Exception:
            self._ref = 0.8617

    def _job_changed(self, job: Any) -> None:
        app: Any = self.app
        cfg = app.running_config
        if cfg is None:
            return
        if app.live is not self._feed:  # a run has started: nothing of the last one stays
            self._new_run()
        mine = job is not None and job.name == "benchmark"
        chip = job.stage if mine else "last run"
        audit = f" {cfg.audit_test}" if cfg.audit_test else ""
        short = f"{cfg.scenario} {cfg.config_ver} {cfg.test_mode}{audit} {cfg.backend}/{cfg.precision}"
        title = f"[{chip}] {short} | {cfg.cli_command(app.ws)}"
        if title != self._title:  # the job changes ~10 times a second (progress); the title rarely
            self._title = title
            self.query_one("#run-title", Static).update(title)

    def _new_run(self) -> None:
        """A new run's feed: clear every per-run value and leave pause (issue #12: a paused view
        showed the cancelled run's plot, latencies, log and DICE during the next run)."""
        self._feed = self.app.live  # type: ignore[attr-defined]
        self.set_paused(False)
        self._reset()

    def _reset(self) -> None:
        self._official = False
        self._ended_drawn = False
        self._log_seen = 0
        self._tail = ()
        self._points.clear()
        self._last_t = None
        self.query_one("#log", LogTail).clear()
        self.query_one("#verdict", Static).update("")
        self.query_one("#qps-label", Label).update("samples/s (live)")
        self.query_one("#qps", Digits).update("-")
        set_text(self.query_one("#rates", Static), "")
        self.query_one(QpsPlot).show(())
        self._build_dice_rows()
        lat = self.query_one(LatencyTable)
        for r in LAT_ROWS:
            lat.set_cells(r, {"ms": "-", "source": ""})

    # --- sampling ---
    def sample(self) -> None:
        """The timer tick. While another screen is shown, or the palette / a modal covers this one,
        only the run's log lines are collected (they would fall out of RunEvents' tail otherwise);
        the widgets catch up on resume. (A covered screen is redrawn dimmed as a whole on each change:
        ~50 ms a tick with the palette open.)"""
        app: Any = self.app
        if app.live is not self._feed:  # a new run: start from a clean view
            self._new_run()
        if self._ended_drawn:  # the run has ended and its last state is shown: it stays so
            if self.is_active and not self.paused:
                self.show_logs()
            return
        snap = app.live.snapshot()
        if snap is not None:
            self.merge_tail(snap.log_tail)  # kept while paused or hidden (RunEvents' tail moves on)
            self.record(snap)
        if self.paused or not self.is_active:
            return
        ended = not (app.job is not None and app.job.name == "benchmark" and app.job.running)
        with app.batch_update():
            if snap is not None and not self._official:
                self.show_snapshot(snap)
            elif snap is not None:
                self.show_dice(snap)
            self.show_logs()
        self._ended_drawn = ended and app.running_config is not None

    def record(self, s: RunSnapshot) -> None:
        """One plot point per new snapshot: (seconds since the run started, samples/s)."""
        if s.started is None or s.t == self._last_t:
            return
        self._last_t = s.t
        self._points.append((max(0.0, s.t - s.started), s.qps))

    def on_screen_resume(self) -> None:
        # catch up a moment after the switch has been painted, not in the same stretch of UI work
        self.set_timer(0.05, self.sample)

    def show_snapshot(self, s: RunSnapshot) -> None:
        self.query_one("#qps", Digits).update(f"{s.qps:.3f}")
        avg = ""
        if s.started is not None and s.t > s.started and s.completed:
            avg = f"   avg {s.completed / (s.t - s.started):.4f} samples/s"
        done = f"{s.completed} sample{'s' if s.completed != 1 else ''}"
        rate = f"{s.windows_per_s:.1f} windows/s   {s.windows_done} windows   {done}{avg}"
        if len(s.devices) > 1:  # a multi-GPU run: one sample stream per device
            rate += "\n" + "   ".join(f"{d.device} {d.completed} done {d.qps:.2f}/s" for d in s.devices)
        set_text(self.query_one("#rates", Static), rate)
        lat = self.query_one(LatencyTable)
        for r in LAT_ROWS:
            v = s.latency_ms.get(r)
            lat.set_cells(r, {"ms": fmt_ms(v), "source": "live estimate" if v is not None else ""})
        self.query_one(QpsPlot).show(tuple(self._points))
        self.show_dice(s)

    def show_dice(self, s: RunSnapshot) -> None:
        if not s.dice:
            return
        dice = self.query_one(DiceTable)
        t99, t999 = target_dice("default", self._ref), target_dice("high_accuracy", self._ref)
        for c in s.dice:
            if c.case not in self._rows:  # not in the case list (should not happen): add it once
                self._rows.append(c.case)
                dice.add_row(c.case, "-", "-", "-", "", "", key=c.case)
            comp = c.composite
            dice.set_cells(
                c.case,
                {
                    "kidney": f"{c.kidney:.4f}",
                    "tumor": f"{c.tumor:.4f}",
                    "composite": f"{comp:.5f}",
                },
            )
        k = sum(c.kidney for c in s.dice) / len(s.dice)
        t = sum(c.tumor for c in s.dice) / len(s.dice)
        mean = (k + t) / 2
        done = f"mean ({len(s.dice)}/{len(self._rows)})"
        whole = len(s.dice) >= len(self._rows)  # a verdict needs every case: a partial mean has none
        dice.set_cells(
            "mean",
            {
                "case": Text(done, style="bold"),
                "kidney": f"{k:.4f}",
                "tumor": f"{t:.4f}",
                "composite": Text(f"{mean:.5f}", style="bold"),
                "99": badge(mean >= t99) if whole else Text("pending", style="dim"),
                "99.9": badge(mean >= t999) if whole else Text("pending", style="dim"),
            },
        )

    def merge_tail(self, tail: tuple[str, ...]) -> None:
        """Append the run's own log lines (RunEvents.log) that are new since the last sample."""
        prev = self._tail
        self._tail = tail
        if not tail or tail == prev:
            return
        start = 0
        if prev:
            last = prev[-1]
            for i in range(len(tail) - 1, -1, -1):
                if tail[i] == last:
                    start = i + 1
                    break
        app: Any = self.app
        recent = {text for _n, _lvl, text in list(app.logs)[-20:]}
        for line in tail[start:]:
            if line not in recent:  # the core often reports a line and also logs it into RunEvents
                app.add_log("run", line)

    def show_logs(self) -> None:
        """Write the log lines that are new since the last call, as one block (one render instead of
        one per line: a 200 samples/s run brings ~100 lines per tick), at most the widget's bound."""
        app: Any = self.app
        log = self.query_one("#log", LogTail)
        flt = self.query_one("#log-filter", Input).value.strip().lower()
        new: list[tuple[str, str]] = []
        for n, level, text in reversed(app.logs):
            if n <= self._log_seen:
                break
            if flt and flt not in text.lower() and flt != level:
                continue
            new.append((level, text))
            if len(new) >= (log.max_lines or LOG_TAIL_LINES):
                break
        if app.logs:
            self._log_seen = max(self._log_seen, app.logs[-1][0])
        if not new:
            return
        block = Text(no_wrap=True, end="")
        for i, (level, text) in enumerate(reversed(new)):
            if i:
                block.append("\n")
            block.append(text, style={"error": "bold red", "warning": "yellow"}.get(level, ""))
        log.write(block)

    # --- the official figures ---
    def show_official(self, result: dict[str, Any] | None) -> None:
        if not result:
            return
        app: Any = self.app
        if app.live is not self._feed:
            self._new_run()
        self.set_paused(False)  # the run has ended: its result is shown, not a paused view of it
        snap = app.live.snapshot()
        if snap is not None:  # the final live state first (a short run may end between two samples)
            self.record(snap)
            self.show_snapshot(snap)
            self.merge_tail(snap.log_tail)
            self.show_logs()
        self._official = True
        valid = result.get("valid")
        sps = result.get("samples_per_s")
        lat = dict(result.get("latency_ms") or {})
        summary = result.get("summary") or {}
        if not lat and isinstance(summary, dict) and summary.get("latency_ns"):
            lat = {k: v / 1e6 for k, v in summary["latency_ns"].items()}
        acc = result.get("accuracy") or {}
        verdict = self.query_one("#verdict", Static)
        parts: list[Text] = []
        if valid is True:
            parts.append(Text(" VALID ", style="bold black on green"))
        elif valid is False:
            parts.append(Text(" INVALID ", style="bold white on red"))
        else:
            parts.append(Text(" finished ", style="bold black on yellow"))
        if isinstance(sps, (int, float)):
            parts.append(Text(f"  {sps:.4f} samples/s (LoadGen)"))
        if isinstance(acc, dict) and isinstance(acc.get("mean"), (int, float)):
            mean = float(acc["mean"])
            parts.append(Text(f"  Accuracy: mean = {mean:.5f}"))
            cfg = getattr(self.app, "running_config", None)
            ref = acc.get("fp32_reference")
            ref = float(ref) if isinstance(ref, (int, float)) else self._ref
            cv = cfg.config_ver if cfg is not None else "default"
            target = target_dice(cv, ref)
            ok = mean >= target
            parts.append(
                Text(
                    f"  {'✔ meets' if ok else '✘ below'} the {cv} target {target:.5f}",
                    style="green" if ok else "bold red",
                )
            )
        reasons = result.get("reasons") or ()
        if valid is False and reasons:
            parts.append(Text(f"\n{reasons[0]}", style="red"))
        verdict.update(Text.assemble(*parts))
        if isinstance(sps, (int, float)):
            self.query_one("#qps-label", Label).update("samples/s (LoadGen summary)")
            self.query_one("#qps", Digits).update(f"{sps:.3f}")
        if lat:  # accuracy mode has no latency summary: the live estimates stay, labelled as such
            table = self.query_one(LatencyTable)
            for r in LAT_ROWS:
                v = lat.get(r)
                table.set_cells(r, {"ms": fmt_ms(v), "source": "LoadGen summary" if v is not None else ""})

    # --- actions ---
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause":
            return not self.paused
        if action == "resume":
            return self.paused
        return True

    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        self.query_one("#paused", Label).display = paused
        self.refresh_bindings()  # the footer: Pause <-> Resume

    def action_pause(self) -> None:
        self.set_paused(True)

    def action_resume(self) -> None:
        self.set_paused(False)
        self.sample()  # catch up now

    def action_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    @on(Input.Changed, "#log-filter")
    def refilter(self) -> None:
        self._log_seen = 0
        self.query_one("#log", LogTail).clear()
        self.show_logs()
