"""Compliance TEST01 for 3d-unet: "verify accuracy in performance mode" (mlcommons/inference
compliance/TEST01: README, run_verification.py, verify_accuracy.py, verify_performance.py,
create_accuracy_baseline.sh), re-implemented.

A TEST01 run is a performance run with the audit.config that logs a random sample (target 64) of its
responses to ``mlperf_log_accuracy.json``. It passes when

1. every logged response equals the accuracy run's response for the same QSL index
   (``verify_accuracy.txt``; we compare the whole payload, as the script's ``--unixmode`` does, where its
   default mode compares only the first decoded element), and
2. its score is within 10 % of the submission run's (20 % for SingleStream at or under 200 us)
   (``verify_performance.txt``).

The checker reads the ``TEST PASS`` lines of both files. When the deterministic check fails (non-
deterministic kernels), the documented fallback stands in: the accuracy run's log restricted to the
sampled indices (the baseline) and the TEST01 log are both scored (a case logged several times scores
the mean of its responses, core.accuracy.score_log ``subset``), and their mean DICE must differ by
at most 1 % (3d-unet-99) or 0.1 % (3d-unet-99.9): ``accuracy/baseline_accuracy.txt`` and
``accuracy/compliance_accuracy.txt``. :func:`write_test01` lays out ``TEST01/`` as run_verification.py
does (``-o OUT`` -> ``OUT/TEST01/...``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.benchmark import TARGET_FRACTIONS
from core.errors import MissingInputError
from core.fsio import atomic_write, copy_atomic, write_text_atomic
from core.harness.logs import LoadgenDetail, parse_detail
from core.jobs import NEVER, CancelToken
from core.submission.rules import ACCURACY_LOG, DETAIL, SUMMARY, accuracy_mean

# the score each scenario is compared by (verify_performance.py's RESULT_FIELD)
RESULT_FIELD = {"Offline": "result_samples_per_second", "SingleStream": "early_stopping_latency_ss"}
PERF_TOLERANCE = 0.10
SINGLE_STREAM_FAST_NS = 200_000  # at or under this latency the tolerance is 20 %
PERF_TOLERANCE_FAST = 0.20
VERIFY_ACCURACY = "verify_accuracy.txt"
VERIFY_PERFORMANCE = "verify_performance.txt"
BASELINE_ACCURACY = "baseline_accuracy.txt"  # the fallback's files, in TEST01/accuracy/
COMPLIANCE_ACCURACY = "compliance_accuracy.txt"
RUNS_RECORD = "test01_runs.json"  # beside TEST01/: the runs `verify-test01` verified, with their compliance


@dataclass(frozen=True)
class Check:
    passed: bool
    lines: tuple[str, ...]  # what the official script prints, with its TEST PASS / TEST FAIL line

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _entries(path: Path) -> Iterator[tuple[int | None, str]]:
    """(qsl_idx, data) of each entry of a LoadGen accuracy log, one line at a time (the full 3d-unet
    log is ~2.8 GB of hex); a malformed entry yields (None, "")."""
    with path.open("r", encoding="ascii", errors="replace") as fh:
        for raw in fh:
            line = raw.strip().rstrip(",")
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
                yield int(obj["qsl_idx"]), str(obj.get("data", ""))
            except (ValueError, KeyError, TypeError):
                yield None, ""


def verify_accuracy(accuracy_log: str | Path, test_log: str | Path) -> Check:
    """Every response the TEST01 run logged equals the accuracy run's response for that sample."""
    acc_path, test_path = Path(accuracy_log), Path(test_log)
    for p in (acc_path, test_path):
        if not p.is_file():
            return Check(False, (f"missing {p}", "TEST FAIL"))
    ref: dict[int, int] = {}
    n_acc = dup = dup_mismatch = bad = 0
    for idx, data in _entries(acc_path):
        n_acc += 1
        if idx is None:
            bad += 1
            continue
        h = hash(data)
        if idx in ref:
            dup += 1
            dup_mismatch += ref[idx] != h
        else:
            ref[idx] = h
    n_perf = match = mismatch = missing_idx = 0
    for idx, data in _entries(test_path):
        n_perf += 1
        if idx is None:
            bad += 1
        elif idx not in ref:
            missing_idx += 1
        elif ref[idx] == hash(data):
            match += 1
        else:
            mismatch += 1
    passed = mismatch == 0 and match > 0 and bad == 0
    return Check(
        passed,
        (
            "Reading accuracy mode results...",
            "Reading performance mode results...",
            f"num_acc_log_entries = {n_acc}",
            f"num_acc_log_duplicate_keys = {dup}",
            f"num_acc_log_data_mismatch = {dup_mismatch}",
            f"num_perf_log_entries = {n_perf}",
            f"num_perf_log_qsl_idx_match = {match + mismatch}",
            f"num_perf_log_data_mismatch = {mismatch}",
            f"num_missing_qsl_idxs = {missing_idx}",
            *((f"num_malformed_entries = {bad}",) if bad else ()),
            "TEST PASS" if passed else "TEST FAIL",
        ),
    )


def _score(detail: LoadgenDetail) -> tuple[str | None, float | None, str | None]:
    scenario = detail.effective.get("scenario")
    if detail.results.get("validity") != "VALID":
        return scenario, None, f"TEST FAIL: Invalid results in {detail.path}"
    key = RESULT_FIELD.get(str(scenario))
    raw = None
    if key is not None:
        raw = (
            detail.results.get(key[len("result_") :]) if key.startswith("result_") else detail.values.get(key)
        )
    try:
        return scenario, float(raw), None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return scenario, None, f"TEST FAIL: no {key} in {detail.path}"


def verify_performance(reference_detail: str | Path, test_detail: str | Path) -> Check:
    """The TEST01 run's score within the allowed delta of the submission run's. Arguments are run
    folders or their mlperf_log_detail.txt."""
    ref, test = parse_detail(reference_detail), parse_detail(test_detail)
    ref_scenario, ref_score, err = _score(ref)
    if err is None:
        test_scenario, test_score, err = _score(test)
        if err is None and test_scenario != ref_scenario:
            err = "TEST FAIL: Test and reference scenarios do not match!"
    if err is not None:
        return Check(False, ("Verifying performance.", err))
    assert ref_score is not None and test_score is not None
    fast = ref_scenario == "SingleStream" and ref_score <= SINGLE_STREAM_FAST_NS
    tol = PERF_TOLERANCE_FAST if fast else PERF_TOLERANCE
    passed = ref_score * (1 - tol) <= test_score <= ref_score * (1 + tol)
    return Check(
        passed,
        (
            "Verifying performance.",
            f"Reference score = {ref_score}",
            f"Test score = {test_score}",
            "TEST PASS" if passed else "TEST FAIL: Test score invalid",
        ),
    )


def write_baseline_log(accuracy_log: Path, test_log: Path, out: Path) -> int:
    """create_accuracy_baseline.sh: the accuracy run's entries for the QSL indices the TEST01 run
    logged, as a JSON array (one entry per line, as LoadGen writes). Returns the entry count."""
    wanted = {idx for idx, _ in _entries(Path(test_log)) if idx is not None}
    n = 0
    with (
        atomic_write(out, "w", encoding="ascii") as fh,
        Path(accuracy_log).open("r", encoding="ascii") as src,
    ):
        fh.write("[\n")
        for raw in src:
            line = raw.strip().rstrip(",")
            if not line.startswith("{"):
                continue
            try:
                idx = int(json.loads(line)["qsl_idx"])
            except (ValueError, KeyError, TypeError):
                continue
            if idx in wanted:
                fh.write((",\n" if n else "") + line)  # LoadGen's layout: the comma ends the line
                n += 1
        fh.write("\n]\n" if n else "]\n")
    return n


@dataclass(frozen=True)
class Fallback:
    baseline_line: str  # "Accuracy: mean = ..." of the accuracy run on the sampled indices
    compliance_line: str  # the same for the TEST01 run's log
    baseline: float
    compliance: float
    delta_percent: float
    allowed_percent: float

    @property
    def passed(self) -> bool:
        return self.delta_percent <= self.allowed_percent


def allowed_delta_percent(config_ver: str) -> float:
    """1 % for 3d-unet-99, 0.1 % for 3d-unet-99.9: (1 - target fraction) x 100."""
    return round((1.0 - TARGET_FRACTIONS[config_ver]) * 100.0, 6)


def fallback_accuracy(
    accuracy_log: Path,
    test_log: Path,
    config_ver: str,
    score: Any,
    scratch: Path,
) -> Fallback:
    """Score the baseline (the accuracy run on the sampled indices) and the TEST01 log with
    ``score(log_path, csv_path) -> AccuracyReport`` (core.accuracy.score_log with ``subset=True``)."""
    base = scratch / "mlperf_log_accuracy_baseline.json"
    write_baseline_log(accuracy_log, test_log, base)
    b = score(base, scratch / "baseline_summary.csv")
    c = score(test_log, scratch / "compliance_summary.csv")
    delta = abs(1.0 - b.mean / c.mean) * 100.0 if c.mean else float("inf")
    return Fallback(b.line, c.line, b.mean, c.mean, delta, allowed_delta_percent(config_ver))


@dataclass(frozen=True)
class Test01Result:
    accuracy: Check
    performance: Check
    fallback: Fallback | None
    out_dir: Path  # the TEST01 folder written

    @property
    def accuracy_passed(self) -> bool:
        return self.accuracy.passed or (self.fallback is not None and self.fallback.passed)

    @property
    def passed(self) -> bool:
        return self.accuracy_passed and self.performance.passed

    def lines(self) -> list[str]:
        out = [
            f"Accuracy check pass: {self.accuracy.passed}",
            f"Performance check pass: {self.performance.passed}",
        ]
        if self.fallback is not None:
            f = self.fallback
            verdict = "PASS" if f.passed else "FAIL"
            out.append(
                f"Fallback (DICE of the sampled cases): baseline {f.baseline:.5f}, "
                f"TEST01 {f.compliance:.5f}, delta {f.delta_percent:.4f} % "
                f"(allowed {f.allowed_percent:g} %): {verdict}"
            )
        out.append(f"TEST01 verification {'passed' if self.passed else 'FAILED'}: {self.out_dir}")
        return out

    def to_dict(self) -> dict[str, Any]:
        f = self.fallback
        return {
            "passed": self.passed,
            "accuracy_passed": self.accuracy.passed,
            "performance_passed": self.performance.passed,
            "fallback": None
            if f is None
            else {
                "baseline": f.baseline,
                "compliance": f.compliance,
                "delta_percent": f.delta_percent,
                "allowed_percent": f.allowed_percent,
                "passed": f.passed,
            },
            "out_dir": str(self.out_dir),
        }


def write_test01(
    out: Path,
    accuracy_run: Path,
    performance_run: Path,
    test01_run: Path,
    *,
    config_ver: str = "default",
    score: Any,
    copy_log: bool = True,
    cancel: CancelToken = NEVER,
) -> Test01Result:
    """Verify a TEST01 run and write ``out/TEST01/`` as run_verification.py does: verify_accuracy.txt,
    verify_performance.txt, performance/run_1/{summary,detail}, accuracy/mlperf_log_accuracy.json (the
    full log: the stage truncates it) and accuracy/accuracy.txt (the DICE of the sampled responses);
    baseline_accuracy.txt and compliance_accuracy.txt too when the deterministic check fails.
    ``score(log, csv) -> AccuracyReport`` scores a subset log (core.accuracy.score_log, subset=True).
    ``copy_log=False``: leave accuracy/mlperf_log_accuracy.json to the caller (the stage writes it
    truncated)."""
    acc_log = Path(accuracy_run) / ACCURACY_LOG
    t01_log = Path(test01_run) / ACCURACY_LOG
    for need in (acc_log, t01_log, Path(performance_run) / DETAIL, Path(test01_run) / DETAIL):
        if not need.is_file():
            raise MissingInputError("TEST01 verification needs this file", need)
    cancel.check()
    acc = verify_accuracy(acc_log, t01_log)
    cancel.check()
    perf = verify_performance(performance_run, test01_run)
    dst = Path(out) / "TEST01"
    write_text_atomic(dst / VERIFY_ACCURACY, acc.text)
    write_text_atomic(dst / VERIFY_PERFORMANCE, perf.text)
    for name in (SUMMARY, DETAIL):
        copy_atomic(Path(test01_run) / name, dst / "performance" / "run_1" / name)
    if copy_log:
        copy_atomic(t01_log, dst / "accuracy" / ACCURACY_LOG)
    fallback = None
    with tempfile.TemporaryDirectory(prefix="unet3d-test01-") as tmp:
        cancel.check()
        compliance = score(t01_log, Path(tmp) / "test01_summary.csv")
        write_text_atomic(dst / "accuracy" / "accuracy.txt", compliance.line + "\n")
        if not acc.passed:
            fallback = fallback_accuracy(acc_log, t01_log, config_ver, score, Path(tmp))
            write_text_atomic(dst / "accuracy" / BASELINE_ACCURACY, fallback.baseline_line + "\n")
            write_text_atomic(dst / "accuracy" / COMPLIANCE_ACCURACY, fallback.compliance_line + "\n")
    return Test01Result(acc, perf, fallback, dst)


# --- reading a TEST01/ folder back (the pre-check, the auditor checklist) ---------------------------


@dataclass(frozen=True)
class Verification:
    """What a TEST01/ folder's files say, read as the submission checker reads them: the ``TEST PASS``
    lines of verify_accuracy.txt and verify_performance.txt (None: the file is missing) and, when the
    deterministic check failed, the fallback's mean DICE of the baseline and the TEST01 responses."""

    folder: Path
    accuracy: bool | None
    performance: bool | None
    baseline: float | None = None
    compliance: float | None = None
    allowed_percent: float = 1.0

    @property
    def fallback_present(self) -> bool:
        return (self.folder / "accuracy" / BASELINE_ACCURACY).is_file() or (
            self.folder / "accuracy" / COMPLIANCE_ACCURACY
        ).is_file()

    @property
    def delta_percent(self) -> float | None:
        if not self.baseline or not self.compliance:
            return None
        return abs(1.0 - self.baseline / self.compliance) * 100.0

    @property
    def fallback_passed(self) -> bool | None:
        """None without fallback files; False when their lines are missing or differ too much."""
        if not self.fallback_present:
            return None
        delta = self.delta_percent
        return delta is not None and delta <= self.allowed_percent

    @property
    def accuracy_passed(self) -> bool | None:
        if self.accuracy is None:
            return None
        return self.accuracy or self.fallback_passed is True

    @property
    def passed(self) -> bool | None:
        """Both checks pass; None when a verification file is missing (nothing verified yet)."""
        if self.accuracy is None or self.performance is None:
            return None
        return bool(self.accuracy_passed) and self.performance

    def line(self) -> str:
        """One line: each check's verdict (the fallback's delta where it stood in)."""
        word = {True: "PASS", False: "FAIL", None: "missing"}
        acc = word[self.accuracy]
        if self.accuracy is False and self.fallback_present:
            d = self.delta_percent
            shown = f"{d:.4f} %" if d is not None else "no DICE lines"
            allowed = f"allowed {self.allowed_percent:g} %"
            acc += f", fallback {word[self.fallback_passed]} (delta {shown}, {allowed})"
        return f"TEST01 accuracy {acc}; performance {word[self.performance]}"


def read_verification(folder: str | Path, config_ver: str = "default") -> Verification:
    """Read ``folder`` (a ``TEST01/`` folder written by :func:`write_test01` or staged)."""
    folder = Path(folder)

    def text(name: str) -> str | None:
        try:
            return (folder / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    va, vp = text(VERIFY_ACCURACY), text(VERIFY_PERFORMANCE)
    return Verification(
        folder=folder,
        accuracy=None if va is None else "TEST PASS" in [x.strip() for x in va.splitlines()],
        performance=None if vp is None else "TEST PASS" in vp,
        baseline=accuracy_mean(folder / "accuracy" / BASELINE_ACCURACY),
        compliance=accuracy_mean(folder / "accuracy" / COMPLIANCE_ACCURACY),
        allowed_percent=allowed_delta_percent(config_ver),
    )


def read_runs_record(out: str | Path) -> dict[str, Any] | None:
    """The record `verify-test01` wrote beside ``out/TEST01`` (the runs it verified); None if absent."""
    try:
        doc = json.loads((Path(out) / RUNS_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
