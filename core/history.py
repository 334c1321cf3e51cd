"""Past runs: one :class:`RunRecord` per folder under ``ws.log_dir``, newest first.

A folder's ``run.json`` (written by the runner) is the primary source; folders without it (runs
made by other tools, e.g. NVIDIA's harness) fall back to the LoadGen summary. A run.json left at
``running`` by a process that is gone is reported as ``incomplete``. Only a ``complete`` run is
VALID or INVALID: a killed, cancelled or failed one has ``valid`` None whatever its partial logs
say. Broken folders are listed with status ``broken`` rather than raising.

Each record carries the facts the 3d-unet rules are judged on (the effective LoadGen settings, run.json's
dataset and model provenance, the keys the run's user.conf set, the DICE) and its one verdict,
:attr:`RunRecord.compliance` (core.compliance.judge_run over those facts). :meth:`RunRecord.passes` is
another question: a VALID 10 s run passes and is "shortened", never compliant.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from core.benchmark import FP32_REFERENCE_DICE, TARGET_FRACTIONS, RunConfig, target_dice
from core.compliance import Compliance, judge_run
from core.errors import RunInvalidError, UnetError
from core.harness.logs import (
    ACCURACY_NAME,
    DETAIL_NAME,
    SUMMARY_NAME,
    LoadgenSettings,
    incomplete_logs,
    parse_detail,
    parse_summary,
)
from core.harness.settings import read_user_conf
from core.workspace import Workspace

RUN_JSON = "run.json"
USER_CONF = "user.conf"  # the runner's copy of the user.conf the run was made with
SCORED_MODES = ("AccuracyOnly", "SubmissionRun")  # modes whose accuracy log is scored (DICE)


@dataclass(frozen=True)
class Accuracy:
    """The DICE of a scored run, and the target it was judged against when it ran."""

    mean: float
    kidney: float | None = None
    tumor: float | None = None
    target: float | None = None  # None: a folder of another tool (its accuracy.txt has no target)
    passed: bool | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Accuracy | None:
        mean = d.get("mean")
        if not isinstance(mean, (int, float)) or isinstance(mean, bool):
            return None
        num = lambda k: float(d[k]) if isinstance(d.get(k), (int, float)) else None  # noqa: E731
        passed = d.get("passed")
        return cls(
            float(mean),
            num("kidney"),
            num("tumor"),
            num("target"),
            passed if isinstance(passed, bool) else None,
        )


@dataclass(frozen=True)
class Metrics:
    """What LoadGen and the accuracy script measured, as they reported it, whatever the run's status.
    A screen shows throughput through :attr:`RunRecord.samples_per_s`, never from here."""

    samples_per_s: float | None = None  # Offline "Samples per second"; SingleStream QPS with overhead
    latency_ms: dict[str, float] = field(default_factory=dict)  # min, max, mean, p50, p90, ... p99.9
    accuracy: Accuracy | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run folder: the configuration it ran (run.json's ``config``), what became of it, LoadGen's
    verdict, its figures, and the settings LoadGen took effect with. Both front ends, the audit and the
    re-run read runs only through this type."""

    run_id: str
    path: Path
    date: str | None = None  # ISO start time (run.json) or the folder's mtime
    status: str = "complete"  # running | complete | incomplete | cancelled | failed | broken
    config: RunConfig | None = None  # None: a folder made by another tool (e.g. NVIDIA's harness)
    scenario: str | None = None  # the config's; for a foreign folder LoadGen's summary's
    test_mode: str | None = None
    valid: bool | None = None  # LoadGen's VALID/INVALID; None unless the run completed with a result line
    metrics: Metrics = field(default_factory=Metrics)
    settings: LoadgenSettings | None = None  # mlperf_log_detail.txt's effective settings
    loadgen_errors: tuple[str, ...] = ()  # is_error entries of the detail log
    error: str | None = None
    # what the rules need besides LoadGen's logs (run.json; None for a folder made without them)
    dataset: Mapping[str, Any] | None = None  # {"cases", "official_case_list", "synthetic"}
    model_provenance: Mapping[str, Any] | None = None  # {"file", "md5", "official"}
    model_sha256: str | None = None
    user_conf: Mapping[str, str] | None = None  # key -> value user.conf set; None: no user.conf

    def __post_init__(self) -> None:
        if self.config is not None:  # the run's own configuration names its scenario and mode
            object.__setattr__(self, "scenario", self.config.scenario)
            object.__setattr__(self, "test_mode", self.config.test_mode)

    # --- the configuration (None for a foreign folder) ---
    @property
    def config_ver(self) -> str | None:
        return self.config.config_ver if self.config else None

    @property
    def backend(self) -> str | None:
        return self.config.backend if self.config else None

    @property
    def precision(self) -> str | None:
        return self.config.precision if self.config else None

    @property
    def audit_test(self) -> str | None:
        return self.config.audit_test if self.config else None

    # --- what became of it ---
    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def result(self) -> str:
        """LoadGen's word: "VALID", "INVALID", or "" (no result line, or the run did not complete)."""
        return "" if self.valid is None else ("VALID" if self.valid else "INVALID")

    @property
    def outcome(self) -> str:
        """One word for a table: the LoadGen result of a complete run, else its status."""
        if not self.complete:
            return self.status
        return self.result or "complete"

    @property
    def started(self) -> float:
        """Start time in epoch seconds (0 when unknown): the order of runs and "after X" evidence."""
        return _parse_iso(self.date) or 0.0

    @property
    def when(self) -> str:
        t = self.started
        return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"

    # --- the figures a user may see ---
    @property
    def samples_per_s(self) -> float | None:
        """The throughput to show: LoadGen's figure of a complete VALID run, else None. A cancelled,
        killed or INVALID run has measured something, but it is not a result."""
        return self.metrics.samples_per_s if self.complete and self.valid is True else None

    @property
    def latency_ms(self) -> dict[str, float]:
        """Latency percentiles to show, by the same rule as :attr:`samples_per_s`."""
        return dict(self.metrics.latency_ms) if self.complete and self.valid is True else {}

    @property
    def accuracy(self) -> Accuracy | None:
        """DICE of a complete scored run (a run that stopped scored nothing)."""
        return self.metrics.accuracy if self.complete else None

    @property
    def mean_dice(self) -> float | None:
        acc = self.accuracy
        return acc.mean if acc is not None else None

    @property
    def scored(self) -> bool:
        """Its accuracy log is scored: AccuracyOnly/SubmissionRun without an audit test."""
        return self.test_mode in SCORED_MODES and not self.audit_test

    def accuracy_passed(self, fp32_reference: float = FP32_REFERENCE_DICE) -> bool | None:
        """DICE met its target: the verdict recorded when it was scored, else (a foreign folder's
        accuracy.txt) the mean against ``config_ver``'s target; None when it cannot be told."""
        acc = self.accuracy
        if acc is None:
            return None
        if acc.passed is not None:
            return acc.passed
        if self.config_ver not in TARGET_FRACTIONS:
            return None
        return acc.mean >= target_dice(self.config_ver, fp32_reference)

    # --- the rules ---
    def judge(self, waive: Collection[str] = ()) -> Compliance:
        """core.compliance.judge_run over this record's facts; ``waive`` sets rules aside
        (core.compliance.WAIVABLE: the auditor's new-weights and new-dataset runs). Screens read
        :attr:`compliance`."""
        if self.status == "broken":
            return Compliance(False, (f"run folder broken: {self.error or 'unreadable'}",))
        return judge_run(
            scenario=str(self.scenario),
            test_mode=str(self.test_mode),
            audit_test=self.audit_test,
            status=self.status,
            valid=self.valid,
            settings=self.settings,
            dataset=self.dataset,
            model=self.model_provenance,
            user_conf=self.user_conf,
            accuracy_mean=self.mean_dice,
            config_ver=self.config_ver or "default",
            waive=waive,
        )

    @cached_property
    def compliance(self) -> Compliance:
        """Whether this run is submittable under the 3d-unet rules, and why not (computed once)."""
        return self.judge()

    def passes(self, fp32_reference: float = FP32_REFERENCE_DICE) -> bool:
        """The one rule for "this run counts": it completed; LoadGen called it VALID unless it is an
        AccuracyOnly run (which has no performance result); a scored run's DICE met its target. Not
        whether it is submittable: that is :attr:`compliance`."""
        if not self.complete or self.valid is False:
            return False
        if self.test_mode != "AccuracyOnly" and self.valid is not True:
            return False
        if self.scored:
            return self.accuracy_passed(fp32_reference) is True
        return True

    def summary(self) -> str:
        """One line: what ran, what became of it and the figures a user may see."""
        parts = [
            x for x in (self.scenario, self.test_mode, self.audit_test, self.backend, self.precision) if x
        ]
        parts.append(self.outcome)
        if self.samples_per_s is not None:
            parts.append(f"{self.samples_per_s:.3f} samples/s")
        if self.mean_dice is not None:
            parts.append(f"DICE {self.mean_dice:.5f}")
        if self.error and self.status in ("failed", "broken"):
            parts.append(f"({self.error})")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        acc = self.accuracy
        return {
            "run_id": self.run_id,
            "path": str(self.path),
            "date": self.date,
            "status": self.status,
            "scenario": self.scenario,
            "test_mode": self.test_mode,
            "config_ver": self.config_ver,
            "backend": self.backend,
            "precision": self.precision,
            "audit_test": self.audit_test,
            "valid": self.valid,
            "result": self.result,
            "samples_per_s": self.samples_per_s,
            "mean_dice": self.mean_dice,
            "accuracy_passed": self.accuracy_passed() if acc is not None else None,
            "passes": self.passes(),
            "error": self.error,
            "config": self.config.to_dict() if self.config else None,
            "metrics": {
                "samples_per_s": self.metrics.samples_per_s,
                "latency_ms": dict(self.metrics.latency_ms),
                "accuracy": asdict(self.metrics.accuracy) if self.metrics.accuracy else None,
            },
            "settings": self.settings.to_dict() if self.settings else None,
            "loadgen_errors": list(self.loadgen_errors),
            "dataset": dict(self.dataset) if self.dataset is not None else None,
            "model_provenance": dict(self.model_provenance) if self.model_provenance is not None else None,
            "model_sha256": self.model_sha256,
            "user_conf": dict(self.user_conf) if self.user_conf is not None else None,
            "compliance": self.compliance.to_dict(),
        }


def _pid_alive(pid: Any, host: Any, started: Any = None) -> bool:
    """The run's process still exists: same host, pid alive, and (where /proc tells) that pid's
    process started no later than the run did, so a dead run's pid reused by another process during
    a long session does not keep it "running" forever."""
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    t_proc, t_run = _process_start(pid), _parse_iso(started)
    return t_proc is None or t_run is None or t_proc <= t_run + 5.0


def _process_start(pid: int) -> float | None:
    """Epoch seconds at which ``pid`` started (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        btime = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def _parse_iso(text: Any) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(text)).timestamp() if text else None
    except ValueError:
        return None


def _mtime_iso(path: Path) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")
    except OSError:
        return None


def _config(data: Any) -> RunConfig | None:
    """The RunConfig run.json recorded; None when absent or not one this version can run."""
    if not isinstance(data, dict):
        return None
    try:
        return RunConfig.from_dict(data).validate()
    except (UnetError, TypeError, ValueError):
        return None


def _latency(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {str(k): float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _user_conf(folder: Path) -> dict[str, str] | None:
    try:
        return read_user_conf(folder / USER_CONF)
    except OSError:
        return None


def _mapping(d: Any) -> dict[str, Any] | None:
    return dict(d) if isinstance(d, dict) else None


def _detail(folder: Path) -> tuple[LoadgenSettings | None, tuple[str, ...]]:
    if not (folder / DETAIL_NAME).is_file():
        return None, ()
    detail = parse_detail(folder)
    return LoadgenSettings.from_detail(detail), detail.errors


def _from_run_json(folder: Path, data: dict[str, Any]) -> RunRecord:
    result: dict[str, Any] = data["result"] if isinstance(data.get("result"), dict) else {}
    acc: dict[str, Any] | None = data["accuracy"] if isinstance(data.get("accuracy"), dict) else None
    if acc is None and isinstance(result.get("accuracy"), dict):
        acc = result["accuracy"]
    status = str(data.get("status") or "incomplete")
    if status == "running" and not _pid_alive(data.get("pid"), data.get("host"), data.get("started")):
        status = "incomplete"
    valid = result.get("valid")
    sps = result.get("samples_per_s")
    latency = _latency(result.get("latency_ms"))
    if status == "incomplete" and (folder / SUMMARY_NAME).is_file():
        s = parse_summary(folder / SUMMARY_NAME)  # the process died after LoadGen finished
        sps, latency = s.samples_per_s, s.latency_ms()
    if status != "complete":
        valid = None  # only a run that finished is VALID or INVALID; a killed or cancelled one is neither
    config = _config(data.get("config"))
    settings, errors = _detail(folder)
    return RunRecord(
        run_id=str(data.get("run_id") or folder.name),
        path=folder,
        date=data.get("started") or _mtime_iso(folder),
        status=status,
        config=config,
        scenario=data.get("scenario") if config is None else None,
        test_mode=data.get("test_mode") if config is None else None,
        valid=valid if isinstance(valid, bool) else None,
        metrics=Metrics(
            samples_per_s=float(sps) if isinstance(sps, (int, float)) else None,
            latency_ms=latency,
            accuracy=Accuracy.from_dict(acc) if acc else None,
        ),
        settings=settings,
        loadgen_errors=errors,
        error=data.get("error"),
        dataset=_mapping(data.get("dataset")),
        model_provenance=_mapping(data.get("model_provenance")),
        model_sha256=data.get("model_sha256") if isinstance(data.get("model_sha256"), str) else None,
        user_conf=_user_conf(folder),
    )


def _accuracy_txt(folder: Path) -> Accuracy | None:
    """The reference's printed line (``Accuracy: mean = 0.86112, kidney = 0.9340, tumor = 0.7882``)."""
    try:
        text = (folder / "accuracy.txt").read_text(errors="replace")
    except OSError:
        return None
    values: dict[str, float] = {}
    for part in text.split(":", 1)[-1].split(","):
        key, _, value = part.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            continue
    return Accuracy.from_dict(values)


def _from_summary(folder: Path) -> RunRecord:
    s = parse_summary(folder / SUMMARY_NAME)
    complete = s.exists and (s.result is not None or (folder / ACCURACY_NAME).is_file())
    complete = complete and incomplete_logs(folder) is None
    settings, errors = _detail(folder)
    return RunRecord(
        run_id=folder.name,
        path=folder,
        date=_mtime_iso(folder / SUMMARY_NAME) or _mtime_iso(folder),
        status="complete" if complete else "incomplete",
        scenario=s.scenario or (settings.scenario if settings else None),
        test_mode=s.mode or (settings.test_mode if settings else None),
        valid=s.valid if complete else None,
        metrics=Metrics(s.samples_per_s, s.latency_ms(), _accuracy_txt(folder)),
        settings=settings,
        loadgen_errors=errors,
        user_conf=_user_conf(folder),
    )


def read_run(folder: Path) -> RunRecord | None:
    """The record of one run folder; None if the folder holds no run at all."""
    run_json = folder / RUN_JSON
    if run_json.is_file():
        try:
            data = json.loads(run_json.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return _from_run_json(folder, data)
        except (OSError, ValueError) as exc:
            return RunRecord(
                folder.name, folder, _mtime_iso(folder), "broken", error=f"{run_json.name}: {exc}"
            )
    if (folder / SUMMARY_NAME).is_file() or (folder / DETAIL_NAME).is_file():
        return _from_summary(folder)
    return None


def record_of(log_dir: Path) -> RunRecord:
    """The record of a run the runner just finished (its run.json), for the tables that report it."""
    record = read_run(Path(log_dir))
    if record is None:
        raise RunInvalidError("the run left no record", log_dir)
    return record


def list_runs(ws: Workspace) -> list[RunRecord]:
    """All runs under ``ws.log_dir`` (one level deep), newest first; never raises for bad folders."""
    return runs_in(ws.log_dir)


def runs_in(log_dir: Path) -> list[RunRecord]:
    """All runs in one log folder (one level deep), newest first; never raises for bad folders."""
    try:
        folders = [p for p in Path(log_dir).iterdir() if p.is_dir()]
    except OSError:
        return []
    records = []
    for folder in folders:
        try:
            rec = read_run(folder)
        except Exception as exc:  # a folder we cannot read must not hide the others
            rec = RunRecord(folder.name, folder, None, "broken", error=str(exc))
        if rec is not None:
            records.append(rec)
    records.sort(key=lambda r: (_sort_key(r.date), r.run_id), reverse=True)
    return records


def _sort_key(date: str | None) -> float:
    if not date:
        return 0.0
    try:
        return _dt.datetime.fromisoformat(date).timestamp()
    except ValueError:
        return 0.0
