"""Harness end to end with the real LoadGen (short runs) on a tiny in-memory inference set."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np
import pytest

from core.benchmark import RunConfig
from core.errors import BadInputError, Cancelled, MissingInputError, UsageError
from core.harness import settings as hs
from core.harness.events import RunEvents
from core.harness.logs import parse_detail, parse_summary
from core.harness.runner import RunCancelled, new_run_dir, run_benchmark
from core.history import Accuracy, list_runs, record_of
from core.jobs import CancelToken, LogLine
from core.workspace import Workspace
from tests.test_harness_fakes import SHAPES, FakeVolumeEngine, FakeWindowEngine, make_data

N = len(SHAPES)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path, env={})


def run(ws: Workspace, cfg: RunConfig, engine, *, cancel: CancelToken | None = None, events=None, data=None):
    lines: list[str] = []

    def report(ev: object) -> None:
        if isinstance(ev, LogLine):
            lines.append(ev.text)

    result = run_benchmark(
        ws, cfg, report, cancel or CancelToken(), events=events, engine=engine, data=data or make_data()
    )
    return result, lines


def run_json(path: Path) -> dict:
    return json.loads((path / "run.json").read_text())


# --- settings -------------------------------------------------------------------------------------


def test_user_conf_carries_targets_and_overrides(tmp_path: Path) -> None:
    cfg = RunConfig(
        scenario="Offline", offline_expected_qps=12.5, min_duration=0.25, min_query_count=7, max_duration=3
    )
    built = hs.build_settings(cfg, tmp_path)
    text = built.user_conf.read_text()
    assert "3d-unet.Offline.target_qps = 12.5" in text
    assert "3d-unet.Offline.min_duration = 250" in text
    assert "3d-unet.Offline.max_duration = 3000" in text
    assert "3d-unet.Offline.min_query_count = 7" in text
    s = built.settings
    assert (s.offline_expected_qps, s.min_duration_ms, s.max_duration_ms, s.min_query_count) == (
        12.5,
        250,
        3000,
        7,
    )
    assert s.sample_concatenate_permutation  # equal issue comes from the embedded mlperf.conf
    assert not built.audit_config.exists()


def test_single_stream_default_latency_per_backend(tmp_path: Path) -> None:
    built = hs.build_settings(RunConfig(scenario="SingleStream", backend="torch"), tmp_path)
    assert "3d-unet.SingleStream.target_latency = 572.434" in built.user_conf.read_text()
    assert built.settings.single_stream_expected_latency_ns == pytest.approx(572.434e6, rel=1e-6)
    assert built.settings.min_duration_ms == 600000  # untouched mlperf.conf default


def test_from_config_called_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class CountingSettings(lg.TestSettings):
        def FromConfig(self, *args, **kwargs):  # noqa: N802 - LoadGen's name
            calls.append(args)
            return super().FromConfig(*args, **kwargs)

    class LG:
        TestSettings = CountingSettings
        TestScenario = lg.TestScenario
        TestMode = lg.TestMode

    monkeypatch.setattr(hs, "_configured_in_process", False)
    built = hs.build_settings(RunConfig(scenario="Offline", test_mode="AccuracyOnly"), tmp_path, LG)
    assert built.fresh_process
    assert calls == [(str(tmp_path / "user.conf"), "3d-unet", "Offline")]
    # a second run in the same process reloads the embedded mlperf.conf first (conf_type 0)
    calls.clear()
    built = hs.build_settings(RunConfig(scenario="Offline", test_mode="AccuracyOnly"), tmp_path, LG)
    assert not built.fresh_process
    assert [c[3:] for c in calls] == [(0,), ()]
    assert (
        built.settings.sample_concatenate_permutation and built.settings.qsl_rng_seed == 2085463073848966840
    )


def test_audit_configs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    t01 = hs.build_settings(RunConfig(audit_test="TEST01"), tmp_path / "a")
    text = t01.audit_config.read_text()
    assert "*.*.mode = 2" in text
    assert "*.*.accuracy_log_rng_seed = 720381539243781796" in text
    assert "*.*.accuracy_log_sampling_target = 64" in text
    (tmp_path / "b").mkdir()
    t05 = hs.build_settings(RunConfig(audit_test="TEST05"), tmp_path / "b")
    assert t05.settings.test05
    assert t05.settings.test05_qsl_rng_seed == 7975553102935885558
    assert "*.*.test05 = 1" in t05.audit_config.read_text()
    with pytest.raises(UsageError, match="TEST04"):
        hs.build_settings(RunConfig(audit_test="TEST04"), tmp_path)
    with pytest.raises(UsageError, match="FindPeakPerformance"):
        hs.build_settings(RunConfig(test_mode="FindPeakPerformance"), tmp_path)


def test_unsupported_config_creates_no_run_folder(ws: Workspace) -> None:
    with pytest.raises(UsageError, match="TEST04"):
        run(ws, RunConfig(audit_test="TEST04"), FakeVolumeEngine())
    assert not ws.log_dir.exists()


def test_new_run_dir_never_reuses(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 29, 6, 0, 0)
    cfg = RunConfig(scenario="Offline", test_mode="AccuracyOnly")
    a = new_run_dir(tmp_path, cfg, now)
    b = new_run_dir(tmp_path, cfg, now)
    assert a.name == "20261129-060000_Offline_AccuracyOnly"
    assert b.name == "20261129-060000_Offline_AccuracyOnly-2"


# --- real LoadGen runs ----------------------------------------------------------------------------


def test_offline_performance_valid(ws: Workspace) -> None:
    cfg = RunConfig(scenario="Offline", offline_expected_qps=30, min_duration=0.1, min_query_count=N)
    events = RunEvents()
    result, lines = run(ws, cfg, FakeVolumeEngine(delay=0.04), events=events)
    assert result.status == "complete"
    assert result.valid is True and result.result_line == "Result is : VALID"
    assert result.min_duration_met and result.min_queries_met
    assert 0 < result.samples_per_s < 1 / 0.04 * 1.2
    assert result.latency_ms["p90"] >= 40.0  # at least one sample's work, ns -> ms
    assert result.accuracy is None
    assert "Result is : VALID" in lines
    assert result.samples_completed % N == 0 and result.samples_completed >= N  # equal issue: whole sets
    snap = events.snapshot()
    assert snap.completed == result.samples_completed == snap.total and snap.phase == "done"
    assert snap.windows_done == sum(1 if s[1] == 128 else 2 for s in SHAPES.values()) * (snap.completed // N)
    rj = run_json(result.log_dir)
    assert rj["status"] == "complete" and rj["result"]["valid"] is True and rj["ended"]
    detail = parse_detail(result.log_dir)
    assert detail.effective["min_duration_ms"] == 100
    assert detail.effective["sample_concatenate_permutation"] is True  # mlperf.conf applied
    if not result.fresh_process:  # an earlier test configured LoadGen in this process
        assert all("Multiple conf files" in e for e in detail.errors)


def test_offline_performance_invalid_is_parsed(ws: Workspace) -> None:
    cfg = RunConfig(scenario="Offline", offline_expected_qps=1, min_duration=1.0, min_query_count=N)
    result, _ = run(ws, cfg, FakeVolumeEngine())
    assert result.status == "complete"
    assert result.valid is False and result.result_line == "Result is : INVALID"
    assert result.min_duration_met is False
    assert any("expected QPS" in r for r in result.reasons)
    assert result.samples_per_s > 0


def test_single_stream_performance_valid(ws: Workspace) -> None:
    cfg = RunConfig(
        scenario="SingleStream", single_stream_expected_latency_ms=2, min_duration=0.1, min_query_count=64
    )
    events = RunEvents()
    result, _ = run(ws, cfg, FakeVolumeEngine(delay=0.002), events=events)
    assert result.valid is True, result.reasons
    assert result.early_stopping_met is True
    assert result.samples_completed == 102  # max(64, 2 * 0.1 s / 2 ms) up to whole permutations of 3
    assert events.snapshot().total == 102  # predicted before the run by expected_samples
    assert result.summary.target_percentile_latency_ns is not None
    assert result.samples_per_s > 0 and result.latency_ms["p50"] >= 2.0


@pytest.mark.parametrize("scenario", ["Offline", "SingleStream"])
def test_accuracy_run_scores_perfect_engine(ws: Workspace, scenario: str) -> None:
    cfg = RunConfig(scenario=scenario, test_mode="AccuracyOnly", single_stream_expected_latency_ms=5)
    events = RunEvents()
    result, lines = run(ws, cfg, FakeVolumeEngine(), events=events)
    assert result.status == "complete" and result.valid is None
    log = json.loads((result.log_dir / "mlperf_log_accuracy.json").read_text())
    assert len(log) == N and sorted(e["qsl_idx"] for e in log) == list(range(N))
    acc = result.accuracy
    assert acc is not None and acc.mean == 1.0 and acc.kidney == 1.0 and acc.tumor == 1.0
    assert acc.line == "Accuracy: mean = 1.00000, kidney = 1.0000, tumor = 1.0000"
    record = record_of(result.log_dir)  # the run.json the runner wrote, read as every screen reads it
    assert acc.passed and record.passes() and record.accuracy == Accuracy(1.0, 1.0, 1.0, acc.target, True)
    assert acc.line in lines
    assert (result.log_dir / "accuracy.txt").read_text().strip() == acc.line
    assert (result.log_dir / "summary.csv").read_text().splitlines()[-1].startswith("mean,1.0")
    snap = events.snapshot()
    assert sorted(d.case for d in snap.dice) == sorted(SHAPES) and all(d.composite == 1.0 for d in snap.dice)
    assert run_json(result.log_dir)["accuracy"]["mean"] == 1.0


@pytest.mark.slow  # builds the 27 preconditioned patches (~2 s) and stitches 3 windows
def test_accuracy_run_through_sliding_window(ws: Workspace) -> None:
    """A plain Engine (no segment) goes through core.sliding_window; perfect logits give DICE 1."""
    data = make_data({"case_00001": (128, 128, 128), "case_00002": (128, 128, 192)})
    engine = FakeWindowEngine(batch_size=2)
    result, _ = run(ws, RunConfig(test_mode="AccuracyOnly"), engine, data=data)
    assert result.accuracy is not None and result.accuracy.mean == 1.0
    assert engine.calls == 2  # 1 window + 2 windows, batch size 2


def test_separate_folders_and_history(ws: Workspace) -> None:
    cfg = RunConfig(scenario="Offline", test_mode="AccuracyOnly")
    r1, _ = run(ws, cfg, FakeVolumeEngine())
    r2, _ = run(
        ws, cfg.with_(scenario="SingleStream", single_stream_expected_latency_ms=5), FakeVolumeEngine()
    )
    assert r1.log_dir != r2.log_dir and r1.log_dir.parent == r2.log_dir.parent == ws.log_dir
    runs = list_runs(ws)
    assert [r.path for r in runs] == [r2.log_dir, r1.log_dir] or {r.path for r in runs} == {
        r1.log_dir,
        r2.log_dir,
    }
    assert all(r.status == "complete" and r.mean_dice == 1.0 for r in runs)
    assert {r.scenario for r in runs} == {"Offline", "SingleStream"}


def test_cancel_mid_run(ws: Workspace) -> None:
    token = CancelToken()
    engine = FakeVolumeEngine(token=token, cancel_after=2)
    cfg = RunConfig(scenario="SingleStream", single_stream_expected_latency_ms=50, min_duration=30)
    with pytest.raises(RunCancelled) as info:
        run(ws, cfg, engine, cancel=token)
    assert isinstance(info.value, Cancelled)
    result = info.value.result
    assert result.status == "cancelled"
    assert engine.segmented == 2  # nothing issued to the engine after the cancel
    assert engine.got_cancel_token  # VolumeEngine.segment(volume, cancel=...) gets the run's token
    assert run_json(result.log_dir)["status"] == "cancelled"
    assert [r.status for r in list_runs(ws)] == ["cancelled"]


def test_cancel_offline_accuracy(ws: Workspace) -> None:
    token = CancelToken()
    engine = FakeVolumeEngine(token=token, cancel_after=1)
    with pytest.raises(RunCancelled) as info:
        run(ws, RunConfig(scenario="Offline", test_mode="AccuracyOnly"), engine, cancel=token)
    assert engine.segmented == 1 and info.value.result.samples_completed == 1
    assert run_json(info.value.result.log_dir)["status"] == "cancelled"


def test_qsl_load_error_fails_the_run(ws: Workspace) -> None:
    data = make_data()

    def broken(case: str) -> np.ndarray:
        raise MissingInputError(f"{case} is not preprocessed", f"/x/{case}.npy")

    data.load_image = broken  # type: ignore[method-assign]
    with pytest.raises(MissingInputError, match=r"case_0000\d\.npy: case_0000\d is not preprocessed"):
        run(ws, RunConfig(test_mode="AccuracyOnly"), FakeVolumeEngine(), data=data)
    (folder,) = ws.log_dir.iterdir()
    assert run_json(folder)["status"] == "failed"


def test_label_mismatch_after_completion_fails_cleanly(ws: Workspace) -> None:
    """A failure after QuerySamplesComplete (live DICE) must not complete the query id twice."""
    data = make_data()
    labels = data._labels  # test surgery on the fake
    labels["case_00002"] = labels["case_00002"][:, :64]
    with pytest.raises(BadInputError, match=r"sample 1 \(case_00002\): label has shape \(1, 64, 192, 128\)"):
        run(ws, RunConfig(test_mode="AccuracyOnly"), FakeVolumeEngine(), data=data)
    (folder,) = ws.log_dir.iterdir()
    assert run_json(folder)["status"] == "failed"
    log = json.loads((folder / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in log) == list(range(N))  # every sample answered exactly once


@pytest.mark.slow  # writes and preprocesses one synthetic case (~10 s)
def test_accuracy_run_on_preprocessed_layout(ws: Workspace) -> None:
    """The real data path: core.synthetic -> core.preprocess -> PreprocessedData -> LoadGen -> score_log."""
    import hashlib

    from core import preprocess
    from core.synthetic import write_demo_dataset

    write_demo_dataset(ws.data_dir, n_inference=1, n_calibration=1)
    preprocess.run_preprocess(ws, sets=("inference",), jobs=1)
    case = preprocess.load_index(ws, "inference")["file_list"][0]
    image = preprocess.load_image(ws, "inference", case)
    label = preprocess.load_label(ws, "inference", case)
    key = hashlib.sha1(image.tobytes()).hexdigest()

    class Oracle(FakeVolumeEngine):
        def segment(self, volume: np.ndarray) -> np.ndarray:
            assert hashlib.sha1(volume.tobytes()).hexdigest() == key
            return label[0]

    result = run_benchmark(
        ws, RunConfig(test_mode="AccuracyOnly"), lambda e: None, CancelToken(), engine=Oracle()
    )
    assert result.accuracy is not None and result.accuracy.mean == 1.0
    assert [r.case for r in result.accuracy.rows] == [case]


@pytest.mark.parametrize(("kwargs", "match"), [({"nan_at": 2}, "NaN"), ({"bad_shape_at": 1}, "shape")])
def test_bad_engine_output_fails_the_run(ws: Workspace, kwargs: dict, match: str) -> None:
    cfg = RunConfig(scenario="Offline", test_mode="AccuracyOnly")
    with pytest.raises(BadInputError, match=rf"sample \d \(case_0000\d\).*{match}"):
        run(ws, cfg, FakeVolumeEngine(**kwargs))
    (folder,) = ws.log_dir.iterdir()
    rj = run_json(folder)
    assert rj["status"] == "failed" and match in rj["error"]


def test_finite_check_on_window_logits() -> None:
    from core.harness.sut import _FiniteEngine

    windows = np.zeros((1, 1, 128, 128, 128), np.float32)
    assert _FiniteEngine(FakeWindowEngine()).infer(windows).shape == (1, 3, 128, 128, 128)
    with pytest.raises(BadInputError, match="engine fake returned NaN/Inf logits"):
        _FiniteEngine(FakeWindowEngine(nan=True)).infer(windows)


@pytest.mark.slow  # through core.sliding_window (builds the 27 patches)
def test_nan_logits_fail_the_run(ws: Workspace) -> None:
    data = make_data({"case_00001": (128, 128, 128)})
    with pytest.raises(BadInputError, match=r"sample 0 \(case_00001\).*NaN"):
        run(ws, RunConfig(test_mode="AccuracyOnly"), FakeWindowEngine(nan=True), data=data)


def test_test01_audit_run_logs_sampled_accuracy(ws: Workspace) -> None:
    cfg = RunConfig(
        scenario="Offline", audit_test="TEST01", min_duration=0.05, offline_expected_qps=10, min_query_count=N
    )
    result, _ = run(ws, cfg, FakeVolumeEngine())
    detail = parse_detail(result.log_dir)
    assert detail.audit_config_found
    assert detail.effective["accuracy_log_rng_seed"] == 720381539243781796
    assert detail.effective["test_mode"] == "PerformanceOnly"
    assert json.loads((result.log_dir / "mlperf_log_accuracy.json").read_text())  # sampled responses
    assert result.accuracy is None and result.log_dir.name.endswith("_TEST01")


def test_test05_audit_run_uses_test05_seeds(ws: Workspace) -> None:
    cfg = RunConfig(
        scenario="Offline", audit_test="TEST05", min_duration=0.05, offline_expected_qps=10, min_query_count=N
    )
    result, _ = run(ws, cfg, FakeVolumeEngine())
    eff = parse_detail(result.log_dir).effective
    assert eff["qsl_rng_seed"] == hs.TEST05_QSL_RNG_SEED
    assert eff["sample_index_rng_seed"] == hs.TEST05_SAMPLE_INDEX_RNG_SEED
    assert eff["schedule_rng_seed"] == hs.TEST05_SCHEDULE_RNG_SEED


def test_log_parsers_tolerate_missing_and_truncated(tmp_path: Path) -> None:
    s = parse_summary(tmp_path / "nope.txt")
    assert not s.exists and s.valid is None and s.result_line == ""
    d = parse_detail(tmp_path)
    assert not d.exists and d.errors == ()
    (tmp_path / "mlperf_log_detail.txt").write_text(
        ':::MLLOG {"key": "result_validity", "value": "VALID"}\n:::MLLOG {"key": "x", "va'
    )
    d = parse_detail(tmp_path)
    assert d.exists and d.results["validity"] == "VALID" and d.bad_lines == 1
    (tmp_path / "mlperf_log_summary.txt").write_text(
        "Scenario : Offline\nResult is : VALID\nSamples per second: 1.5e"
    )
    s = parse_summary(tmp_path)
    assert s.valid is True and s.scenario == "Offline" and s.samples_per_s is None


def test_engine_output_check_accepts_leading_axis() -> None:
    from core.harness.sut import check_labels

    out = check_labels(np.ones((1, 4, 5, 6), dtype=np.int64), (4, 5, 6), "x")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 6) and out.flags.c_contiguous
    with pytest.raises(BadInputError, match="outside"):
        check_labels(np.full((4, 5, 6), 3), (4, 5, 6), "x")


def test_test01_accuracy_verification_on_audit_runs(ws: Workspace) -> None:
    """A TEST01 run's sampled responses against the accuracy run's (the score comparison is tested on
    fixed detail logs in tests/test_submission.py: throughput of two timed runs is no test input)."""
    from core.submission.test01 import verify_accuracy, verify_performance

    acc, _ = run(ws, RunConfig(scenario="Offline", test_mode="AccuracyOnly"), FakeVolumeEngine())
    fast = RunConfig(scenario="Offline", offline_expected_qps=30, min_duration=0.1, min_query_count=N)
    t01, _ = run(ws, fast.with_(audit_test="TEST01"), FakeVolumeEngine(delay=0.04))
    check = verify_accuracy(
        acc.log_dir / "mlperf_log_accuracy.json", t01.log_dir / "mlperf_log_accuracy.json"
    )
    assert check.passed and check.lines[-1] == "TEST PASS"
    assert "num_perf_log_data_mismatch = 0" in check.lines

    class Wrong(FakeVolumeEngine):  # a performance-mode SUT that answers differently
        def segment(self, volume: np.ndarray) -> np.ndarray:
            return np.zeros(volume.shape[1:], np.uint8)

    bad, _ = run(ws, fast.with_(audit_test="TEST01"), Wrong(delay=0.04))
    check = verify_accuracy(
        acc.log_dir / "mlperf_log_accuracy.json", bad.log_dir / "mlperf_log_accuracy.json"
    )
    assert not check.passed and check.lines[-1] == "TEST FAIL"
    invalid, _ = run(ws, fast.with_(min_duration=5.0), FakeVolumeEngine())
    failed = verify_performance(t01.log_dir, invalid.log_dir).lines[-1]
    assert failed == f"TEST FAIL: Invalid results in {invalid.log_dir / 'mlperf_log_detail.txt'}"


@pytest.mark.slow  # a tiny random model through the real ORT backend (a few 128^3 windows on CPU)
def test_accuracy_run_with_real_ort_backend(ws: Workspace, tiny_model_path: Path) -> None:
    """engine=None: the runner loads core.backends' ort engine from ws.model_path itself."""
    import hashlib
    import shutil

    ws.model_path.parent.mkdir(parents=True)
    shutil.copy(tiny_model_path, ws.model_path)
    data = make_data({"case_00001": (128, 128, 128), "case_00002": (128, 128, 192)})
    cfg = RunConfig(test_mode="AccuracyOnly", backend="ort", gpu_batch_size=2)
    result = run_benchmark(ws, cfg, lambda e: None, CancelToken(), data=data)
    assert result.status == "complete" and result.accuracy is not None
    assert [r.case for r in result.accuracy.rows] == ["case_00001", "case_00002"]
    assert 0.0 <= result.accuracy.mean <= 1.0
    rj = run_json(result.log_dir)
    assert rj["model_sha256"] == hashlib.sha256(ws.model_path.read_bytes()).hexdigest()
    assert rj["engine"]["name"] == "ort" and rj["engine"]["batch_size"] == 2
    assert rj["engine"]["volume_engine"] is False


def test_stray_audit_config_in_cwd_is_ignored(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LoadGen's default audit path is ./audit.config; a leftover one must not turn a run into an audit."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audit.config").write_text("*.*.mode = 1\n*.*.accuracy_log_sampling_target = 64\n")
    cfg = RunConfig(scenario="Offline", offline_expected_qps=30, min_duration=0.05, min_query_count=N)
    result, _ = run(ws, cfg, FakeVolumeEngine())
    detail = parse_detail(result.log_dir)
    assert not detail.audit_config_found
    assert detail.effective["test_mode"] == "PerformanceOnly"
    assert detail.effective["accuracy_log_sampling_target"] == 0
