"""`unet3d`: the headless CLI over core (no Textual, no rich).

Flags follow NVIDIA's `make run RUN_ARGS="..."` spelling (underscores). stdout carries results only (a
table or ``--json``); the effective command, progress and diagnostics go to stderr. Every expected
failure is a :class:`core.errors.UnetError`, printed as one ``error: <message>`` line with its exit code
(0 ok, 1 invalid/below target, 2 usage, 3 missing input, 4 bad input, 130 interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from core import __version__
from core.benchmark import (
    AUDIT_TESTS,
    CONFIG_VERS,
    MODEL_NAMES,
    PRECISIONS,
    SCENARIOS,
    TEST_MODES,
    RunConfig,
    target_dice,
)
from core.errors import Cancelled, ExitCode, MissingInputError, UnetError, UsageError
from core.jobs import CancelToken, Event, LogLine, Phase, Progress
from core.workspace import Workspace

PROG = "unet3d"
DEMO_WORKSPACE = "unet3d-demo"
ACCURACY_TARGETS = {"99": "default", "99.9": "high_accuracy"}
PATH_FLAGS = ("data_dir", "preprocessed_data_dir", "model_dir", "log_dir")
ACTIONS = ("run_harness", "run_audit_harness", "calibrate", "generate_engines")

# NVIDIA flags accepted for compatibility and passed to the harness in RunConfig.extra
EXTRA_FLAGS = (
    "gpu_copy_streams",
    "gpu_inference_streams",
    "use_graphs",
    "end_on_device",
    "performance_sample_count",
    "user_conf_path",
    "mlperf_conf_path",
    "log_mode",
    "logfile_suffix",
    "system_name",
    "unet3d_sw_gaussian_patch_path",
    "no_audit_verify",
)


# --------------------------------------------------------------------------- argument parsing


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``error: ...``, exit 2) instead of usage + text."""

    def error(self, message: str) -> NoReturn:
        if self.prog == "RUN_ARGS":
            raise UsageError(f"--run-args: {message}")
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text} must be a non-negative number")
    return value


def _common() -> argparse.ArgumentParser:
    """Flags every subcommand accepts (also before the subcommand). Defaults are SUPPRESSed so that a
    flag given before the subcommand is not reset by the subparser."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("workspace")
    s = argparse.SUPPRESS
    g.add_argument("--workspace", metavar="DIR", default=s, help="workspace root (env UNET3D_WORKSPACE; .)")
    g.add_argument("--data_dir", metavar="DIR", default=s, help="raw KiTS19 cases (env DATA_DIR)")
    g.add_argument(
        "--preprocessed_data_dir",
        metavar="DIR",
        default=s,
        help="preprocessed data (env PREPROCESSED_DATA_DIR)",
    )
    g.add_argument("--model_dir", metavar="DIR", default=s, help="model folder (env MODEL_DIR)")
    g.add_argument("--log_dir", metavar="DIR", default=s, help="LoadGen logs (env LOG_DIR)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", default=s, help="JSON on stdout instead of a table")
    o.add_argument("-o", "--output", metavar="PATH", default=s, help="write stdout's bytes to PATH too")
    o.add_argument("-q", "--quiet", action="store_true", default=s, help="no progress on stderr")
    return p


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """NVIDIA's flags, spelled as NVIDIA spells them. Every default is None so that what the user typed
    can be told apart from what --run-args or --fast supply."""
    p.add_argument("--benchmarks", metavar="LIST", help="3d-unet (comma list)")
    p.add_argument(
        "--scenarios", metavar="LIST", help=f"{', '.join(SCENARIOS)} (comma list; default Offline)"
    )
    p.add_argument("--config_ver", metavar="LIST", help=f"{', '.join(CONFIG_VERS)} (comma list)")
    p.add_argument("--accuracy_target", metavar="LIST", help="99 or 99.9 (same as --config_ver)")
    p.add_argument("--test_mode", metavar="LIST", help=f"{', '.join(TEST_MODES)} (comma list)")
    p.add_argument("--action", metavar="ACTION", help=f"{', '.join(ACTIONS)} (default run_harness)")
    p.add_argument("--backend", metavar="NAME", help="ort, torch or tensorrt (default ort)")
    p.add_argument("--precision", metavar="P", help=f"{', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--gpu_batch_size", type=_positive_int, metavar="N", help="windows per engine call")
    p.add_argument("--min_duration", type=_number, metavar="S", help="LoadGen min duration, seconds")
    p.add_argument("--max_duration", type=_number, metavar="S", help="LoadGen max duration, seconds")
    p.add_argument("--min_query_count", type=_positive_int, metavar="N")
    p.add_argument("--max_query_count", type=_positive_int, metavar="N")
    p.add_argument("--offline_expected_qps", type=_number, metavar="QPS")
    p.add_argument("--single_stream_expected_latency_ns", type=_positive_int, metavar="NS")
    p.add_argument("--single_stream_expected_latency_ms", type=_number, metavar="MS")
    p.add_argument("--audit_test", metavar="TEST", help=", ".join(AUDIT_TESTS))
    p.add_argument("--gpus", type=_positive_int, metavar="N", help="number of GPUs (default 1)")
    p.add_argument(
        "--fast",
        action="store_const",
        const=True,
        help="min_duration 60 s and min_query_count 1 (unless given)",
    )
    shown = {"gpu_inference_streams": "engines per GPU, each with its own stream (default 1)"}
    for name in EXTRA_FLAGS:
        p.add_argument(f"--{name}", metavar="V", help=shown.get(name, argparse.SUPPRESS))


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog=PROG,
        description="MLPerf Inference 3D-UNet (KiTS19): headless CLI.",
        parents=[common],
        epilog="Exit codes: 0 ok, 1 run INVALID or accuracy below target, 2 usage, 3 missing input, "
        "4 bad input, 75 workspace busy (retry later), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common])  # type: ignore[list-item]

    add("status", "what is in the workspace and what is missing")

    p = add("download", "download the model (Zenodo) and the KiTS19 cases")
    p.add_argument("--model", action="store_true", help="only the model")
    p.add_argument("--data", action="store_true", help="only the dataset")
    p.add_argument("--sets", default="inference,calibration", help="case sets (comma list)")
    p.add_argument("--cases", metavar="LIST", help="only these cases (comma list)")
    p.add_argument("--labels_from", metavar="DIR", help="copy segmentation.nii.gz from a KiTS19 folder")
    p.add_argument("--no_verify", action="store_true", help="skip checksum verification")
    p.add_argument("--force", action="store_true", help="download even if the file exists")

    p = add("preprocess", "preprocess the raw cases (the reference preprocessing)")
    p.add_argument("--sets", default="inference,calibration", help="case sets (comma list)")
    p.add_argument("--jobs", type=_positive_int, metavar="N", help="worker processes (default: cores)")

    p = add("calibrate", "build the INT8 calibration cache")
    p.add_argument(
        "--method",
        default="percentile",
        choices=("minmax", "percentile"),
        help="percentile (default: 99.99th, meets 99.9 %% of FP32 at fp8) or minmax (NVIDIA's INT8 choice)",
    )
    p.add_argument("--run-args", "--run_args", dest="run_args", metavar="STR", help="NVIDIA RUN_ARGS string")
    p.add_argument("--benchmarks", metavar="LIST", help="3d-unet")

    p = add("run", "run the benchmark through LoadGen")
    _add_run_flags(p)
    p.add_argument("--run-args", "--run_args", dest="run_args", metavar="STR", help="NVIDIA RUN_ARGS string")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print, do not run")

    p = add("accuracy", "score a LoadGen accuracy log (the accuracy script)")
    p.add_argument("--log_file", required=True, metavar="PATH", help="mlperf_log_accuracy.json")

    add("history", "past runs in the log folder")

    p = add("demo", "build a synthetic demo workspace and run the benchmark on it (CPU)")
    p.add_argument("--skip_performance", action="store_true", help="accuracy run only")
    return parser


def _run_parser() -> argparse.ArgumentParser:
    """A parser of RUN_ARGS strings alone (the same run flags)."""
    p = _Parser(prog="RUN_ARGS", add_help=False)
    _add_run_flags(p)
    for name in PATH_FLAGS:  # NVIDIA's RUN_ARGS may carry paths too; flags typed outside win
        p.add_argument(f"--{name}", metavar="DIR")
    return p


# --------------------------------------------------------------------------- run configuration


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_run_args(text: str) -> dict[str, Any]:
    """Parse an NVIDIA RUN_ARGS string into the run flags that were given (None for absent ones)."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"--run-args: {exc}") from None
    return vars(_run_parser().parse_args(tokens))


def _merge(explicit: dict[str, Any], run_args: str | None) -> dict[str, Any]:
    """Flags typed on the command line win over the same flags inside --run-args."""
    merged = parse_run_args(run_args) if run_args else {}
    for key, value in explicit.items():
        if value is not None or key not in merged:
            merged[key] = value
    return merged


def configs_from_flags(flags: dict[str, Any]) -> list[RunConfig]:
    """Every (scenario, config_ver, test_mode) combination the flags ask for, validated."""
    benchmarks = _split(flags.get("benchmarks")) or ["3d-unet"]
    for b in benchmarks:
        if b not in ("3d-unet", "3d-unet-99", "3d-unet-99.9"):
            raise UsageError(f"--benchmarks={b}: this tool runs only 3d-unet")
    scenarios = _split(flags.get("scenarios")) or ["Offline"]
    config_vers = _split(flags.get("config_ver"))
    for t in _split(flags.get("accuracy_target")):
        if t not in ACCURACY_TARGETS:
            raise UsageError(f"--accuracy_target={t} is not one of 99, 99.9")
        config_vers.append(ACCURACY_TARGETS[t])
    config_vers = list(dict.fromkeys(config_vers)) or ["default"]
    test_modes = _split(flags.get("test_mode")) or ["PerformanceOnly"]

    min_duration = flags.get("min_duration")
    min_query_count = flags.get("min_query_count")
    if flags.get("fast"):
        min_duration = 60.0 if min_duration is None else min_duration
        min_query_count = 1 if min_query_count is None else min_query_count
    latency_ms = flags.get("single_stream_expected_latency_ms")
    if latency_ms is None and flags.get("single_stream_expected_latency_ns") is not None:
        latency_ms = flags["single_stream_expected_latency_ns"] / 1e6
    extra = {k: str(flags[k]) for k in EXTRA_FLAGS if flags.get(k) is not None}
    backend = flags.get("backend") or "ort"
    from core.backends import backend_names

    if backend not in backend_names():
        raise UsageError(f"--backend={backend} is not one of {', '.join(backend_names())}")

    configs = []
    for scenario, config_ver, test_mode in itertools.product(scenarios, config_vers, test_modes):
        cfg = RunConfig(
            scenario=scenario,
            config_ver=config_ver,
            test_mode=test_mode,
            backend=backend,
            precision=flags.get("precision") or "fp32",
            gpu_batch_size=flags.get("gpu_batch_size") or 1,
            min_duration=min_duration,
            max_duration=flags.get("max_duration"),
            min_query_count=min_query_count,
            max_query_count=flags.get("max_query_count"),
            offline_expected_qps=flags.get("offline_expected_qps"),
            single_stream_expected_latency_ms=latency_ms,
            audit_test=flags.get("audit_test"),
            gpus=flags.get("gpus") or 1,
            extra=extra,
        )
        configs.append(cfg.validate())
    return configs


# --------------------------------------------------------------------------- output helpers


class Output:
    """stdout for results (and the same bytes to ``-o PATH``); stderr for everything else."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._chunks: list[str] = []

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self._chunks.append(text)

    def json(self, data: Any) -> None:
        self.write(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")

    def close(self) -> None:
        if self.path is None or not self._chunks:
            return
        from core.fsio import write_bytes_atomic

        write_bytes_atomic(self.path, "".join(self._chunks).encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain `a | b | c` table, widths from the content; locale- and terminal-independent."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    fmt = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    lines = [fmt(head), "-|-".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines) + "\n"


class StderrReporter:
    """Renders job events on stderr: one progress line (rewritten in place on a terminal, throttled
    plain lines otherwise), phases and log lines."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, interval: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._last: dict[str, float] = {}
        self._open_line = False
        self._lock = threading.Lock()
        self._t0: dict[str, float] = {}

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, LogLine):
                if self.quiet and event.level == "info":
                    return
                self._end_line()
                prefix = "" if event.level == "info" else f"{event.level}: "
                self.stream.write(f"{prefix}{event.text}\n")
            elif self.quiet:
                return
            elif isinstance(event, Phase):
                self._t0.clear()  # a new phase restarts the clocks of its progress lines
                self._last.clear()
                self._end_line()
                self.stream.write(f"== {event.name}" + (f": {event.detail}" if event.detail else "") + "\n")
            elif isinstance(event, Progress):
                self._progress(event)
            self.stream.flush()

    def _progress(self, ev: Progress) -> None:
        now = time.monotonic()
        self._t0.setdefault(ev.task, now)
        final = ev.total > 0 and ev.done >= ev.total
        last = self._last.get(ev.task)
        if not final and last is not None and now - last < (0.2 if self.tty else self.interval):
            return
        self._last[ev.task] = now
        elapsed = now - self._t0[ev.task]
        if ev.total > 0:
            pct = 100.0 * ev.done / ev.total
            eta = elapsed / ev.done * (ev.total - ev.done) if ev.done else 0.0
            text = f"{ev.task}: {ev.done}/{ev.total} {ev.unit}s ({pct:3.0f}%) {elapsed:5.0f}s"
            if ev.done and not final and elapsed >= 1.0:
                text += f" eta {eta:.0f}s"
        else:
            text = f"{ev.task}: {ev.done} {ev.unit}s {elapsed:5.0f}s"
        if ev.item:
            text += f" [{ev.item}]"
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self._open_line = not final
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")

    def close(self) -> None:
        with self._lock:
            self._end_line()
            self.stream.flush()


def _echo(text: str) -> None:
    """The effective command, on stderr (users rely on seeing it)."""
    sys.stderr.write(f"+ {text}\n")
    sys.stderr.flush()


def _import_job(module: str, attr: str, what: str) -> Callable[..., Any]:
    """A job function from a sibling module, or a clear error when that part is not built yet."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            raise MissingInputError(f"{what} is not available: module {module} is missing") from None
        raise MissingInputError(f"{what} is not available: {exc}") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise MissingInputError(f"{what} is not available: {module}.{attr} is missing")
    return fn


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict) and obj.get(n) is not None:
            return obj[n]
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return default


# --------------------------------------------------------------------------- results


def _accuracy_value(result: Any) -> float | None:
    acc = _get(result, "accuracy")
    if isinstance(acc, (int, float)):
        return float(acc)
    v = _get(acc, "mean", "mean_dice", "composite") if acc is not None else None
    return float(v) if isinstance(v, (int, float)) else None


def _latency_ms(result: Any) -> float | None:
    for name in ("latency_ms", "latency", "latencies_ms"):
        lat = _get(result, name)
        if isinstance(lat, dict):
            for key in ("p90", "90", "mean", "p50"):
                if isinstance(lat.get(key), (int, float)):
                    return float(lat[key])
        elif isinstance(lat, (int, float)):
            return float(lat)
    for name in ("latency_p90_ms", "p90_latency_ms", "mean_latency_ms"):
        v = _get(result, name)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def result_row(cfg: RunConfig, result: Any, fp32_reference: float | None = None) -> dict[str, Any]:
    """One row of the familiar results table, plus whether the run passed."""
    acc_report = _get(result, "accuracy")
    acc = _accuracy_value(result)
    qps = _get(result, "samples_per_s", "qps")
    lat = _latency_ms(result)
    valid = _get(result, "valid")
    target = (
        _get(acc_report, "target") if acc_report is not None and not isinstance(acc_report, float) else None
    )
    if not isinstance(target, (int, float)):
        target = (
            target_dice(cfg.config_ver, fp32_reference) if fp32_reference else target_dice(cfg.config_ver)
        )
    passed = None
    if acc_report is not None and not isinstance(acc_report, float):
        passed = _get(acc_report, "passed")
    if passed is None and acc is not None:
        passed = acc >= target
    status = _get(result, "status", default="complete")
    ok = status == "complete"
    if cfg.test_mode != "AccuracyOnly" and valid is False:
        ok = False
    if acc is not None and passed is False:
        ok = False
    return {
        "model": MODEL_NAMES.get(cfg.config_ver, cfg.config_ver),
        "scenario": cfg.scenario,
        "test_mode": cfg.test_mode,
        "backend": cfg.backend,
        "precision": cfg.precision,
        "accuracy": acc,
        "accuracy_target": float(target),
        "accuracy_passed": passed,
        "samples_per_s": float(qps) if isinstance(qps, (int, float)) else None,
        "latency_ms": lat,
        "valid": valid,
        "ok": ok,
        "status": status,
        "log_dir": str(_get(result, "log_dir", default="")),
        "run_args": cfg.run_args(),
    }


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.5f}"
        if r["accuracy"] is not None:
            acc += f" ({'PASS' if r['accuracy_passed'] else 'FAIL'} >= {r['accuracy_target']:.5f})"
        qps = "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:.4g} samples/s"
        if r["valid"] is not None and r["test_mode"] != "AccuracyOnly":
            qps += " VALID" if r["valid"] else " INVALID"
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        out.append((r["model"], r["scenario"], acc, qps, lat))
    return table(("Model", "Scenario", "Accuracy", "Throughput", "Latency (ms)"), out)


def _fp32_reference(ws: Workspace) -> float | None:
    """The FP32 DICE the targets are relative to (a `<model>.fp32_dice.json` beside the model, else
    the official 0.86170); only a fallback when the harness result carries no target."""
    try:
        from core.accuracy import fp32_reference_for

        return fp32_reference_for(ws.model_path)[0]
    except Exception:
        return None


# --------------------------------------------------------------------------- commands


def _workspace(args: argparse.Namespace, default_root: str | None = None) -> Workspace:
    root = getattr(args, "workspace", None) or default_root
    # the demo is self-contained: DATA_DIR & co. of a real set-up must not leak into it
    env: dict[str, str] | None = {} if default_root is not None else None
    return Workspace.resolve(
        root,
        data_dir=getattr(args, "data_dir", None),
        preprocessed_dir=getattr(args, "preprocessed_data_dir", None),
        model_dir=getattr(args, "model_dir", None),
        log_dir=getattr(args, "log_dir", None),
        env=env,
    )


def cmd_status(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.status import collect_status, render_table

    st = collect_status(_workspace(args))
    if args.json:
        out.json(st.to_dict())
    else:
        out.write(render_table(st))
    return ExitCode.OK


def cmd_download(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.lock import workspace_lock

    ws = _workspace(args)
    both = not args.model and not args.data
    done: dict[str, Any] = {}
    with workspace_lock(ws, "download"):  # never while a job reads the model or the raw cases
        _download(args, ws, both, done, report, cancel)
    if args.json:
        out.json(done)
    else:
        for key, value in done.items():
            out.write(f"{key}: {value}\n")
    return ExitCode.OK


def _download(
    args: argparse.Namespace, ws: Workspace, both: bool, done: dict[str, Any], report: Any, cancel: Any
) -> None:
    from core import download

    if args.model or both:
        _echo(f"{PROG} download --model -> {ws.model_path}")
        done["model"] = download.download_model(
            ws, report=report, cancel=cancel, verify=not args.no_verify, force=args.force
        )
    if args.data or both:
        _echo(f"{PROG} download --data -> {ws.data_dir}")
        done["data"] = download.download_data(
            ws,
            sets=_split(args.sets),
            cases=_split(args.cases) or None,
            labels_from=args.labels_from,
            report=report,
            cancel=cancel,
            verify=not args.no_verify,
            force=args.force,
        )


def cmd_preprocess(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    run_preprocess = _import_job("core.preprocess", "run_preprocess", "preprocessing")
    ws = _workspace(args)
    sets = tuple(_split(args.sets))
    for s in sets:
        if s not in ("inference", "calibration"):
            raise UsageError(f"--sets: unknown set {s!r} (inference, calibration)")
    _echo(f"{PROG} preprocess --sets={','.join(sets)}" + (f" --jobs={args.jobs}" if args.jobs else ""))
    result = run_preprocess(ws, sets=sets, jobs=args.jobs or None, report=report, cancel=cancel)
    if args.json:
        out.json(result)
    else:
        out.write(_summary_text(result, f"preprocessed into {ws.preprocessed_dir}"))
    return ExitCode.OK


def _summary_text(result: Any, fallback: str) -> str:
    if hasattr(result, "summary") and callable(result.summary):
        return str(result.summary()).rstrip("\n") + "\n"
    if hasattr(result, "__dataclass_fields__"):
        parts = []
        for k in result.__dataclass_fields__:
            v = getattr(result, k)
            if isinstance(v, (list, tuple, dict)):
                v = len(v)
            parts.append(f"{k}: {v}")
        return "\n".join(parts) + "\n"
    return f"{fallback}\n" if result is None else f"{result}\n"


def cmd_calibrate(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    if args.run_args:
        flags = parse_run_args(args.run_args)
        configs_from_flags({"benchmarks": flags.get("benchmarks")})  # validates --benchmarks
    if args.benchmarks:
        configs_from_flags({"benchmarks": args.benchmarks})
    run_calibration = _import_job("core.calibration", "run_calibration", "calibration")
    ws = _workspace(args)
    _echo(f"{PROG} calibrate --method={args.method}")
    path = run_calibration(ws, method=args.method, report=report, cancel=cancel)
    if args.json:
        out.json({"calibration_cache": str(path), "method": args.method})
    else:
        out.write(f"calibration cache: {path}\n")
    return ExitCode.OK


def cmd_run(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    names = [a.dest for a in _run_parser()._actions if a.dest != "help"]
    explicit = {n: getattr(args, n, None) for n in names}
    flags = _merge(explicit, args.run_args)
    for name in PATH_FLAGS:
        if flags.get(name) and getattr(args, name, None) is None:
            setattr(args, name, flags[name])
    action = flags.get("action") or "run_harness"
    if action not in ACTIONS:
        raise UsageError(f"--action={action} is not one of {', '.join(ACTIONS)}")
    configs = configs_from_flags(flags)
    if action == "run_audit_harness" and not all(c.audit_test for c in configs):
        raise UsageError("--action=run_audit_harness needs --audit_test=TEST01|TEST04|TEST05")

    ws = _workspace(args)
    if args.dry_run:  # with the workspace flags: the printed commands work pasted anywhere
        for cfg in configs:
            _echo(cfg.cli_command(ws))
            out.write(f"{cfg.cli_command(ws)}\n{cfg.make_command(ws)}\n")
        return ExitCode.OK

    if action == "calibrate":
        run_calibration = _import_job("core.calibration", "run_calibration", "calibration")
        _echo(f"{PROG} calibrate")
        out.write(f"calibration cache: {run_calibration(ws, report=report, cancel=cancel)}\n")
        return ExitCode.OK
    if action == "generate_engines":
        return _generate_engines(ws, configs, out)

    if len(configs) > 1:
        # LoadGen takes its configuration once per process (a second FromConfig marks the run's log
        # invalid), so each combination runs in a fresh `unet3d run` process
        rows, code = _run_each_in_child(ws, configs, args)
    else:
        rows, code = _run_here(ws, configs[0], args, report, cancel), ExitCode.OK
    if rows:
        if args.json:
            out.json({"results": rows})
        else:
            out.write(results_table(rows))
    if code != ExitCode.OK:
        return code
    return ExitCode.OK if all(r["ok"] for r in rows) else ExitCode.INVALID


def _run_here(
    ws: Workspace, cfg: RunConfig, args: argparse.Namespace, report: StderrReporter, cancel: CancelToken
) -> list[dict[str, Any]]:
    run_benchmark = _import_job("core.harness.runner", "run_benchmark", "the LoadGen harness")
    cancel.check()
    _echo(cfg.cli_command())
    result = run_benchmark(ws, cfg, report=report, cancel=cancel)
    report.close()
    summary = getattr(result, "summary_text", "")
    if summary and not args.quiet:
        sys.stderr.write(summary.rstrip("\n") + "\n")
    return [result_row(cfg, result, _fp32_reference(ws))]


def _run_each_in_child(
    ws: Workspace, configs: list[RunConfig], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    """One child process per configuration; its JSON row comes back on stdout, its progress and errors
    go straight to our stderr. Stops at the first child that fails for a reason other than INVALID."""
    import subprocess

    paths = [
        f"--workspace={ws.root}",
        f"--data_dir={ws.data_dir}",
        f"--preprocessed_data_dir={ws.preprocessed_dir}",
        f"--model_dir={ws.model_dir}",
        f"--log_dir={ws.log_dir}",
    ]
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        cmd = [sys.executable, "-m", "core", *paths, "run", f"--run-args={cfg.run_args()}", "--json"]
        if args.quiet:
            cmd.append("--quiet")
        for key, value in cfg.extra.items():
            cmd.append(f"--{key}={value}")
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        except KeyboardInterrupt:  # the child got the same Ctrl-C and stops on its own
            return rows, ExitCode.INTERRUPTED
        if proc.returncode not in (ExitCode.OK, ExitCode.INVALID):
            return rows, proc.returncode  # the child already printed its `error:` line
        try:
            rows += json.loads(proc.stdout)["results"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"run of {cfg.cli_command()} returned no result") from None
    return rows, ExitCode.OK


def _generate_engines(ws: Workspace, configs: list[RunConfig], out: Output) -> int:
    from core.backends import get_backend

    if not ws.model_path.exists():
        raise MissingInputError(f"{ws.model_path}: model not found (run: {PROG} download --model)")
    seen = set()
    for cfg in configs:
        key = (cfg.backend, cfg.precision, cfg.gpu_batch_size)
        if key in seen:
            continue
        seen.add(key)
        _echo(f"{PROG} run --action=generate_engines --backend={cfg.backend} --precision={cfg.precision}")
        cache = ws.calibration_cache_path if ws.calibration_cache_path.exists() else None
        engine = get_backend(cfg.backend).load(
            ws.model_path, precision=cfg.precision, batch_size=cfg.gpu_batch_size, calibration_cache=cache
        )
        engine.close()
        out.write(f"engine ready: {cfg.backend} {cfg.precision} batch {cfg.gpu_batch_size}\n")
    return ExitCode.OK


def cmd_accuracy(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    score_log = _import_job("core.accuracy", "score_log", "the accuracy script")
    ws = _workspace(args)
    log = Path(args.log_file)
    if not log.exists():
        raise MissingInputError("accuracy log not found", log)
    _echo(f"{PROG} accuracy --log_file={log}")
    rep = score_log(ws, log)
    if args.json:
        out.json(rep)
        return ExitCode.OK
    line = None
    for name in ("official_line", "line"):
        v = getattr(rep, name, None)
        line = v() if callable(v) else v
        if line:
            break
    cases = _get(rep, "rows", "cases", "per_case", default=[]) or []
    rows = []
    items: Any = cases.items() if isinstance(cases, dict) else ((None, c) for c in cases)
    for name, c in items:
        case = name or _get(c, "case", "name", default="?")
        k, t = _get(c, "kidney"), _get(c, "tumor")
        if k is None and isinstance(c, (tuple, list)) and len(c) >= 2:
            k, t = c[0], c[1]
        comp = (k + t) / 2 if isinstance(k, (int, float)) and isinstance(t, (int, float)) else None
        fmt = lambda v: "-" if not isinstance(v, (int, float)) else f"{v:.4f}"  # noqa: E731
        rows.append((str(case), fmt(k), fmt(t), fmt(comp)))
    if rows:
        out.write(table(("Case", "Kidney", "Tumor", "Composite"), rows))
    out.write(f"{line if line else rep}\n")
    target, passed = _get(rep, "target"), _get(rep, "passed")
    if isinstance(target, (int, float)) and passed is not None:
        ref = _get(rep, "fp32_reference")
        source = _get(rep, "reference_source", default="")
        ref_text = f" of FP32 {ref:.5f} ({source})" if isinstance(ref, (int, float)) else ""
        sys.stderr.write(f"target {target:.5f}{ref_text}: {'PASS' if passed else 'FAIL'}\n")
        if not passed:
            return ExitCode.INVALID  # exit 1: accuracy below target
    return ExitCode.OK


def cmd_history(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    list_runs = _import_job("core.history", "list_runs", "run history")
    runs = list(list_runs(_workspace(args)))
    if args.json:
        out.json({"runs": runs})
        return ExitCode.OK
    from core.status import record_text

    rows = []
    for rec in runs:
        name, detail, _ = record_text(rec)
        when = str(_get(rec, "started", "time", "timestamp", "date", default=""))
        rows.append((name, when, detail))
    if not rows:
        sys.stderr.write("no runs yet\n")
    out.write(table(("Run", "When", "Result"), rows))
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace, out: Output, report: StderrReporter, cancel: CancelToken) -> int:
    from core.demo import render_demo, run_demo

    ws = _workspace(args, default_root=DEMO_WORKSPACE)
    _echo(f"{PROG} demo --workspace={ws.root}")
    result = run_demo(ws, report=report, cancel=cancel, performance=not args.skip_performance)
    if args.json:
        out.json(result)
    else:
        out.write(render_demo(result))
    return ExitCode.OK if result.ok else ExitCode.INVALID


COMMANDS: dict[str, Callable[[argparse.Namespace, Output, StderrReporter, CancelToken], int]] = {
    "status": cmd_status,
    "download": cmd_download,
    "preprocess": cmd_preprocess,
    "calibrate": cmd_calibrate,
    "run": cmd_run,
    "accuracy": cmd_accuracy,
    "history": cmd_history,
    "demo": cmd_demo,
}


# --------------------------------------------------------------------------- entry point


@contextlib.contextmanager
def _sigint_cancels(cancel: CancelToken) -> Iterator[None]:
    """First Ctrl-C asks the job to stop after its current unit; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        sys.stderr.write("\ninterrupt: stopping after the current step (Ctrl-C again to abort)\n")

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _join_run_args(argv: list[str]) -> list[str]:
    """`--run-args "--scenarios=..."`: argparse would take the value for an option; glue it on with '='."""
    out: list[str] = []
    it = iter(argv)
    for tok in it:
        if tok in ("--run-args", "--run_args"):
            nxt = next(it, None)
            out.append(tok if nxt is None else f"{tok}={nxt}")
        else:
            out.append(tok)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = _join_run_args(list(sys.argv[1:] if argv is None else argv))
    cancel = CancelToken()
    reporter: StderrReporter | None = None
    out: Output | None = None
    code: int = ExitCode.OK
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("json", False), ("output", None), ("quiet", False)):
            if not hasattr(args, name):
                setattr(args, name, default)
        if not args.command:
            raise UsageError(f"no command given (one of {', '.join(COMMANDS)}; see {PROG} --help)")
        reporter = StderrReporter(quiet=args.quiet)
        out = Output(args.output)
        with _sigint_cancels(cancel):
            code = COMMANDS[args.command](args, out, reporter, cancel)
        out.close()
    except UnetError as err:
        code = err.exit_code
        _fail(reporter, str(err))
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
        _fail(reporter, "interrupted")
    except BrokenPipeError:
        # `unet3d status | head`: the reader went away; not an error of ours
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.OK
    except FileNotFoundError as err:
        code = ExitCode.MISSING
        _fail(reporter, f"{err.filename}: {err.strerror}" if err.filename else str(err))
    except OSError as err:
        code = ExitCode.BAD_INPUT
        _fail(reporter, f"{err.filename}: {err.strerror}" if err.filename else str(err))
    except MemoryError:
        code = ExitCode.BAD_INPUT
        _fail(reporter, "out of memory (try a smaller --gpu_batch_size or fewer --jobs)")
    except Exception as err:  # a bug: keep the traceback, it is what a bug report needs
        if reporter is not None:
            reporter.close()
        traceback.print_exc()
        sys.stderr.write(f"error: internal error: {type(err).__name__}: {err}\n")
        code = 1
    return int(code)


def _fail(reporter: StderrReporter | None, message: str) -> None:
    if reporter is not None:
        reporter.close()
    if isinstance(message, str) and message.startswith("error: "):
        message = message[len("error: ") :]
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()


__all__ = ["Cancelled", "build_parser", "configs_from_flags", "main", "parse_run_args", "result_row"]
