"""Which runs go into a submission: one selection rule over the workspace's RunRecords (core.history).

Per scenario the best performance run (complete, VALID, not an audit run; compliant ones first, then
the highest samples/s for Offline or the lowest 90th-percentile latency for SingleStream), and, of the
same backend, precision, batch size and model, the newest accuracy run per accuracy target and the
newest TEST01 run (compliant ones first). In the closed division only compliant runs are eligible. Each
run's compliance is its record's own verdict (``RunRecord.compliance``); a folder without a run.json of
this tool (no RunConfig) is never staged. `unet3d submission stage` and `verify-test01` both choose here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.history import RunRecord
from core.submission.rules import benchmark_name

PERFORMANCE, ACCURACY, TEST01 = "performance", "accuracy", "TEST01"


def role(r: RunRecord) -> str | None:
    """What a run can be in a submission: a complete VALID PerformanceOnly run without an audit test
    (``performance``), a complete scored AccuracyOnly run (``accuracy``), a complete TEST01 run
    (``TEST01``); None for anything else (unfinished, INVALID, TEST05, another tool's folder)."""
    if not r.complete or r.config is None:
        return None
    if r.audit_test == "TEST01":
        return TEST01
    if r.audit_test:
        return None
    if r.test_mode == "PerformanceOnly" and r.valid is True:
        return PERFORMANCE
    if r.test_mode == "AccuracyOnly" and r.accuracy is not None:
        return ACCURACY
    return None


def setup_key(r: RunRecord) -> tuple[Any, ...]:
    """What must match between a result's performance, accuracy and TEST01 runs."""
    batch = r.config.gpu_batch_size if r.config is not None else None
    return (r.backend, r.precision, batch, r.model_sha256)


def score(r: RunRecord) -> float:
    """Larger is better: Offline samples/s, SingleStream -p90 latency (figures of a VALID run only)."""
    if r.scenario == "SingleStream":
        p90 = r.latency_ms.get("p90")
        return -p90 if p90 is not None else float("-inf")
    return r.samples_per_s if r.samples_per_s is not None else float("-inf")


@dataclass(frozen=True)
class Selected:
    scenario: str
    config_ver: str
    performance: RunRecord
    accuracy: RunRecord
    test01: RunRecord | None

    @property
    def benchmark(self) -> str:
        return benchmark_name(self.config_ver)

    @property
    def runs(self) -> tuple[RunRecord, ...]:
        return tuple(r for r in (self.performance, self.accuracy, self.test01) if r is not None)

    def roles(self) -> tuple[tuple[str, RunRecord | None], ...]:
        return ((PERFORMANCE, self.performance), (ACCURACY, self.accuracy), (TEST01, self.test01))

    @property
    def compliant(self) -> bool:
        return self.test01 is not None and all(r.compliance.compliant is True for r in self.runs)


@dataclass(frozen=True)
class Selection:
    chosen: tuple[Selected, ...]
    skipped: tuple[str, ...]  # one line per scenario/target that could not be staged, and why

    def for_scenario(self, scenario: str) -> Selected | None:
        """The scenario's first result (3d-unet-99 before 3d-unet-99.9), or None."""
        return next((s for s in self.chosen if s.scenario == scenario), None)


def _rank_best(r: RunRecord) -> tuple[Any, ...]:
    return (r.compliance.compliant is True, score(r), r.started, r.run_id)


def _rank_newest(r: RunRecord) -> tuple[Any, ...]:
    return (r.compliance.compliant is True, r.started, r.run_id)


def select_runs(
    runs: Iterable[RunRecord], *, compliant_only: bool = False, scenarios: Iterable[str] | None = None
) -> Selection:
    """Choose the runs to stage from the workspace's records (see the module docstring)."""
    cands: list[tuple[str, RunRecord]] = []
    seen: set[str] = set()
    for r in runs:
        kind = role(r)
        if kind is None:
            continue
        seen.add(str(r.scenario))
        if compliant_only and r.compliance.compliant is not True:
            continue
        cands.append((kind, r))
    wanted = set(scenarios) if scenarios is not None else seen
    chosen: list[Selected] = []
    skipped: list[str] = []
    for scenario in sorted(wanted):
        mine = [(k, r) for k, r in cands if r.scenario == scenario]
        perf = [r for k, r in mine if k == PERFORMANCE]
        if not perf:
            skipped.append(
                f"{scenario}: no complete VALID performance run" + (" that is compliant" * compliant_only)
            )
            continue
        accuracy_runs = [r for k, r in mine if k == ACCURACY]
        # the best performance run that has an accuracy run of the same backend/precision/batch/model
        paired = [p for p in perf if any(setup_key(a) == setup_key(p) for a in accuracy_runs)]
        if not paired:
            best = max(perf, key=_rank_best)
            skipped.append(f"{scenario}: no accuracy run of {best.run_id}'s backend/precision/batch/model")
            continue
        best = max(paired, key=_rank_best)
        accs = [a for a in accuracy_runs if setup_key(a) == setup_key(best)]
        t01 = [r for k, r in mine if k == TEST01 and setup_key(r) == setup_key(best)]
        test01 = max(t01, key=_rank_newest) if t01 else None
        for config_ver in sorted({a.config_ver or "default" for a in accs}):
            acc = max((a for a in accs if (a.config_ver or "default") == config_ver), key=_rank_newest)
            chosen.append(Selected(scenario, config_ver, best, acc, test01))
            if test01 is None:
                skipped.append(
                    f"{scenario} {benchmark_name(config_ver)}: no TEST01 run (staged without TEST01)"
                )
    return Selection(tuple(chosen), tuple(skipped))
