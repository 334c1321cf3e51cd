"""The results table of `unet3d run` and `unet3d demo` (NVIDIA's familiar columns), from RunRecords.

Every figure comes from :class:`core.history.RunRecord` and its rules: no throughput for a run that is
not complete and VALID, "ok" only when the run :meth:`~core.history.RunRecord.passes`, and its
compliance label (:attr:`~core.history.RunRecord.compliance`: a short run passes and is "shortened").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.benchmark import FP32_REFERENCE_DICE, MODEL_NAMES, target_dice
from core.history import RunRecord


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain `a | b | c` table, widths from the content; locale- and terminal-independent."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    fmt = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    lines = [fmt(head), "-|-".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines) + "\n"


def result_row(rec: RunRecord, fp32_reference: float = FP32_REFERENCE_DICE) -> dict[str, Any]:
    """One row of the results table (JSON-ready), plus whether the run passed."""
    cfg = rec.config
    acc = rec.accuracy
    config_ver = rec.config_ver or "default"
    target = (
        acc.target if acc is not None and acc.target is not None else target_dice(config_ver, fp32_reference)
    )
    return {
        "model": MODEL_NAMES.get(config_ver, config_ver),
        "scenario": rec.scenario,
        "test_mode": rec.test_mode,
        "backend": rec.backend,
        "precision": rec.precision,
        "accuracy": acc.mean if acc is not None else None,
        "accuracy_target": float(target),
        "accuracy_passed": rec.accuracy_passed(fp32_reference),
        "samples_per_s": rec.samples_per_s,
        "latency_ms": rec.latency_ms.get("p90"),  # SingleStream's metric; shown by the same rule
        "valid": rec.valid,
        "ok": rec.passes(fp32_reference),
        "compliance": rec.compliance.to_dict(),
        "status": rec.status,
        "log_dir": str(rec.path),
        "run_args": cfg.run_args() if cfg is not None else "",
    }


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.5f}"
        if r["accuracy"] is not None:
            acc += f" ({'PASS' if r['accuracy_passed'] else 'FAIL'} >= {r['accuracy_target']:.5f})"
        qps = "-" if r["samples_per_s"] is None else f"{r['samples_per_s']:.4g} samples/s"
        if r["status"] != "complete":
            qps += f" {r['status']}"
        elif r["valid"] is not None and r["test_mode"] != "AccuracyOnly":
            qps += " VALID" if r["valid"] else " INVALID"
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        out.append((r["model"], r["scenario"], acc, qps, lat, r["compliance"]["label"]))
    return text_table(("Model", "Scenario", "Accuracy", "Throughput", "Latency (ms)", "Compliance"), out)
