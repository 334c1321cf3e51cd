"""Tests of the lead's small core modules: run config, workspace resolution, jobs, run events."""

from __future__ import annotations

import threading

import pytest

from core.benchmark import INPUT_AMAX, STRIDE, RunConfig, target_dice
from core.errors import Cancelled, ExitCode, MissingInputError, UsageError
from core.harness.events import RunEvents
from core.jobs import CancelToken
from core.workspace import Workspace


def test_constants_follow_the_rules() -> None:
    assert STRIDE == 64
    assert pytest.approx(2.63979, abs=1e-5) == INPUT_AMAX
    assert target_dice("default") == pytest.approx(0.853083, abs=1e-6)
    assert target_dice("high_accuracy") == pytest.approx(0.8608383, abs=1e-7)
    # relative to the FP32 value of the model in use, not only the official one
    assert target_dice("high_accuracy", 0.76142) == pytest.approx(0.76065858, abs=1e-8)


def test_run_config_renders_nvidia_run_args() -> None:
    cfg = RunConfig(
        scenario="SingleStream",
        config_ver="high_accuracy",
        test_mode="AccuracyOnly",
        backend="torch",
        precision="int8",
        gpu_batch_size=8,
        min_duration=60.0,
    )
    assert cfg.run_args() == (
        "--benchmarks=3d-unet --scenarios=SingleStream --config_ver=high_accuracy "
        "--test_mode=AccuracyOnly --backend=torch --precision=int8 --gpu_batch_size=8 --min_duration=60"
    )
    assert cfg.make_command().startswith("make run RUN_ARGS='--benchmarks=3d-unet ")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "change", [{"scenario": "Server"}, {"precision": "int4"}, {"gpu_batch_size": 0}, {"audit_test": "TEST99"}]
)
def test_run_config_rejects_bad_values(change: dict[str, object]) -> None:
    with pytest.raises(UsageError) as err:
        RunConfig().with_(**change).validate()
    assert err.value.exit_code == ExitCode.USAGE
    assert "\n" not in str(err.value)


def test_workspace_priority_flag_over_env_over_default(tmp_path) -> None:
    env = {"DATA_DIR": str(tmp_path / "envdata"), "LOG_DIR": str(tmp_path / "envlogs")}
    ws = Workspace.resolve(tmp_path, log_dir=tmp_path / "flaglogs", env=env)
    assert ws.data_dir == tmp_path / "envdata"
    assert ws.log_dir == tmp_path / "flaglogs"
    assert ws.preprocessed_dir == tmp_path / "build" / "preprocessed_data" / "KiTS19"
    assert ws.model_path == tmp_path / "build" / "models" / "3d-unet-kits19" / "3dUNetKiTS19.onnx"
    assert Workspace.resolve(env={"UNET3D_WORKSPACE": str(tmp_path)}).root == tmp_path


def test_errors_name_the_file_on_one_line(tmp_path) -> None:
    err = MissingInputError("not found\n(second line)", tmp_path / "x.nii.gz")
    assert str(err) == f"{tmp_path / 'x.nii.gz'}: not found (second line)"
    assert err.exit_code == 3


def test_cancel_token_wraps_a_threading_event() -> None:
    ev = threading.Event()
    token = CancelToken(ev)
    token.check()
    ev.set()
    assert token.cancelled
    with pytest.raises(Cancelled):
        token.check()


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_run_events_qps_and_percentiles_with_a_fake_clock() -> None:
    clock = FakeClock()
    ev = RunEvents(total=10, clock=clock, window_s=10.0)
    ev.phase("running")
    for i in range(10):
        issued = clock.t
        clock.t += 0.5  # one sample every 0.5 s, latency 0.5 s
        ev.sample_done(i, f"case_{i:05d}", issued, windows=4)
    snap = ev.snapshot()
    assert snap.completed == 10 and snap.windows_done == 40
    assert snap.qps == pytest.approx(2.0)  # 10 samples in the last 5 s of a 5 s run
    assert snap.windows_per_s == pytest.approx(8.0)
    assert snap.latency_ms["p90"] == pytest.approx(500.0)
    ev.dice("case_00000", 0.9, 0.5)
    assert ev.snapshot().dice[0].composite == pytest.approx(0.7)


def test_run_events_memory_is_bounded() -> None:
    clock = FakeClock()
    ev = RunEvents(clock=clock, maxlen=64)
    for i in range(10_000):
        ev.sample_done(i, "c", clock.t, 1)
        ev.log(f"line {i}")
        ev.tick()
    snap = ev.snapshot()
    assert snap.completed == 10_000
    assert len(ev._samples) == 64 and len(snap.log_tail) == 200 and len(snap.qps_history) == 600
