"""Multi-GPU runs on CPU: N simulated devices (sleep-based fake engines), one SUT worker each, all
pulling samples from one shared queue. The real LoadGen drives short runs (as in test_harness.py);
the exactly-once checks also use a recording stand-in for LoadGen, where every QuerySamplesComplete
can be counted."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.benchmark import RunConfig
from core.errors import BadInputError, MissingInputError, UsageError
from core.harness.events import RunEvents
from core.harness.isolated import run_benchmark_isolated
from core.harness.qsl import KitsQSL
from core.harness.runner import RunCancelled, run_benchmark
from core.harness.sut import KitsSUT
from core.jobs import CancelToken, LogLine
from core.workspace import Workspace
from tests.test_harness_fakes import FakeVolumeEngine, make_data

# 8 cases of one 128^3 window each: enough samples that every one of 4 workers gets some
CASES = {f"case_{i:05d}": (128, 128, 128) for i in range(1, 9)}
N = len(CASES)


class SimDevice(FakeVolumeEngine):
    """A fake engine on simulated device ``sim:<i>``: a fixed sleep per sample (the GIL is released,
    as a GPU engine waiting on its device releases it). ``fail_at``: raise on its n-th sample.
    ``erode``: drop the label's last ``erode`` z-slices (an imperfect but deterministic engine).
    ``barrier``: the first sample of each device waits there until every device holds one, so "every
    device got work" is deterministic (one worker draining the queue alone would break the barrier).
    ``starts``: monotonic start time of each sample."""

    def __init__(self, index: int, delay: float = 0.0, *, fail_at: int | None = None, erode: int = 0, **kw):
        super().__init__(delay, **kw)
        self.device = f"sim:{index}"
        self.fail_at = fail_at
        self.erode = erode
        self.cases_seen: list[int] = []  # volume ids, to check that data is shared, not copied
        self.thread_names: set[str] = set()
        self.barrier: threading.Barrier | None = None
        self.starts: list[float] = []

    def segment(self, volume: np.ndarray, cancel: CancelToken | None = None) -> np.ndarray:
        self.starts.append(time.monotonic())
        if self.barrier is not None and len(self.starts) == 1:
            self.barrier.wait(timeout=20)
        self.thread_names.add(threading.current_thread().name)
        self.cases_seen.append(id(volume))
        if self.fail_at is not None and self.segmented + 1 >= self.fail_at:
            self.segmented += 1
            raise RuntimeError("boom")
        out = super().segment(volume, cancel)
        if self.erode:
            out = out.copy()
            out[-self.erode :] = 0
        return out


def sim_devices(n: int, delay: float = 0.0, *, barrier: bool = False, **kw) -> list[SimDevice]:
    engines = [SimDevice(i, delay, **kw) for i in range(n)]
    if barrier:
        together(engines)
    return engines


def together(engines: list[SimDevice]) -> None:
    b = threading.Barrier(len(engines))
    for e in engines:
        e.barrier = b


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path, env={})


def run(ws: Workspace, cfg: RunConfig, engines, *, cancel=None, events=None, data=None):
    lines: list[str] = []

    def report(ev: object) -> None:
        if isinstance(ev, LogLine):
            lines.append(ev.text)

    result = run_benchmark(
        ws, cfg, report, cancel or CancelToken(), events=events, engine=engines, data=data or make_data(CASES)
    )
    return result, lines


def accuracy_log(folder: Path) -> list[dict]:
    return json.loads((folder / "mlperf_log_accuracy.json").read_text())


# --- a recording stand-in for LoadGen: exactly-once bookkeeping ---------------------------------------


class RecordingLG:
    """The LoadGen calls KitsSUT/KitsQSL make, recording every completed query id."""

    def __init__(self) -> None:
        self.completed: list[tuple[int, int]] = []  # (query id, response size)
        self._lock = threading.Lock()

    def ConstructSUT(self, issue, flush):  # noqa: N802 - LoadGen's names
        return object()

    def DestroySUT(self, handle) -> None:  # noqa: N802
        pass

    def ConstructQSL(self, total, perf, load, unload):  # noqa: N802
        return object()

    def DestroyQSL(self, handle) -> None:  # noqa: N802
        pass

    @staticmethod
    def QuerySampleResponse(qid: int, ptr: int, size: int):  # noqa: N802
        return SimpleNamespace(id=qid, size=size)

    def QuerySamplesComplete(self, responses) -> None:  # noqa: N802
        with self._lock:
            self.completed.extend((r.id, r.size) for r in responses)


def sut_run(engines, n_samples: int, *, cancel: CancelToken | None = None, stop_when=None):
    """Issue ``n_samples`` (one Offline query over the 8 cases, repeated) to a KitsSUT over ``engines``
    and wait until every query id is answered. Returns (sut, lg, events)."""
    lg = RecordingLG()
    events = RunEvents()
    qsl = KitsQSL(make_data(CASES), lg)
    qsl.load_samples(list(range(N)))
    sut = KitsSUT(qsl, engines, events=events, cancel=cancel or CancelToken(), lg=lg)
    samples = [SimpleNamespace(id=1000 + k, index=k % N) for k in range(n_samples)]
    sut.issue_queries(samples)
    deadline = time.monotonic() + 30
    while len(lg.completed) < n_samples and time.monotonic() < deadline:
        if stop_when is not None:
            stop_when(sut)
        time.sleep(0.005)
    sut.close()
    qsl.destroy()
    return sut, lg, events


@pytest.mark.parametrize("n_dev", [1, 2, 4])
def test_each_sample_answered_once_and_every_device_works(n_dev: int) -> None:
    engines = sim_devices(n_dev, 0.01, barrier=True)
    sut, lg, events = sut_run(engines, 32)
    ids = sorted(q for q, _ in lg.completed)
    assert ids == list(range(1000, 1032))  # every query id exactly once
    assert all(size == 128**3 for _, size in lg.completed)  # real label volumes, none empty
    assert sut.completed == 32 and sut.emptied == 0 and sut.error is None
    assert sut.devices == [f"sim:{i}" for i in range(n_dev)]
    assert sum(sut.per_device.values()) == 32
    assert all(n > 0 for n in sut.per_device.values()), sut.per_device  # every device got work
    assert [e.segmented for e in engines] == list(sut.per_device.values())
    names = set().union(*(e.thread_names for e in engines))
    assert len(names) == n_dev and all(len(e.thread_names) == 1 for e in engines)  # one worker each
    snap = events.snapshot()
    assert {d.device: d.completed for d in snap.devices} == sut.per_device
    assert snap.completed == 32


def test_devices_share_the_qsl_volumes() -> None:
    engines = sim_devices(3, 0.005)
    sut_run(engines, 24)
    seen = {v for e in engines for v in e.cases_seen}
    assert len(seen) == N  # 8 host volumes, read by all workers; nothing copied per device


def test_faster_device_takes_more_samples() -> None:
    fast, slow = SimDevice(0, 0.002), SimDevice(1, 0.1)
    together([fast, slow])
    sut, lg, _ = sut_run([fast, slow], 40)
    assert len(lg.completed) == 40
    assert sut.per_device["sim:0"] > sut.per_device["sim:1"] >= 1  # a shared queue, not a fixed split


class TimedToken(CancelToken):
    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def cancel(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
        super().cancel()


def test_cancel_answers_every_outstanding_sample_once() -> None:
    token = TimedToken()
    engines = sim_devices(3, 0.01, barrier=True)
    engines[0].token, engines[0].cancel_after = token, 3  # device 0 cancels in its 3rd sample
    sut, lg, events = sut_run(engines, 64, cancel=token)
    ids = [q for q, _ in lg.completed]
    assert sorted(ids) == list(range(1000, 1064))  # all answered, none twice
    real = sum(1 for _, size in lg.completed if size)
    assert real == sut.completed and sut.completed + sut.emptied == 64 and sut.emptied > 0
    assert sut.cancelled and sut.error is None
    assert token.at is not None
    for e in engines:  # no device starts a sample after the cancel, but the one that raced it
        assert sum(1 for t in e.starts if t > token.at) <= 1, e.device
    assert sum(e.segmented for e in engines) == sut.completed  # in-flight samples still answered
    assert "cancel requested" in " ".join(events.snapshot().log_tail)


def test_one_failing_device_stops_the_run_and_is_named() -> None:
    engines = [SimDevice(0, 0.01), SimDevice(1, 0.01, fail_at=2), SimDevice(2, 0.01)]
    sut, lg, _ = sut_run(engines, 48)
    assert sorted(q for q, _ in lg.completed) == list(range(1000, 1048))
    assert isinstance(sut.error, BadInputError)
    assert "on device sim:1: engine fake failed: RuntimeError: boom" in str(sut.error)
    assert str(sut.error).startswith("sample ")
    assert sut.completed + sut.emptied == 48 and sut.completed < 48


# --- real LoadGen --------------------------------------------------------------------------------


def test_offline_throughput_scales_with_devices(ws: Workspace) -> None:
    """A fixed 30 ms per sample on 1, 2 and 4 devices: samples/s rises with the device count (ordering
    only; bench/bench_multigpu.py prints the figures)."""
    sps = {}
    for n_dev in (1, 2, 4):
        cfg = RunConfig(
            scenario="Offline", offline_expected_qps=30 * n_dev, min_duration=0.05, min_query_count=3 * N
        )
        events = RunEvents()
        result, lines = run(ws, cfg, sim_devices(n_dev, 0.03, barrier=True), events=events)
        assert result.status == "complete" and result.samples_completed % N == 0
        assert len(result.per_device) == n_dev and all(v > 0 for v in result.per_device.values())
        assert sum(result.per_device.values()) == result.samples_completed
        assert {d.device: d.completed for d in events.snapshot().devices} == result.per_device
        rj = json.loads((result.log_dir / "run.json").read_text())
        assert rj["engine"]["devices"] == [f"sim:{i}" for i in range(n_dev)]
        assert rj["result"]["per_device"] == result.per_device
        if n_dev > 1:
            assert any(line.startswith("samples per device: sim:0 ") for line in lines)
        sps[n_dev] = result.samples_per_s
    assert sps[1] < sps[2] < sps[4], sps


def test_accuracy_on_three_devices_equals_one_device(ws: Workspace) -> None:
    data = make_data(CASES)
    r1, _ = run(ws, RunConfig(test_mode="AccuracyOnly"), sim_devices(1, erode=70), data=data)
    r3, _ = run(ws, RunConfig(test_mode="AccuracyOnly"), sim_devices(3, 0.01, erode=70), data=data)
    a1, a3 = r1.accuracy, r3.accuracy
    assert a1 is not None and a3 is not None
    assert 0.0 < a1.mean < 1.0  # an imperfect engine, so equality means something
    assert [(r.case, r.kidney, r.tumor) for r in a1.rows] == [(r.case, r.kidney, r.tumor) for r in a3.rows]
    assert a1.mean == a3.mean and a1.line == a3.line
    assert sorted(e["qsl_idx"] for e in accuracy_log(r3.log_dir)) == list(range(N))
    assert len(r3.per_device) == 3 and sum(r3.per_device.values()) == N


def test_single_stream_on_two_devices_warns(ws: Workspace) -> None:
    cfg = RunConfig(
        scenario="SingleStream", single_stream_expected_latency_ms=5, min_duration=0.05, min_query_count=2 * N
    )
    result, lines = run(ws, cfg, sim_devices(2, 0.002))
    assert result.status == "complete" and sum(result.per_device.values()) == result.samples_completed
    assert any(line.startswith("SingleStream keeps one sample in flight: 2 engines") for line in lines)


def test_failing_device_fails_the_run_cleanly(ws: Workspace) -> None:
    engines = [SimDevice(0, 0.01), SimDevice(1, 0.01), SimDevice(2, 0.01, fail_at=1)]
    with pytest.raises(
        BadInputError, match=r"sample \d \(case_0000\d\) on device sim:2: .*RuntimeError: boom"
    ):
        run(ws, RunConfig(test_mode="AccuracyOnly"), engines)
    (folder,) = ws.log_dir.iterdir()
    rj = json.loads((folder / "run.json").read_text())
    assert rj["status"] == "failed" and "sim:2" in rj["error"]
    assert sorted(e["qsl_idx"] for e in accuracy_log(folder)) == list(range(N))  # each answered once


def test_cancel_mid_run_on_three_devices(ws: Workspace) -> None:
    token = CancelToken()
    engines = sim_devices(3, 0.01)
    engines[1].token, engines[1].cancel_after = token, 2
    # the other two devices are slow, so device 1 reaches its 2nd sample while most are still queued
    # (with equal speeds a loaded machine could finish all N before the cancel lands)
    engines[0].delay = engines[2].delay = 0.3
    cfg = RunConfig(scenario="Offline", test_mode="AccuracyOnly")
    with pytest.raises(RunCancelled) as info:
        run(ws, cfg, engines, cancel=token)
    result = info.value.result
    assert result.status == "cancelled" and result.samples_completed < N
    assert sum(e.segmented for e in engines) <= result.samples_completed + 3
    assert json.loads((result.log_dir / "run.json").read_text())["status"] == "cancelled"


# --- the runner loads cfg.gpus engines -------------------------------------------------------------


class SimBackend:
    name = "sim"
    precisions = ("fp32",)

    def __init__(self, n_devices: int) -> None:
        self.n_devices = n_devices
        self.loaded: list[SimDevice] = []
        self.load_calls: list[dict] = []

    def availability(self):
        from core.backends.base import Availability

        return Availability(True, "", tuple(f"sim:{i} simulated" for i in range(self.n_devices)))

    def load(
        self, model_path, *, precision="fp32", batch_size=1, device=0, calibration_cache=None, workspace=None
    ):
        self.load_calls.append(
            {"device": device, "precision": precision, "batch_size": batch_size, "cache": calibration_cache}
        )
        eng = SimDevice(int(device), 0.005)
        self.loaded.append(eng)
        return eng


@pytest.fixture
def sim_backend(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> SimBackend:
    import core.backends

    backend = SimBackend(3)
    monkeypatch.setattr(core.backends, "get_backend", lambda name: backend)
    ws.model_path.parent.mkdir(parents=True)
    ws.model_path.write_bytes(b"not read by the simulated backend")
    return backend


def test_runner_loads_one_engine_per_device(ws: Workspace, sim_backend: SimBackend) -> None:
    cfg = RunConfig(test_mode="AccuracyOnly", gpus=3, gpu_batch_size=4)
    result = run_benchmark(ws, cfg, lambda e: None, CancelToken(), data=make_data(CASES))
    assert [c["device"] for c in sim_backend.load_calls] == [0, 1, 2]
    assert all(c["batch_size"] == 4 for c in sim_backend.load_calls)
    assert all(e.closed for e in sim_backend.loaded)  # the runner closes what it loaded
    for e in sim_backend.loaded:  # one warm-up window on each device before LoadGen's run
        assert e.segmented == result.per_device[e.device] + 1
        assert e.cases_seen[0] not in e.cases_seen[1:]  # not a QSL volume
    assert result.accuracy is not None and result.accuracy.mean == 1.0
    assert set(result.per_device) == {"sim:0", "sim:1", "sim:2"}
    rj = json.loads((result.log_dir / "run.json").read_text())
    assert rj["gpus"] == 3 and "--gpus=3" in rj["run_args"]


def test_runner_loads_inference_streams_engines_per_device(ws: Workspace, sim_backend: SimBackend) -> None:
    """NVIDIA's --gpu_inference_streams=2 on 2 devices: 4 engines, two per device, all working, and
    the run folder records the flag."""
    cfg = RunConfig(test_mode="AccuracyOnly", gpus=2, extra={"gpu_inference_streams": "2"})
    result = run_benchmark(ws, cfg, lambda e: None, CancelToken(), data=make_data(CASES))
    assert sorted(c["device"] for c in sim_backend.load_calls) == [0, 0, 1, 1]
    assert len(result.per_device) == 4 and sum(result.per_device.values()) == len(CASES)
    assert result.accuracy is not None and result.accuracy.mean == 1.0
    rj = json.loads((result.log_dir / "run.json").read_text())
    assert rj["config"]["extra"] == {"gpu_inference_streams": "2"}


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_gpu_inference_streams_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match=rf"^--gpu_inference_streams={value} must be a whole number"):
        RunConfig(extra={"gpu_inference_streams": value}).validate()


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_runner_passes_the_calibration_cache_to_every_device(
    ws: Workspace, sim_backend: SimBackend, precision: str
) -> None:
    ws.calibration_cache_path.parent.mkdir(parents=True, exist_ok=True)
    ws.calibration_cache_path.write_text("{}")
    cfg = RunConfig(test_mode="AccuracyOnly", gpus=2, precision=precision)
    run_benchmark(ws, cfg, lambda e: None, CancelToken(), data=make_data(CASES))
    assert [c["cache"] for c in sim_backend.load_calls] == [ws.calibration_cache_path] * 2
    assert all(c["precision"] == precision for c in sim_backend.load_calls)


def test_runner_refuses_more_gpus_than_devices(ws: Workspace, sim_backend: SimBackend) -> None:
    with pytest.raises(UsageError, match=r"^--gpus=4 but backend ort sees 3 device\(s\): sim:0 simulated, "):
        run_benchmark(ws, RunConfig(gpus=4), lambda e: None, CancelToken(), data=make_data(CASES))
    assert not ws.log_dir.exists()  # refused before a run folder exists
    assert sim_backend.load_calls == []


def test_runner_refuses_gpus_on_the_cpu_backend(ws: Workspace) -> None:
    ws.model_path.parent.mkdir(parents=True)
    ws.model_path.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"--gpus=2 but backend ort sees 1 device\(s\)"):
        run_benchmark(ws, RunConfig(gpus=2), lambda e: None, CancelToken(), data=make_data(CASES))


def test_a_failed_warmup_fails_the_run_before_loadgen(ws: Workspace, sim_backend: SimBackend) -> None:
    real_load = sim_backend.load

    def load(model_path, **kw):
        eng = real_load(model_path, **kw)
        if kw["device"] == 1:
            eng.fail_at = 1
        return eng

    sim_backend.load = load  # type: ignore[method-assign]
    with pytest.raises(
        BadInputError, match=r"^warm-up on device sim:1: engine fake failed: RuntimeError: boom"
    ):
        run_benchmark(ws, RunConfig(gpus=3), lambda e: None, CancelToken(), data=make_data(CASES))
    assert [e.segmented for e in sim_backend.loaded] == [1, 1, 1]  # warm-ups only, no sample issued
    assert all(e.closed for e in sim_backend.loaded)
    (folder,) = ws.log_dir.iterdir()
    assert json.loads((folder / "run.json").read_text())["status"] == "failed"


def test_a_failed_load_closes_the_engines_already_loaded(ws: Workspace, sim_backend: SimBackend) -> None:
    real_load = sim_backend.load

    def load(model_path, **kw):
        if kw["device"] == 2:
            raise MissingInputError("no memory left on sim:2")
        return real_load(model_path, **kw)

    sim_backend.load = load  # type: ignore[method-assign]
    with pytest.raises(MissingInputError, match="sim:2"):
        run_benchmark(ws, RunConfig(gpus=3), lambda e: None, CancelToken(), data=make_data(CASES))
    assert len(sim_backend.loaded) == 2 and all(e.closed for e in sim_backend.loaded)
    (folder,) = ws.log_dir.iterdir()
    assert json.loads((folder / "run.json").read_text())["status"] == "failed"


# --- events ----------------------------------------------------------------------------------------


def test_events_per_device_completed_and_qps() -> None:
    clock = SimpleNamespace(t=100.0)
    ev = RunEvents(clock=lambda: clock.t, window_s=10.0)
    ev.phase("running")
    for i in range(12):
        issued = clock.t
        clock.t += 0.25  # 4 samples/s in all: device a takes 2 of every 3
        ev.sample_done(i, "c", issued, windows=2, device="a" if i % 3 else "b")
    ev.sample_done(99, "c", clock.t, windows=1)  # no device: counted in the total only
    snap = ev.snapshot()
    assert snap.completed == 13
    assert [(d.device, d.completed) for d in snap.devices] == [("b", 4), ("a", 8)]
    by = {d.device: d for d in snap.devices}
    assert by["a"].qps == pytest.approx(8 / 3.0) and by["b"].qps == pytest.approx(4 / 3.0)
    assert by["a"].windows_per_s == pytest.approx(16 / 3.0)
    assert RunEvents().snapshot().devices == ()


# --- through the child process (the CLI and console path) ---------------------------------------------


def three_devices() -> list[SimDevice]:
    """Factory for run_benchmark_isolated (imported by the child process)."""
    return sim_devices(3, 0.01)


def tiny_data():
    return make_data(CASES)


@pytest.mark.slow  # a child process (~5 s)
def test_isolated_run_relays_devices(ws: Workspace) -> None:
    events = RunEvents()
    result = run_benchmark_isolated(
        ws,
        RunConfig(test_mode="AccuracyOnly"),
        lambda e: None,
        CancelToken(),
        events,
        engine_factory="tests.test_multigpu:three_devices",
        data_factory="tests.test_multigpu:tiny_data",
    )
    assert result.status == "complete" and sum(result.per_device.values()) == N
    snap = events.snapshot()
    assert {d.device: d.completed for d in snap.devices} == result.per_device


def test_engines_on_one_device_get_distinct_labels() -> None:
    from core.harness.sut import unique_labels

    assert unique_labels(["cuda:0", "cuda:1", "cuda:0", "cuda:0"]) == [
        "cuda:0",
        "cuda:1",
        "cuda:0/1",
        "cuda:0/2",
    ]
    engines = sim_devices(2, 0.005, barrier=True)
    engines[1].device = "sim:0"  # two sample streams on one device
    sut, lg, _ = sut_run(engines, 16)
    assert sut.devices == ["sim:0", "sim:0/1"] and len(lg.completed) == 16
    assert all(n > 0 for n in sut.per_device.values())


@pytest.mark.slow  # three short LoadGen runs (~3 s)
def test_bench_multigpu_simulated() -> None:
    """The bench script as its documentation runs it (tests import nothing from bench/)."""
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_multigpu.py"
    args = ["--simulate", "--gpus", "2", "--sample-ms", "5", "--cases", "4"]
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("|")}
    assert {"plain loop (no LoadGen)", "harness, 1 device(s)", "harness, 2 device(s)"} <= set(rows)
    assert "sim:0=" in rows["harness, 2 device(s)"] and "sim:1=" in rows["harness, 2 device(s)"]


# --- on real GPUs (skipped without CUDA): the torch backend through the N-device path ---------------


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


gpu = pytest.mark.skipif(_cuda_count() < 1, reason="needs a CUDA device")
two_gpus = pytest.mark.skipif(_cuda_count() < 2, reason="needs 2 CUDA devices")


class ResponseLG(RecordingLG):
    """Also keeps each response's bytes (copied while LoadGen's call would hold the buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[int, bytes] = {}

    @staticmethod
    def QuerySampleResponse(qid: int, ptr: int, size: int):  # noqa: N802
        return SimpleNamespace(id=qid, ptr=ptr, size=size)

    def QuerySamplesComplete(self, responses) -> None:  # noqa: N802
        import ctypes

        super().QuerySamplesComplete(responses)
        with self._lock:
            for r in responses:
                self.data[r.id] = ctypes.string_at(r.ptr, r.size) if r.size else b""


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    import onnx

    from core.model import TINY_WIDTHS, build_random_model

    path = tmp_path / "tiny.onnx"
    onnx.save(build_random_model(TINY_WIDTHS, seed=3), str(path))
    return path


def _labels_through_sut(engines: list, n_samples: int) -> tuple[KitsSUT, dict[int, np.ndarray]]:
    lg = ResponseLG()
    data = make_data(CASES)
    qsl = KitsQSL(data, lg)
    qsl.load_samples(list(range(N)))
    sut = KitsSUT(qsl, engines, lg=lg)
    sut.issue_queries([SimpleNamespace(id=k, index=k % N) for k in range(n_samples)])
    deadline = time.monotonic() + 300
    while len(lg.completed) < n_samples and time.monotonic() < deadline:
        time.sleep(0.01)
    sut.close()
    qsl.destroy()
    assert sut.error is None, sut.error
    return sut, {k: np.frombuffer(v, np.uint8) for k, v in lg.data.items()}


def _reference_labels(engine) -> list[np.ndarray]:
    data = make_data(CASES)
    return [np.ascontiguousarray(engine.segment(data.load_image(c))).ravel() for c in data.cases()]


@gpu
def test_gpu_two_engines_on_one_device_match_the_plain_path(tiny_onnx: Path) -> None:
    """Two sample streams on cuda:0 (the N-device path on one GPU) give the plain path's labels."""
    from core.backends.torch import BACKEND

    engines = [BACKEND.load(tiny_onnx, precision="fp16", batch_size=2, device=0) for _ in range(2)]
    try:
        ref = _reference_labels(engines[0])
        sut, got = _labels_through_sut(engines, 2 * N)
        assert sut.devices == ["cuda:0", "cuda:0/1"] and all(n > 0 for n in sut.per_device.values())
        for k, labels in got.items():  # equal up to argmax ties (the second engine's own autotuning)
            assert np.mean(labels != ref[k % N]) < 1e-4, f"sample {k}"
    finally:
        for e in engines:
            e.close()


@two_gpus
def test_gpu_one_engine_per_device_matches_device_zero(tiny_onnx: Path) -> None:
    """load(device=i) builds on cuda:i (own buffers, patches, CUDA graph); every device's labels
    match cuda:0's (bitwise, up to argmax ties from a different autotuned kernel: < 1e-4 of voxels)."""
    import torch

    from core.backends.torch import BACKEND

    n_dev = torch.cuda.device_count()
    engines = [BACKEND.load(tiny_onnx, precision="fp16", batch_size=2, device=i) for i in range(n_dev)]
    try:
        assert [str(e.device) for e in engines] == [f"cuda:{i}" for i in range(n_dev)]
        for i, e in enumerate(engines):
            assert all(p.device.index == i for p in e.net.parameters())
            assert e.patches().device.index == i
        ref = _reference_labels(engines[0])
        sut, got = _labels_through_sut(engines, 4 * N)
        assert all(n > 0 for n in sut.per_device.values()), sut.per_device
        for k, labels in got.items():
            assert np.mean(labels != ref[k % N]) < 1e-4, f"sample {k}"
    finally:
        for e in engines:
            e.close()


@gpu
def test_gpu_runner_accuracy_with_all_devices_equals_one(ws: Workspace, tiny_onnx: Path) -> None:
    """`--gpus N` through the runner (the backend loads device=0..N-1): same DICE as `--gpus 1`."""
    import shutil

    ws.model_path.parent.mkdir(parents=True)
    shutil.copy(tiny_onnx, ws.model_path)
    cfg = RunConfig(test_mode="AccuracyOnly", backend="torch", precision="fp16", gpu_batch_size=2)
    data = make_data(CASES)
    one = run_benchmark(ws, cfg, lambda e: None, CancelToken(), data=data)
    every = run_benchmark(ws, cfg.with_(gpus=_cuda_count()), lambda e: None, CancelToken(), data=data)
    assert one.accuracy is not None and every.accuracy is not None
    assert every.accuracy.mean == pytest.approx(one.accuracy.mean, abs=1e-4)
    assert len(every.per_device) == _cuda_count() and sum(every.per_device.values()) == N


# --- the console's live monitor (Textual Pilot) ------------------------------------------------------


def _device_snapshot():
    from core.harness.events import DeviceStat, RunSnapshot

    return RunSnapshot(
        t=20.0,
        started=10.0,
        completed=23,
        total=86,
        windows_done=1500,
        qps=4.2,
        windows_per_s=270.0,
        latency_ms={},
        qps_history=(),
        dice=(),
        log_tail=(),
        phase="running",
        devices=(DeviceStat("cuda:0", 12, 2.1, 135.0), DeviceStat("cuda:1", 11, 2.05, 131.6)),
    )


async def test_monitor_shows_per_device_completed_and_qps(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("textual")
    from textual.widgets import Static

    from console.app import UnetConsole
    from console.fake import FakeJobs
    from core import config as core_config

    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "no-config"])
    (tmp_path / "ws").mkdir()  # an existing workspace: no "create it?" question first
    app = UnetConsole(Workspace.resolve(tmp_path / "ws", env={}), jobs=FakeJobs(), status_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        screen = app.screen
        screen.paused = True  # only this snapshot, not the app's (empty) live feed
        screen.show_snapshot(_device_snapshot())
        await pilot.pause()
        rates = str(screen.query_one("#rates", Static).render())
        assert "cuda:0 12 done 2.10/s   cuda:1 11 done 2.05/s" in rates
        one = _device_snapshot()
        import dataclasses

        screen.show_snapshot(dataclasses.replace(one, devices=one.devices[:1]))
        await pilot.pause()
        assert "cuda:0" not in str(screen.query_one("#rates", Static).render())  # one device: no line


def test_child_relay_keeps_devices() -> None:
    """The run's child process relays each sample with its device (core.harness.isolated): the parent's
    RunEvents, which the console's monitor reads, counts them per device."""
    from core.harness.events import RunEvents
    from core.harness.isolated import _RelayEvents, relay

    sent: list[dict] = []
    child = _RelayEvents(lambda msg: sent.append(json.loads(json.dumps(msg))))
    for i, dev in enumerate(("cuda:0", "cuda:1", "cuda:0")):
        child.sample_done(i, f"case_{i:05d}", 0.0, windows=64, device=dev)
    parent = RunEvents()
    for msg in sent:
        relay(msg, parent, lambda _e: None)
    assert [(d.device, d.completed) for d in parent.snapshot().devices] == [("cuda:0", 2), ("cuda:1", 1)]
