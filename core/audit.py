"""The auditor checklist, as data: NVIDIA's "Instructions for Auditors" turned into steps whose state is
decided by evidence found on disk (status probes, LoadGen log folders, file times and checksums).

Each :class:`Step` has an id, a title, help (Markdown), a check function and an :class:`Action` (the
RunConfig or job that does the step). :class:`Audit` runs the checks, keeps each step's
:class:`StepResult` in ``<root>/build/audit/audit_state.json`` (so an audit resumes where it stopped)
and exports a Markdown report. The CLI and the console both drive this module; neither re-implements a
check.

Groups, in the seed's order:
  setup      environment, KiTS19, preprocessed data, model, calibration cache
  runs       {default, high_accuracy} x {PerformanceOnly, AccuracyOnly} for the audited scenario
  weights    "Run with new weights": replace the model -> calibrate -> run high_accuracy
  dataset    "Run with a new validation or calibration dataset": place data + case lists ->
             preprocess -> calibrate -> run high_accuracy
  compliance TEST01, TEST05 (performance runs with LoadGen's audit.config)
  logs       every result folder holds its LoadGen logs
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.benchmark import FP32_REFERENCE_DICE, SCENARIOS, RunConfig, target_dice
from core.errors import BadInputError, UsageError
from core.fsio import sha256_file
from core.fsio import write_text_atomic as _atomic_write
from core.jobs import NEVER, CancelToken, Progress, Reporter, null_reporter
from core.workspace import Workspace

PENDING = "pending"
PASSED = "passed"
FAILED = "failed"
STATES = (PENDING, PASSED, FAILED)
STATE_FILE = "audit_state.json"
STATE_VERSION = 1
ICONS = {PENDING: "○", PASSED: "✔", FAILED: "✘"}

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
ACCURACY = "mlperf_log_accuracy.json"


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Action:
    """What does a step: a LoadGen run (``run``), a core job (``job``: preprocess | calibrate |
    demo), or something the operator does by hand (``manual``, described by ``text``)."""

    kind: str  # "run" | "job" | "manual" | "check"
    label: str
    run: RunConfig | None = None
    job: str = ""
    text: str = ""

    def command(self) -> str:
        """The equivalent shell command (shown by the console, printed by the CLI)."""
        if self.run is not None:
            return self.run.cli_command()
        if self.job:
            return f"unet3d {self.job}"
        return self.text


@dataclass(frozen=True)
class StepResult:
    state: str
    evidence: str  # one line, e.g. "build/logs/2026-...: VALID, 6.81 samples/s"
    paths: tuple[str, ...] = ()
    checked_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepResult:
        state = d.get("state", PENDING)
        return cls(
            state=state if state in STATES else PENDING,
            evidence=str(d.get("evidence", "")),
            paths=tuple(str(p) for p in d.get("paths", ()) or ()),
            checked_at=str(d.get("checked_at", "")),
        )


NOT_CHECKED = StepResult(PENDING, "not checked yet")


@dataclass(frozen=True)
class Step:
    id: str
    group: str
    title: str
    help: str  # Markdown
    check: Callable[[Context], StepResult]
    action: Action
    seed_command: str = ""  # NVIDIA's command for this step, quoted from the auditor instructions


@dataclass(frozen=True)
class RunView:
    """A LoadGen result folder as the checklist (and the console's history) sees it, whatever the exact
    fields of core.history's record are."""

    log_dir: Path
    started: float  # epoch seconds
    scenario: str = ""
    config_ver: str = ""
    test_mode: str = ""
    backend: str = ""
    precision: str = ""
    audit_test: str = ""
    valid: bool | None = None  # LoadGen VALID/INVALID; None: no result line (accuracy mode, unfinished)
    samples_per_s: float | None = None
    dice: float | None = None  # mean composite DICE (accuracy runs)
    accuracy_pass: bool | None = None
    complete: bool = False
    status: str = ""  # core.history: running | complete | incomplete | cancelled | failed | broken
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))

    @property
    def result(self) -> str:
        if self.status and self.status != "complete":
            return self.status
        if not self.complete:
            return "incomplete"
        if self.valid is None:
            return "complete"
        return "VALID" if self.valid else "INVALID"

    def passes(self, fp32_reference: float = FP32_REFERENCE_DICE) -> bool:
        """Finished and VALID; an accuracy run instead needs DICE at or above its config_ver's target
        (relative to the FP32 reference of the model in use)."""
        if not self.complete or self.valid is False:
            return False
        if self.test_mode == "AccuracyOnly":
            if self.accuracy_pass is not None:
                return self.accuracy_pass
            if self.dice is None or self.config_ver not in ("default", "high_accuracy"):
                return False
            return self.dice >= target_dice(self.config_ver, fp32_reference)
        return self.valid is True


def _get(rec: Any, data: dict[str, Any], *names: str) -> Any:
    for n in names:
        if isinstance(data.get(n), (str, int, float, bool, dict, Path)) and data.get(n) is not None:
            return data[n]
        v = getattr(rec, n, None)
        if v is not None and not callable(v):
            return v
    return None


def run_view(rec: Any) -> RunView:
    """Normalize a core.history record (dataclass or dict) into a RunView."""
    data: dict[str, Any] = {}
    if isinstance(rec, dict):
        data = dict(rec)
    elif hasattr(rec, "to_dict"):
        try:
            data = dict(rec.to_dict())
        except Exception:
            data = {}
    elif hasattr(rec, "__dataclass_fields__"):
        data = {k: getattr(rec, k) for k in rec.__dataclass_fields__}
    log_dir = Path(str(_get(rec, data, "log_dir", "path", "folder") or "."))
    cfg = _get(rec, data, "config", "run_config")
    if isinstance(cfg, RunConfig):
        cfg = cfg.to_dict()
    cfgd: dict[str, Any] = cfg if isinstance(cfg, dict) else {}

    def pick(*names: str) -> Any:
        v = _get(rec, data, *names)
        if v is None:
            for n in names:
                if cfgd.get(n) is not None:
                    return cfgd[n]
        return v

    started = pick("started", "start_time", "timestamp", "date", "time")
    if isinstance(started, str):
        started = _parse_time(started)
    if not isinstance(started, (int, float)):
        try:
            started = log_dir.stat().st_mtime
        except OSError:
            started = 0.0
    valid = pick("valid", "result_valid")
    if isinstance(valid, str):
        valid = {"VALID": True, "INVALID": False}.get(valid.upper())
    acc = pick("dice", "mean_dice", "accuracy")
    if isinstance(acc, dict):
        acc = acc.get("mean", acc.get("composite"))
    elif acc is not None and not isinstance(acc, (int, float)):
        acc = getattr(acc, "mean", None)
    status = pick("status")
    complete = pick("complete", "finished")
    if isinstance(status, str) and status:
        complete = status == "complete"
    elif complete is None:
        complete = valid is not None
    qps = pick("samples_per_s", "qps", "throughput")
    return RunView(
        log_dir=log_dir,
        started=float(started),
        scenario=str(pick("scenario") or ""),
        config_ver=str(pick("config_ver") or ""),
        test_mode=str(pick("test_mode", "mode") or ""),
        backend=str(pick("backend") or ""),
        precision=str(pick("precision") or ""),
        audit_test=str(pick("audit_test") or ""),
        valid=valid if isinstance(valid, bool) else None,
        samples_per_s=float(qps) if isinstance(qps, (int, float)) else None,
        dice=float(acc) if isinstance(acc, (int, float)) else None,
        accuracy_pass=_bool_or_none(pick("accuracy_pass", "accuracy_ok", "passed")),
        complete=bool(complete),
        status=status if isinstance(status, str) else "",
        raw={k: v for k, v in data.items() if isinstance(v, (str, int, float, bool, type(None)))},
    )


def _bool_or_none(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _parse_time(text: str) -> float | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d-%H-%M-%S", "%Y%m%d-%H%M%S"):
        try:
            return time.mktime(time.strptime(text[:19], fmt))
        except ValueError:
            continue
    return None


def list_run_views(ws: Workspace) -> list[RunView]:
    """Runs from core.history, oldest first; [] when core.history is not in this build."""
    try:
        mod = importlib.import_module("core.history")
    except ModuleNotFoundError as exc:
        if exc.name in ("core.history", "core"):
            return []
        raise
    views = [run_view(r) for r in mod.list_runs(ws)]
    return sorted(views, key=lambda v: v.started)


# ------------------------------------------------------------------------------------------- context
@dataclass
class Context:
    """What checks read: the workspace, the audited scenario, the baseline recorded when the audit
    started (model sha256, case-list digest), and lazily computed status/runs shared by all checks."""

    ws: Workspace
    scenario: str
    baseline: dict[str, str]
    fp32_reference: float = FP32_REFERENCE_DICE
    _status: Any = None
    _runs: list[RunView] | None = None

    @property
    def status(self) -> Any:
        if self._status is None:
            from core.status import collect_status

            self._status = collect_status(self.ws)
        return self._status

    @property
    def runs(self) -> list[RunView]:
        if self._runs is None:
            self._runs = list_run_views(self.ws)
        return self._runs

    def section(self, name: str) -> Any:
        return self.status.section(name)


def _rel(ws: Workspace, p: Path | str) -> str:
    try:
        return str(Path(p).relative_to(ws.root))
    except ValueError:
        return str(p)


def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime
    except OSError:
        return None


def case_lists_digest(ws: Workspace) -> str:
    """Digest of the case lists in use (DATA_DIR json files or the official ones)."""
    h = hashlib.sha256()
    for name in ("inference_cases.json", "calibration_cases.json"):
        p = ws.data_dir / name
        h.update(p.read_bytes() if p.is_file() else b"official")
    return h.hexdigest()


def _section_check(name: str, what: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        sec = ctx.section(name)
        bad = [i for i in sec.items if not i.ok]
        if not sec.items:
            return StepResult(FAILED, f"no {what} found")
        if bad:
            first = bad[0]
            more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
            return StepResult(FAILED, f"{first.name}: {first.state}, {first.detail}{more}".strip(", "))
        details = "; ".join(i.detail for i in sec.items[:2] if i.detail)
        n = len(sec.items)
        return StepResult(PASSED, f"{n} item{'s' if n != 1 else ''} ok" + (f": {details}" if details else ""))

    return check


def _check_environment(ctx: Context) -> StepResult:
    from importlib import metadata

    parts = [f"python {platform.python_version()}"]
    missing = []
    for dist, label in (
        ("mlcommons-loadgen", "loadgen"),
        ("onnxruntime", "onnxruntime"),
        ("torch", "torch"),
        ("tensorrt", "tensorrt"),
    ):
        try:
            parts.append(f"{label} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            missing.append(label)
    ok_backends = [i.name for i in ctx.section("backends").items if i.ok]
    parts.append("backends: " + (", ".join(ok_backends) or "none"))
    if "loadgen" in missing:
        return StepResult(FAILED, "mlcommons-loadgen is not installed; " + ", ".join(parts))
    if not ok_backends:
        return StepResult(FAILED, "no backend is available here; " + ", ".join(parts))
    return StepResult(PASSED, ", ".join(parts))


def _matching_runs(ctx: Context, *, config_ver: str | None = None, test_mode: str | None = None,
                   audit_test: str | None = None, after: float | None = None) -> list[RunView]:  # fmt: skip
    out = []
    for r in ctx.runs:
        if r.scenario != ctx.scenario:
            continue
        if config_ver is not None and r.config_ver != config_ver:
            continue
        if test_mode is not None and r.test_mode != test_mode:
            continue
        if audit_test is not None and r.audit_test != audit_test:
            continue
        if audit_test is None and r.audit_test:
            continue  # compliance runs do not count as the plain auditor runs
        if after is not None and r.started < after:
            continue
        out.append(r)
    return out


def _describe(ws: Workspace, r: RunView) -> str:
    bits = [_rel(ws, r.log_dir) + ":", r.result]
    if r.samples_per_s is not None:
        bits.append(f"{r.samples_per_s:.4g} samples/s")
    if r.dice is not None:
        bits.append(f"DICE {r.dice:.5f}")
    if r.backend:
        bits.append(f"({r.backend} {r.precision})".replace(" )", ")"))
    return " ".join(bits)


def _run_result(ctx: Context, runs: list[RunView], what: str, after_what: str = "") -> StepResult:
    if not runs:
        return StepResult(PENDING, f"no {what} run yet" + (f" after {after_what}" if after_what else ""))
    good = [r for r in runs if r.passes(ctx.fp32_reference)]
    best = good[-1] if good else runs[-1]
    state = PASSED if good else FAILED
    return StepResult(state, _describe(ctx.ws, best), (str(best.log_dir),))


def _run_check(config_ver: str, test_mode: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        runs = _matching_runs(ctx, config_ver=config_ver, test_mode=test_mode)
        return _run_result(ctx, runs, f"{ctx.scenario} {config_ver} {test_mode}")

    return check


def _check_new_model(ctx: Context) -> StepResult:
    path = ctx.ws.model_path
    if not path.is_file():
        return StepResult(PENDING, f"{_rel(ctx.ws, path)} not found: place the new ONNX model there")
    sha = sha256_file(path)
    base = ctx.baseline.get("model_sha256", "")
    if not base or base == sha:
        return StepResult(
            PENDING, f"model sha256 {sha[:12]} is the one the audit started with: replace {path.name}"
        )
    return StepResult(PASSED, f"model replaced: sha256 {base[:12]} -> {sha[:12]}", (str(path),))


def _check_calibrated_after(
    source: Callable[[Context], tuple[Path, float | None]], what: str
) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        src, t_src = source(ctx)
        cache = ctx.ws.calibration_cache_path
        t_cache = _mtime(cache)
        if t_cache is None:
            return StepResult(PENDING, f"{_rel(ctx.ws, cache)} not found")
        cal = ctx.section("calibration")
        if cal.state != "ok":
            item = cal.items[0] if cal.items else None
            return StepResult(FAILED, f"calibration cache: {item.detail if item else 'missing'}")
        if t_src is None:
            return StepResult(PENDING, f"{_rel(ctx.ws, src)} not found")
        if t_cache < t_src:
            return StepResult(PENDING, f"calibration cache is older than the {what}: calibrate again")
        return StepResult(PASSED, f"{_rel(ctx.ws, cache)} written after the {what}", (str(cache),))

    return check


def _model_time(ctx: Context) -> tuple[Path, float | None]:
    return ctx.ws.model_path, _mtime(ctx.ws.model_path)


def _preprocessed_time(ctx: Context) -> tuple[Path, float | None]:
    p = ctx.ws.preprocessed_dir / "calibration" / "preprocessed_files.json"
    return p, _mtime(p)


def _run_after_calibration(what: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        t_cache = _mtime(ctx.ws.calibration_cache_path)
        if t_cache is None:
            return StepResult(PENDING, "calibrate first")
        runs = _matching_runs(ctx, config_ver="high_accuracy", after=t_cache)
        return _run_result(ctx, runs, f"{ctx.scenario} high_accuracy", f"the {what} calibration")

    return check


def _check_new_data(ctx: Context) -> StepResult:
    d = ctx.ws.data_dir
    lists = [d / "inference_cases.json", d / "calibration_cases.json"]
    absent = [p.name for p in lists if not p.is_file()]
    if absent:
        return StepResult(PENDING, f"put the dataset and {', '.join(absent)} in {_rel(ctx.ws, d)}")
    sec = ctx.section("dataset")
    bad = [i for i in sec.items if not i.ok]
    if bad:
        return StepResult(FAILED, f"{bad[0].name}: {bad[0].state} {bad[0].detail}".strip())
    digest = case_lists_digest(ctx.ws)
    base = ctx.baseline.get("case_lists", "")
    note = "case lists changed since the audit started" if base and base != digest else "case lists in place"
    return StepResult(PASSED, f"{note}; {len(sec.items)} dataset items ok", tuple(str(p) for p in lists))


def _check_preprocessed_after_data(ctx: Context) -> StepResult:
    lists = [_mtime(ctx.ws.data_dir / n) for n in ("inference_cases.json", "calibration_cases.json")]
    list_times = [t for t in lists if t is not None]
    if len(list_times) < len(lists):
        return StepResult(PENDING, "place the new dataset and case lists first")
    idx = [ctx.ws.preprocessed_dir / s / "preprocessed_files.json" for s in ("inference", "calibration")]
    times = [t for t in (_mtime(p) for p in idx) if t is not None]
    if len(times) < len(idx):
        return StepResult(PENDING, "preprocessed data not found: run the preprocessing")
    if min(times) < max(list_times):
        return StepResult(PENDING, "preprocessed data is older than the case lists: preprocess again")
    sec = ctx.section("preprocessed")
    if sec.state != "ok":
        return StepResult(FAILED, "preprocessed data has problems: " + sec.items[0].detail)
    return StepResult(PASSED, "preprocessed after the case lists were placed", tuple(str(p) for p in idx))


def _compliance_check(test: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        runs = _matching_runs(ctx, audit_test=test)
        return _run_result(ctx, runs, f"{ctx.scenario} {test}")

    return check


def _check_logs(ctx: Context) -> StepResult:
    """Every finished run's folder holds non-empty LoadGen logs; unfinished runs are not results and are
    only counted (core.history marks them incomplete/cancelled/failed)."""
    done = [r for r in ctx.runs if r.complete]
    other = len(ctx.runs) - len(done)
    note = f"; {other} unfinished run folder{'s' if other != 1 else ''} not counted" if other else ""
    if not done:
        return StepResult(PENDING, f"no finished runs in {_rel(ctx.ws, ctx.ws.log_dir)}{note}")
    incomplete = []
    for r in done:
        need = [SUMMARY, DETAIL] + ([ACCURACY] if r.test_mode == "AccuracyOnly" else [])
        absent = [n for n in need if not (r.log_dir / n).is_file() or (r.log_dir / n).stat().st_size == 0]
        if absent:
            incomplete.append(f"{_rel(ctx.ws, r.log_dir)} lacks {', '.join(absent)}")
    if incomplete:
        return StepResult(FAILED, f"{len(incomplete)} of {len(done)} incomplete: {incomplete[0]}{note}")
    return StepResult(PASSED, f"{len(done)} result folders complete (summary, detail, accuracy log){note}")


# ----------------------------------------------------------------------------------------- checklist
def _seed_run(config_ver: str, scenario: str, test_mode: str | None) -> str:
    tm = f" --test_mode={test_mode}" if test_mode else ""
    return f'make run RUN_ARGS="--benchmarks=3d-unet --scenarios={scenario} --config_ver={config_ver}{tm}"'


def checklist(scenario: str = "Offline", base: RunConfig | None = None) -> list[Step]:
    """The steps for ``scenario``. ``base`` supplies backend/precision/batch/durations for the runs."""
    if scenario not in SCENARIOS:
        raise UsageError(f"--scenarios={scenario} is not one of {', '.join(SCENARIOS)}")
    base = (base or RunConfig()).with_(scenario=scenario, audit_test=None)
    calibrate = Action("job", "Calibrate", job="calibrate")
    preprocess = Action("job", "Preprocess", job="preprocess")
    steps = [
        Step(
            "env",
            "setup",
            "Environment report",
            "Versions of Python, LoadGen and the inference libraries, and which backends can run here "
            "(the equivalent of NVIDIA's `make info`).",
            _check_environment,
            Action("check", "Check"),
        ),
        Step(
            "data",
            "setup",
            "KiTS19 dataset present",
            "The inference cases (42 KiTS19 cases + case_00400, a copy of case_00185) and the 20 "
            "calibration cases, with imaging and segmentation volumes.",
            _section_check("dataset", "dataset"),
            Action("manual", "Get data", text="unet3d download --data (or unet3d demo)"),
        ),
        Step(
            "preprocessed",
            "setup",
            "Preprocessed data present",
            "Both sets preprocessed by `core.preprocess` (fp32 and int8 volumes, labels, checksums).",
            _section_check("preprocessed", "preprocessed data"),
            preprocess,
            "python3 code/3d-unet/tensorrt/preprocess_data.py",
        ),
        Step(
            "model",
            "setup",
            "Model present",
            "`build/models/3d-unet-kits19/3dUNetKiTS19.onnx` with input `input` [N,1,128,128,128] and "
            "output `output` [N,3,128,128,128].",
            _section_check("model", "model"),
            Action("manual", "Get model", text="unet3d download --model"),
        ),
        Step(
            "calibration",
            "setup",
            "Calibration cache present",
            "An INT8 calibration cache made for this model (its sha256 must match).",
            _section_check("calibration", "calibration cache"),
            calibrate,
            'make calibrate RUN_ARGS="--benchmarks=3d-unet"',
        ),
    ]
    for cv in ("default", "high_accuracy"):
        for tm in ("PerformanceOnly", "AccuracyOnly"):
            target = f"{target_dice(cv):.7g}"
            extra = (
                f" The mean DICE must reach the {cv} target ({target})."
                if tm == "AccuracyOnly"
                else " LoadGen must report the run VALID."
            )
            steps.append(
                Step(
                    f"run.{cv}.{tm}",
                    "runs",
                    f"{scenario} {cv} {tm}",
                    f"NVIDIA's auditor run `{_seed_run(cv, scenario, tm)}`; results land in `build/logs`."
                    + extra,
                    _run_check(cv, tm),
                    Action("run", f"Run {cv} {tm}", run=base.with_(config_ver=cv, test_mode=tm)),
                    _seed_run(cv, scenario, tm),
                )
            )
    steps += [
        Step(
            "weights.replace",
            "weights",
            "New weights: replace the model",
            "Replace `build/models/3d-unet-kits19/3dUNetKiTS19.onnx` with the new ONNX model. Evidence: "
            "the model's sha256 differs from the one recorded when this audit started.",
            _check_new_model,
            Action(
                "manual", "Replace model", text="cp NEW.onnx build/models/3d-unet-kits19/3dUNetKiTS19.onnx"
            ),
        ),
        Step(
            "weights.calibrate",
            "weights",
            "New weights: calibrate",
            "Generate a new calibration cache for the new model.",
            _check_calibrated_after(_model_time, "model"),
            calibrate,
            'make calibrate RUN_ARGS="--benchmarks=3d-unet"',
        ),
        Step(
            "weights.run",
            "weights",
            "New weights: run high_accuracy",
            "Run the benchmark with `--config_ver=high_accuracy` after the new calibration.",
            _run_after_calibration("new-weights"),
            Action(
                "run",
                "Run high_accuracy",
                run=base.with_(config_ver="high_accuracy", test_mode="PerformanceOnly"),
            ),
            _seed_run("high_accuracy", scenario, None),
        ),
        Step(
            "dataset.place",
            "dataset",
            "New dataset: place data and case lists",
            "Put the new dataset under `build/data/KiTS19/`, together with `inference_cases.json` and "
            "`calibration_cases.json`.",
            _check_new_data,
            Action(
                "manual",
                "Place data",
                text="copy the cases and both case-list JSON files to build/data/KiTS19/",
            ),
        ),
        Step(
            "dataset.preprocess",
            "dataset",
            "New dataset: preprocess",
            "Preprocess both sets again (newer than the case lists).",
            _check_preprocessed_after_data,
            preprocess,
            "python3 code/3d-unet/tensorrt/preprocess_data.py",
        ),
        Step(
            "dataset.calibrate",
            "dataset",
            "New dataset: calibrate",
            "Generate a new calibration cache from the new calibration set.",
            _check_calibrated_after(_preprocessed_time, "preprocessed calibration set"),
            calibrate,
            'make calibrate RUN_ARGS="--benchmarks=3d-unet"',
        ),
        Step(
            "dataset.run",
            "dataset",
            "New dataset: run high_accuracy",
            "Run the benchmark with `--config_ver=high_accuracy` after the new calibration.",
            _run_after_calibration("new-dataset"),
            Action(
                "run",
                "Run high_accuracy",
                run=base.with_(config_ver="high_accuracy", test_mode="PerformanceOnly"),
            ),
            _seed_run("high_accuracy", scenario, None),
        ),
    ]
    for test, what in (
        ("TEST01", "logs a sample of responses in a performance run to check them against the accuracy run"),
        ("TEST05", "repeats the performance run with alternate LoadGen seeds"),
    ):
        steps.append(
            Step(
                f"compliance.{test}",
                "compliance",
                f"Compliance {test}",
                f"{test} {what} (`--audit_test={test} --action=run_audit_harness`; NVIDIA retries "
                "with a 20 s cool-down). Evidence here: a finished VALID run with this audit test's "
                "audit.config. The submission's verification scripts (compliance/<TEST>/run_verification.py) "
                "are not run by this tool.",
                _compliance_check(test),
                Action(
                    "run",
                    f"Run {test}",
                    run=base.with_(config_ver="default", test_mode="PerformanceOnly", audit_test=test),
                ),
                "make run_audit_harness RUN_ARGS="
                f'"--benchmarks=3d-unet --scenarios={scenario} --audit_test={test}"',
            )
        )
    steps.append(
        Step(
            "logs",
            "logs",
            "Result folders complete",
            "Every folder under `build/logs` holds `mlperf_log_summary.txt`, `mlperf_log_detail.txt` "
            "and, for accuracy runs, `mlperf_log_accuracy.json`.",
            _check_logs,
            Action("check", "Check"),
        )
    )
    return steps


# -------------------------------------------------------------------------------------------- audit
class Audit:
    """A checklist bound to a workspace, with results persisted in ``<root>/build/audit``."""

    def __init__(self, ws: Workspace, scenario: str = "Offline", base: RunConfig | None = None) -> None:
        self.ws = ws
        self.scenario = scenario
        self.steps = checklist(scenario, base)
        self.results: dict[str, StepResult] = {s.id: NOT_CHECKED for s in self.steps}
        self.baseline: dict[str, str] = {}
        self.started_at = ""

    # --- persistence ---
    @staticmethod
    def state_path(ws: Workspace) -> Path:
        return ws.root / "build" / "audit" / STATE_FILE

    @classmethod
    def load(cls, ws: Workspace, scenario: str | None = None, base: RunConfig | None = None) -> Audit:
        """Resume the saved audit (same scenario) or start a new one; a corrupt file is a BadInputError."""
        path = cls.state_path(ws)
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                    raise ValueError("unknown format")
            except (ValueError, OSError) as exc:
                raise BadInputError(
                    f"unreadable audit state ({exc}); delete it to start over", path
                ) from None
        saved_scenario = str(data.get("scenario") or "Offline")
        audit = cls(ws, scenario or saved_scenario, base)
        if data and audit.scenario == saved_scenario:
            audit.baseline = {str(k): str(v) for k, v in (data.get("baseline") or {}).items()}
            audit.started_at = str(data.get("started_at", ""))
            for sid, res in (data.get("steps") or {}).items():
                if sid in audit.results and isinstance(res, dict):
                    audit.results[sid] = StepResult.from_dict(res)
        if not audit.baseline:
            audit.record_baseline()
        return audit

    def record_baseline(self) -> None:
        """Remember the model and case lists the audit started with (for the 'new weights/data' steps)."""
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.baseline = {"case_lists": case_lists_digest(self.ws)}
        if self.ws.model_path.is_file():
            self.baseline["model_sha256"] = sha256_file(self.ws.model_path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "scenario": self.scenario,
            "started_at": self.started_at,
            "baseline": dict(self.baseline),
            "steps": {sid: r.to_dict() for sid, r in self.results.items()},
        }

    def save(self) -> Path:
        path = self.state_path(self.ws)
        _atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    # --- checks ---
    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise UsageError(f"unknown audit step {step_id!r}")

    def context(self, status: Any = None, runs: list[RunView] | None = None) -> Context:
        """A check context; a caller that already holds a fresh status report or run list (the console
        polls both) passes them so the checks do not probe the workspace again."""
        ctx = Context(self.ws, self.scenario, self.baseline, fp32_reference(self.ws))
        ctx._status, ctx._runs = status, runs
        return ctx

    def check(self, step_id: str, ctx: Context | None = None, save: bool = True) -> StepResult:
        step = self.step(step_id)
        ctx = ctx or self.context()
        try:
            res = step.check(ctx)
        except Exception as exc:  # a check must never take the audit down; show why it failed
            res = StepResult(FAILED, f"check failed: {type(exc).__name__}: {exc}".replace("\n", " "))
        res = StepResult(res.state, res.evidence, res.paths, time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.results[step_id] = res
        if save:
            self.save()
        return res

    def check_all(
        self,
        ids: Iterable[str] | None = None,
        report: Reporter = null_reporter,
        cancel: CancelToken = NEVER,
        ctx: Context | None = None,
    ) -> dict[str, StepResult]:
        """Check steps (all by default) sharing one context; a job: reports progress, honours cancel."""
        todo = list(ids) if ids is not None else [s.id for s in self.steps]
        ctx = ctx or self.context()
        for n, sid in enumerate(todo, 1):
            cancel.check()
            self.check(sid, ctx, save=False)
            report(Progress("audit", n, len(todo), unit="step", item=sid))
        self.save()
        return dict(self.results)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for r in self.results.values():
            out[r.state] += 1
        return out

    # --- report ---
    def to_markdown(self) -> str:
        c = self.counts()
        lines = [
            "# MLPerf Inference 3D-UNet audit",
            "",
            f"- Workspace: `{self.ws.root}`",
            f"- Scenario: {self.scenario}",
            f"- Audit started: {self.started_at or '-'}; report written {time.strftime('%Y-%m-%dT%H:%M:%S')}",
            f"- Model sha256 at start: `{self.baseline.get('model_sha256', '-')}`",
            f"- Steps: {c[PASSED]} passed, {c[FAILED]} failed, {c[PENDING]} pending",
            "",
            "| Step | State | Evidence | Checked |",
            "|---|---|---|---|",
        ]
        for s in self.steps:
            r = self.results[s.id]
            ev = r.evidence.replace("|", "\\|")
            lines.append(
                f"| {s.title} (`{s.id}`) | {ICONS[r.state]} {r.state} | {ev} | {r.checked_at or '-'} |"
            )
        lines.append("")
        group = ""
        for s in self.steps:
            if s.group != group:
                group = s.group
                lines += [f"## {group}", ""]
            r = self.results[s.id]
            lines += [f"### {s.title}", "", s.help, "", f"- State: **{r.state}** — {r.evidence}"]
            if s.action.command():
                lines.append(f"- Action: `{s.action.command()}`")
                if s.action.run is not None:
                    lines.append(f"- Make: `{s.action.run.make_command()}`")
            if s.seed_command:
                lines.append(f"- NVIDIA: `{s.seed_command}`")
            lines += [f"- Evidence file: `{p}`" for p in r.paths]
            lines.append("")
        return "\n".join(lines)

    def export_markdown(self, path: Path | None = None) -> Path:
        path = path or self.ws.root / "build" / "audit" / "audit_report.md"
        _atomic_write(path, self.to_markdown())
        return path


def fp32_reference(ws: Workspace) -> float:
    """The FP32 DICE that targets are relative to (core.accuracy: the model's own reference file beside
    it, e.g. the demo model's, else the official 0.86170)."""
    try:
        from core.accuracy import fp32_reference_for

        ref, _source = fp32_reference_for(ws.model_path)
    except Exception:  # an unreadable reference file: the official value, as the CLI falls back
        return FP32_REFERENCE_DICE
    return float(ref)


def run_audit(
    ws: Workspace, scenario: str = "Offline", report: Reporter = null_reporter, cancel: CancelToken = NEVER
) -> Audit:
    """Job form (for `unet3d audit`): load/resume, check every step, save."""
    audit = Audit.load(ws, scenario)
    audit.check_all(report=report, cancel=cancel)
    return audit
