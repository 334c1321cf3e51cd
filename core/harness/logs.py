"""Parsers for LoadGen's output: ``mlperf_log_summary.txt`` and ``mlperf_log_detail.txt``
(``:::MLLOG`` JSON lines). Both are tolerant: a missing or truncated file gives a result with
``exists=False`` / empty fields rather than an exception (history lists broken run folders too).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_NAME = "mlperf_log_summary.txt"
DETAIL_NAME = "mlperf_log_detail.txt"
ACCURACY_NAME = "mlperf_log_accuracy.json"


def _yes(value: str) -> bool | None:
    v = value.strip().lower()
    if v in ("yes", "true"):
        return True
    if v in ("no", "false"):
        return False
    return None


_PCT = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)$")
_SS_PCT = re.compile(r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)$")


def _pct_key(p: str) -> str:
    """'50.00' -> 'p50', '99.90' -> 'p99.9', '90.0' -> 'p90'."""
    x = float(p)
    return f"p{int(x)}" if x.is_integer() else f"p{x:g}"


@dataclass(frozen=True)
class LoadgenSummary:
    path: Path
    exists: bool = False
    sut_name: str | None = None
    scenario: str | None = None
    mode: str | None = None
    result: str | None = None  # "VALID" | "INVALID"
    samples_per_s: float | None = None  # Offline "Samples per second"; else QPS w/ loadgen overhead
    qps_without_overhead: float | None = None
    target_percentile_latency_ns: int | None = None  # SingleStream "90.0th percentile latency"
    latency_ns: dict[str, int] = field(default_factory=dict)  # min, max, mean, p50, p90, ...
    min_duration_met: bool | None = None
    min_queries_met: bool | None = None
    early_stopping_met: bool | None = None
    reasons: tuple[str, ...] = ()  # "Recommendations" and "Early Stopping Result" bullet lines
    params: dict[str, str] = field(default_factory=dict)  # "Test Parameters Used"
    warnings: bool | None = None
    errors: bool | None = None
    text: str = ""

    @property
    def valid(self) -> bool | None:
        return None if self.result is None else self.result == "VALID"

    @property
    def result_line(self) -> str:
        return f"Result is : {self.result}" if self.result else ""

    def latency_ms(self) -> dict[str, float]:
        return {k: v / 1e6 for k, v in self.latency_ns.items()}


def incomplete_logs(run_dir: str | Path) -> str | None:
    """Why LoadGen's summary or detail log in ``run_dir`` is cut short, or None when both are whole
    (or absent). LoadGen ignores its own write errors: on a full disk it finishes the run and leaves
    truncated logs, whose first lines (``Result is : VALID``) would still read as a result.
    A whole summary ends with its "... encountered during test." line; a whole detail log ends with
    a complete ``:::MLLOG`` JSON line."""
    run_dir = Path(run_dir)
    problems = []
    summary, detail = run_dir / SUMMARY_NAME, run_dir / DETAIL_NAME
    try:
        if summary.exists():
            lines = summary.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
            if not lines or "encountered" not in lines[-1]:
                problems.append(f"{SUMMARY_NAME} is cut short")
        if detail.exists():
            with detail.open("rb") as fh:
                fh.seek(max(0, detail.stat().st_size - 65536))
                tail = fh.read()
            last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            ok = tail.endswith(b"\n") and last.startswith(b":::MLLOG ")
            try:
                ok = ok and isinstance(json.loads(last[len(b":::MLLOG ") :]), dict)
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{DETAIL_NAME} is cut short")
    except OSError as exc:
        problems.append(f"cannot read LoadGen's logs ({exc.strerror or exc})")
    if not problems:
        return None
    return "; ".join(problems) + " (disk full or a write error while LoadGen wrote it): the run is not valid"


def parse_summary(path: str | Path) -> LoadgenSummary:
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return LoadgenSummary(path=path)
    vals: dict[str, Any] = {}
    lat: dict[str, int] = {}
    params: dict[str, str] = {}
    reasons: list[str] = []
    section = "results"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("====="):
            continue
        if line in ("Additional Stats", "Test Parameters Used", "MLPerf Results Summary"):
            section = {"Additional Stats": "stats", "Test Parameters Used": "params"}.get(line, "results")
            continue
        if line.startswith("* "):
            reasons.append(line[2:].strip())
            continue
        if line.startswith("No warnings encountered"):
            vals["warnings"] = False
            continue
        if line.startswith("No errors encountered"):
            vals["errors"] = False
            continue
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if section == "params":
            params[key] = value
            continue
        try:
            if key == "SUT name":
                vals["sut_name"] = value
            elif key == "Scenario":
                vals["scenario"] = value
            elif key == "Mode":
                vals["mode"] = value
            elif key == "Result is":
                vals["result"] = value.split()[0] if value else None
            elif key == "Samples per second":
                vals["samples_per_s"] = float(value)
            elif key == "QPS w/ loadgen overhead":
                vals.setdefault("qps_with", float(value))
            elif key == "QPS w/o loadgen overhead":
                vals["qps_without_overhead"] = float(value)
            elif key == "Min duration satisfied":
                vals["min_duration_met"] = _yes(value)
            elif key == "Min queries satisfied":
                vals["min_queries_met"] = _yes(value)
            elif key == "Early stopping satisfied":
                vals["early_stopping_met"] = _yes(value)
            elif key == "Min latency (ns)":
                lat["min"] = int(value)
            elif key == "Max latency (ns)":
                lat["max"] = int(value)
            elif key == "Mean latency (ns)":
                lat["mean"] = int(value)
            elif m := _PCT.match(key):
                lat[_pct_key(m.group(1))] = int(value)
            elif m := _SS_PCT.match(key):
                vals["target_percentile_latency_ns"] = int(value)
        except ValueError:
            continue  # a truncated or odd line: keep what parsed
    if "samples_per_s" not in vals and "qps_with" in vals:
        vals["samples_per_s"] = vals["qps_with"]
    vals.pop("qps_with", None)
    return LoadgenSummary(
        path=path, exists=True, latency_ns=lat, params=params, reasons=tuple(reasons), text=text, **vals
    )


@dataclass(frozen=True)
class MLLogEntry:
    key: str
    value: Any
    time_ms: float
    is_error: bool
    is_warning: bool


@dataclass(frozen=True)
class LoadgenDetail:
    path: Path
    exists: bool = False
    entries: tuple[MLLogEntry, ...] = ()
    errors: tuple[str, ...] = ()  # "key: value" of every is_error entry
    warnings: tuple[str, ...] = ()
    effective: dict[str, Any] = field(default_factory=dict)  # effective_* without the prefix
    requested: dict[str, Any] = field(default_factory=dict)  # requested_* without the prefix
    results: dict[str, Any] = field(default_factory=dict)  # result_* without the prefix
    values: dict[str, Any] = field(default_factory=dict)  # last value of every other key
    bad_lines: int = 0

    @property
    def audit_config_found(self) -> bool:
        return any("Audit Config" in w for w in self.warnings)

    @property
    def loadgen_version(self) -> str | None:
        v = self.values.get("loadgen_version")
        return str(v) if v is not None else None


def _int(v: Any) -> int | None:
    try:
        return None if v is None or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return None if v is None or isinstance(v, bool) else float(v)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LoadgenSettings:
    """The settings LoadGen actually ran with: the ``effective_*`` entries of mlperf_log_detail.txt
    (after mlperf.conf, user.conf and an audit.config), typed, plus the few results the rules read.
    This, not the requested RunConfig, is the evidence a rule about durations, counts or seeds is
    judged on (core.compliance). ``None`` where the log does not say."""

    scenario: str | None = None
    test_mode: str | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None  # 0: no limit
    min_query_count: int | None = None  # effective (Offline: LoadGen sets 1 after sizing the query)
    requested_min_query_count: int | None = None  # the mlperf.conf/user.conf value before that
    max_query_count: int | None = None  # 0: no limit
    min_sample_count: int | None = None
    samples_per_query: int | None = None
    target_qps: float | None = None  # Offline: the expected QPS; SingleStream: 1e9 / expected latency
    target_latency_ns: int | None = None
    target_latency_percentile: float | None = None
    performance_sample_count: int | None = None
    accuracy_sample_count: int | None = None
    sample_concatenate_permutation: bool | None = None
    qsl_rng_seed: int | None = None
    sample_index_rng_seed: int | None = None
    schedule_rng_seed: int | None = None
    accuracy_log_rng_seed: int | None = None
    accuracy_log_probability: float | None = None
    accuracy_log_sampling_target: int | None = None
    loadgen_version: str | None = None
    query_count: int | None = None  # queries completed (result_query_count)
    mean_latency_ns: int | None = None
    early_stopping_met: bool | None = None
    audit_config_found: bool = False
    errors: tuple[str, ...] = ()

    @property
    def seeds(self) -> tuple[int | None, int | None, int | None]:
        return (self.qsl_rng_seed, self.sample_index_rng_seed, self.schedule_rng_seed)

    @property
    def expected_latency_ms(self) -> float | None:
        """SingleStream: the expected latency LoadGen sized the query count with."""
        return 1000.0 / self.target_qps if self.target_qps else None

    @classmethod
    def from_detail(cls, detail: LoadgenDetail) -> LoadgenSettings | None:
        """None when the detail log holds no effective settings (absent, or cut before they were written)."""
        e, r = detail.effective, detail.requested
        if not detail.exists or not e:
            return None
        perm = e.get("sample_concatenate_permutation")
        es = detail.values.get("early_stopping_met")
        return cls(
            scenario=str(e["scenario"]) if e.get("scenario") is not None else None,
            test_mode=str(e["test_mode"]) if e.get("test_mode") is not None else None,
            min_duration_ms=_int(e.get("min_duration_ms")),
            max_duration_ms=_int(e.get("max_duration_ms")),
            min_query_count=_int(e.get("min_query_count")),
            requested_min_query_count=_int(r.get("min_query_count")),
            max_query_count=_int(e.get("max_query_count")),
            min_sample_count=_int(e.get("min_sample_count")),
            samples_per_query=_int(e.get("samples_per_query")),
            target_qps=_float(e.get("target_qps")),
            target_latency_ns=_int(e.get("target_latency_ns")),
            target_latency_percentile=_float(e.get("target_latency_percentile")),
            performance_sample_count=_int(e.get("performance_sample_count")),
            accuracy_sample_count=_int(e.get("accuracy_sample_count")),
            sample_concatenate_permutation=bool(perm) if perm is not None else None,
            qsl_rng_seed=_int(e.get("qsl_rng_seed")),
            sample_index_rng_seed=_int(e.get("sample_index_rng_seed")),
            schedule_rng_seed=_int(e.get("schedule_rng_seed")),
            accuracy_log_rng_seed=_int(e.get("accuracy_log_rng_seed")),
            accuracy_log_probability=_float(e.get("accuracy_log_probability")),
            accuracy_log_sampling_target=_int(e.get("accuracy_log_sampling_target")),
            loadgen_version=detail.loadgen_version,
            query_count=_int(detail.results.get("query_count")),
            mean_latency_ns=_int(detail.results.get("mean_latency_ns")),
            early_stopping_met=es if isinstance(es, bool) else None,
            audit_config_found=detail.audit_config_found,
            errors=detail.errors,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = list(self.errors)
        return d


def parse_detail(path: str | Path) -> LoadgenDetail:
    path = Path(path)
    if path.is_dir():
        path = path / DETAIL_NAME
    try:
        fh = path.open("r", encoding="utf-8", errors="replace")
    except OSError:
        return LoadgenDetail(path=path)
    entries: list[MLLogEntry] = []
    errors: list[str] = []
    warnings: list[str] = []
    effective: dict[str, Any] = {}
    requested: dict[str, Any] = {}
    results: dict[str, Any] = {}
    values: dict[str, Any] = {}
    bad = 0
    with fh:
        for line in fh:
            if not line.startswith(":::MLLOG"):
                continue
            try:
                obj = json.loads(line[len(":::MLLOG") :])
                key = str(obj["key"])
            except (ValueError, KeyError, TypeError):
                bad += 1  # e.g. the last line of a run that was killed mid-write
                continue
            meta = obj.get("metadata") or {}
            value = obj.get("value")
            entry = MLLogEntry(
                key,
                value,
                float(obj.get("time_ms") or 0.0),
                bool(meta.get("is_error")),
                bool(meta.get("is_warning")),
            )
            if key == "loadgen_file_sha1":
                continue  # large and useless here
            entries.append(entry)
            if entry.is_error:
                errors.append(f"{key}: {value}")
            elif entry.is_warning:
                warnings.append(f"{key}: {value}")
            if key.startswith("effective_"):
                effective[key[len("effective_") :]] = value
            elif key.startswith("requested_"):
                requested[key[len("requested_") :]] = value
            elif key.startswith("result_"):
                results[key[len("result_") :]] = value
            else:
                values[key] = value
    return LoadgenDetail(
        path=path,
        exists=True,
        entries=tuple(entries),
        errors=tuple(errors),
        warnings=tuple(warnings),
        effective=effective,
        requested=requested,
        results=results,
        values=values,
        bad_lines=bad,
    )


def loadgen_settings(detail: LoadgenDetail | str | Path) -> LoadgenSettings | None:
    """The effective settings of a run folder's detail log (or a parsed one); None without a log."""
    return LoadgenSettings.from_detail(detail if isinstance(detail, LoadgenDetail) else parse_detail(detail))
