"""The backend interface. The sliding window and the harness drive any backend through it and never
know which one they drive.

A backend turns a model file into an :class:`Engine`. An engine maps a batch of 128^3 windows to
3-class logits. A backend that can run the whole sliding window on its device (the GPU backends)
also implements :meth:`Engine.segment`, which must use ``core.sliding_window``'s grid, patches and
tie rule; the harness prefers it when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from core.workspace import Workspace


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and if not, why (shown by `unet3d status` and the console)."""

    ok: bool
    reason: str = ""  # empty when ok; else one line, e.g. "tensorrt is not installed"
    devices: tuple[str, ...] = ()  # e.g. ("cpu",) or ("cuda:0 NVIDIA H200",)


@runtime_checkable
class Engine(Protocol):
    name: str  # backend name
    precision: str
    batch_size: int  # most windows per infer call

    def infer(self, windows: np.ndarray) -> np.ndarray:
        """(n, 1, 128, 128, 128) float32 (or int8 linear, if ``input_dtype`` says so) ->
        (n, 3, 128, 128, 128) float32 logits; n <= batch_size."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class VolumeEngine(Engine, Protocol):
    """An engine that runs the whole sliding window on its device."""

    def segment(self, volume: np.ndarray) -> np.ndarray:
        """(1, D, H, W) preprocessed volume -> (D, H, W) uint8 labels, per core.sliding_window."""
        ...


class Backend(Protocol):
    name: str
    precisions: tuple[str, ...]

    def availability(self) -> Availability: ...

    def load(
        self,
        model_path: Path,
        *,
        precision: str = "fp32",
        batch_size: int = 1,
        device: int = 0,
        calibration_cache: Path | None = None,
        workspace: Workspace | None = None,  # where a backend caches engines (tensorrt)
    ) -> Engine: ...
