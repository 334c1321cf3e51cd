"""The job strip at the bottom of the dashboard and the monitor: what runs, its stage, one progress bar
with an ETA, and how to cancel it. It reads the App's ``job`` reactive; it never talks to a worker.

It is the console's one progress display (the monitor has no second one), and it has no timer:
Textual's ProgressBar re-estimates its ETA every second and animates 15 times a second while its total
is unknown, so a cancelled run's ETA kept moving and an idle bar cost ~6 % of a core during a CPU
run. This bar is drawn when the job's progress changes and stays as it was once the job has ended."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Static

from console.state import JobState

BAR_WIDTH = 16


def fmt_eta(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLine(Static):
    """``━━━━━━━╸━━━━━━━━  50 %  ETA 0:19`` from (done, total); blank without a count. No timers, no
    animation: it changes only when ``show`` is given a different state."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"progress--done", "progress--todo"}
    DEFAULT_CSS = """
    ProgressLine { width: 36; height: 1; display: none; }
    ProgressLine.-shown { display: block; }
    ProgressLine > .progress--done { color: $accent; }
    ProgressLine > .progress--todo { color: $foreground 20%; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", markup=False, **kwargs)
        self._state: tuple[Any, ...] = ()

    def show(self, done: int, total: int, eta_s: float | None = None) -> bool:
        """Draw ``done`` of ``total`` (nothing when total is 0); returns whether anything changed."""
        eta = fmt_eta(eta_s) if eta_s is not None else ""
        state = (done, total, eta)
        if state == self._state:
            return False
        self._state = state
        # a fixed box: the text is written without a layout pass (10 a second while a run streams);
        # only showing or hiding the bar, at a stage's start or end, lays the screen out
        self.set_class(bool(total), "-shown")
        if not total:
            return True
        frac = min(1.0, max(0.0, done / total))
        full = int(frac * BAR_WIDTH)
        half = "╸" if frac * BAR_WIDTH - full >= 0.5 else ""
        rest = BAR_WIDTH - full - len(half)
        line = Text.assemble(
            ("━" * full + half, self.get_component_rich_style("progress--done")),
            ("━" * rest, self.get_component_rich_style("progress--todo")),
            f" {int(100 * frac):3d} %",
        )
        if eta:
            line.append(f"  ETA {eta}")
        self.update(line, layout=False)
        return True


class JobPanel(Horizontal):
    DEFAULT_CSS = """
    JobPanel { height: 1; background: $panel; padding: 0 1; }
    JobPanel > #job-label { width: 1fr; }
    JobPanel > #job-hint { width: auto; color: $text-muted; padding-left: 1; }
    JobPanel.-failed > #job-label { color: $error; }
    JobPanel.-cancelled > #job-label { color: $warning; }
    """
    HELP = "The running job: its stage, progress and ETA. Esc asks, then cancels it (a run's LoadGen too)."

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timing: tuple[Any, ...] = ()  # (job, stage, total) the ETA's clock started for
        self._t0 = 0.0

    def compose(self) -> ComposeResult:
        # markup off: a job's line carries file names and install hints ("pip install '.[gpu]'")
        yield Label("No job running", id="job-label", markup=False)
        yield ProgressLine(id="job-bar")
        yield Label("", id="job-hint")

    def on_mount(self) -> None:
        self.watch(self.app, "job", self.show, init=True)

    @staticmethod
    def _set(label: Label, text: str, layout: bool = False) -> None:
        """Only a changed text is written, and the label's box (1fr wide, one line high) does not
        depend on its text: a layout pass of the whole screen for every progress step (10 a second
        while a run streams) made the screen's full re-render the largest UI cost of a run."""
        if str(label.content) == text:
            return
        label.update(text, layout=layout or "\n" in text)

    def _now(self) -> float:
        return float(getattr(getattr(self.app, "clock", None), "time", 0.0) or 0.0)

    def _time_stage(self, job: JobState) -> None:
        """Note when the job's current stage began (the ETA's pace is measured from there)."""
        key = (job.name, job.description, job.stage)
        if key != self._timing:
            self._timing, self._t0 = key, self._now()

    def eta(self, job: JobState) -> float | None:
        """Seconds left at the pace of the current stage so far (None before its first unit)."""
        self._time_stage(job)
        elapsed = self._now() - self._t0
        if not job.done or elapsed <= 0 or job.done >= job.total:
            return None
        return elapsed * (job.total - job.done) / job.done

    def show(self, job: JobState | None) -> None:
        label = self.query_one("#job-label", Label)
        bar = self.query_one("#job-bar", ProgressLine)
        hint = self.query_one("#job-hint", Label)  # width auto: its text sizes it (layout=True)
        self.set_class(job is not None and job.outcome == "failed", "-failed")
        self.set_class(job is not None and job.outcome == "cancelled", "-cancelled")
        if job is None:
            self._set(label, "No job running")
            bar.show(0, 0)
            self._set(hint, "", layout=True)
            return
        self._set(label, job.line())
        self._time_stage(job)
        if job.running:
            self._set(hint, "Esc to cancel", layout=True)
            bar.show(job.done, job.total, self.eta(job)) if job.counting else bar.show(0, 0)
        else:  # ended: the label says how (and where a cancel stopped it); no bar, no ETA
            self._set(hint, "", layout=True)
            bar.show(0, 0)
