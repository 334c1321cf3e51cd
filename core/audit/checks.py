"""The audit's evidence checks: each reads the workspace (status probes, run records, file times and
checksums) through a shared :class:`Context` and returns a :class:`StepResult`. The steps that use them,
with their texts and actions, are in core.audit.checklist."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import history
from core.benchmark import FP32_REFERENCE_DICE
from core.fsio import sha256_file
from core.harness.logs import ACCURACY_NAME, DETAIL_NAME, SUMMARY_NAME
from core.history import RunRecord
from core.workspace import Workspace

PENDING = "pending"
PASSED = "passed"
FAILED = "failed"
STATES = (PENDING, PASSED, FAILED)
ICONS = {PENDING: "○", PASSED: "✔", FAILED: "✘"}


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


@dataclass
class Context:
    """What checks read: the workspace, the audited scenario, the baseline recorded when the audit
    started (model sha256, case-list digest), and lazily computed status/runs shared by all checks."""

    ws: Workspace
    scenario: str
    baseline: dict[str, str]
    fp32_reference: float = FP32_REFERENCE_DICE
    _status: Any = None
    _runs: list[RunRecord] | None = None  # newest first

    @property
    def status(self) -> Any:
        if self._status is None:
            from core.status import collect_status

            self._status = collect_status(self.ws)
        return self._status

    @property
    def runs(self) -> list[RunRecord]:
        """core.history's records, newest first."""
        if self._runs is None:
            self._runs = history.list_runs(self.ws)
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


def section_check(name: str, what: str) -> Callable[[Context], StepResult]:
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


def check_calibration(ctx: Context) -> StepResult:
    """The cache file itself: the status calls an absent cache fine where nothing here needs it (a CPU
    workspace), but the audit step is about a cache made for this model."""
    path = ctx.ws.calibration_cache_path
    if not path.is_file():
        item = next(iter(ctx.section("calibration").items), None)
        why = f"; status: {item.detail}" if item is not None and item.detail else ""
        return StepResult(PENDING, f"{_rel(ctx.ws, path)} not found{why}")
    return section_check("calibration", "calibration cache")(ctx)


def check_environment(ctx: Context) -> StepResult:
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


def matching_runs(ctx: Context, *, config_ver: str | None = None, test_mode: str | None = None,
                   audit_test: str | None = None, after: float | None = None) -> list[RunRecord]:  # fmt: skip
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


def _describe(ws: Workspace, r: RunRecord) -> str:
    bits = [_rel(ws, r.path) + ":", r.outcome]
    if r.samples_per_s is not None:
        bits.append(f"{r.samples_per_s:.4g} samples/s")
    if r.mean_dice is not None:
        bits.append(f"DICE {r.mean_dice:.5f}")
    if r.backend:
        bits.append(f"({r.backend} {r.precision})")
    return " ".join(bits)


def run_result(ctx: Context, runs: list[RunRecord], what: str, after_what: str = "") -> StepResult:
    """Passed by the newest run that passes (RunRecord.passes); failed by the newest finished one when
    none does. A cancelled run (the operator stopped it) or one still running is no evidence either way:
    the step stays pending."""
    after = f" after {after_what}" if after_what else ""
    finished = [r for r in runs if r.status not in ("cancelled", "running")]
    if not finished:
        stopped = len(runs)
        note = f" ({stopped} cancelled or still running)" if stopped else ""
        return StepResult(PENDING, f"no {what} run yet{after}{note}")
    good = [r for r in finished if r.passes(ctx.fp32_reference)]
    best = good[0] if good else finished[0]  # runs are newest first
    state = PASSED if good else FAILED
    return StepResult(state, _describe(ctx.ws, best), (str(best.path),))


def run_check(config_ver: str, test_mode: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        runs = matching_runs(ctx, config_ver=config_ver, test_mode=test_mode)
        return run_result(ctx, runs, f"{ctx.scenario} {config_ver} {test_mode}")

    return check


def check_new_model(ctx: Context) -> StepResult:
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


def calibrated_after(
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


def model_time(ctx: Context) -> tuple[Path, float | None]:
    return ctx.ws.model_path, _mtime(ctx.ws.model_path)


def preprocessed_time(ctx: Context) -> tuple[Path, float | None]:
    p = ctx.ws.preprocessed_dir / "calibration" / "preprocessed_files.json"
    return p, _mtime(p)


def run_after_calibration(what: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        t_cache = _mtime(ctx.ws.calibration_cache_path)
        if t_cache is None:
            return StepResult(PENDING, "calibrate first")
        runs = matching_runs(ctx, config_ver="high_accuracy", after=t_cache)
        return run_result(ctx, runs, f"{ctx.scenario} high_accuracy", f"the {what} calibration")

    return check


def check_new_data(ctx: Context) -> StepResult:
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


def check_preprocessed_after_data(ctx: Context) -> StepResult:
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


def compliance_check(test: str) -> Callable[[Context], StepResult]:
    def check(ctx: Context) -> StepResult:
        runs = matching_runs(ctx, audit_test=test)
        return run_result(ctx, runs, f"{ctx.scenario} {test}")

    return check


def check_logs(ctx: Context) -> StepResult:
    """Every finished run's folder holds non-empty LoadGen logs; unfinished runs are not results and are
    only counted (core.history marks them incomplete/cancelled/failed)."""
    done = [r for r in ctx.runs if r.complete]
    other = len(ctx.runs) - len(done)
    note = f"; {other} unfinished run folder{'s' if other != 1 else ''} not counted" if other else ""
    if not done:
        return StepResult(PENDING, f"no finished runs in {_rel(ctx.ws, ctx.ws.log_dir)}{note}")
    incomplete = []
    for r in done:
        need = [SUMMARY_NAME, DETAIL_NAME] + ([ACCURACY_NAME] if r.test_mode == "AccuracyOnly" else [])
        absent = [n for n in need if not (r.path / n).is_file() or (r.path / n).stat().st_size == 0]
        if absent:
            incomplete.append(f"{_rel(ctx.ws, r.path)} lacks {', '.join(absent)}")
    if incomplete:
        return StepResult(FAILED, f"{len(incomplete)} of {len(done)} incomplete: {incomplete[0]}{note}")
    return StepResult(PASSED, f"{len(done)} result folders complete (summary, detail, accuracy log){note}")
