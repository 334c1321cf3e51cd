"""`unet3d submission check`: a built-in pre-check of a results tree, then MLCommons' own checker.

The pre-check looks at what the submission checker (and the submission rules it enforces) require:
the tree's folders (only division folders at the root, only submitter folders in a division, no empty
folder, no hidden name, no file over 50 MB), every required file of each result, the system JSON's
fields, LoadGen's verdict and errors in every log, the RNG seeds against the round, the truncated
accuracy logs and their hashes, the accuracy line, measurements.json, TEST01, and each run's
compliance with the 3d-unet rules (an error in the closed division, a warning in the open one).

:func:`run_official_checker` runs ``python -m inference.tools.submission.submission_checker.main`` from
the folder above a checkout of mlcommons/inference and returns its error lines. `unet3d submission
check` keeps what both said in ``<tree>.check.json`` beside the tree (:func:`check_record_path`), with
a fingerprint of the tree it saw: the auditor checklist's check step reads it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.benchmark import MODEL_NAMES
from core.compliance import DATASET_SIZE, ROUND_SEEDS, accuracy_target, judge_run, round_of_seeds
from core.errors import MissingInputError, UsageError
from core.fsio import sha256_file, write_text_atomic
from core.harness.logs import loadgen_settings, parse_detail
from core.harness.settings import read_user_conf
from core.submission import rules
from core.submission.rules import ACCURACY_LOG, ACCURACY_TXT, DETAIL, SUMMARY, Layout, accuracy_mean
from core.submission.test01 import read_verification
from core.submission.truncate import recorded_hash

CONFIG_VER_OF = {v: k for k, v in MODEL_NAMES.items()}  # 3d-unet-99 -> default
CHECK_SUFFIX = ".check.json"  # <tree>.check.json: what the last `unet3d submission check` found
CHECK_VERSION = 1


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    path: str  # relative to the submission root
    message: str

    @property
    def line(self) -> str:
        return f"{self.level}: {self.path}: {self.message}" if self.path else f"{self.level}: {self.message}"


class _Findings:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[Finding] = []

    def _rel(self, p: Path | str) -> str:
        p = Path(p)
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def error(self, p: Path | str, msg: str) -> None:
        self.items.append(Finding("error", self._rel(p), msg))

    def warning(self, p: Path | str, msg: str) -> None:
        self.items.append(Finding("warning", self._rel(p), msg))

    def flag(self, closed: bool, p: Path | str, msg: str) -> None:
        (self.error if closed else self.warning)(p, msg)


def _dirs(p: Path) -> list[Path]:
    return sorted(x for x in p.iterdir() if x.is_dir()) if p.is_dir() else []


def _files(p: Path) -> list[str]:
    return sorted(x.name for x in p.iterdir() if x.is_file()) if p.is_dir() else []


def _walk(p: Path) -> Iterator[Path]:
    yield from sorted(p.rglob("*"))


def detect_version(root: Path) -> str | None:
    """The round of the RNG seeds in the tree's performance logs (None: none or mixed)."""
    found = set()
    for detail in Path(root).glob("*/*/results/*/*/*/performance/run_1/" + DETAIL):
        s = loadgen_settings(detail)
        found.add(round_of_seeds(s.seeds) if s else None)
    return found.pop() if len(found) == 1 else None


def _required(f: _Findings, folder: Path, names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        p = folder / name
        if not p.is_file():
            f.error(p, "missing")
        elif p.stat().st_size == 0:
            f.error(p, "is empty")


def _check_detail(f: _Findings, detail: Path, version: str, perf: bool) -> None:
    if not detail.is_file():
        return
    d = parse_detail(detail)
    if d.bad_lines:
        f.error(detail, f"{d.bad_lines} malformed line(s)")
    for e in d.errors:
        f.error(detail, f"LoadGen error: {e}")
    if perf and d.results.get("validity") != "VALID":
        f.error(detail, f"LoadGen result is {d.results.get('validity') or 'missing'}")
    s = loadgen_settings(d)
    if perf and s is not None and s.seeds != ROUND_SEEDS[version]:
        found = round_of_seeds(s.seeds)
        f.error(
            detail,
            f"RNG seeds are {found or 'unknown'}'s, the {version} checker expects {version}'s "
            f"(qsl_rng_seed {s.qsl_rng_seed}, expected {ROUND_SEEDS[version][0]})",
        )


def _check_accuracy_dir(f: _Findings, acc: Path, full_root: Path | None, root: Path) -> float | None:
    log, txt = acc / ACCURACY_LOG, acc / ACCURACY_TXT
    if log.is_file() and log.stat().st_size > rules.MAX_ACCURACY_LOG_BYTES:
        f.error(log, f"is not truncated ({log.stat().st_size} bytes > {rules.MAX_ACCURACY_LOG_BYTES})")
    value = None
    if txt.is_file():
        value = accuracy_mean(txt)
        if value is None:
            f.error(txt, "has no 'Accuracy: mean = ...' line")
        sha = recorded_hash(txt)
        if sha is None:
            f.error(txt, "has no hash= line (the accuracy log was not truncated by the stage)")
        elif full_root is not None:
            full = full_root / log.relative_to(root)
            if not full.is_file():
                f.warning(full, "full accuracy log not found beside the tree")
            elif sha256_file(full) != sha:
                f.error(txt, f"hash does not match the full log {full.name} beside the tree")
    return value


def _check_system(f: _Findings, path: Path, division: str, submitter: str) -> dict | None:
    try:
        desc = json.loads(path.read_text())
    except FileNotFoundError:
        f.error(path, "missing (the checker stops with a traceback without it)")
        return None
    except (OSError, ValueError) as exc:
        f.error(path, f"unreadable JSON ({exc})")
        return None
    closed = division == "closed"
    for k in rules.SYSTEM_FIELDS:
        if k not in desc:
            f.error(path, f"field {k} is missing")
        elif k in rules.SYSTEM_MEANINGFUL_FIELDS and not desc[k]:  # the checker's test: 0 is empty too
            f.error(path, f"field {k} needs a value")
    todo = [k for k, v in desc.items() if isinstance(v, str) and v.startswith(rules.TO_FILL)]
    if todo:
        f.flag(closed, path, f"a person must fill in: {', '.join(todo)}")
    if str(desc.get("division", "")).lower() != division:
        f.error(path, f"division {desc.get('division')!r} but the folder is {division}")
    if str(desc.get("submitter", "")).lower() != submitter.lower():
        f.error(path, f"submitter {desc.get('submitter')!r} but the folder is {submitter}")
    if str(desc.get("status", "")).lower() not in rules.AVAILABILITIES:
        f.error(path, f"status {desc.get('status')!r} is not one of {', '.join(rules.AVAILABILITIES)}")
    if desc.get("system_type") not in rules.SYSTEM_TYPES:
        f.error(
            path, f"system_type {desc.get('system_type')!r} is not one of {', '.join(rules.SYSTEM_TYPES)}"
        )
    return desc


def _check_test01(f: _Findings, t01: Path, closed: bool, config_ver: str, version: str) -> None:
    if not t01.is_dir():
        f.flag(closed, t01, "TEST01 is missing (required for 3d-unet)")
        return
    for name in rules.TEST01_FILES:
        p = t01 / name
        if not p.is_file():
            f.error(p, "missing")
    v = read_verification(t01, config_ver)
    det_pass = v.accuracy is True
    if v.performance is False:
        f.flag(closed, t01 / "verify_performance.txt", "TEST01 performance check did not pass")
    run1 = t01 / "performance" / "run_1"
    extra = set(_files(run1)) - {SUMMARY, DETAIL, ACCURACY_LOG, "mlperf_log_trace.json"}
    _required(f, run1, rules.PERF_FILES)
    if extra:
        f.error(run1, f"unexpected files {sorted(extra)}")
    _check_detail(f, run1 / DETAIL, version, perf=True)
    s = loadgen_settings(run1 / DETAIL)
    if s is not None and not s.audit_config_found:
        f.error(run1 / DETAIL, "LoadGen found no audit.config: not a TEST01 run")
    acc = t01 / "accuracy"
    if not det_pass:
        names = set(_files(acc))
        want = {ACCURACY_LOG, ACCURACY_TXT, *rules.TEST01_FALLBACK_FILES}
        if names != want:
            f.flag(
                closed, acc, f"deterministic check failed and the fallback files differ from {sorted(want)}"
            )
            return
        delta = v.delta_percent
        if delta is None:
            f.flag(closed, acc, "baseline/compliance accuracy lines missing")
            return
        if not v.fallback_passed:
            f.flag(closed, acc, f"TEST01 DICE delta {delta:.4f} % > {v.allowed_percent:g} %")


def _check_result(
    f: _Findings, root: Path, layout: Layout, system: str, bench: Path, scen: Path, full_root: Path | None
) -> None:
    closed = layout.division == "closed"
    benchmark, scenario = bench.name, scen.name
    if scenario not in ("Offline", "SingleStream"):
        f.error(scen, f"{scenario} is not a 3d-unet scenario (Offline, SingleStream)")
        return
    run1 = scen / "performance" / "run_1"
    _required(f, run1, rules.PERF_FILES)
    _check_detail(f, run1 / DETAIL, layout.version, perf=True)
    acc = scen / "accuracy"
    _required(f, acc, rules.ACCURACY_FILES)
    _check_detail(f, acc / DETAIL, layout.version, perf=False)
    value = _check_accuracy_dir(f, acc, full_root, root)
    config_ver = CONFIG_VER_OF.get(benchmark, "default")
    if value is not None and value < accuracy_target(config_ver):
        f.flag(closed, acc / ACCURACY_TXT, f"accuracy {value:.5f} < target {accuracy_target(config_ver):.6f}")
    acc_settings = loadgen_settings(acc / DETAIL)
    if acc_settings is not None and acc_settings.accuracy_sample_count != DATASET_SIZE:
        f.flag(
            closed,
            acc / DETAIL,
            f"accuracy run covers {acc_settings.accuracy_sample_count} samples, not {DATASET_SIZE}",
        )
    mdir = root / layout.measurements_dir(system, benchmark, scenario)
    mjson = root / layout.measurements_json(system, benchmark, scenario)
    try:
        m = json.loads(mjson.read_text())
        for k in rules.MEASUREMENT_FIELDS:
            if not m.get(k):
                f.error(mjson, f"field {k} needs a value")
    except FileNotFoundError:
        f.error(mjson, "missing")
    except (OSError, ValueError) as exc:
        f.error(mjson, f"unreadable JSON ({exc})")
    _required(f, mdir, rules.MEASURE_FILES)
    # the performance run against the 3d-unet rules, from what the tree holds (its logs and user.conf;
    # the data and model provenance are in the runs' README lines, not in the logs)
    conf = mdir / "user.conf"
    s = loadgen_settings(run1 / DETAIL)
    verdict = judge_run(
        scenario=scenario,
        test_mode="PerformanceOnly",
        valid=(parse_detail(run1 / DETAIL).results.get("validity") == "VALID") if s else None,
        settings=s,
        user_conf=read_user_conf(conf) if conf.is_file() else None,
    )
    if verdict.compliant is False:
        for reason in verdict.reasons:
            if "LoadGen" not in reason and "RNG seeds" not in reason:  # _check_detail reports those
                f.flag(closed, run1, reason)
    _check_test01(
        f,
        root / layout.compliance_dir(system, benchmark, scenario) / "TEST01",
        closed,
        config_ver,
        layout.version,
    )


def precheck(root: str | Path, version: str | None = None, full_logs: Path | None = None) -> list[Finding]:
    """Every problem of the tree at ``root`` (a submission root holding closed/ or open/)."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingInputError("no submission tree here", root)
    f = _Findings(root)
    version = version or detect_version(root) or "v6.0"
    if version not in rules.VERSIONS:
        raise UsageError(f"--version={version} is not one of {', '.join(rules.VERSIONS)}")
    if full_logs is None:
        cand = root.with_name(root.name + ".full")
        full_logs = cand if cand.is_dir() else None
    extra = [p.name for p in root.iterdir() if p.is_file() and not p.name.endswith((".md", ".pdf"))]
    if extra:
        f.error(root, f"files outside the division folders: {extra}")
    divisions = [d for d in _dirs(root) if d.name in rules.DIVISIONS]
    for d in _dirs(root):
        if d.name not in rules.DIVISIONS:
            f.error(d, f"{d.name} is not a division ({', '.join(rules.DIVISIONS)})")
    if not divisions:
        f.error(root, "no closed/ or open/ folder")
    for p in _walk(root):
        if p.name.startswith("."):
            f.error(p, "hidden name")
        elif p.is_symlink():
            f.error(p, "symbolic link")
        elif p.is_dir() and not any(p.iterdir()):
            f.error(p, "empty folder")
        elif p.is_file() and p.stat().st_size > rules.MAX_FILE_BYTES:
            f.error(p, f"larger than 50 MB ({p.stat().st_size} bytes)")
    for div in divisions:
        if _files(div):
            f.error(div, f"files outside the submitter folders: {_files(div)}")
        for sub in _dirs(div):
            layout = Layout(version, div.name, sub.name)
            closed = div.name == "closed"
            src = root / layout.source_dir
            if not src.is_dir():
                f.error(src, "the source folder is missing")
            if (
                closed
                and not (sub / rules.CALIBRATION_DOC).is_file()
                and not (sub / "documentation" / rules.CALIBRATION_DOC).is_file()
            ):
                f.error(sub / rules.CALIBRATION_DOC, "calibration documentation is missing")
            results = sub / "results"
            systems = {p.stem for p in (sub / "systems").glob("*.json")}
            staged = {p.name for p in _dirs(results)}
            for orphan in sorted(systems - staged):
                f.error(sub / "systems" / f"{orphan}.json", "system without results")
            if not staged:
                f.error(results, "no results")
            for sysdir in _dirs(results):
                desc = _check_system(f, root / layout.system_json(sysdir.name), div.name, sub.name)
                scen_seen: set[str] = set()
                for bench in _dirs(sysdir):
                    if bench.name not in rules.BENCHMARKS:
                        f.flag(closed, bench, f"{bench.name} is not one of {', '.join(rules.BENCHMARKS)}")
                    for scen in _dirs(bench):
                        scen_seen.add(scen.name)
                        _check_result(f, root, layout, sysdir.name, bench, scen, full_logs)
                if closed and desc is not None:
                    types = str(desc.get("system_type", "")).split(",")
                    need = {s for t in types for s in rules.REQUIRED_SCENARIOS.get(t.strip(), ())}
                    missing = sorted(need - scen_seen)
                    if missing:
                        f.error(
                            sysdir, f"a {desc.get('system_type')} system must submit {', '.join(missing)}"
                        )
    return f.items


# --- the official checker ---------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^\[[^\]]*\s(ERROR|WARNING|INFO)\]\s(.*)$|^(ERROR|WARNING|INFO):[^:]*:(.*)$")


@dataclass(frozen=True)
class CheckerRun:
    returncode: int
    errors: tuple[str, ...]  # each ERROR line of the checker's log, its message only
    warnings: tuple[str, ...]
    output: str  # everything it printed
    command: str


def _checkout(path: Path) -> tuple[Path, Path | None]:
    """(folder to run from, temporary folder to remove): the checker is the module
    ``inference.tools.submission.submission_checker``, so its checkout must be a folder named
    ``inference``; another name gets a symlink named so in a temporary folder."""
    path = Path(path).absolute()
    if not (path / "tools" / "submission" / "submission_checker" / "main.py").is_file():
        raise MissingInputError(
            "not a checkout of mlcommons/inference (no tools/submission/submission_checker)", path
        )
    if path.name == "inference":
        return path.parent, None
    tmp = Path(tempfile.mkdtemp(prefix="unet3d-checker-"))
    (tmp / "inference").symlink_to(path, target_is_directory=True)
    return tmp, tmp


def require_yaml(python: str) -> None:
    """The checker imports PyYAML at start-up; say so in one line instead of its traceback."""
    probe = subprocess.run([python, "-c", "import yaml"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise MissingInputError(
            f"the official checker needs PyYAML, which {python} cannot import (pip install pyyaml, or "
            "`make install-dev`; --python chooses another interpreter)"
        )


def run_official_checker(
    tree: Path,
    checker: Path,
    *,
    version: str,
    submitter: str | None = None,
    python: str | None = None,
    timeout: float = 3600.0,
) -> CheckerRun:
    """Run MLCommons' submission checker on ``tree`` and collect its ERROR lines."""
    import shutil

    python = python or sys.executable
    require_yaml(python)
    cwd, tmp = _checkout(checker)
    try:
        with tempfile.TemporaryDirectory(prefix="unet3d-check-") as scratch:
            cmd = [
                python,
                "-m",
                "inference.tools.submission.submission_checker.main",
                "--input",
                str(Path(tree).absolute()),
                "--version",
                version,
                "--csv",
                str(Path(scratch) / "summary.csv"),
            ]
            if submitter:
                cmd += ["--submitter", submitter]
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    output = proc.stdout + proc.stderr
    errors, warnings = [], []
    for line in output.splitlines():
        m = _LOG_LINE.match(line.strip())
        if not m:
            continue
        level = m.group(1) or m.group(3)
        msg = (m.group(2) or m.group(4) or "").strip()
        if level == "ERROR":
            errors.append(msg)
        elif level == "WARNING":
            warnings.append(msg)
    if proc.returncode != 0 and not errors:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        errors.append(f"the checker exited with {proc.returncode}: {tail[0]}")
    shown = (
        " ".join(cmd[1:3])
        + " --input TREE --version "
        + version
        + (f" --submitter {submitter}" if submitter else "")
    )
    return CheckerRun(proc.returncode, tuple(errors), tuple(warnings), output, shown)


# --- what a check found, kept beside the tree --------------------------------------------------------


def check_record_path(tree: str | Path) -> Path:
    tree = Path(tree).absolute()
    return tree.with_name(tree.name + CHECK_SUFFIX)


def tree_fingerprint(tree: str | Path) -> dict[str, Any]:
    """How many files the tree holds and the newest modification time among them: a tree staged again,
    or edited by hand (the system JSON's TO BE FILLED fields), after a check no longer matches it."""
    n, newest = 0, 0.0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            n += 1
            newest = max(newest, st.st_mtime)
    return {"files": n, "newest_mtime": newest}


@dataclass(frozen=True)
class CheckReport:
    """What the pre-check and (when run) the official checker said about one tree."""

    tree: Path
    version: str
    findings: tuple[Finding, ...]
    checker: CheckerRun | None
    checked_at: str
    fingerprint: dict[str, Any]

    @property
    def errors(self) -> list[Finding]:
        return [x for x in self.findings if x.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [x for x in self.findings if x.level == "warning"]

    @property
    def passed(self) -> bool:
        """No pre-check error and, if it ran, the official checker exited 0 with no ERROR line."""
        bad_checker = self.checker is not None and (self.checker.returncode != 0 or bool(self.checker.errors))
        return not self.errors and not bad_checker

    def to_dict(self) -> dict[str, Any]:
        c = self.checker
        return {
            "check_version": CHECK_VERSION,
            "tree": str(self.tree),
            "version": self.version,
            "checked_at": self.checked_at,
            "fingerprint": dict(self.fingerprint),
            "passed": self.passed,
            "precheck": [f.line for f in self.findings],
            "precheck_errors": len(self.errors),
            "precheck_warnings": len(self.warnings),
            "checker": None
            if c is None
            else {
                "returncode": c.returncode,
                "errors": list(c.errors),
                "warnings": list(c.warnings),
                "command": c.command,
            },
        }


def write_check_record(report: CheckReport) -> Path:
    path = check_record_path(report.tree)
    write_text_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def read_check_record(tree: str | Path) -> dict[str, Any] | None:
    """The record of the last check of ``tree``; None when absent or unreadable."""
    try:
        doc = json.loads(check_record_path(tree).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("check_version") == CHECK_VERSION else None
