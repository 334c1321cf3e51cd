"""Two runs side by side as differences: each figure's change (B - A, absolute and %) and the settings
that differed between them (the RunConfig, the model and the case count a run was made with).

Figures come from the run record (samples/s, DICE) and LoadGen's summary (latency percentiles); the
settings from the run folder's run.json, which the runner writes (folders of other tools have none:
their settings are then the record's scenario, mode, config, backend and precision only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"  # core.history's name for the runner's record of a run
LATENCIES = ("p50", "p90", "p99", "p99.9", "mean", "max")
RECORD_SETTINGS = ("scenario", "config_ver", "test_mode", "audit_test", "backend", "precision")


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


def figures(run: Any) -> dict[str, tuple[float | None, str]]:
    """A run's comparable figures: name -> (value or None, unit)."""
    out: dict[str, tuple[float | None, str]] = {
        "samples/s": (getattr(run, "samples_per_s", None), ""),
        "DICE": (getattr(run, "dice", None), ""),
    }
    lat: dict[str, float] = {}
    folder = getattr(run, "log_dir", None)
    if folder is not None and (Path(folder) / "mlperf_log_summary.txt").is_file():
        try:
            from core.harness.logs import parse_summary

            lat = parse_summary(Path(folder)).latency_ms()
        except Exception:  # an unreadable summary: no latency figures, the rest still compare
            lat = {}
    for k in LATENCIES:
        out[f"{k} latency"] = (lat.get(k), "ms")
    return out


def compare_figures(a: Any, b: Any) -> list[FigureDiff]:
    """Every figure that either run has, in a fixed order."""
    fa, fb = figures(a), figures(b)
    rows = [FigureDiff(name, fa[name][0], fb[name][0], fa[name][1]) for name in fa]
    return [r for r in rows if r.a is not None or r.b is not None]


def settings(run: Any) -> dict[str, Any]:
    """What a run was made with: its run.json's config (flattened, NVIDIA's extra flags included),
    model sha256 and case count; without run.json, the record's own fields."""
    data: dict[str, Any] = {}
    folder = getattr(run, "log_dir", None)
    if folder is not None:
        try:
            data = json.loads((Path(folder) / RUN_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
    cfg = data.get("config") if isinstance(data, dict) else None
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if k == "extra" and isinstance(v, dict):
                out.update({str(x): y for x, y in v.items()})
            else:
                out[k] = v
    for k in RECORD_SETTINGS:
        if out.get(k) in (None, ""):
            v = getattr(run, k, None)
            out[k] = v if v not in ("",) else None
    if isinstance(data, dict):
        if data.get("model_sha256"):
            out["model sha256"] = str(data["model_sha256"])[:12]
        if isinstance(data.get("cases"), int):
            out["cases"] = data["cases"]
    return out


def differing_settings(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
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
