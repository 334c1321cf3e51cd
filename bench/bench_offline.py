"""Whole-sample speed and accuracy of the torch backend's device sliding window.

Speed (default): the 43-case inference workload with the real preprocessed shapes (spec section 3.1;
random volumes of those shapes, since speed does not depend on the values) on a random-weight model
with the MLPerf topology. One sample at a time, as NVIDIA's harness runs each GPU: host volume ->
device (int8 linear for int8/fp8, else fp16/fp32), windows, weight-and-accumulate, argmax, uint8
labels back to the host. Prints Offline samples/s (samples / total time) and SingleStream latency
percentiles (p50 / p90, the SingleStream metric) per precision.

Accuracy (``--workspace``): segment the preprocessed inference cases of a workspace (e.g. the phantom
set) with a real model (``--model``, e.g. the shared phantom model) at each precision, and print mean
DICE, kidney, tumor and the ratio to FP32 (the benchmark's targets are 0.99 / 0.999 of FP32).

    python bench/bench_offline.py --precisions fp16,bf16 --batch 8
    python bench/bench_offline.py --workspace WS --model phantom.onnx --precisions fp32,fp16,bf16,fp8,int8
    python bench/bench_offline.py --widths tiny --device cpu --cases 1 --order smallest   # CPU smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np
import torch

from bench.common import (
    parse_widths,
    print_header,
    print_table,
    synthetic_amax,
)
from core.backends.torch.engine import TorchEngine, make_engine
from core.backends.torch.quant import QUANT_PRECISIONS
from core.benchmark import INFERENCE_SHAPES
from core.model import build_random_model, window_gflop
from core.sliding_window import window_count


def _random_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A (1, D, H, W) float32 volume in the preprocessed range, cheaply (one random block, tiled)."""
    block = np.random.default_rng(seed).standard_normal(64**3).astype(np.float32).clip(-2.2, 2.64)
    return np.resize(block, (1, *shape))


def _engine(model, precision: str, args: argparse.Namespace, amax: dict | None) -> TorchEngine:
    return make_engine(
        model,
        precision=precision,
        batch_size=args.batch,
        device=torch.device(args.device),
        amax=amax if precision in QUANT_PRECISIONS else None,
        use_plugins={"on": True, "off": False, "auto": None}[args.plugins],
        cuda_graphs=not args.no_graphs,
        compile_mode=args.compile,
        executor=args.executor,
    )


def speed(args: argparse.Namespace) -> int:
    widths = parse_widths(args.widths)
    gflop = window_gflop(widths)
    shapes = list(INFERENCE_SHAPES)
    if args.order == "smallest":
        shapes.sort(key=lambda s: s[0] * s[1] * s[2])
    shapes = shapes[: args.cases] if args.cases else shapes
    windows = sum(window_count(s) for s in shapes)
    print_header(
        f"bench_offline speed: widths {widths}, {len(shapes)} samples, {windows} windows, batch {args.batch}",
        args.device,
    )
    model = build_random_model(widths, seed=args.seed)
    precisions = [p for p in args.precisions.split(",") if p]
    amax = synthetic_amax(model, args.device) if any(p in QUANT_PRECISIONS for p in precisions) else None
    rows = []
    for precision in precisions:
        eng = _engine(model, precision, args, amax)
        cache: dict[tuple[int, int, int], np.ndarray] = {}
        host = []
        for i, s in enumerate(shapes):  # host copies as the QSL holds them: int8 for int8/fp8
            if s not in cache:
                v = _random_volume(s, i)
                cache[s] = (
                    eng.quantize_input(torch.from_numpy(v)).numpy() if eng.in_dtype == torch.int8 else v
                )
            host.append(cache[s])
        eng.segment(host[0])  # warm-up (patches upload, allocator)
        lat = []
        t_all = time.perf_counter()
        for _ in range(args.passes):
            for v in host:
                t0 = time.perf_counter()
                eng.segment(v)  # returns host labels: the device work is finished
                lat.append(time.perf_counter() - t0)
        total = time.perf_counter() - t_all
        n = len(host) * args.passes
        note = ("sim " if eng.simulated else "") + ("graph" if eng.uses_cuda_graph else "eager")
        rows.append(
            [
                precision,
                n / total,
                1000 * np.percentile(lat, 50),
                1000 * np.percentile(lat, 90),
                windows * args.passes / total,
                gflop * windows * args.passes / total / 1000,
                note,
            ]
        )
        eng.close()
    print_table(
        ["precision", "Offline samples/s", "p50 ms", "SingleStream p90 ms", "windows/s", "TFLOP/s", "notes"],
        rows,
    )
    return 0


def accuracy(args: argparse.Namespace) -> int:
    from core import calibration_cache as cc
    from core.accuracy import dice
    from core.cases import case_lists
    from core.preprocess import load_image, load_index, load_label
    from core.workspace import Workspace

    ws = Workspace.resolve(args.workspace, preprocessed_dir=args.preprocessed)
    done = set(load_index(ws, "inference")["file_list"])
    cases = [c for c in case_lists(ws).inference if c in done]  # the preprocessed ones, in list order
    if args.order == "smallest":
        shapes = load_index(ws, "inference").get("image_shape", {})
        cases.sort(key=lambda c: int(np.prod(shapes.get(c, [0]))))
    cases = cases[: args.cases] if args.cases else cases
    model = Path(args.model) if args.model else ws.model_path
    print_header(
        f"bench_offline accuracy: {model.name}, {len(cases)} cases of {ws.preprocessed_dir}", args.device
    )
    precisions = [p for p in args.precisions.split(",") if p]
    if "fp32" not in precisions:
        precisions.insert(0, "fp32")
    # runs: (label, precision, amax); int8/fp8 once per calibration cache given
    caches: list[tuple[str, dict[str, float]]] = []
    if any(p in QUANT_PRECISIONS for p in precisions):
        paths = (
            [Path(c) for c in args.calibration.split(",")]
            if args.calibration
            else [ws.calibration_cache_path]
        )
        for cpath in paths:
            cache = cc.load(cpath)
            caches.append((f"{cache.method}:{cpath.name}", dict(cache.amax)))
            print(f"# calibration: {cpath} ({cache.method}, {cache.meta.get('windows', '?')} windows)")
    runs: list[tuple[str, str, dict[str, float] | None]] = []
    for p in precisions:
        if p in QUANT_PRECISIONS:
            runs += [(f"{p} ({label})" if len(caches) > 1 else p, p, amax) for label, amax in caches]
        else:
            runs.append((p, p, None))
    results: dict[str, tuple[float, float, float, float]] = {}
    for label, precision, amax in runs:
        if precision == "fp32":  # the reference: the converted graph in plain torch, no TF32
            eng = make_engine(
                model, precision="fp32", batch_size=args.batch, device=args.device, use_plugins=False
            )
        else:
            eng = _engine(model, precision, args, amax)
        ks, ts, t_total = [], [], 0.0
        for case in cases:
            vol = load_image(ws, "inference", case)
            t0 = time.perf_counter()
            pred = eng.segment(vol)
            t_total += time.perf_counter() - t0
            k, t = dice(pred, load_label(ws, "inference", case)[0])
            ks.append(k)
            ts.append(t)
        eng.close()
        kidney, tumor = float(np.mean(ks)), float(np.mean(ts))
        results[label] = ((kidney + tumor) / 2, kidney, tumor, len(cases) / t_total)
        print(f"# {label}: mean DICE {results[label][0]:.5f}", file=sys.stderr, flush=True)
    ref = results["fp32"][0]
    rows = [[p, m, k, t, m / ref, sps] for p, (m, k, t, sps) in results.items()]
    print_table(["precision", "mean DICE", "kidney", "tumor", "ratio vs fp32", "samples/s"], rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="full", help="full | half | tiny | 5 widths (speed mode)")
    ap.add_argument("--precisions", default="fp16", help="comma list of fp32,fp16,bf16,fp8,int8")
    ap.add_argument("--batch", type=int, default=8, help="windows per engine call (gpu_batch_size)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--plugins", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--executor", choices=("graph", "fused"), default=None, help="fused: whole network")
    ap.add_argument("--compile", default=None, metavar="MODE", help="e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--cases", type=int, default=0, help="only the first N cases (0 = all)")
    ap.add_argument("--order", choices=("listed", "smallest"), default="listed")
    ap.add_argument("--passes", type=int, default=1, help="passes over the samples (speed mode)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", help="accuracy mode: a workspace with preprocessed inference cases")
    ap.add_argument("--preprocessed", help="accuracy mode: preprocessed folder (default: the workspace's)")
    ap.add_argument("--model", help="accuracy mode: the ONNX model (default: the workspace's)")
    ap.add_argument("--calibration", help="accuracy mode: calibration cache(s) for int8/fp8 (comma list)")
    args = ap.parse_args(argv)
    return accuracy(args) if args.workspace else speed(args)


if __name__ == "__main__":
    sys.exit(main())
