"""End-to-end on one GPU: phantom KiTS19 set -> reference preprocessing -> LoadGen runs with the fused
Triton engine (plugins.engine.FusedEngine) and, for the FP32 baseline, the torch backend.

Everything is built in --work from the shared folder's masks, tools and phantom model (a copy of the
shared folder's kits19/, tools/ and models/ given as --shared). Prints one line per run (accuracy:
mean / kidney / tumor DICE; performance: samples/s, latency percentiles) and writes summary.json.

    python bench/e2e_fused.py --shared DIR --work /tmp/e2e --jobs 16 --perf-s 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = time.time()
SUMMARY: dict[str, Any] = {}


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def calibration_windows(shared: Path, raw: Path, cases: list[str], per_case: int = 2) -> list[torch.Tensor]:
    """int8 windows (1, 1, 128^3) from calibration cases, preprocessed with core.preprocess."""
    from core.nifti import load_case
    from core.preprocess import preprocess_case, quantize_int8
    from core.sliding_window import window_grid

    out = []
    for c in cases:
        case = load_case(raw / c)
        img, _, _ = preprocess_case(case.image, case.label, case.spacing)
        q = quantize_int8(img)
        grid = window_grid(q.shape[1:])
        pick = np.linspace(0, len(grid) - 1, per_case).round().astype(int)
        for i in pick:
            sl = grid[int(i)].slices
            out.append(torch.from_numpy(np.ascontiguousarray(q[(slice(None), *sl)]))[None])
    return out


def run(ws: Any, cfg: Any, engine: Any, tag: str) -> None:
    from core.harness.runner import run_benchmark
    from core.jobs import NEVER, null_reporter

    t = time.time()
    try:
        res = run_benchmark(ws, cfg, null_reporter, NEVER, engine=engine)
    except Exception as exc:
        log(f"{tag}: FAILED {type(exc).__name__}: {str(exc)[:300]}")
        SUMMARY[tag] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    row: dict[str, Any] = {
        "wall_s": round(time.time() - t, 1), "log_dir": str(res.log_dir), "valid": res.valid,
        "samples_per_s": res.samples_per_s, "latency_ms": res.latency_ms, "samples": res.samples_completed,
        "result_line": res.result_line,
    }  # fmt: skip
    if res.accuracy is not None:
        a = res.accuracy
        row.update(mean=a.mean, kidney=a.kidney, tumor=a.tumor)
    SUMMARY[tag] = row
    acc = (
        f" DICE mean {row['mean']:.5f} kidney {row['kidney']:.4f} tumor {row['tumor']:.4f}"
        if "mean" in row
        else ""
    )
    lat = res.latency_ms or {}
    log(
        f"{tag}: {res.status} valid={res.valid} samples={res.samples_completed} "
        f"samples/s={res.samples_per_s} p90={lat.get('p90')} ms{acc} ({row['wall_s']} s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/e2e"))
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--cases", type=int, default=0, help="limit the inference cases (smoke test)")
    ap.add_argument("--calib-cases", type=int, default=4)
    ap.add_argument("--perf-s", type=float, default=30.0)
    ap.add_argument("--runs", default="fp8acc,fp8perf,fp8ss,fp32acc,fp16acc,fp16perf")
    ap.add_argument("--prologue", default="apply")
    ap.add_argument("--perf-model", default="full", choices=["full", "phantom"])
    ap.add_argument("--deadline-s", type=float, default=1e9, help="start no run after this many seconds")
    ap.add_argument("--qps", type=float, default=3.5, help="expected samples/s (sizes the perf runs)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    from core.benchmark import RunConfig
    from core.workspace import Workspace

    raw = a.work / "raw"
    tools = a.shared / "tools"
    infer_cases = json.loads((a.shared / "kits19" / "inference_cases.json").read_text())
    if a.cases:
        infer_cases = infer_cases[: a.cases]
    calib_cases = json.loads((a.shared / "kits19" / "calibration_cases.json").read_text())[: a.calib_cases]
    log(f"phantoms: {len(infer_cases)} inference + {len(calib_cases)} calibration cases, {a.jobs} jobs")
    cmd = [
        sys.executable,
        str(tools / "kits19_phantom.py"),
        "--out",
        str(raw),
        "--jobs",
        str(a.jobs),
        "--cases",
    ]
    subprocess.run(cmd + infer_cases + calib_cases, check=True, stdout=subprocess.DEVNULL)
    ws = Workspace.resolve(a.work / "ws", data_dir=raw)
    ws.model_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(tools / "phantom_model.py"), str(ws.model_path)], check=True)
    log(f"workspace {ws}")
    if a.cases:  # a smoke test: restrict the case list through DATA_DIR's json override
        (raw / "inference_cases.json").write_text(json.dumps(infer_cases))
    from core.preprocess import run_preprocess

    res = run_preprocess(ws, sets=("inference",), jobs=a.jobs)
    log(f"preprocessed: {res}"[:300])
    SUMMARY["env"] = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
    base = RunConfig(scenario="Offline", gpu_batch_size=8, backend="torch")
    acc = base.with_(test_mode="AccuracyOnly")
    runs = a.runs.split(",")
    from plugins.engine import FusedEngine

    def save() -> None:
        if a.out:
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / "summary.json").write_text(json.dumps(SUMMARY, indent=1, default=str))

    cal: list[torch.Tensor] | None = None
    for prec in ("fp32", "fp8", "fp16", "bf16"):
        wanted = [r for r in runs if r.startswith(prec)]
        if not wanted:
            continue
        if time.time() - T0 > a.deadline_s:
            log(f"deadline reached: skipping {wanted}")
            continue
        if prec == "fp32":  # the FP32 baseline through the torch backend (cuDNN fp32), not the fused engine
            run(ws, acc.with_(precision="fp32"), None, "torch-backend fp32 AccuracyOnly")
            save()
            continue
        t = time.time()
        if cal is None and prec == "fp8":
            cal = calibration_windows(a.shared, raw, calib_cases)
        c8 = cal if prec == "fp8" else None
        eng = FusedEngine(
            ws.model_path, precision=prec, batch_size=8, calibration_windows=c8, prologue=a.prologue
        )
        log(f"fused {prec} engine ready in {time.time() - t:.1f} s (calibrated on {len(c8 or [])} windows)")
        if f"{prec}acc" in wanted:
            run(ws, acc.with_(precision=prec), eng, f"fused {prec} AccuracyOnly (phantom model, half width)")
        if a.perf_model == "full" and any(w in wanted for w in (f"{prec}perf", f"{prec}ss")):
            # Performance on the full-width topology (31.2 M parameters, random weights): the figure to
            # compare with NVIDIA's 6.84 samples/s; the phantom model is half width (4x fewer FLOPs).
            eng.close()
            from plugins import reference as ref
            from plugins.unet import FusedUNet3D

            torch.manual_seed(0)
            t = time.time()
            full = FusedUNet3D.from_reference(
                ref.UNet3D(), precision=prec, device="cuda", prologue=a.prologue
            )
            if c8:
                full.calibrate(c8)
            eng = FusedEngine(None, precision=prec, batch_size=8, net=full)
            log(f"full-width fused {prec} engine ready in {time.time() - t:.1f} s")
        if f"{prec}perf" in wanted and time.time() - T0 < a.deadline_s:
            cfg = base.with_(
                precision=prec, min_duration=a.perf_s, offline_expected_qps=a.qps, min_query_count=1
            )
            run(
                ws, cfg, eng, f"fused {prec} Offline PerformanceOnly ({a.perf_s:.0f} s, {a.perf_model} model)"
            )
        if f"{prec}ss" in wanted and time.time() - T0 < a.deadline_s:
            cfg = base.with_(
                scenario="SingleStream", precision=prec, min_duration=a.perf_s / 2, min_query_count=1,
                single_stream_expected_latency_ms=1000.0 / a.qps,
            )  # fmt: skip
            run(
                ws,
                cfg,
                eng,
                f"fused {prec} SingleStream PerformanceOnly ({a.perf_s / 2:.0f} s, {a.perf_model} model)",
            )
        eng.close()
        save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
