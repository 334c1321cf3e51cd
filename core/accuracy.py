"""The one DICE, and scoring of LoadGen accuracy logs (reference ``accuracy_kits.py``).

``dice`` is the reference ``get_dice_score``: one-hot over 3 classes, background dropped,
``(2*sum(P*G) + 1e-6) / (sum(P) + sum(G) + 1e-6)`` in float64 for class 1 (kidney, label 1 only) and
class 2 (tumor). Counting voxels with ``count_nonzero`` gives the same float64 values as summing the
one-hot products (integer sums are exact in float64 up to 2**53) without materializing the one-hot.

``score_log`` reads ``mlperf_log_accuracy.json`` entry by entry (the full-set log is ~2.8 GB of hex),
checks every entry, scores it against the preprocessed label and writes ``summary.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.benchmark import FP32_REFERENCE_DICE, TARGET_FRACTIONS, target_dice
from core.errors import BadInputError, MissingInputError, UsageError
from core.fsio import write_text_atomic as atomic_write_text
from core.jobs import NEVER, CancelToken, LogLine, Phase, Progress, Reporter, null_reporter

if TYPE_CHECKING:
    from core.harness.events import RunEvents
    from core.harness.qsl import DataSource
    from core.workspace import Workspace

SMOOTH_NR = 1e-6
SMOOTH_DR = 1e-6
CLASSES = (1, 2)  # kidney, tumor; background (0) is dropped


def dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(kidney, tumor) DICE of two label volumes of the same shape (any leading singleton axes)."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise BadInputError(f"prediction shape {pred.shape} does not match label shape {truth.shape}")
    for name, arr in (("prediction", pred), ("label", truth)):
        if arr.size and (arr.min() < 0 or arr.max() > 2):
            raise BadInputError(f"{name} has values outside the classes 0, 1, 2")
    scores = []
    for c in CLASSES:
        p = pred == c
        g = truth == c
        inter = float(np.count_nonzero(p & g))
        denom = float(np.count_nonzero(p)) + float(np.count_nonzero(g))
        scores.append((2.0 * inter + SMOOTH_NR) / (denom + SMOOTH_DR))
    return scores[0], scores[1]


@dataclass(frozen=True)
class CaseScore:
    case: str
    kidney: float
    tumor: float

    @property
    def composite(self) -> float:
        return (self.kidney + self.tumor) / 2


def accuracy_line(mean: float, kidney: float, tumor: float) -> str:
    """The reference's printed line; the submission checker parses the number after ``mean =``."""
    return f"Accuracy: mean = {mean:.5f}, kidney = {kidney:.4f}, tumor = {tumor:.4f}"


@dataclass(frozen=True)
class AccuracyReport:
    rows: tuple[CaseScore, ...]
    kidney: float
    tumor: float
    mean: float  # composite mean
    fp32_reference: float
    reference_source: str  # "official" or the file it came from
    config_ver: str
    log_path: Path
    csv_path: Path | None = None
    targets: dict[str, float] = field(default_factory=dict)  # config_ver -> threshold

    @property
    def line(self) -> str:
        return accuracy_line(self.mean, self.kidney, self.tumor)

    @property
    def target(self) -> float:
        return target_dice(self.config_ver, self.fp32_reference)

    @property
    def passed(self) -> bool:
        """Meets the target of this run's config_ver (99 % default, 99.9 % high_accuracy)."""
        return self.mean >= self.target

    @property
    def passed_99(self) -> bool:
        return self.mean >= target_dice("default", self.fp32_reference)

    @property
    def passed_99_9(self) -> bool:
        return self.mean >= target_dice("high_accuracy", self.fp32_reference)

    def to_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "kidney": self.kidney,
            "tumor": self.tumor,
            "line": self.line,
            "fp32_reference": self.fp32_reference,
            "reference_source": self.reference_source,
            "config_ver": self.config_ver,
            "target": self.target,
            "passed": self.passed,
            "passed_99": self.passed_99,
            "passed_99_9": self.passed_99_9,
            "cases": [[r.case, r.kidney, r.tumor] for r in self.rows],
            "log_path": str(self.log_path),
            "csv_path": str(self.csv_path) if self.csv_path is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccuracyReport:
        ref = float(d["fp32_reference"])
        return cls(
            rows=tuple(CaseScore(str(c), float(k), float(t)) for c, k, t in d.get("cases", [])),
            kidney=float(d["kidney"]),
            tumor=float(d["tumor"]),
            mean=float(d["mean"]),
            fp32_reference=ref,
            reference_source=str(d.get("reference_source", "")),
            config_ver=str(d.get("config_ver", "default")),
            log_path=Path(str(d.get("log_path", ""))),
            csv_path=Path(d["csv_path"]) if d.get("csv_path") else None,
            targets={k: target_dice(k, ref) for k in TARGET_FRACTIONS},
        )


def fp32_reference_for(model_path: Path | None) -> tuple[float, str]:
    """The FP32 mean DICE the targets are relative to: ``<model stem>.fp32_dice.json`` (or
    ``<model file>.fp32_dice.json``) next to the model, with a ``mean`` key, else the official 0.86170."""
    if model_path is not None:
        model_path = Path(model_path)
        for cand in (
            model_path.with_name(model_path.stem + ".fp32_dice.json"),
            model_path.with_name(model_path.name + ".fp32_dice.json"),
        ):
            if cand.is_file():
                try:
                    value = float(json.loads(cand.read_text())["mean"])
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise BadInputError(
                        f"cannot read the FP32 reference DICE ('mean'): {exc}", cand
                    ) from None
                if not 0.0 < value <= 1.0:
                    raise BadInputError(f"FP32 reference DICE {value} is not in (0, 1]", cand)
                return value, str(cand)
    return FP32_REFERENCE_DICE, "official"


def _iter_entries(log_path: Path) -> Iterator[dict]:
    """Yield the log's entries. LoadGen writes one object per line; anything else falls back to json.load."""
    yielded = 0
    try:
        with log_path.open("r", encoding="ascii", errors="strict") as fh:
            first = fh.readline().strip()
            if first != "[":
                raise ValueError("not line-per-entry")
            for n, raw in enumerate(fh, 2):
                line = raw.strip()
                if line in ("", "]"):
                    continue
                try:
                    entry = json.loads(line.rstrip(","))
                except ValueError:
                    if yielded:  # entries were already scored: a broken line, not another layout
                        raise BadInputError(f"malformed accuracy log line {n}", log_path) from None
                    raise
                yielded += 1
                yield entry
            return
    except FileNotFoundError:
        raise MissingInputError("accuracy log not found", log_path) from None
    except (ValueError, UnicodeDecodeError):
        if yielded:
            raise BadInputError("malformed accuracy log (not ASCII)", log_path) from None
    try:
        data = json.loads(log_path.read_text(encoding="ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"malformed accuracy log: {exc}", log_path) from None
    if not isinstance(data, list):
        raise BadInputError("accuracy log is not a JSON array", log_path)
    yield from data


def decode_entry(entry: object, shape: tuple[int, ...], log_path: Path) -> np.ndarray:
    """One entry's hex ``data`` -> uint8 array of ``shape`` (the case's image_shape)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), str):
        raise BadInputError("malformed accuracy log entry (no 'data' string)", log_path)
    hexdata = entry["data"]
    if not hexdata:
        raise BadInputError(
            f"entry qsl_idx={entry.get('qsl_idx')} is empty (a cancelled or failed run answers with no data)",
            log_path,
        )
    try:
        raw = bytes.fromhex(hexdata)
    except ValueError:
        raise BadInputError(f"malformed hex in entry qsl_idx={entry.get('qsl_idx')}", log_path) from None
    need = int(np.prod(shape))
    if len(raw) != need:
        raise BadInputError(
            f"entry qsl_idx={entry.get('qsl_idx')} has {len(raw)} bytes, expected {need} for shape {shape}",
            log_path,
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _write_csv(path: Path, rows: list[CaseScore], kidney: float, tumor: float, mean: float) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["case", "kidney", "tumor", "composite"])
    for r in rows:
        w.writerow([r.case, f"{r.kidney:.6f}", f"{r.tumor:.6f}", f"{r.composite:.6f}"])
    w.writerow(["mean", f"{kidney:.6f}", f"{tumor:.6f}", f"{mean:.6f}"])
    atomic_write_text(path, buf.getvalue())


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def score_log(
    ws: Workspace | None,
    log_path: str | Path,
    fp32_reference: float | None = None,
    config_ver: str = "default",
    *,
    data: DataSource | None = None,
    out_csv: str | Path | None = None,
    model_path: Path | None = None,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    events: RunEvents | None = None,
    subset: bool = False,
) -> AccuracyReport:
    """Score ``mlperf_log_accuracy.json`` against the preprocessed inference labels.

    The log must hold exactly one entry per case (an accuracy run covers the whole set once), unless
    ``subset``: then it may hold any cases, each any number of times (TEST01's sampled log): a case
    scores the mean of its entries, so a wrong response counts even when the same case was logged
    again, and the means are over the cases present.
    ``fp32_reference`` defaults to the model's ``.fp32_dice.json`` (see :func:`fp32_reference_for`)
    or the official 0.86170. ``summary.csv`` goes next to the log unless ``out_csv`` says otherwise.
    """
    from core.harness.qsl import PreprocessedData

    if config_ver not in TARGET_FRACTIONS:
        raise UsageError(f"--config_ver={config_ver} is not one of {', '.join(TARGET_FRACTIONS)}")
    log_path = Path(log_path)
    if not log_path.is_file():
        raise MissingInputError("accuracy log not found", log_path)
    if data is None:
        if ws is None:
            raise UsageError("score_log needs a workspace or a data source")
        data = PreprocessedData(ws, "inference")
    if fp32_reference is None:
        if model_path is None and ws is not None:
            model_path = ws.model_path
        fp32_reference, ref_source = fp32_reference_for(model_path)
    else:
        ref_source = "given"
    cases = data.cases()
    n = len(cases)
    report(Phase("scoring", str(log_path)))
    scores: dict[int, CaseScore] = {}
    repeats: dict[int, list[tuple[float, float]]] = {}  # subset: every entry's (kidney, tumor) per case
    for entry in _iter_entries(log_path):
        cancel.check()
        idx = entry.get("qsl_idx") if isinstance(entry, dict) else None
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n:
            raise BadInputError(f"entry with bad qsl_idx {idx!r} (the set has {n} cases)", log_path)
        if idx in scores and not subset:
            raise BadInputError(f"duplicate qsl_idx {idx} ({cases[idx]})", log_path)
        if len(scores) >= n and not subset:
            raise BadInputError(f"more than {n} entries", log_path)
        case = cases[idx]
        pred = decode_entry(entry, tuple(data.image_shape(case)), log_path)
        truth = data.load_label(case)
        try:
            kidney, tumor = dice(pred, truth.reshape(pred.shape))
        except (BadInputError, ValueError) as exc:
            raise BadInputError(f"{case} (qsl_idx {idx}): {exc}", log_path) from None
        if subset:
            repeats.setdefault(idx, []).append((kidney, tumor))
            kidney = float(np.mean([k for k, _ in repeats[idx]]))
            tumor = float(np.mean([t for _, t in repeats[idx]]))
        scores[idx] = CaseScore(case, kidney, tumor)
        if events is not None:
            events.dice(case, kidney, tumor)
        report(Progress("scoring", len(scores), n, unit="case", item=case))
    if len(scores) != n and not (subset and scores):
        missing = [cases[i] for i in range(n) if i not in scores]
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BadInputError(f"{len(scores)} entries for {n} cases; missing {shown}", log_path)
    rows = [scores[i] for i in sorted(scores)]
    kidney = float(np.mean([_nan0(r.kidney) for r in rows]))
    tumor = float(np.mean([_nan0(r.tumor) for r in rows]))
    mean = float(np.mean([_nan0(r.composite) for r in rows]))
    csv_path = Path(out_csv) if out_csv is not None else log_path.parent / "summary.csv"
    _write_csv(csv_path, rows, kidney, tumor, mean)
    result = AccuracyReport(
        rows=tuple(rows),
        kidney=kidney,
        tumor=tumor,
        mean=mean,
        fp32_reference=float(fp32_reference),
        reference_source=ref_source,
        config_ver=config_ver,
        log_path=log_path,
        csv_path=csv_path,
        targets={k: target_dice(k, float(fp32_reference)) for k in TARGET_FRACTIONS},
    )
    report(LogLine("info", result.line))
    return result
