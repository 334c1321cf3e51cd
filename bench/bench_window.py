"""Per-window speed of the torch backend: ms per 128^3 window, windows/s and TFLOP/s for each
precision x batch size, on a random-weight model with the MLPerf topology (speed does not depend on
the weights). The FLOP count is the model's own (954.6 GFLOP per window at full width).

    python bench/bench_window.py                                   # full width, fp16/bf16, batch 1,4,8
    python bench/bench_window.py --precisions fp16,fp8 --batches 8 --plugins both
    python bench/bench_window.py --widths tiny --device cpu --batches 1 --iters 2   # CPU smoke check

int8/fp8 get their activation ranges from a synthetic calibration (the fp32 model on random windows),
which is right for speed and says nothing about accuracy (bench_offline.py --workspace does that).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch

from bench.common import (
    parse_widths,
    print_header,
    print_table,
    synthetic_amax,
)
from core.backends.torch import BACKEND
from core.backends.torch.engine import TorchEngine, make_engine
from core.backends.torch.quant import QUANT_PRECISIONS
from core.model import build_random_model, window_gflop


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(eng: TorchEngine, iters: int, warmup: int) -> float:
    """Seconds per call of a full batch (device-resident input, outputs left on the device)."""
    x = torch.randn((eng.batch_size, 1, 128, 128, 128), device=eng.device).clamp_(-2.2, 2.64)
    x = eng.quantize_input(x) if eng.in_dtype == torch.int8 else x.to(eng.dtype)
    for _ in range(warmup):
        eng.run(x)
    _sync(eng.device)
    if eng.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            eng.run(x)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        eng.run(x)
    return (time.perf_counter() - t0) / iters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="full", help="full | half | tiny | 5 comma-separated widths")
    ap.add_argument("--precisions", default="fp16,bf16", help="comma list of fp32,fp16,bf16,fp8,int8")
    ap.add_argument("--batches", default="1,4,8", help="comma list of batch sizes")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--plugins", choices=("on", "off", "both"), default="both" if torch.cuda.is_available() else "off"
    )
    ap.add_argument("--no-graphs", action="store_true", help="no CUDA graph (eager launches)")
    ap.add_argument("--executors", default="graph", help="comma list of graph,fused (fused: whole network)")
    ap.add_argument("--compile", default=None, metavar="MODE", help="torch.compile mode, e.g. max-autotune")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    widths = parse_widths(args.widths)
    device = torch.device(args.device)
    gflop = window_gflop(widths)
    print_header(f"bench_window: torch backend, widths {widths}, {gflop:.1f} GFLOP/window", args.device)
    print(f"# kernels: {BACKEND.details().get('plugins')}")
    model = build_random_model(widths, seed=args.seed)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    amax = synthetic_amax(model, device) if any(p in QUANT_PRECISIONS for p in precisions) else None
    plugin_modes = {"on": [True], "off": [False], "both": [False, True]}[args.plugins]
    rows: list[list[object]] = []
    combos = [
        (precision, executor, plugins)
        for precision in precisions
        for executor in args.executors.split(",")
        for plugins in (plugin_modes if executor == "graph" else [True])
    ]
    for precision, executor, plugins in combos:
        for bs in (int(b) for b in args.batches.split(",")):
            try:
                eng = make_engine(
                    model,
                    precision=precision,
                    batch_size=bs,
                    device=device,
                    amax=amax if precision in QUANT_PRECISIONS else None,
                    use_plugins=plugins,
                    cuda_graphs=not args.no_graphs,
                    compile_mode=args.compile,
                    executor=executor,
                )
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sec = time_engine(eng, args.iters, args.warmup)
            except Exception as exc:  # one failing configuration must not hide the others
                err = f"{type(exc).__name__}: {exc}"[:60]
                rows.append([precision, executor, bs, plugins, "-", "-", "-", "-", err])
                continue
            ms = sec * 1000 / bs
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            note = ("sim " if eng.simulated else "") + ("graph" if eng.uses_cuda_graph else "eager")
            rows.append([precision, executor, bs, plugins, ms, 1000 / ms, gflop / ms, peak, note])
            eng.close()
            del eng
    print_table(
        [
            "precision",
            "executor",
            "batch",
            "plugins",
            "ms/window",
            "windows/s",
            "TFLOP/s",
            "peak GiB",
            "notes",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
