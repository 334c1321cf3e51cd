"""Live run events: the SUT records per-sample issue/complete times (and DICE in accuracy runs) into a
thread-safe ring buffer; the CLI summarizes it, the console samples it on a timer.

Nothing here posts messages or touches a UI: readers take immutable :class:`RunSnapshot` copies.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SampleDone:
    index: int  # QSL index
    case: str
    issued: float  # clock() seconds
    completed: float
    windows: int
    device: str | None = None  # the worker's device label ("cuda:1"); None when not recorded

    @property
    def latency(self) -> float:
        return self.completed - self.issued


@dataclass(frozen=True)
class CaseDice:
    case: str
    kidney: float
    tumor: float

    @property
    def composite(self) -> float:
        return (self.kidney + self.tumor) / 2


@dataclass(frozen=True)
class DeviceStat:
    """One device's share of a run (multi-GPU runs: one sample stream per device)."""

    device: str
    completed: int
    qps: float  # samples/s over the same sliding window as RunSnapshot.qps
    windows_per_s: float


@dataclass(frozen=True)
class RunSnapshot:
    t: float
    started: float | None
    completed: int
    total: int  # samples expected in this run (0 = unknown)
    windows_done: int
    qps: float  # samples/s over the sliding window
    windows_per_s: float
    latency_ms: dict[str, float]  # "p50", "p90", "p99", "mean", "max"
    qps_history: tuple[float, ...]  # one value per history tick
    dice: tuple[CaseDice, ...]
    log_tail: tuple[str, ...]
    phase: str
    devices: tuple[DeviceStat, ...] = ()  # per device, in first-completion order; () if none recorded


@dataclass
class RunEvents:
    """Thread-safe recorder of one run. Writers: the SUT thread(s). Readers: snapshot()."""

    total: int = 0
    clock: Callable[[], float] = time.monotonic
    maxlen: int = 4096  # ring-buffer bound: memory stays flat for arbitrarily long runs
    window_s: float = 10.0  # sliding window for live QPS
    _samples: deque[SampleDone] = field(init=False)
    _latencies: deque[float] = field(init=False)
    _dice: dict[str, CaseDice] = field(init=False, default_factory=dict)
    _log: deque[str] = field(init=False)
    _history: deque[float] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _completed: int = field(init=False, default=0)
    _windows: int = field(init=False, default=0)
    _started: float | None = field(init=False, default=None)
    _phase: str = field(init=False, default="idle")
    _per_device: dict[str, int] = field(init=False, default_factory=dict)  # completed per device

    def __post_init__(self) -> None:
        self._samples = deque(maxlen=self.maxlen)
        self._latencies = deque(maxlen=self.maxlen)
        self._log = deque(maxlen=200)
        self._history = deque(maxlen=600)

    # --- writers ---
    def phase(self, name: str) -> None:
        with self._lock:
            self._phase = name
            if name == "running" and self._started is None:
                self._started = self.clock()

    def sample_done(
        self, index: int, case: str, issued: float, windows: int, device: str | None = None
    ) -> SampleDone:
        done = SampleDone(index, case, issued, self.clock(), windows, device)
        with self._lock:
            if device is not None:
                self._per_device[device] = self._per_device.get(device, 0) + 1
            if self._started is None:
                self._started = issued
            self._samples.append(done)
            self._latencies.append(done.latency)
            self._completed += 1
            self._windows += windows
        return done

    def dice(self, case: str, kidney: float, tumor: float) -> None:
        with self._lock:
            self._dice[case] = CaseDice(case, kidney, tumor)

    def log(self, line: str) -> None:
        with self._lock:
            self._log.append(line)

    def tick(self) -> None:
        """Append the current QPS to the history (called on a timer by whoever displays it)."""
        qps = self.snapshot().qps
        with self._lock:
            self._history.append(qps)

    # --- readers ---
    def snapshot(self) -> RunSnapshot:
        now = self.clock()
        with self._lock:
            samples = list(self._samples)
            lat = np.asarray(self._latencies, dtype=np.float64) * 1000.0
            recent = [s for s in samples if s.completed >= now - self.window_s]
            span = min(self.window_s, now - self._started) if self._started is not None else 0.0
            qps = len(recent) / span if span > 0 else 0.0
            wps = sum(s.windows for s in recent) / span if span > 0 else 0.0
            pct = (
                {
                    "p50": float(np.percentile(lat, 50)),
                    "p90": float(np.percentile(lat, 90)),
                    "p99": float(np.percentile(lat, 99)),
                    "mean": float(lat.mean()),
                    "max": float(lat.max()),
                }
                if lat.size
                else {}
            )
            devices = tuple(
                DeviceStat(
                    dev,
                    n,
                    sum(1 for s in recent if s.device == dev) / span if span > 0 else 0.0,
                    sum(s.windows for s in recent if s.device == dev) / span if span > 0 else 0.0,
                )
                for dev, n in self._per_device.items()
            )
            return RunSnapshot(
                t=now,
                started=self._started,
                completed=self._completed,
                total=self.total,
                windows_done=self._windows,
                qps=qps,
                windows_per_s=wps,
                latency_ms=pct,
                qps_history=tuple(self._history),
                dice=tuple(self._dice.values()),
                log_tail=tuple(self._log),
                phase=self._phase,
                devices=devices,
            )
