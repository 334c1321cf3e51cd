"""The job strip at the bottom of the dashboard and the monitor: what runs, its phase, a ProgressBar with
ETA, and how to cancel it. It reads the App's ``job`` reactive; it never talks to a worker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from console.state import JobState


class JobPanel(Horizontal):
    DEFAULT_CSS = """
    JobPanel { height: 1; background: $panel; padding: 0 1; }
    JobPanel > #job-label { width: 1fr; }
    JobPanel > ProgressBar { width: auto; }
    JobPanel > #job-hint { width: auto; color: $text-muted; padding-left: 1; }
    JobPanel.-idle > ProgressBar { display: none; }
    JobPanel.-failed > #job-label { color: $error; }
    JobPanel.-cancelled > #job-label { color: $warning; }
    """
    HELP = "The running job: its phase, progress and ETA. Esc cancels it (a run's LoadGen process too)."

    def compose(self) -> ComposeResult:
        # markup off: a job's line carries file names and install hints ("pip install '.[gpu]'")
        yield Label("No job running", id="job-label", markup=False)
        yield ProgressBar(total=None, show_eta=True, id="job-bar", clock=getattr(self.app, "clock", None))
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

    def show(self, job: JobState | None) -> None:
        label = self.query_one("#job-label", Label)
        bar = self.query_one("#job-bar", ProgressBar)
        hint = self.query_one("#job-hint", Label)  # width auto: its text sizes it (layout=True)
        for cls in ("-idle", "-failed", "-cancelled"):
            self.remove_class(cls)
        if job is None:
            self.add_class("-idle")
            self._set(label, "No job running")
            self._set(hint, "", layout=True)
            return
        self._set(label, job.line())
        if job.running:
            self._set(hint, "Esc to cancel", layout=True)
            if job.total:
                bar.update(total=job.total, progress=job.done)
            else:
                bar.update(total=None)
        else:
            self.add_class("-idle")
            if job.outcome == "failed":
                self.add_class("-failed")
            elif job.outcome == "cancelled":
                self.add_class("-cancelled")
            self._set(hint, "", layout=True)
