"""Loading and building engines: the one place that turns a RunConfig into ``Backend.load`` calls.

The runner loads its engines here, `unet3d run --action=generate_engines` and the console's "Build
engine" call :func:`build_engine` (TensorRT builds and caches its plan on the first load; torch and
ort load in memory, which checks the model, the precision and the calibration cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.benchmark import RunConfig
from core.errors import BackendUnavailableError, MissingInputError
from core.jobs import NEVER, CancelToken, Phase, Progress, Reporter, null_reporter
from core.workspace import Workspace


def calibration_cache_for(ws: Workspace, cfg: RunConfig) -> Path | None:
    """The calibration cache ``cfg``'s engine reads: the workspace's cache when the precision takes its
    ranges from one (RunConfig.needs_calibration_cache) and the file exists; else None, and the backend
    says what it misses (torch refuses int8/fp8 without it, TensorRT calibrates int8 itself)."""
    if not cfg.needs_calibration_cache:
        return None
    path = ws.calibration_cache_path
    return path if path.is_file() else None


def load_engine(backend: Any, ws: Workspace, cfg: RunConfig, device: int = 0) -> Any:
    """One engine of ``cfg`` on ``device`` (``backend`` from core.backends.get_backend)."""
    return backend.load(
        ws.model_path,
        precision=cfg.precision,
        batch_size=cfg.gpu_batch_size,
        device=device,
        calibration_cache=calibration_cache_for(ws, cfg),
        workspace=ws,
    )


@dataclass(frozen=True)
class BuiltEngine:
    backend: str
    precision: str
    batch_size: int
    engine: str  # the engine's own name (e.g. "torch-fused", "tensorrt")

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "engine": self.engine,
        }


def build_engine(
    ws: Workspace, cfg: RunConfig, report: Reporter = null_reporter, cancel: CancelToken = NEVER
) -> BuiltEngine:
    """Load (TensorRT: build and cache) the engine of ``cfg`` once and close it: a job, so a missing model,
    an unavailable backend or a missing calibration cache is one clear error before any run."""
    from core.backends import get_backend

    if not ws.model_path.is_file():
        raise MissingInputError(
            "model not found (run `unet3d download --model` or set MODEL_DIR)", ws.model_path
        )
    what = f"{cfg.backend} {cfg.precision} batch {cfg.gpu_batch_size}"
    report(Phase("building", what))
    backend = get_backend(cfg.backend)
    avail = backend.availability()
    if not avail.ok:
        raise BackendUnavailableError(f"backend {cfg.backend} is unavailable: {avail.reason}")
    cancel.check()
    engine = load_engine(backend, ws, cfg)
    try:
        name = str(getattr(engine, "name", cfg.backend))
    finally:
        engine.close()
    report(Progress("engine", 1, 1, unit="engine", item=what))
    return BuiltEngine(cfg.backend, cfg.precision, cfg.gpu_batch_size, name)
