"""The system under test: runs each issued sample through the backend on a worker thread and
completes it with the uint8 label volume (REF ``base_SUT.py``).

LoadGen calls ``issue_queries`` on its own thread; we only enqueue there. The worker runs
``engine.segment(volume)`` for a :class:`VolumeEngine`, else ``core.sliding_window.segment``, then
calls ``QuerySamplesComplete`` with the label bytes (the buffer stays referenced until the call
returns: LoadGen copies it in accuracy mode). After a cancel or a failure every outstanding and
later sample is completed with an empty response, so LoadGen always returns.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from typing import Any

import numpy as np

from core.accuracy import dice
from core.backends.base import VolumeEngine
from core.errors import BadInputError, Cancelled, UnetError
from core.harness.events import RunEvents
from core.harness.qsl import KitsQSL
from core.harness.settings import loadgen
from core.jobs import NEVER, CancelToken, LogLine, Progress, Reporter, null_reporter


class _FiniteEngine:
    """Wraps an Engine so NaN/Inf logits stop the run instead of turning into silent labels."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.name = getattr(engine, "name", "?")
        self.precision = getattr(engine, "precision", "?")
        self.batch_size = int(getattr(engine, "batch_size", 1))

    def infer(self, windows: np.ndarray) -> np.ndarray:
        out = np.asarray(self._engine.infer(windows))
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise BadInputError(f"engine {self.name} returned NaN/Inf logits")
        return out

    def close(self) -> None:  # the runner closes the real engine
        pass


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def check_labels(out: Any, shape: tuple[int, int, int], engine_name: str) -> np.ndarray:
    """Engine output -> C-contiguous (D, H, W) uint8 with values 0..2, or BadInputError."""
    arr = np.asarray(out)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape) != tuple(shape):
        raise BadInputError(f"engine {engine_name} returned shape {tuple(np.shape(out))}, expected {shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise BadInputError(f"engine {engine_name} returned NaN/Inf labels")
        if not np.array_equal(arr, np.round(arr)):
            raise BadInputError(f"engine {engine_name} returned non-integer labels")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise BadInputError(f"engine {engine_name} returned labels of dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 2):
        raise BadInputError(f"engine {engine_name} returned labels outside 0..2")
    return np.ascontiguousarray(arr, dtype=np.uint8)


class KitsSUT:
    def __init__(
        self,
        qsl: KitsQSL,
        engine: Any,
        *,
        batch_size: int | None = None,
        patches: np.ndarray | None = None,
        events: RunEvents | None = None,
        cancel: CancelToken = NEVER,
        report: Reporter = null_reporter,
        accuracy: bool = False,
        lg: Any | None = None,
    ) -> None:
        lg = loadgen(lg)
        self._lg = lg
        self.qsl = qsl
        self.engine = engine
        self.engine_name = str(getattr(engine, "name", type(engine).__name__))
        self.batch_size = int(batch_size or getattr(engine, "batch_size", 1) or 1)
        self.patches = patches
        self.events = events
        self.cancel = cancel
        self.report = report
        self.accuracy = accuracy
        self.error: BaseException | None = None  # first failure; the runner re-raises it
        self.cancelled = False
        self.issued = 0  # samples LoadGen has issued so far
        self.completed = 0  # samples answered with a real result
        self.emptied = 0  # samples answered with an empty response (cancel/failure)
        self.dice: dict[str, tuple[float, float]] = {}
        self._answered = False  # the current sample was completed (worker thread only)
        self._segment_takes_cancel = _accepts(getattr(engine, "segment", None), "cancel")
        self._clock = events.clock if events is not None else time.monotonic
        # (LoadGen's issue time, [(query id, sample index), ...]); None stops the worker
        self._queue: queue.Queue[tuple[float, list[tuple[int, int]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="unet3d-sut", daemon=True)
        self._thread.start()
        self.handle = lg.ConstructSUT(self.issue_queries, self.flush_queries)

    # --- LoadGen callbacks (LoadGen's thread): enqueue only, never raise ---
    def issue_queries(self, samples: Any) -> None:
        batch = [(int(s.id), int(s.index)) for s in samples]
        t = self._clock()
        try:
            if self.issued == 0 and self.events is not None:
                self.events.phase("running")  # QPS counts from here, not from the sample loading
            self.issued += len(batch)
            if self.events is not None and self.events.total < self.issued:
                self.events.total = self.issued  # Offline: the query size; SingleStream: past the estimate
        finally:
            self._queue.put((t, batch))

    def flush_queries(self) -> None:
        pass

    # --- worker ---
    @property
    def stopping(self) -> bool:
        return self.error is not None or self.cancelled or self.cancel.cancelled

    def _complete_empty(self, ids: list[int]) -> None:
        if ids:
            self._lg.QuerySamplesComplete([self._lg.QuerySampleResponse(i, 0, 0) for i in ids])
            self.emptied += len(ids)

    def _work(self) -> None:
        while True:
            got = self._queue.get()
            if got is None:
                return
            issued, item = got
            for pos, (qid, idx) in enumerate(item):
                if self.stopping:
                    if self.cancel.cancelled and not self.cancelled:
                        self._mark_cancelled()
                    self._complete_empty([q for q, _ in item[pos:]])
                    break
                self._answered = False
                try:
                    self._one(qid, idx, issued)
                except BaseException as exc:
                    try:
                        self._fail(exc, idx)
                    finally:
                        if not self._answered:  # never complete a query id twice; never leave one out
                            self._complete_empty([qid])

    def stop(self, why: str = "stop requested") -> None:
        """Stop from another thread (a signal, Ctrl-C): like a cancel, without touching the caller's token."""
        if self.events is not None:
            self.events.log(f"{why}: completing outstanding samples with empty responses")
        self.cancelled = True

    def _mark_cancelled(self) -> None:
        self.cancelled = True
        if self.events is not None:
            self.events.log("cancel requested: completing outstanding samples with empty responses")

    def _fail(self, exc: BaseException, idx: int) -> None:
        if isinstance(exc, Cancelled):
            self._mark_cancelled()
            return
        case = self.qsl.cases[idx] if 0 <= idx < self.qsl.count else "?"
        what = f"sample {idx} ({case})"
        if isinstance(exc, UnetError):
            err: BaseException = type(exc)(f"{what}: {exc}")
        else:
            err = BadInputError(f"{what}: engine {self.engine_name} failed: {type(exc).__name__}: {exc}")
        if self.error is None:
            self.error = err
        self.report(LogLine("error", str(err)))
        if self.events is not None:
            self.events.log(f"error: {err}")

    def _segment(self, volume: np.ndarray) -> np.ndarray:
        if isinstance(self.engine, VolumeEngine) and callable(getattr(self.engine, "segment", None)):
            if self._segment_takes_cancel:  # the GPU backends stop between window batches
                return self.engine.segment(volume, cancel=self.cancel)  # type: ignore[call-arg]
            return self.engine.segment(volume)
        from core import sliding_window

        return sliding_window.segment(
            volume, _FiniteEngine(self.engine), self.batch_size, self.patches, cancel=self.cancel
        )

    def _one(self, qid: int, idx: int, issued: float) -> None:
        """``issued``: when LoadGen issued the query (Offline: all samples at once), as LoadGen
        measures latency."""
        case = self.qsl.cases[idx]
        volume = self.qsl.get(idx)
        shape = tuple(int(x) for x in volume.shape[-3:])
        labels = check_labels(self._segment(volume), shape, self.engine_name)  # type: ignore[arg-type]
        response = self._lg.QuerySampleResponse(qid, labels.ctypes.data, labels.nbytes)
        self._lg.QuerySamplesComplete([response])  # `labels` is alive until this returns
        self._answered = True
        self.completed += 1
        if self.events is not None:
            from core.sliding_window import window_count

            self.events.sample_done(idx, case, issued, window_count(shape))
        if self.accuracy:
            truth = np.asarray(self.qsl.data.load_label(case))
            if truth.size != labels.size:
                raise BadInputError(f"label has shape {truth.shape}, prediction {labels.shape}")
            kidney, tumor = dice(labels, truth.reshape(labels.shape))
            self.dice[case] = (kidney, tumor)
            if self.events is not None:
                self.events.dice(case, kidney, tumor)
        total = self.events.total if self.events is not None else 0
        self.report(Progress("run", self.completed, total, "sample", case))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.handle is not None:
            self._lg.DestroySUT(self.handle)
            self.handle = None
