"""Plain immutable state the App keeps and screens watch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

JOB_TITLES = {
    "demo": "Create demo workspace",
    "preprocess": "Preprocess",
    "calibrate": "Calibrate",
    "engine": "Build engine",
    "benchmark": "Run",
    "audit": "Audit checks",
}


# Progress tasks that are a stage of their own inside a job's phase: LoadGen loads the samples into
# memory after the run phase has begun (core.harness.qsl reports task "load").
TASK_STAGES = {"load": "loading samples"}


@dataclass(frozen=True)
class JobState:
    name: str  # worker group: demo | preprocess | calibrate | engine | benchmark | audit
    description: str
    running: bool = True
    phase: str = "starting"
    detail: str = ""
    done: int = 0
    total: int = 0
    unit: str = ""
    item: str = ""
    outcome: str = ""  # finished | cancelled | failed
    error: str = ""
    result: Any = None
    task: str = ""  # the progress task done/total count (core.jobs.Progress.task)

    def with_(self, **kw: Any) -> JobState:
        return replace(self, **kw)

    @property
    def stage(self) -> str:
        """What the job is doing now, as one word or two: its outcome once ended; else the progress
        task's own stage while it counts (samples loading inside the run phase), else the phase."""
        if not self.running:
            return self.outcome
        if self.task in TASK_STAGES and self.total and self.done < self.total:
            return TASK_STAGES[self.task]
        return self.phase

    @property
    def counting(self) -> bool:
        """done/total belong to the current stage (a finished load's 4/4 cases is not the run's)."""
        if not self.total:
            return False
        return not (self.task in TASK_STAGES and self.done >= self.total and self.running)

    def line(self) -> str:
        count = f" {self.done}/{self.total} {self.unit}s" if self.counting else ""
        if not self.running:
            tail = {"finished": "finished", "failed": f"failed: {self.error}"}.get(self.outcome, self.outcome)
            at = f" at{count}" if self.outcome == "cancelled" and count else ""
            return f"{self.description}: {tail}{at}"
        item = f" ({self.item})" if self.item and self.counting else ""
        detail = f" {self.detail}" if self.detail and not self.counting else ""
        return f"{self.description} - {self.stage}{detail}{count}{item}"
