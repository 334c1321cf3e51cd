"""What LoadGen sizes a performance run from (core.harness.settings.expected): why an H200 SingleStream run
next one is sized from a measured run (core.harness.settings.expected), with the real LoadGen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.benchmark import RunConfig
from core.harness import settings as hs
from core.harness.logs import loadgen_settings
from core.harness.runner import run_benchmark
from core.jobs import CancelToken, LogLine
from core.workspace import Workspace
from tests.test_harness_fakes import FakeVolumeEngine, make_data


def fake_run(log_dir: Path, name: str, cfg: RunConfig, *, mean_ms: float = 0.0, sps: float = 0.0,
             status: str = "complete", valid: bool | None = False) -> None:  # fmt: skip
    """A finished run folder as the runner leaves it (run.json with its RunConfig and LoadGen figures)."""
    d = log_dir / name
    d.mkdir(parents=True)
    result = {"valid": valid, "samples_per_s": sps, "latency_ms": {"mean": mean_ms, "p90": 2 * mean_ms}}
    doc = {"run_id": name, "status": status, "started": f"2026-12-01T{name[9:11]}:00:00+00:00",
           "config": cfg.to_dict(), "result": result}  # fmt: skip
    (d / "run.json").write_text(json.dumps(doc))


def test_expected_sources(tmp_path: Path) -> None:
    """user > the newest finished measurement of the same set-up (INVALID counts: it measured) > the
    backend default, each with a note saying where the figure came from."""
    cfg = RunConfig(scenario="SingleStream", backend="torch", precision="fp8", gpu_batch_size=8)
    d = hs.expected(cfg, tmp_path)
    assert (d.value, d.source) == (572.434, "default")
    assert "572.434 ms is the torch default" in d.note and "faster than 286.217 ms" in d.note
    fake_run(tmp_path, "20261201-100000_SingleStream_PerformanceOnly", cfg, mean_ms=151.0)
    fake_run(tmp_path, "20261201-110000_SingleStream_PerformanceOnly", cfg, mean_ms=160.0)
    fp16 = cfg.with_(precision="fp16")
    fake_run(tmp_path, "20261201-120000_SingleStream_PerformanceOnly", fp16, mean_ms=99.0)
    fake_run(tmp_path, "20261201-130000_SingleStream_PerformanceOnly", cfg, mean_ms=50.0, status="cancelled")
    offline = cfg.with_(scenario="Offline", extra={"gpu_inference_streams": "2"})
    fake_run(tmp_path, "20261201-140000_Offline_PerformanceOnly", offline, sps=20.0, valid=True)
    m = hs.expected(cfg, tmp_path)  # the newest finished run of the same set-up
    assert (m.value, m.source) == (240.0, "measured")
    assert "1.5 x the mean 160.000 ms measured by run 20261201-110000_SingleStream_PerformanceOnly" in m.note
    assert hs.expected(cfg.with_(gpu_batch_size=4), tmp_path).source == "default"
    u = hs.expected(cfg.with_(single_stream_expected_latency_ms=300), tmp_path)
    assert (u.value, u.source, u.note) == (300.0, "user", "")
    q = hs.expected(offline, tmp_path)  # Offline: 0.98 x the measured samples/s of the same engines
    assert (q.value, q.source) == (19.6, "measured") and "--offline_expected_qps overrides it" in q.note
    assert hs.expected(offline.with_(extra={}), tmp_path).source == "default"  # one engine: not measured
    assert "6.8 is the torch default" in hs.expected(offline.with_(extra={}), tmp_path).note


def test_single_stream_run_is_sized_from_the_measured_latency(tmp_path: Path) -> None:
    """The H200 case in miniature: an expected latency far above the real one makes LoadGen generate
    max(min_query_count, 2 * min_duration / expected) queries, which finish before min_duration; the next
    run, sized from the first one's measured mean, meets it."""
    ws = Workspace.resolve(tmp_path, env={})
    lines: list[str] = []

    def report(ev: object) -> None:
        if isinstance(ev, LogLine):
            lines.append(ev.text)

    slow_guess = RunConfig(scenario="SingleStream", single_stream_expected_latency_ms=200, min_duration=2.0)
    first = run_benchmark(
        ws, slow_guess, report, CancelToken(), engine=FakeVolumeEngine(delay=0.01), data=make_data()
    )
    assert first.valid is False and first.min_duration_met is False and first.min_queries_met is True
    assert first.samples_completed == 102  # max(100, 2 * 2 s / 0.2 s) up to whole permutations of 3
    assert not any("SingleStream expected latency" in line for line in lines), lines  # user-set: no note

    second = run_benchmark(
        ws,
        slow_guess.with_(single_stream_expected_latency_ms=None),
        report,
        CancelToken(),
        engine=FakeVolumeEngine(delay=0.01),
        data=make_data(),
    )
    note = next(line for line in lines if "SingleStream expected latency" in line)
    assert f"measured by run {first.log_dir.name}" in note
    expected = 1.5 * first.latency_ms["mean"]
    s = loadgen_settings(second.log_dir)
    assert s is not None and s.expected_latency_ms == pytest.approx(expected, rel=1e-3)
    assert second.valid is True and second.min_duration_met is True, second.reasons
    assert second.samples_completed > 102


def test_offline_run_is_sized_from_the_measured_throughput(tmp_path: Path) -> None:
    """Offline: one query of 1.1 x min_duration x expected QPS samples; a guess far below the real
    throughput finishes early (INVALID, min duration not met); the next run, sized from the first one's
    measured samples/s, meets it."""
    ws = Workspace.resolve(tmp_path, env={})
    lines: list[str] = []

    def report(ev: object) -> None:
        if isinstance(ev, LogLine):
            lines.append(ev.text)

    low_guess = RunConfig(offline_expected_qps=5, min_duration=2.0, min_query_count=1)
    first = run_benchmark(
        ws, low_guess, report, CancelToken(), engine=FakeVolumeEngine(delay=0.05), data=make_data()
    )
    assert first.valid is False and first.min_duration_met is False
    second = run_benchmark(
        ws, low_guess.with_(offline_expected_qps=None), report, CancelToken(),
        engine=FakeVolumeEngine(delay=0.05), data=make_data(),
    )  # fmt: skip
    note = next(line for line in lines if "Offline expected QPS" in line)
    assert f"measured by run {first.log_dir.name}" in note
    s = loadgen_settings(second.log_dir)
    assert s is not None and s.target_qps == pytest.approx(0.98 * first.samples_per_s, rel=1e-3)
    assert second.valid is True and second.min_duration_met is True, second.reasons
