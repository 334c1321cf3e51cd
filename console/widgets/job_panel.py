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
        yield Label("No job running", id="job-label")
        yield ProgressBar(total=None, show_eta=True, id="job-bar", clock=getattr(self.app, "clock", None))
        yield Label("", id="job-hint")

    def on_mount(self) -> None:
        self.watch(self.app, "job", self.show, init=True)

    def show(self, job: JobState | None) -> None:
        label = self.query_one("#job-label", Label)
        bar = self.query_one("#job-bar", ProgressBar)
        hint = self.query_one("#job-hint", Label)
        for cls in ("-idle", "-failed", "-cancelled"):
            self.remove_class(cls)
        if job is None:
            self.add_class("-idle")
            label.update("No job running")
            hint.update("")
            return
        label.update(job.line())
        if job.running:
            hint.update("Esc to cancel")
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
            hint.update("")
