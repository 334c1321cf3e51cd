"""Shared fakes for the harness tests: a tiny in-memory inference set and deterministic engines.

Images are the label volumes as float32, so a "perfect" engine can produce the label from the image
alone: as a VolumeEngine (``segment`` rounds the volume) or as a window engine (``infer`` returns
one-hot logits of the rounded window, which any positive window weighting argmaxes back to the label).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from core.harness.qsl import InMemoryData
from core.jobs import CancelToken

SHAPES = {
    "case_00001": (128, 128, 128),
    "case_00002": (128, 192, 128),
    "case_00003": (128, 128, 128),
}


def make_label(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((1, *shape), dtype=np.uint8)
    d, h, w = shape
    z0, y0, x0 = (int(rng.integers(10, s // 3)) for s in shape)
    lab[0, z0 : z0 + d // 2, y0 : y0 + h // 2, x0 : x0 + w // 2] = 1
    lab[0, z0 + 5 : z0 + 20, y0 + 5 : y0 + 25, x0 + 5 : x0 + 15] = 2
    return lab


def make_data(shapes: dict[str, tuple[int, int, int]] | None = None) -> InMemoryData:
    shapes = shapes or SHAPES
    labels = {c: make_label(s, i) for i, (c, s) in enumerate(shapes.items())}
    images = {c: lab.astype(np.float32) for c, lab in labels.items()}
    return InMemoryData(images, labels)


class FakeWindowEngine:
    """Engine with only ``infer``: one-hot logits of the rounded input window."""

    name = "fake"
    precision = "fp32"

    def __init__(self, batch_size: int = 2, nan: bool = False) -> None:
        self.batch_size = batch_size
        self.nan = nan
        self.calls = 0

    def infer(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        cls = np.clip(np.rint(windows[:, 0]), 0, 2).astype(np.int64)
        out = np.stack([(cls == c).astype(np.float32) for c in range(3)], axis=1)
        if self.nan:
            out[0, 0, 0, 0, 0] = np.nan
        return out

    def close(self) -> None:
        pass


class FakeVolumeEngine(FakeWindowEngine):
    """A VolumeEngine: ``segment`` returns the rounded volume after ``delay`` seconds.

    ``cancel_after``: cancel ``token`` when this many samples were segmented (deterministic cancel).
    ``nan_at`` / ``bad_shape_at``: return NaN floats / a wrong shape for that sample count.
    """

    def __init__(
        self,
        delay: float = 0.0,
        *,
        token: CancelToken | None = None,
        cancel_after: int | None = None,
        nan_at: int | None = None,
        bad_shape_at: int | None = None,
    ) -> None:
        super().__init__(batch_size=1)
        self.delay = delay
        self.token = token
        self.cancel_after = cancel_after
        self.nan_at = nan_at
        self.bad_shape_at = bad_shape_at
        self.segmented = 0
        self.closed = False
        self.got_cancel_token = False
        self._lock = threading.Lock()

    def segment(self, volume: np.ndarray, cancel: CancelToken | None = None) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        if cancel is not None:
            self.got_cancel_token = True
        with self._lock:
            self.segmented += 1
            n = self.segmented
        if self.token is not None and self.cancel_after is not None and n >= self.cancel_after:
            self.token.cancel()
        if self.nan_at is not None and n >= self.nan_at:
            out = volume[0].astype(np.float32).copy()
            out[0, 0, 0] = np.nan
            return out
        if self.bad_shape_at is not None and n >= self.bad_shape_at:
            return np.zeros((8, 8, 8), dtype=np.uint8)
        return np.rint(volume[0]).astype(np.uint8)

    def close(self) -> None:
        self.closed = True


# zero-argument factories for run_benchmark_isolated (imported by the child process)
def tiny_data() -> InMemoryData:
    return make_data()


def perfect_engine() -> FakeVolumeEngine:
    return FakeVolumeEngine(delay=0.02)


def slow_engine() -> FakeVolumeEngine:
    return FakeVolumeEngine(delay=0.3)


def nan_engine() -> FakeVolumeEngine:
    return FakeVolumeEngine(nan_at=1)


def stuck_engine() -> FakeVolumeEngine:
    return FakeVolumeEngine(delay=1000.0)  # ignores cancel: only a signal stops it
