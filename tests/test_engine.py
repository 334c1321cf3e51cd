"""core.engine: one rule for the calibration cache, one build-engine job for the CLI and the console."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import core.backends
from core import cli
from core.backends.base import Availability
from core.benchmark import CALIBRATED_PRECISIONS, PRECISIONS, RunConfig
from core.engine import build_engine, calibration_cache_for
from core.errors import BackendUnavailableError, ExitCode, MissingInputError
from core.harness.runner import load_engines
from core.jobs import NEVER, Phase, Progress
from core.workspace import Workspace


class FakeEngine:
    def __init__(self, precision: str) -> None:
        self.name = "fake-engine"
        self.precision = precision
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """Refuses a calibrated precision without a cache, as the torch backend does."""

    name = "torch"
    precisions = PRECISIONS

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.loads: list[dict[str, Any]] = []
        self.engines: list[FakeEngine] = []

    def availability(self) -> Availability:
        return Availability(True, "", ("cuda:0",)) if self.ok else Availability(False, "no CUDA device")

    def load(self, model_path: Path, **kw: Any) -> FakeEngine:
        self.loads.append({"model_path": model_path, **kw})
        if kw["precision"] in ("int8", "fp8") and kw.get("calibration_cache") is None:
            raise MissingInputError(f"precision {kw['precision']} needs a calibration cache")
        self.engines.append(FakeEngine(kw["precision"]))
        return self.engines[-1]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.resolve(tmp_path, env={})
    w.model_path.parent.mkdir(parents=True)
    w.model_path.write_bytes(b"onnx")
    w.calibration_cache_path.parent.mkdir(parents=True)
    w.calibration_cache_path.write_text("{}")
    return w


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()
    monkeypatch.setattr(core.backends, "get_backend", lambda name: fake)
    return fake


def test_one_rule_says_which_precisions_read_the_calibration_cache(ws: Workspace) -> None:
    assert CALIBRATED_PRECISIONS == ("int8", "fp8")
    assert [p for p in PRECISIONS if RunConfig(precision=p).needs_calibration_cache] == ["int8", "fp8"]
    assert calibration_cache_for(ws, RunConfig(precision="fp8")) == ws.calibration_cache_path
    assert calibration_cache_for(ws, RunConfig(precision="fp16")) is None
    ws.calibration_cache_path.unlink()
    assert calibration_cache_for(ws, RunConfig(precision="int8")) is None  # the backend says what it needs


@pytest.mark.parametrize("precision", ["fp8", "int8"])
def test_console_build_engine_passes_the_calibration_cache(
    ws: Workspace, backend: FakeBackend, precision: str
) -> None:
    """The console's Build engine failed for fp8 (the cache was passed for int8 only)."""
    from console.workers import RealJobs

    events: list[object] = []
    cfg = RunConfig(backend="torch", precision=precision, gpu_batch_size=4)
    RealJobs().build_engine(ws, cfg, events.append, NEVER)
    (load,) = backend.loads
    assert load["calibration_cache"] == ws.calibration_cache_path
    assert (load["precision"], load["batch_size"]) == (precision, 4)
    assert backend.engines[0].closed
    assert any(isinstance(e, Progress) and e.done == e.total == 1 for e in events)


def test_build_engine_job(ws: Workspace, backend: FakeBackend) -> None:
    events: list[object] = []
    built = build_engine(ws, RunConfig(backend="torch", precision="fp16"), events.append, NEVER)
    assert built.to_dict() == {
        "backend": "torch",
        "precision": "fp16",
        "batch_size": 1,
        "engine": "fake-engine",
    }
    (load,) = backend.loads
    assert load["calibration_cache"] is None and load["workspace"] == ws and load["device"] == 0
    assert events[0] == Phase("building", "torch fp16 batch 1")
    backend.ok = False
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        build_engine(ws, RunConfig(backend="torch"))
    ws.model_path.unlink()
    with pytest.raises(MissingInputError, match="model not found"):
        build_engine(ws, RunConfig(backend="torch"))


def test_cli_generate_engines_and_the_runner_follow_the_same_rule(
    ws: Workspace, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--workspace", str(ws.root), "run", "--action=generate_engines", "--backend=torch"]
    assert cli.main([*args, "--precision=fp8", "--gpu_batch_size=2"]) == ExitCode.OK
    assert capsys.readouterr().out == "engine ready: torch fp8 batch 2\n"
    assert cli.main([*args, "--precision=fp16"]) == ExitCode.OK
    assert [load["calibration_cache"] for load in backend.loads] == [ws.calibration_cache_path, None]

    backend.loads.clear()
    cfg = RunConfig(backend="torch", precision="fp8", gpus=2)
    engines = load_engines(backend, ws, cfg, [])
    assert len(engines) == 2 and [load["device"] for load in backend.loads] == [0, 1]
    assert {load["calibration_cache"] for load in backend.loads} == {ws.calibration_cache_path}
