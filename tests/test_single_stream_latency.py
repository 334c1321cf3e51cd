"""SingleStream expected latency: why a run ended INVALID ("Min duration satisfied : NO") and how the
next one is sized from a measured run (core.harness.settings.expected_latency), with the real LoadGen."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.benchmark import RunConfig
from core.harness import settings as hs
from core.harness.logs import loadgen_settings
from core.harness.runner import run_benchmark
from core.jobs import CancelToken, LogLine
from core.workspace import Workspace
from tests.test_harness_fakes import FakeVolumeEngine, make_data

SUMMARY = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : {scenario}
Mode     : PerformanceOnly
90.0th percentile latency (ns) : 296000000
Result is : INVALID
  Min duration satisfied : NO
================================================
Additional Stats
================================================
Mean latency (ns)               : {mean}
"""


def fake_run(log_dir: Path, name: str, run_args: str, mean_ns: int, scenario: str = "SingleStream") -> None:
    d = log_dir / name
    d.mkdir(parents=True)
    (d / "user.conf").write_text(
        f"{hs.USER_CONF_HEADER}{run_args}\n3d-unet.{scenario}.target_latency = 572\n"
    )
    (d / "mlperf_log_summary.txt").write_text(SUMMARY.format(scenario=scenario, mean=mean_ns))


def test_expected_latency_sources(tmp_path: Path) -> None:
    cfg = RunConfig(scenario="SingleStream", backend="torch", precision="fp8", gpu_batch_size=8)
    args = "--benchmarks=3d-unet --scenarios=SingleStream --test_mode=PerformanceOnly --backend=torch"
    d = hs.expected_latency(cfg, tmp_path)
    assert (d.ms, d.source) == (572.434, "default")
    assert "572.434 ms is the torch default" in d.note and "faster than 286.217 ms" in d.note
    fake_run(
        tmp_path,
        "20261201-100000_SingleStream_PerformanceOnly",
        f"{args} --precision=fp8 --gpu_batch_size=8",
        151_000_000,
    )
    fake_run(
        tmp_path,
        "20261201-110000_SingleStream_PerformanceOnly",
        f"{args} --precision=fp8 --gpu_batch_size=8",
        160_000_000,
    )
    fake_run(
        tmp_path,
        "20261201-120000_SingleStream_PerformanceOnly",
        f"{args} --precision=fp16 --gpu_batch_size=8",
        99_000_000,
    )
    fake_run(
        tmp_path,
        "20261201-130000_Offline_PerformanceOnly",
        f"{args} --precision=fp8 --gpu_batch_size=8".replace("SingleStream", "Offline"),
        5_000_000,
        scenario="Offline",
    )
    m = hs.expected_latency(cfg, tmp_path)  # the newest run of the same backend/precision/batch
    assert (m.ms, m.source) == (240.0, "measured")
    assert "1.5 x the mean 160.000 ms measured by run 20261201-110000_SingleStream_PerformanceOnly" in m.note
    assert hs.expected_latency(cfg.with_(gpu_batch_size=4), tmp_path).source == "default"
    u = hs.expected_latency(cfg.with_(single_stream_expected_latency_ms=300), tmp_path)
    assert (u.ms, u.source, u.note) == (300.0, "user", "")
    assert hs.read_user_conf(tmp_path / "20261201-100000_SingleStream_PerformanceOnly" / "user.conf") == {
        "target_latency": "572"
    }


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
