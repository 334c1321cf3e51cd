"""Which runs go into a submission: one selection over run folders and their run.json.

Per scenario the best performance run (complete, VALID, not an audit run; compliant ones first, then
the highest samples/s for Offline or the lowest 90th-percentile latency for SingleStream), and, of the
same backend, precision, batch size and model, the newest accuracy run per accuracy target and the
newest TEST01 run (compliant ones first). In the closed division only compliant runs are eligible.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.compliance import Compliance, judge_run_dir
from core.submission.rules import benchmark_name

RUN_JSON = "run.json"  # core.harness.runner.RUN_JSON (not imported: it pulls in the harness)


def run_folders(log_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, run.json) of every run folder in ``log_dir`` with a readable run.json, oldest first."""
    out = []
    try:
        dirs = sorted(p for p in Path(log_dir).iterdir() if p.is_dir())
    except OSError:
        return []
    for d in dirs:
        try:
            data = json.loads((d / RUN_JSON).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append((d, data))
    return out


@dataclass(frozen=True)
class Candidate:
    path: Path
    run: Mapping[str, Any]  # run.json
    compliance: Compliance

    @property
    def name(self) -> str:
        return self.path.name

    def get(self, key: str, default: Any = None) -> Any:
        return self.run.get(key, default)

    @property
    def key(self) -> tuple[Any, ...]:
        """What must match between a result's performance, accuracy and TEST01 runs."""
        cfg = self.run.get("config") or {}
        return (
            self.run.get("backend"),
            self.run.get("precision"),
            cfg.get("gpu_batch_size"),
            self.run.get("model_sha256"),
        )

    @property
    def started(self) -> str:
        return str(self.run.get("started") or self.path.name)

    def score(self) -> float:
        """Larger is better: Offline samples/s, SingleStream -p90 latency."""
        result = self.run.get("result") or {}
        if self.run.get("scenario") == "SingleStream":
            p90 = (result.get("latency_ms") or {}).get("p90")
            return -float(p90) if isinstance(p90, (int, float)) else float("-inf")
        qps = result.get("samples_per_s")
        return float(qps) if isinstance(qps, (int, float)) else float("-inf")


@dataclass(frozen=True)
class Selected:
    scenario: str
    config_ver: str
    performance: Candidate
    accuracy: Candidate
    test01: Candidate | None

    @property
    def benchmark(self) -> str:
        return benchmark_name(self.config_ver)

    @property
    def runs(self) -> tuple[Candidate, ...]:
        return tuple(r for r in (self.performance, self.accuracy, self.test01) if r is not None)

    @property
    def compliant(self) -> bool:
        return self.test01 is not None and all(r.compliance.compliant is True for r in self.runs)


@dataclass(frozen=True)
class Selection:
    chosen: tuple[Selected, ...]
    skipped: tuple[str, ...]  # one line per scenario/target that could not be staged, and why


def _rank_best(c: Candidate) -> tuple[Any, ...]:
    return (c.compliance.compliant is True, c.score(), c.started)


def _rank_newest(c: Candidate) -> tuple[Any, ...]:
    return (c.compliance.compliant is True, c.started)


def select_runs(
    runs: Iterable[tuple[Path, Mapping[str, Any]]],
    *,
    compliant_only: bool = False,
    scenarios: Iterable[str] | None = None,
    judge: Callable[[Path], Compliance] = judge_run_dir,
) -> Selection:
    """Choose the runs to stage from (folder, run.json) pairs (see the module docstring)."""
    cands = []
    seen: set[str] = set()
    for path, data in runs:
        if data.get("status") != "complete":
            continue
        seen.add(str(data.get("scenario")))
        c = Candidate(Path(path), data, judge(Path(path)))
        if compliant_only and c.compliance.compliant is not True:
            continue
        cands.append(c)
    wanted = set(scenarios) if scenarios is not None else seen
    chosen: list[Selected] = []
    skipped: list[str] = []
    for scenario in sorted(wanted):
        perf = [
            c
            for c in cands
            if c.get("scenario") == scenario
            and c.get("test_mode") == "PerformanceOnly"
            and not c.get("audit_test")
            and (c.get("result") or {}).get("valid") is True
        ]
        if not perf:
            skipped.append(
                f"{scenario}: no complete VALID performance run" + (" that is compliant" * compliant_only)
            )
            continue
        accuracy_runs = [
            c
            for c in cands
            if c.get("scenario") == scenario
            and c.get("test_mode") == "AccuracyOnly"
            and not c.get("audit_test")
            and isinstance(c.get("accuracy"), dict)
        ]
        # the best performance run that has an accuracy run of the same backend/precision/batch/model
        paired = [c for c in perf if any(a.key == c.key for a in accuracy_runs)]
        if not paired:
            best = max(perf, key=_rank_best)
            skipped.append(f"{scenario}: no accuracy run of {best.name}'s backend/precision/batch/model")
            continue
        best = max(paired, key=_rank_best)
        accs = [a for a in accuracy_runs if a.key == best.key]
        t01 = [
            c
            for c in cands
            if c.get("scenario") == scenario and c.key == best.key and c.get("audit_test") == "TEST01"
        ]
        test01 = max(t01, key=_rank_newest) if t01 else None
        for config_ver in sorted({str(c.get("config_ver") or "default") for c in accs}):
            acc = max((c for c in accs if (c.get("config_ver") or "default") == config_ver), key=_rank_newest)
            chosen.append(Selected(scenario, config_ver, best, acc, test01))
            if test01 is None:
                skipped.append(
                    f"{scenario} {benchmark_name(config_ver)}: no TEST01 run (staged without TEST01)"
                )
    return Selection(tuple(chosen), tuple(skipped))
