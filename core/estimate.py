"""How long a job will take, said before it starts (the console asks before a long or overwriting one).

From the workspace: its inference cases and their sliding windows (the preprocessed index), and the
pace of an earlier finished performance run of the same backend and precision in this workspace.
LoadGen sizes a performance run from min_duration (mlperf.conf: 600 s) and the expected rate, so a
performance run takes at least min_duration whatever the pace. Nothing here is measured: an estimate
says what it is based on, and "unknown" when there is nothing to base it on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from core.benchmark import RunConfig
from core.history import RunRecord
from core.workspace import Workspace

MLPERF_MIN_DURATION_S = 600.0  # mlperf.conf: *.Offline.min_duration, *.SingleStream.min_duration (ms)
OFFLINE_MIN_QUERY_COUNT = 43  # mlperf.conf: 3d-unet.Offline.min_query_count (samples of its one query)
SINGLE_STREAM_MIN_QUERY_COUNT = 100  # LoadGen's TestSettings default (mlperf.conf does not set it)
OFFLINE_SLACK = 1.1  # LoadGen issues 1.1 x min_duration x target_qps samples in Offline
SINGLE_STREAM_SLACK = 2.0  # ... and 2 x min_duration / target_latency queries in 3d-unet SingleStream
# `unet3d demo` on an empty workspace, 2-core VM (synthesize 14 s, model 0 s, preprocess 16 s, the
# accuracy run 35 s): the console's demo job, which skips the performance run
DEMO_FRESH_S = 65.0


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: no basis for a figure
    basis: str  # what it rests on, one line

    def text(self) -> str:
        if self.seconds is None:
            return f"duration unknown ({self.basis})"
        return f"about {fmt_duration(self.seconds)} ({self.basis})"


def fmt_duration(seconds: float) -> str:
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{max(1, round(s / 5) * 5 if s >= 10 else round(s))} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


def workload(ws: Workspace) -> tuple[int, int | None]:
    """(inference cases, their sliding windows); windows None until the set is preprocessed."""
    from core.cases import case_lists

    try:
        cases = list(case_lists(ws).inference)
    except Exception:  # an unreadable case list: the status screen names it
        return 0, None
    try:
        from core.preprocess import load_index
        from core.sliding_window import window_count

        shapes = load_index(ws, "inference").get("image_shape") or {}
        windows = sum(window_count(shapes[c][-3:]) for c in cases)  # [C,] D, H, W
    except Exception:  # not preprocessed (yet), or an index without these cases
        return len(cases), None
    return len(cases), windows


def pace(runs: Iterable[RunRecord], cfg: RunConfig) -> tuple[float, RunRecord] | None:
    """(samples/s, run) of the newest finished VALID performance run with cfg's backend and precision
    (the same scenario preferred): how fast this machine ran these cases."""
    found = [
        r
        for r in runs
        if r.backend == cfg.backend
        and r.precision == cfg.precision
        and r.samples_per_s is not None  # a complete VALID run's figure only
        and r.samples_per_s > 0
    ]
    if not found:
        return None
    best = max(found, key=lambda r: (r.scenario == cfg.scenario, r.started))
    assert best.samples_per_s is not None
    return best.samples_per_s, best


def run_estimate(ws: Workspace, cfg: RunConfig, runs: Iterable[RunRecord] = ()) -> Estimate:
    """How long ``cfg`` will run on ``ws``, from its workload and the pace of an earlier run (``runs``:
    the workspace's run records)."""
    from core.harness.settings import expected

    cases, windows = workload(ws)
    size = f"{cases} cases" + (f", {windows:,} windows" if windows is not None else "")
    found = pace(runs, cfg)
    rate = f"{found[0]:.3g} samples/s of the last {cfg.backend}/{cfg.precision} run here" if found else ""
    if cfg.test_mode == "AccuracyOnly":
        if not found or not cases:
            why = f"no earlier {cfg.backend}/{cfg.precision} performance run here to time it"
            return Estimate(None, f"{size}; {why}" if cases else "no case list")
        return Estimate(cases / found[0], f"{size} once at {rate}")
    min_d = cfg.min_duration if cfg.min_duration is not None else MLPERF_MIN_DURATION_S
    sized = expected(cfg, ws.log_dir).value  # what LoadGen will size the run from
    if cfg.scenario == "Offline":
        mqc = cfg.min_query_count if cfg.min_query_count is not None else OFFLINE_MIN_QUERY_COUNT
        samples = max(mqc, math.floor(OFFLINE_SLACK * min_d * sized))
    else:
        mqc = cfg.min_query_count if cfg.min_query_count is not None else SINGLE_STREAM_MIN_QUERY_COUNT
        samples = max(mqc, math.floor(SINGLE_STREAM_SLACK * min_d / (sized / 1000.0)))
        if cases:
            samples += cases - samples % cases  # whole permutations of the loaded samples
    if cfg.max_query_count:
        samples = min(samples, cfg.max_query_count)
    limit = f"min_duration {fmt_duration(min_d)}"
    if not found:
        why = f"no earlier {cfg.backend}/{cfg.precision} run here"
        return Estimate(min_d, f"at least LoadGen's {limit}; {why}")
    seconds = samples / found[0]
    if cfg.scenario == "SingleStream":
        seconds = max(seconds, min_d)  # queries follow one another until min_duration has passed
    if cfg.max_duration:
        seconds = min(seconds, cfg.max_duration)
    return Estimate(seconds, f"{samples:,} samples at {rate}; {limit}")


def demo_estimate(ws: Workspace, runs: Iterable[RunRecord] = ()) -> Estimate:
    """The console's demo job: phantoms, model and preprocessing (reused when present), then one
    AccuracyOnly run on ort/fp32."""
    from core.demo import N_INFERENCE

    _cases, windows = workload(ws)
    if windows is None:
        built = f"{N_INFERENCE} synthetic cases built and run on ort/fp32"
        return Estimate(DEMO_FRESH_S, f"{built}; 2-core machine")
    run = run_estimate(ws, RunConfig(scenario="Offline", test_mode="AccuracyOnly"), runs)
    if run.seconds is None:
        return Estimate(None, "data reused; " + run.basis)
    return Estimate(run.seconds, "data reused, an AccuracyOnly run: " + run.basis)


__all__ = ["Estimate", "demo_estimate", "fmt_duration", "pace", "run_estimate", "workload"]
