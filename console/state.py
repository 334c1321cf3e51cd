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

    def with_(self, **kw: Any) -> JobState:
        return replace(self, **kw)

    def line(self) -> str:
        if not self.running:
            tail = {"finished": "finished", "cancelled": "cancelled", "failed": f"failed: {self.error}"}
            return f"{self.description}: {tail.get(self.outcome, self.outcome)}"
        count = f" {self.done}/{self.total} {self.unit}s" if self.total else ""
        item = f" ({self.item})" if self.item else ""
        detail = f" {self.detail}" if self.detail and not self.total else ""
        return f"{self.description} - {self.phase}{detail}{count}{item}"
