"""The system under test: runs each issued sample through the backend on a worker thread and
completes it with the uint8 label volume (REF ``base_SUT.py``).

LoadGen calls ``issue_queries`` on its own thread; we only enqueue there, one item per sample. One
worker thread per engine (one engine per device, as NVIDIA's one batcher thread per GPU) pulls
samples from that one shared queue, so every device runs its own stream of whole samples and a fast
device simply takes more of them. A worker runs ``engine.segment(volume)`` for a
:class:`VolumeEngine`, else ``core.sliding_window.segment``, then calls ``QuerySamplesComplete``
with the label bytes (the buffer stays referenced until the call returns: LoadGen copies it in
accuracy mode). After a cancel or a failure (on any device) every outstanding and later sample is
completed with an empty response, so LoadGen always returns. Each engine owns its device buffers;
the QSL's host volumes are shared read-only.
"""

from __future__ import annotations

import contextlib
import inspect
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.accuracy import dice
from core.backends.base import VolumeEngine
from core.benchmark import ROI
from core.errors import BadInputError, Cancelled, UnetError
from core.harness.events import RunEvents
from core.harness.qsl import KitsQSL
from core.harness.settings import loadgen
from core.jobs import NEVER, CancelToken, LogLine, Progress, Reporter, null_reporter

# imported with the harness, not at the first completed sample: core.sliding_window pulls in
# scipy.signal (seconds on a busy host), which must land neither inside LoadGen's timed run nor in
# the run's setup (a Ctrl-C there is not yet a cancel)
from core.sliding_window import window_count


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


def device_label(engine: Any, index: int) -> str:
    """The engine's device as shown per device ("cuda:1"); its position when it names none."""
    dev = getattr(engine, "device", None)
    return str(dev) if dev is not None and str(dev) else str(index)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Tell workers on one device apart: two engines on cuda:0 -> 'cuda:0', 'cuda:0/1'."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        n = seen.get(lab, 0)
        seen[lab] = n + 1
        out.append(lab if n == 0 else f"{lab}/{n}")
    return out


def _bind_device(engine: Any) -> None:
    """Make the engine's CUDA device current on this worker thread (NVIDIA's batcher threads call
    cudaSetDevice): Triton launches and default streams follow the thread's current device, not the
    tensors'. Engines without a CUDA ``device`` (CPU, fakes) need nothing."""
    bind = getattr(engine, "bind_thread", None)
    if callable(bind):
        bind()
        return
    dev = getattr(engine, "device", None)
    if getattr(dev, "type", None) == "cuda" and getattr(dev, "index", None) is not None:  # "cuda": current
        import torch  # only reached with a torch device, so torch is installed

        torch.cuda.set_device(dev)


class _Worker:
    """One engine (device) and its thread."""

    def __init__(self, engine: Any, label: str) -> None:
        self.engine = engine
        self.label = label
        self.name = str(getattr(engine, "name", type(engine).__name__))
        self.segment_takes_cancel = _accepts(getattr(engine, "segment", None), "cancel")
        self.completed = 0
        self.thread: threading.Thread | None = None


class KitsSUT:
    def __init__(
        self,
        qsl: KitsQSL,
        engine: Any,
        *,
        batch_size: int | None = None,
        events: RunEvents | None = None,
        cancel: CancelToken = NEVER,
        report: Reporter = null_reporter,
        accuracy: bool = False,
        lg: Any | None = None,
        devices: Sequence[str] | None = None,
        warmup: bool = False,
    ) -> None:
        """``engine``: one engine, or a list of engines (one per device, one worker each).
        ``devices``: their labels for events and errors (default: each engine's ``device``).
        ``warmup``: each worker first segments one all-zero 128^3 window on its device (patches
        upload, first-use allocations and compilation) and the constructor returns when all have,
        so that none of it falls inside LoadGen's timed run (NVIDIA's harness warms up too)."""
        lg = loadgen(lg)
        self._lg = lg
        self.qsl = qsl
        engines = list(engine) if isinstance(engine, (list, tuple)) else [engine]
        if not engines:
            raise BadInputError("no engine to run the samples on")
        labels = list(devices) if devices is not None else [device_label(e, i) for i, e in enumerate(engines)]
        if len(labels) != len(engines):
            labels = [str(i) for i in range(len(engines))]
        labels = unique_labels(labels)
        self.engines = engines
        self.engine = engines[0]
        self.engine_name = str(getattr(self.engine, "name", type(self.engine).__name__))
        self.batch_size = int(batch_size or getattr(self.engine, "batch_size", 1) or 1)
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
        self._lock = threading.Lock()  # counters, the first error, and the reporter (not thread-safe)
        self._clock = events.clock if events is not None else time.monotonic
        # (LoadGen's issue time, query id, sample index); None stops one worker
        self._queue: queue.Queue[tuple[float, int, int] | None] = queue.Queue()
        self.workers = [_Worker(e, lab) for e, lab in zip(engines, labels, strict=True)]
        self._warmup = warmup
        self._ready = threading.Barrier(len(self.workers) + 1) if warmup else None
        t0 = time.monotonic()
        for i, w in enumerate(self.workers):
            suffix = "" if len(self.workers) == 1 else f"-{i}"
            w.thread = threading.Thread(target=self._work, args=(w,), name=f"unet3d-sut{suffix}", daemon=True)
            w.thread.start()
        if self._ready is not None:
            try:
                self._ready.wait()
            except BaseException:  # Ctrl-C during the warm-up: release and stop the workers
                self.cancelled = True
                self._ready.abort()
                for _ in self.workers:
                    self._queue.put(None)
                raise
            if events is not None:
                n = len(self.workers)
                events.log(
                    f"warm-up: {n} engine{'s' if n > 1 else ''} ready in {time.monotonic() - t0:.1f} s"
                )
        self.handle = lg.ConstructSUT(self.issue_queries, self.flush_queries)

    @property
    def devices(self) -> list[str]:
        return [w.label for w in self.workers]

    @property
    def per_device(self) -> dict[str, int]:
        """Samples answered with a real result, per device."""
        return {w.label: w.completed for w in self.workers}

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
            for qid, idx in batch:
                self._queue.put((t, qid, idx))

    def flush_queries(self) -> None:
        pass

    # --- workers ---
    @property
    def stopping(self) -> bool:
        return self.error is not None or self.cancelled or self.cancel.cancelled

    def _complete_empty(self, ids: list[int]) -> None:
        if ids:
            self._lg.QuerySamplesComplete([self._lg.QuerySampleResponse(i, 0, 0) for i in ids])
            with self._lock:
                self.emptied += len(ids)

    def _work(self, worker: _Worker) -> None:
        try:
            _bind_device(worker.engine)
            if self._warmup:
                zeros = np.zeros((1, ROI, ROI, ROI), np.float32)
                check_labels(self._segment(worker, zeros), (ROI, ROI, ROI), worker.name)
        except BaseException as exc:  # answer its samples anyway: the error stops the run
            self._fail(exc, -1, worker)
        finally:
            if self._ready is not None:
                with contextlib.suppress(threading.BrokenBarrierError):
                    self._ready.wait()
        while True:
            got = self._queue.get()
            if got is None:
                return
            issued, qid, idx = got
            if self.stopping:
                if self.cancel.cancelled and not self.cancelled:
                    self._mark_cancelled()
                self._complete_empty([qid])
                continue
            answered = [False]  # set once QuerySamplesComplete has taken this query id
            try:
                self._one(worker, qid, idx, issued, answered)
            except BaseException as exc:
                try:
                    self._fail(exc, idx, worker)
                finally:
                    if not answered[0]:  # never complete a query id twice; never leave one out
                        self._complete_empty([qid])

    def stop(self, why: str = "stop requested") -> None:
        """Stop from another thread (a signal, Ctrl-C): like a cancel, without touching the caller's token."""
        if self.events is not None:
            self.events.log(f"{why}: completing outstanding samples with empty responses")
        self.cancelled = True

    def _mark_cancelled(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
        if self.events is not None:
            self.events.log("cancel requested: completing outstanding samples with empty responses")

    def _fail(self, exc: BaseException, idx: int, worker: _Worker) -> None:
        if isinstance(exc, Cancelled):
            self._mark_cancelled()
            return
        case = self.qsl.cases[idx] if 0 <= idx < self.qsl.count else "?"
        what = f"sample {idx} ({case})" if idx >= 0 else "warm-up"
        if len(self.workers) > 1:
            what += f" on device {worker.label}"
        if isinstance(exc, UnetError):
            err: BaseException = type(exc)(f"{what}: {exc}")
        else:
            err = BadInputError(f"{what}: engine {worker.name} failed: {type(exc).__name__}: {exc}")
        with self._lock:
            first = self.error is None
            if first:
                self.error = err
            # the first error becomes the run's error, which the runner raises and every caller shows
            # once; errors caused by a QSL load failure are consequences of that one
            if not first and self.qsl.error is None:
                self.report(LogLine("warning", f"also: {err}"))
        if self.events is not None:
            self.events.log(f"error: {err}")

    def _segment(self, worker: _Worker, volume: np.ndarray) -> np.ndarray:
        engine = worker.engine
        if isinstance(engine, VolumeEngine) and callable(getattr(engine, "segment", None)):
            if worker.segment_takes_cancel:  # the GPU backends stop between window batches
                return engine.segment(volume, cancel=self.cancel)  # type: ignore[call-arg]
            return engine.segment(volume)
        from core import sliding_window

        # a window engine (ort, the fp32 reference path): the reference's own weighing, float32
        return sliding_window.segment(volume, _FiniteEngine(engine), self.batch_size, cancel=self.cancel)

    def _one(self, worker: _Worker, qid: int, idx: int, issued: float, answered: list[bool]) -> None:
        """``issued``: when LoadGen issued the query (Offline: all samples at once), as LoadGen
        measures latency."""
        case = self.qsl.cases[idx]
        volume = self.qsl.get(idx)  # shared, read-only: each engine uploads it to its own buffers
        shape = tuple(int(x) for x in volume.shape[-3:])
        labels = check_labels(self._segment(worker, volume), shape, worker.name)  # type: ignore[arg-type]
        response = self._lg.QuerySampleResponse(qid, labels.ctypes.data, labels.nbytes)
        self._lg.QuerySamplesComplete([response])  # `labels` is alive until this returns
        answered[0] = True
        with self._lock:
            self.completed += 1
            worker.completed += 1
        if self.events is not None:
            self.events.sample_done(idx, case, issued, window_count(shape), device=worker.label)
        if self.accuracy:
            truth = np.asarray(self.qsl.data.load_label(case))
            if truth.size != labels.size:
                raise BadInputError(f"label has shape {truth.shape}, prediction {labels.shape}")
            kidney, tumor = dice(labels, truth.reshape(labels.shape))
            self.dice[case] = (kidney, tumor)
            if self.events is not None:
                self.events.dice(case, kidney, tumor)
        total = self.events.total if self.events is not None else 0
        with self._lock:
            self.report(Progress("run", self.completed, total, "sample", case))

    def close(self) -> None:
        for _ in self.workers:
            self._queue.put(None)
        for w in self.workers:
            if w.thread is not None:
                w.thread.join()
        if self.handle is not None:
            self._lg.DestroySUT(self.handle)
            self.handle = None
