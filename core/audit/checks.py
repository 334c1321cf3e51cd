"""The audit's evidence checks: each reads the workspace (status probes, run records, file times and
checksums, the submission steps' files) through a shared :class:`Context` and returns a
:class:`StepResult`. The steps that use them, with their texts and actions, are in core.audit.checklist.

Evidence states compliance (core.compliance): a step whose evidence is there and works but does not
meet the submission rules (a shortened run, the demo's synthetic or partial dataset, a model that is not
the official one, a run made before provenance was recorded) is ``not compliant``, never ``passed``;
the evidence line says why. A run the operator cancelled is no evidence: its step stays ``pending``."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core import history
from core.benchmark import FP32_REFERENCE_DICE
from core.compliance import Compliance
from core.fsio import sha256_file
from core.harness.logs import ACCURACY_NAME, DETAIL_NAME, SUMMARY_NAME
from core.history import RunRecord
from core.workspace import Workspace

PENDING = "pending"
PASSED = "passed"
NOT_COMPLIANT = "not compliant"  # the evidence is there and works, but does not meet the submission rules
FAILED = "failed"
STATES = (PENDING, PASSED, NOT_COMPLIANT, FAILED)
ICONS = {PENDING: "○", PASSED: "✔", NOT_COMPLIANT: "⚠", FAILED: "✘"}


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
    _dataset: Compliance | None = None
    _model: Compliance | None = None

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

    @property
    def dataset_compliance(self) -> Compliance:
        """The workspace's dataset against the rules, from the facts a run records in run.json
        (core.compliance.dataset_provenance of the inference case list in use)."""
        if self._dataset is None:
            from core.cases import case_lists
            from core.compliance import dataset_provenance, judge_dataset

            self._dataset = judge_dataset(dataset_provenance(self.ws, case_lists(self.ws).inference))
        return self._dataset

    @property
    def model_compliance(self) -> Compliance:
        """The workspace's model against the rules (the official file, by its MD5)."""
        if self._model is None:
            from core.compliance import judge_model, model_provenance

            path = self.ws.model_path
            self._model = judge_model(model_provenance(path if path.is_file() else None))
        return self._model


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


def _more(items: list[str]) -> str:
    return f" (+{len(items) - 1} more)" if len(items) > 1 else ""


def with_compliance(res: StepResult, c: Compliance) -> StepResult:
    """A passed step whose evidence is not compliant becomes ``not compliant``, the reason first (what a
    narrow evidence column must show); other states are left as they are."""
    if res.state != PASSED:
        return res
    if c.compliant is True:
        return StepResult(PASSED, f"{res.evidence}; compliant", res.paths)
    return StepResult(NOT_COMPLIANT, f"{c.line}{_more(list(c.reasons))}; {res.evidence}", res.paths)


def dataset_check(name: str, what: str) -> Callable[[Context], StepResult]:
    """A set-up section whose content is the workspace's dataset (raw or preprocessed)."""
    present = section_check(name, what)

    def check(ctx: Context) -> StepResult:
        return with_compliance(present(ctx), ctx.dataset_compliance)

    return check


def check_model(ctx: Context) -> StepResult:
    return with_compliance(section_check("model", "model")(ctx), ctx.model_compliance)


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


def run_result(
    ctx: Context, runs: list[RunRecord], what: str, after_what: str = "", waive: tuple[str, ...] = ()
) -> StepResult:
    """Passed by the newest run that passes (RunRecord.passes) and is compliant; ``not compliant`` when
    the runs that pass are not (the newest one is shown, with its compliance reason); failed by the
    newest finished run when none passes. A cancelled run (the operator stopped it) or one still running
    is no evidence either way: the step stays pending. ``waive``: rules the step sets aside on purpose
    (core.compliance.WAIVABLE: the auditor's new weights or new dataset)."""
    after = f" after {after_what}" if after_what else ""
    finished = [r for r in runs if r.status not in ("cancelled", "running")]
    if not finished:
        stopped = len(runs)
        note = f" ({stopped} cancelled or still running)" if stopped else ""
        return StepResult(PENDING, f"no {what} run yet{after}{note}")
    good = [r for r in finished if r.passes(ctx.fp32_reference)]
    if not good:  # runs are newest first
        return StepResult(FAILED, _describe(ctx.ws, finished[0]), (str(finished[0].path),))
    judged = [(r, r.judge(waive) if waive else r.compliance) for r in good]
    best, verdict = next(((r, c) for r, c in judged if c.compliant is True), judged[0])
    return with_compliance(StepResult(PASSED, _describe(ctx.ws, best), (str(best.path),)), verdict)


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


def run_after_calibration(what: str, waive: tuple[str, ...] = ()) -> Callable[[Context], StepResult]:
    """A high_accuracy run after the calibration of ``what``; ``waive``: the rule that the new weights
    or the new dataset break on purpose (core.compliance.WAIVABLE)."""

    def check(ctx: Context) -> StepResult:
        t_cache = _mtime(ctx.ws.calibration_cache_path)
        if t_cache is None:
            return StepResult(PENDING, "calibrate first")
        runs = matching_runs(ctx, config_ver="high_accuracy", after=t_cache)
        return run_result(ctx, runs, f"{ctx.scenario} high_accuracy", f"the {what} calibration", waive)

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


# --- the submission steps (core.submission.steps writes what these read) ----------------------------


def _noncompliant_runs(runs: dict[str, Any] | None, label: str = "") -> list[str]:
    """One line per run of a record ({role: {"run", "compliance"}} or None for a missing role) that is
    not compliant."""
    out = []
    for role, d in (runs or {}).items():
        if not isinstance(d, dict):
            out.append(f"{label}no {role} run")
            continue
        c = Compliance.from_dict(d.get("compliance") or {})
        if c.compliant is not True:
            out.append(f"{label}{role} run {d.get('run')}: {c.line}")
    return out


def check_test01_verification(ctx: Context) -> StepResult:
    """TEST01 verified by `unet3d submission verify-test01` into build/compliance/<scenario>: the
    verdicts of verify_accuracy.txt / verify_performance.txt (and the fallback), and whether the runs it
    verified (test01_runs.json) are compliant."""
    from core.submission.test01 import (
        RUNS_RECORD,
        VERIFY_ACCURACY,
        VERIFY_PERFORMANCE,
        read_runs_record,
        read_verification,
    )

    out = ctx.ws.compliance_dir / ctx.scenario
    t01 = out / "TEST01"
    record = read_runs_record(out)
    config_ver = str((record or {}).get("config_ver") or "default")
    v = read_verification(t01, config_ver)
    if v.passed is None:
        return StepResult(PENDING, f"no TEST01 verification in {_rel(ctx.ws, t01)} yet")
    paths = (str(t01 / VERIFY_ACCURACY), str(t01 / VERIFY_PERFORMANCE))
    where = f"{_rel(ctx.ws, t01)}: {v.line()}"
    if not v.passed:
        return StepResult(FAILED, where, paths)
    if record is None:
        why = f"unknown: {RUNS_RECORD} missing (which runs were verified is not recorded)"
        return StepResult(NOT_COMPLIANT, f"{where}; {why}", paths)
    bad = _noncompliant_runs(record.get("runs"))
    if bad:
        return StepResult(NOT_COMPLIANT, f"{where}; {bad[0]}{_more(bad)}", (*paths, str(out / RUNS_RECORD)))
    return StepResult(PASSED, f"{where}; the verified runs are compliant", (*paths, str(out / RUNS_RECORD)))


def _staged_problems(manifest: dict[str, Any], scenario: str | None = None) -> tuple[list[str], list[str]]:
    """(failures, non-compliance) of a stage manifest's results (of ``scenario`` when given)."""
    failed: list[str] = []
    noncompliant: list[str] = []
    for s in manifest.get("staged") or ():
        if scenario is not None and s.get("scenario") != scenario:
            continue
        name = f"{s.get('benchmark')} {s.get('scenario')}: "
        t = s.get("test01")
        if isinstance(t, dict) and t.get("passed") is False:
            failed.append(f"{name}TEST01 verification failed")
        noncompliant += _noncompliant_runs(s.get("runs"), name)
    return failed, noncompliant


def check_stage(ctx: Context) -> StepResult:
    """A tree staged by `unet3d submission stage` in build/submission-staging, its manifest beside it:
    the audited scenario is in it, its TEST01 verification passed, and the staged runs are compliant."""
    from core.submission.stage import manifest_path, read_manifest

    tree = ctx.ws.submission_dir
    if not tree.is_dir():
        return StepResult(PENDING, f"no staged tree in {_rel(ctx.ws, tree)} yet")
    manifest = read_manifest(tree)
    mpath = manifest_path(tree)
    if manifest is None:
        return StepResult(PENDING, f"{_rel(ctx.ws, tree)} has no manifest {mpath.name}: stage it again")
    paths = (str(tree), str(mpath))
    staged = manifest.get("staged") or []
    head = (
        f"{_rel(ctx.ws, tree)}: {manifest.get('division')} division, layout {manifest.get('version')}, "
        + ", ".join(f"{s.get('benchmark')} {s.get('scenario')}" for s in staged)
    )
    if not any(s.get("scenario") == ctx.scenario for s in staged):
        skipped = [x for x in manifest.get("skipped") or () if str(x).startswith(ctx.scenario)]
        why = f" ({skipped[0]})" if skipped else ""
        return StepResult(FAILED, f"{head}; no {ctx.scenario} result staged{why}", paths)
    failed, noncompliant = _staged_problems(manifest, ctx.scenario)
    if failed:
        return StepResult(FAILED, f"{head}; {failed[0]}{_more(failed)}", paths)
    if noncompliant:
        return StepResult(NOT_COMPLIANT, f"{head}; {noncompliant[0]}{_more(noncompliant)}", paths)
    fill = manifest.get("to_fill") or []
    note = f"; {len(fill)} system JSON field(s) to fill in by hand" if fill else ""
    return StepResult(PASSED, f"{head}; the staged runs are compliant{note}", paths)


def check_submission_check(ctx: Context) -> StepResult:
    """What `unet3d submission check` said about the staged tree (build/submission-staging.check.json):
    the pre-check's and MLCommons' checker's errors, for the tree as it is now."""
    from core.submission.check import check_record_path, read_check_record, tree_fingerprint
    from core.submission.stage import read_manifest

    tree = ctx.ws.submission_dir
    if not tree.is_dir():
        return StepResult(PENDING, f"no staged tree in {_rel(ctx.ws, tree)} to check yet")
    rec = read_check_record(tree)
    if rec is None:
        return StepResult(PENDING, f"{_rel(ctx.ws, tree)} not checked yet")
    paths = (str(check_record_path(tree)),)
    if rec.get("fingerprint") != tree_fingerprint(tree):
        return StepResult(
            PENDING, f"{_rel(ctx.ws, tree)} changed after the check of {rec.get('checked_at')}: check again"
        )
    pre = [str(x) for x in rec.get("precheck") or () if str(x).startswith("error")]
    checker = rec.get("checker")
    summary = f"checked {rec.get('checked_at')} (layout {rec.get('version')}): pre-check {len(pre)} error(s)"
    checker_errors: list[str] = []
    if checker is None:
        summary += ", official checker not run (--checker PATH)"
    else:
        checker_errors = [str(e) for e in checker.get("errors") or ()]
        if checker.get("returncode") and not checker_errors:
            checker_errors = [f"exit {checker.get('returncode')}"]
        summary += f", official checker {len(checker_errors)} error(s)"
    if pre:
        return StepResult(FAILED, f"{summary}: {pre[0]}", paths)
    manifest = read_manifest(tree)
    if manifest is None:
        noncompliant = ["unknown: the tree has no stage manifest (which runs it holds is not recorded)"]
    else:
        noncompliant = _staged_problems(manifest)[1]
    if checker_errors:
        if noncompliant:  # what a tree of shortened or demo runs cannot avoid
            return StepResult(
                NOT_COMPLIANT,
                f"{summary}: {checker_errors[0]}; the staged runs are not compliant ({noncompliant[0]})",
                paths,
            )
        return StepResult(FAILED, f"{summary}: {checker_errors[0]}", paths)
    if noncompliant:
        return StepResult(NOT_COMPLIANT, f"{summary}; {noncompliant[0]}{_more(noncompliant)}", paths)
    return StepResult(PASSED, summary, paths)
