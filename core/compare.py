"""Two runs side by side as differences: each figure's change (B - A, absolute and %) and the settings
that differed between them (the RunConfig a run was made with).

Both come from the run record (core.history.RunRecord): its figures are the ones a user may see
(samples/s and latencies of a complete VALID run, the mean DICE of a scored one), its settings the
run.json configuration (a folder made by another tool has only scenario and mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.history import RunRecord

LATENCIES = ("p50", "p90", "p99", "p99.9", "mean", "max")


@dataclass(frozen=True)
class FigureDiff:
    name: str
    a: float | None
    b: float | None
    unit: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def percent(self) -> float | None:
        d = self.delta
        return None if d is None or not self.a else 100.0 * d / abs(self.a)


def figures(run: RunRecord) -> dict[str, tuple[float | None, str]]:
    """A run's comparable figures: name -> (value or None, unit)."""
    out: dict[str, tuple[float | None, str]] = {
        "samples/s": (run.samples_per_s, ""),
        "DICE": (run.mean_dice, ""),
    }
    lat = run.latency_ms
    for k in LATENCIES:
        out[f"{k} latency"] = (lat.get(k), "ms")
    return out


def compare_figures(a: RunRecord, b: RunRecord) -> list[FigureDiff]:
    """Every figure that either run has, in a fixed order."""
    fa, fb = figures(a), figures(b)
    rows = [FigureDiff(name, fa[name][0], fb[name][0], fa[name][1]) for name in fa]
    return [r for r in rows if r.a is not None or r.b is not None]


def settings(run: RunRecord) -> dict[str, Any]:
    """What a run was made with: its RunConfig, flattened (NVIDIA's extra flags included); a foreign
    folder's scenario and mode."""
    if run.config is None:
        return {"scenario": run.scenario, "test_mode": run.test_mode}
    out: dict[str, Any] = {}
    for k, v in run.config.to_dict().items():
        if k == "extra" and isinstance(v, dict):
            out.update({str(x): y for x, y in v.items()})
        else:
            out[k] = v
    return out


def differing_settings(a: RunRecord, b: RunRecord) -> list[tuple[str, Any, Any]]:
    """(setting, A's value, B's value) for each setting that differs (None: not set)."""
    sa, sb = settings(a), settings(b)
    keys = list(sa) + [k for k in sb if k not in sa]
    return [(k, sa.get(k), sb.get(k)) for k in keys if sa.get(k) != sb.get(k)]


def fmt_value(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.5g}"


def fmt_delta(d: FigureDiff) -> tuple[str, str]:
    """(B - A, %) as text; "-" where a side is missing."""
    if d.delta is None:
        return "-", "-"
    delta = f"{d.delta:+,.1f}" if abs(d.delta) >= 100 else f"{d.delta:+.4g}"
    pct = "-" if d.percent is None else f"{d.percent:+.1f} %"
    return delta, pct


__all__ = ["FigureDiff", "compare_figures", "differing_settings", "figures", "fmt_delta", "settings"]
