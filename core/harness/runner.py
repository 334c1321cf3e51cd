"""One LoadGen run end to end (REF ``run.py``): a new log folder, run.json, TestSettings from a
generated user.conf, QSL + SUT, StartTestWithLogSettings, summary parsing and, in accuracy runs,
scoring of ``mlperf_log_accuracy.json``.

``run.json`` is written atomically when the run starts (status ``running``) and rewritten at the end
(``complete``, ``cancelled`` or ``failed``); a folder left at ``running`` by a dead process is what
history reports as ``incomplete``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.accuracy import AccuracyReport, score_log
from core.backends.base import VolumeEngine
from core.benchmark import RunConfig
from core.compliance import run_provenance
from core.engine import load_engine
from core.errors import (
    BackendUnavailableError,
    BadInputError,
    Cancelled,
    MissingInputError,
    RunInvalidError,
    UnetError,
    UsageError,
)
from core.fsio import sha256_file
from core.fsio import write_text_atomic as atomic_write_text
from core.harness.events import RunEvents
from core.harness.logs import (
    ACCURACY_NAME,
    LoadgenDetail,
    LoadgenSummary,
    incomplete_logs,
    parse_detail,
    parse_summary,
)
from core.harness.qsl import DataSource, KitsQSL, PreprocessedData
from core.harness.settings import build_settings, check_config, expected_samples, loadgen
from core.harness.sut import KitsSUT, device_label, unique_labels
from core.jobs import CancelToken, LogLine, Phase, Reporter
from core.lock import workspace_lock
from core.workspace import Workspace

RUN_JSON = "run.json"
RUN_JSON_VERSION = 1
SCORED_MODES = ("AccuracyOnly", "SubmissionRun")


@dataclass(frozen=True)
class RunResult:
    """What one run returned, as the runner saw it (also saved as run.json's ``result``). Whether a run
    counts, and which figures a user may see, is decided by core.history.RunRecord over run.json."""

    status: str  # "complete" | "cancelled" | "failed"
    log_dir: Path
    scenario: str
    test_mode: str
    config_ver: str
    audit_test: str | None
    valid: bool | None  # LoadGen's VALID/INVALID; None when the summary has no result (accuracy mode)
    result_line: str  # "Result is : VALID"
    samples_per_s: float | None
    latency_ms: dict[str, float]  # min, max, mean, p50, p90, p95, p97, p99, p99.9
    min_duration_met: bool | None
    min_queries_met: bool | None
    early_stopping_met: bool | None
    reasons: tuple[str, ...]
    accuracy: AccuracyReport | None
    samples_completed: int
    loadgen_errors: tuple[str, ...] = ()
    summary: LoadgenSummary | None = field(default=None, repr=False)
    detail: LoadgenDetail | None = field(default=None, repr=False)
    error: str | None = None
    fresh_process: bool = True  # False: not submittable (see core.harness.settings)
    per_device: dict[str, int] = field(default_factory=dict)  # samples completed per device (worker)

    @property
    def summary_text(self) -> str:
        """mlperf_log_summary.txt as LoadGen wrote it (copy_summary_to_stdout is off; callers print this)."""
        return self.summary.text if self.summary is not None else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "log_dir": str(self.log_dir),
            "scenario": self.scenario,
            "test_mode": self.test_mode,
            "config_ver": self.config_ver,
            "audit_test": self.audit_test,
            "valid": self.valid,
            "result_line": self.result_line,
            "samples_per_s": self.samples_per_s,
            "latency_ms": self.latency_ms,
            "min_duration_met": self.min_duration_met,
            "min_queries_met": self.min_queries_met,
            "early_stopping_met": self.early_stopping_met,
            "reasons": list(self.reasons),
            "accuracy": self.accuracy.to_dict() if self.accuracy is not None else None,
            "samples_completed": self.samples_completed,
            "loadgen_errors": list(self.loadgen_errors),
            "error": self.error,
            "fresh_process": self.fresh_process,
            "per_device": dict(self.per_device),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        """Rebuild from :meth:`to_dict` (the summary and detail are re-read from the log folder)."""
        log_dir = Path(str(d["log_dir"]))
        acc = d.get("accuracy")
        return cls(
            status=str(d["status"]),
            log_dir=log_dir,
            scenario=str(d["scenario"]),
            test_mode=str(d["test_mode"]),
            config_ver=str(d["config_ver"]),
            audit_test=d.get("audit_test"),
            valid=d.get("valid"),
            result_line=str(d.get("result_line") or ""),
            samples_per_s=d.get("samples_per_s"),
            latency_ms={str(k): float(v) for k, v in (d.get("latency_ms") or {}).items()},
            min_duration_met=d.get("min_duration_met"),
            min_queries_met=d.get("min_queries_met"),
            early_stopping_met=d.get("early_stopping_met"),
            reasons=tuple(d.get("reasons") or ()),
            accuracy=AccuracyReport.from_dict(acc) if isinstance(acc, dict) else None,
            samples_completed=int(d.get("samples_completed") or 0),
            loadgen_errors=tuple(d.get("loadgen_errors") or ()),
            summary=parse_summary(log_dir),
            detail=parse_detail(log_dir),
            error=d.get("error"),
            fresh_process=bool(d.get("fresh_process", True)),
            per_device={str(k): int(v) for k, v in (d.get("per_device") or {}).items()},
        )


class RunCancelled(Cancelled):
    """Cancelled, with the partial run's result (status ``cancelled``) attached."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(f"run cancelled; partial logs in {result.log_dir}")
        self.result = result


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def new_run_dir(log_dir: Path, cfg: RunConfig, now: _dt.datetime | None = None) -> Path:
    """``<log_dir>/<YYYYmmdd-HHMMSS>_<scenario>_<mode>[_<audit>]``, with ``-2``, ``-3``... if taken."""
    now = now or _dt.datetime.now()
    base = f"{now:%Y%m%d-%H%M%S}_{cfg.scenario}_{cfg.test_mode}"
    if cfg.audit_test:
        base += f"_{cfg.audit_test}"
    log_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10000):
        path = log_dir / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()  # exist_ok=False: atomic claim, never reuse a folder
            return path
        except FileExistsError:
            continue
    raise BadInputError("cannot create a new run folder", log_dir)


def _input_dtype(engine: Any) -> str:
    """'int8' when the engine takes NVIDIA's int8-linear input (numpy, torch or string dtype), else 'fp32'."""
    dt = getattr(engine, "input_dtype", "fp32")
    return (
        "int8" if str(dt).rsplit(".", 1)[-1] in ("int8", "<class 'numpy.int8'>") or dt is np.int8 else "fp32"
    )


class _RunJson:
    """run.json, rewritten atomically on every update."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.path = run_dir / RUN_JSON
        self.data = data
        self.write()

    def update(self, **changes: Any) -> None:
        self.data.update(changes)
        self.write()

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, default=str) + "\n")


def check_devices(backend: Any, name: str, gpus: int) -> tuple[str, ...]:
    """The backend's devices, or UsageError when ``--gpus`` asks for more than it sees."""
    if gpus <= 1:
        return ()
    avail = backend.availability()
    if not avail.ok:
        raise BackendUnavailableError(f"backend {name} is unavailable: {avail.reason}")
    devices = tuple(avail.devices)
    if len(devices) < gpus:
        seen = f": {', '.join(devices)}" if devices else ""
        raise UsageError(f"--gpus={gpus} but backend {name} sees {len(devices)} device(s){seen}")
    return devices


def load_engines(backend: Any, ws: Workspace, cfg: RunConfig, engines: list[Any]) -> list[Any]:
    """``--gpu_inference_streams`` engines per device (``device=0..gpus-1``; default one), appended to
    ``engines`` as they load, so the caller can close those that loaded when a later one fails. Each
    owns its buffers (and CUDA graph and stream); the sample data stays one shared host copy."""
    for i in [d for _ in range(cfg.inference_streams) for d in range(max(1, cfg.gpus))]:
        engines.append(load_engine(backend, ws, cfg, device=i))
    return engines


def run_benchmark(
    ws: Workspace,
    cfg: RunConfig,
    report: Reporter,
    cancel: CancelToken,
    events: RunEvents | None = None,
    engine: Any | None = None,
    *,
    data: DataSource | None = None,
    lg: Any | None = None,
) -> RunResult:
    """Run LoadGen once for ``cfg``. Returns the result of a finished run (VALID or INVALID);
    raises :class:`RunCancelled` (a ``Cancelled``) after a cancel and the run's error after a failure,
    with run.json saying so in both cases. ``engine`` and ``data`` default to the configured backend
    (``cfg.gpus`` engines, one per device, one SUT worker each) and the preprocessed inference set;
    ``engine`` may also be a list of engines (one worker each). Holds the workspace lock (core.lock)
    for the whole run: a second run, preprocessing or calibration on the workspace is refused."""
    with workspace_lock(ws, "run"):
        return _run_benchmark(ws, cfg, report, cancel, events, engine, data=data, lg=lg)


def _run_benchmark(
    ws: Workspace,
    cfg: RunConfig,
    report: Reporter,
    cancel: CancelToken,
    events: RunEvents | None,
    engine: Any | None,
    *,
    data: DataSource | None,
    lg: Any | None,
) -> RunResult:
    lg = loadgen(lg)
    check_config(cfg)
    cancel.check()
    events = events if events is not None else RunEvents()
    own_engine = engine is None
    if own_engine and not ws.model_path.is_file():
        raise MissingInputError("model not found (run `unet3d download` or set MODEL_DIR)", ws.model_path)
    backend = None
    if own_engine:
        from core.backends import get_backend

        backend = get_backend(cfg.backend)
        check_devices(backend, cfg.backend, cfg.gpus)  # before a run folder exists
    if data is None:
        data = PreprocessedData(ws, "inference")
    cases = data.cases()

    run_dir = new_run_dir(ws.log_dir, cfg)
    model_path = ws.model_path if ws.model_path.is_file() else None
    record = _RunJson(
        run_dir,
        {
            "version": RUN_JSON_VERSION,
            "run_id": run_dir.name,
            "status": "running",
            "started": _now(),
            "ended": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "scenario": cfg.scenario,
            "test_mode": cfg.test_mode,
            "config_ver": cfg.config_ver,
            "audit_test": cfg.audit_test,
            "backend": cfg.backend,
            "precision": cfg.precision,
            "gpus": cfg.gpus,
            "run_args": cfg.run_args(),
            "config": cfg.to_dict(),
            "model": str(model_path) if model_path else None,
            "model_sha256": None,
            "cases": len(cases),
            "result": None,
            "accuracy": None,
            "error": None,
        },
    )
    report(LogLine("info", f"run folder {run_dir}"))
    events.log(f"run folder {run_dir}")
    qsl: KitsQSL | None = None
    sut: KitsSUT | None = None
    engines: list[Any] = [] if own_engine else list(engine) if isinstance(engine, (list, tuple)) else [engine]
    try:
        events.phase("loading")
        first = engines[0] if engines else None
        report(Phase("loading", cfg.backend if own_engine else str(getattr(first, "name", "engine"))))
        if own_engine:
            load_engines(backend, ws, cfg, engines)
            if len(engines) > 1:
                k = cfg.inference_streams
                per = f"{k} sample streams" if k > 1 else "one sample stream"
                events.log(f"{len(engines)} engines loaded, {per} per device")
        if len(engines) > 1 and cfg.scenario == "SingleStream":
            msg = (
                f"SingleStream keeps one sample in flight: {len(engines)} engines take turns, none is faster"
            )
            report(LogLine("warning", msg))
            events.log(f"warning: {msg}")
        engine = engines[0]
        sha = getattr(engine, "model_sha256", None) or (sha256_file(model_path) if model_path else None)
        record.update(
            model_sha256=sha,
            engine={
                "name": getattr(engine, "name", type(engine).__name__),
                "precision": getattr(engine, "precision", cfg.precision),
                "batch_size": getattr(engine, "batch_size", cfg.gpu_batch_size),
                "volume_engine": isinstance(engine, VolumeEngine),
                "devices": unique_labels([device_label(e, i) for i, e in enumerate(engines)]),
            },
            **run_provenance(ws, cases, model_path),  # what core.compliance judges the data and model by
        )
        if isinstance(data, PreprocessedData):
            data.dtype = _input_dtype(engine)
        built = build_settings(cfg, run_dir, lg)
        record.update(fresh_process=built.fresh_process)
        for note in built.notes:  # where a setting the user did not give came from
            report(LogLine("info", note))
            events.log(note)
        if not built.fresh_process:
            msg = (
                "LoadGen was already configured in this process: this run's settings are correct but its "
                "detail log carries error_invalid_config ('Multiple conf files'); for a submittable run "
                "use one process per run (core.harness.isolated.run_benchmark_isolated)"
            )
            report(LogLine("warning", msg))
            events.log(f"warning: {msg}")
        accuracy_mode = cfg.test_mode == "AccuracyOnly"
        events.total = expected_samples(built.settings, cfg.scenario, cfg.test_mode, len(cases))
        qsl = KitsQSL(data, lg, cancel=cancel, events=events, report=report)
        sut = KitsSUT(
            qsl,
            engines,
            batch_size=cfg.gpu_batch_size if own_engine else getattr(engine, "batch_size", None),
            events=events,
            cancel=cancel,
            report=report,
            accuracy=accuracy_mode,
            lg=lg,
            # engines the runner loaded run the sliding window on their device: warm them up (one
            # window each) before LoadGen's clock starts; a CPU window engine (ort) would take minutes
            warmup=own_engine and all(isinstance(e, VolumeEngine) for e in engines),
        )
        out = lg.LogOutputSettings()
        out.outdir = str(run_dir)
        out.copy_summary_to_stdout = False
        log_settings = lg.LogSettings()
        log_settings.log_output = out
        cancel_before = cancel.cancelled
        # phases from here: "loading samples" (QSL), then "running" at LoadGen's first issue (SUT)
        report(Phase("running", f"{cfg.scenario} {cfg.test_mode}"))
        if not cancel_before and sut.error is None:  # a failed warm-up: no LoadGen run
            _start_test(lg, sut, qsl, built.settings, log_settings, built.audit_config)
        sut.close()
        qsl.destroy()
        failure = qsl.error or sut.error  # a QSL load error explains the SUT's 'not loaded'
        cancelled = sut.cancelled or cancel.cancelled
        completed = sut.completed
        per_device = sut.per_device
        sut = qsl = None

        summary = parse_summary(run_dir)
        detail = parse_detail(run_dir)
        result_kwargs: dict[str, Any] = {
            "log_dir": run_dir,
            "scenario": cfg.scenario,
            "test_mode": cfg.test_mode,
            "config_ver": cfg.config_ver,
            "audit_test": cfg.audit_test,
            "valid": summary.valid,
            "result_line": summary.result_line,
            "samples_per_s": summary.samples_per_s,
            "latency_ms": summary.latency_ms(),
            "min_duration_met": summary.min_duration_met,
            "min_queries_met": summary.min_queries_met,
            "early_stopping_met": summary.early_stopping_met,
            "reasons": summary.reasons,
            "samples_completed": completed,
            "loadgen_errors": detail.errors,
            "fresh_process": built.fresh_process,
            "per_device": per_device,
            "summary": summary,
            "detail": detail,
        }
        if failure is not None:
            raise failure if isinstance(failure, UnetError) else BadInputError(f"{failure}")
        if not cancelled and (cut := incomplete_logs(run_dir)):
            raise RunInvalidError(cut, run_dir)
        if cancelled:
            result = RunResult(status="cancelled", accuracy=None, **result_kwargs)
            record.update(status="cancelled", ended=_now(), result=result.to_dict())
            events.phase("cancelled")
            events.log("run cancelled")
            report(LogLine("warning", f"run cancelled; partial logs in {run_dir}"))
            raise RunCancelled(result)

        accuracy = None
        if cfg.test_mode in SCORED_MODES and cfg.audit_test is None:
            events.phase("scoring")
            accuracy = score_log(
                ws,
                run_dir / ACCURACY_NAME,
                None,
                cfg.config_ver,
                data=data,
                out_csv=run_dir / "summary.csv",
                model_path=model_path,
                report=report,
                cancel=cancel,
            )
            atomic_write_text(run_dir / "accuracy.txt", accuracy.line + "\n")
        result = RunResult(status="complete", accuracy=accuracy, **result_kwargs)
        record.update(
            status="complete", ended=_now(), result=result.to_dict(), accuracy=result.to_dict()["accuracy"]
        )
        if summary.result_line:
            report(LogLine("info", summary.result_line))
            events.log(summary.result_line)
        for err in detail.errors:
            report(LogLine("warning", f"loadgen: {err}"))
        if len(per_device) > 1:
            line = "samples per device: " + ", ".join(f"{d} {n}" for d, n in per_device.items())
            report(LogLine("info", line))
            events.log(line)
        if accuracy is not None:
            events.log(accuracy.line)
        events.phase("done")
        return result
    except RunCancelled:
        raise
    except Cancelled:
        record.update(status="cancelled", ended=_now())
        events.phase("cancelled")
        raise RunCancelled(_bare_result(run_dir, cfg, "cancelled")) from None
    except BaseException as exc:
        msg = str(exc) or type(exc).__name__
        record.update(status="failed", ended=_now(), error=msg)
        events.phase("failed")
        events.log(f"error: {msg}")
        raise
    finally:
        if sut is not None:
            sut.close()
        if qsl is not None:
            qsl.destroy()
        if own_engine:
            for eng in engines:
                try:
                    eng.close()
                except Exception as exc:
                    report(LogLine("warning", f"closing engine: {exc}"))


def _start_test(lg: Any, sut: KitsSUT, qsl: KitsQSL, settings: Any, log_settings: Any, audit: Path) -> None:
    """StartTestWithLogSettings on a helper thread while this one waits in short joins.

    In Offline LoadGen issues its one query and then blocks in native code until the end; a caller
    waiting inside that call would run no Python signal handler (the console's SIGINT cancel) and see
    no KeyboardInterrupt (Ctrl-C in the CLI) until the run ended. Waiting here keeps both prompt: a
    KeyboardInterrupt stops the SUT and QSL (empty responses), LoadGen returns, the run is cancelled."""
    errors: list[BaseException] = []
    done = threading.Event()

    def target() -> None:
        try:
            lg.StartTestWithLogSettings(sut.handle, qsl.handle, settings, log_settings, str(audit))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name="unet3d-loadgen", daemon=True).start()
    # An Event, not Thread.join: a KeyboardInterrupt inside join() can mark a live thread as stopped
    # (CPython bpo-45274 handling), and we must never tear the SUT down under a running LoadGen.
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            sut.stop("interrupted")
            qsl.stopped = True
    if errors:
        raise errors[0]


def _bare_result(run_dir: Path, cfg: RunConfig, status: str) -> RunResult:
    return RunResult(
        status=status,
        log_dir=run_dir,
        scenario=cfg.scenario,
        test_mode=cfg.test_mode,
        config_ver=cfg.config_ver,
        audit_test=cfg.audit_test,
        valid=None,
        result_line="",
        samples_per_s=None,
        latency_ms={},
        min_duration_met=None,
        min_queries_met=None,
        early_stopping_met=None,
        reasons=(),
        accuracy=None,
        samples_completed=0,
    )
