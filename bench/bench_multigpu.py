"""Offline samples/s on 1..N GPUs through the harness's N-device path, and the scaling ratio.

Each device gets its own engine (own buffers, patches and CUDA graph) and its own SUT worker thread;
all workers pull whole samples from one shared queue (NVIDIA's one batcher thread per GPU). Every row
is a real LoadGen Offline PerformanceOnly run (``core.harness.runner.run_benchmark`` with a list of
engines); the first row is the plain loop without the harness (``engine.segment`` over the samples one
after another, as bench_offline.py measures), so the 1-device row shows what the harness costs.

GPU mode (default when CUDA is present): the 43 inference shapes (random volumes; speed does not
depend on the values) on a random-weight MLPerf-topology model (or ``--model``), torch backend.
Device counts beyond ``torch.cuda.device_count()`` are listed as not run.

    python bench/bench_multigpu.py --precision fp16 --batch 8 --gpus 1          # one H200: path vs plain
    python bench/bench_multigpu.py --precision fp8 --executor fused --gpus 1    # the fused Triton engine
    python bench/bench_multigpu.py --precision fp16 --batch 8 --gpus 1,2,4,8    # an 8-GPU host
    python bench/bench_multigpu.py --precision fp16 --batch 8 --gpus 1 --per-device 2   # 2 streams, 1 GPU
    python bench/bench_multigpu.py --precision fp8 --gpus 1 --single-stream     # + SingleStream p90
    python bench/bench_multigpu.py --simulate --gpus 1,2,4,8 --sample-ms 20     # CPU: simulated devices

Simulated mode (default without CUDA): N fake devices that each take ``--sample-ms`` per sample
(sleeping, as a host thread waiting on its GPU releases the GIL) over small in-memory volumes: it
measures the harness's queue/worker overhead and scaling, not a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np

from bench.common import print_header, print_table
from core.benchmark import INFERENCE_SHAPES, RunConfig
from core.harness.qsl import InMemoryData
from core.jobs import CancelToken
from core.workspace import Workspace

# --- simulated devices ------------------------------------------------------------------------------


class SimEngine:
    """A VolumeEngine on a simulated device: ``delay`` seconds per sample, all-background labels."""

    name = "sim"
    precision = "fp32"
    batch_size = 1

    def __init__(self, index: int, delay: float) -> None:
        self.device = f"sim:{index}"
        self.delay = delay

    def infer(self, windows: np.ndarray) -> np.ndarray:  # the harness calls segment() on volume engines
        raise TypeError("a simulated device segments whole volumes only")

    def segment(self, volume: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return np.zeros(volume.shape[-3:], np.uint8)

    def close(self) -> None:
        pass


def sim_setup(args: argparse.Namespace) -> tuple[InMemoryData, Callable[[int], Any], int]:
    cases = {f"case_{i:05d}": np.zeros((1, 128, 128, 128), np.float32) for i in range(args.cases or 8)}
    return InMemoryData(cases, {}), lambda i: SimEngine(i, args.sample_ms / 1000.0), 10**6


# --- torch on GPUs ----------------------------------------------------------------------------------


def _random_volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A (1, D, H, W) float32 volume in the preprocessed range (one random block, tiled; as bench_offline)."""
    block = np.random.default_rng(seed).standard_normal(64**3).astype(np.float32).clip(-2.2, 2.64)
    return np.resize(block, (1, *shape))


def gpu_setup(args: argparse.Namespace) -> tuple[InMemoryData, Callable[[int], Any], int]:
    import torch

    from bench.common import parse_widths, synthetic_amax
    from core.backends.torch.engine import make_engine
    from core.backends.torch.quant import QUANT_PRECISIONS
    from core.model import build_random_model

    model: Any = Path(args.model) if args.model else build_random_model(parse_widths(args.widths), seed=0)
    if args.model:
        import onnx

        model = onnx.load(str(model))
    amax = synthetic_amax(model, "cuda:0") if args.precision in QUANT_PRECISIONS else None

    def build(i: int) -> Any:
        dev = torch.device("cuda", i)
        with torch.cuda.device(dev):  # the backend pins its engines to their device too
            return make_engine(
                model,
                precision=args.precision,
                batch_size=args.batch,
                device=dev,
                amax=amax,
                use_plugins={"on": True, "off": False, "auto": None}[args.plugins],
                cuda_graphs=not args.no_graphs,
                **({"executor": args.executor} if args.executor else {}),
            )

    shapes = list(INFERENCE_SHAPES)[: args.cases] if args.cases else list(INFERENCE_SHAPES)
    from core.preprocess import quantize_int8

    int8_input = args.precision in QUANT_PRECISIONS
    cache: dict[tuple[int, int, int], np.ndarray] = {}
    images = {}
    for i, s in enumerate(shapes):  # host copies as the QSL holds them (int8 for int8/fp8), shared
        if s not in cache:
            v = _random_volume(s, i)
            cache[s] = quantize_int8(v) if int8_input else v
        images[f"case_{i:05d}"] = cache[s]
    return InMemoryData(images, {}), build, torch.cuda.device_count()


# --- measurement ------------------------------------------------------------------------------------


def plain_loop(engine: Any, data: InMemoryData, passes: int) -> float:
    """Samples/s of engine.segment over the samples, one after another, without LoadGen."""
    vols = [data.load_image(c) for c in data.cases()]
    engine.segment(vols[0])  # warm-up (patches upload, allocator)
    t0 = time.perf_counter()
    for _ in range(passes):
        for v in vols:
            engine.segment(v)
    return len(vols) * passes / (time.perf_counter() - t0)


def harness_run(
    ws: Workspace, engines: Sequence[Any], data: InMemoryData, expected_qps: float, args: argparse.Namespace
) -> tuple[float, dict[str, int], bool | None]:
    from core.harness.runner import run_benchmark

    n = len(data.cases())
    cfg = RunConfig(
        scenario="Offline",
        test_mode="PerformanceOnly",
        backend="torch" if not args.simulate else "ort",
        precision="fp32" if args.simulate else args.precision,
        gpu_batch_size=1 if args.simulate else args.batch,
        offline_expected_qps=expected_qps,
        min_duration=args.min_duration,
        min_query_count=n * args.passes,
        gpus=len(engines),
    )
    for e in engines:  # the same warm-up the plain loop had
        e.segment(data.load_image(data.cases()[0]))
    result = run_benchmark(ws, cfg, lambda ev: None, CancelToken(), engine=list(engines), data=data)
    return float(result.samples_per_s or 0.0), result.per_device, result.valid


def single_stream_run(
    ws: Workspace, engine: Any, data: InMemoryData, plain: float, args: argparse.Namespace
) -> tuple[dict[str, float], bool | None]:
    """A LoadGen SingleStream PerformanceOnly run on one engine: latency percentiles (ms) and validity."""
    from core.harness.runner import run_benchmark

    cfg = RunConfig(
        scenario="SingleStream",
        test_mode="PerformanceOnly",
        backend="torch",
        precision=args.precision,
        gpu_batch_size=args.batch,
        single_stream_expected_latency_ms=1000.0 / plain,
        min_duration=args.min_duration,
        min_query_count=len(data.cases()),
    )
    result = run_benchmark(ws, cfg, lambda ev: None, CancelToken(), engine=engine, data=data)
    return dict(result.latency_ms or {}), result.valid


def row(
    name: str, k: int, sps: float, plain: float, base: float | None, per_device: dict[str, int], valid: Any
) -> list[object]:
    spread = " ".join(f"{d}={c}" for d, c in per_device.items()) + ("" if valid else " (INVALID)")
    return [name, k, sps, f"{sps / (plain * k):.3f}", f"{sps / base:.2f}" if base else "-", spread]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", default="1", help="comma list of device counts, e.g. 1,2,4,8")
    ap.add_argument("--simulate", action="store_true", help="simulated devices on the CPU")
    ap.add_argument("--sample-ms", type=float, default=20.0, help="simulated: ms per sample and device")
    ap.add_argument("--widths", default="full", help="full | half | tiny | 5 widths (random model)")
    ap.add_argument("--model", help="an ONNX model instead of the random MLPerf-topology one")
    ap.add_argument("--precision", default="fp16", help="fp32 | fp16 | bf16 | int8 | fp8")
    ap.add_argument("--batch", type=int, default=8, help="windows per engine call (gpu_batch_size)")
    ap.add_argument("--plugins", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--no-graphs", action="store_true")
    ap.add_argument("--executor", help="torch backend executor: graph | fused (default: the backend's)")
    ap.add_argument("--cases", type=int, default=0, help="only the first N samples (0 = all 43; sim: 8)")
    ap.add_argument("--passes", type=int, default=1, help="passes over the samples (plain loop; min queries)")
    ap.add_argument(
        "--per-device",
        type=int,
        default=1,
        help="also run K engines (K workers) per device, to see if a second sample stream per GPU helps",
    )
    ap.add_argument("--min-duration", type=float, default=10.0, help="LoadGen min_duration, seconds")
    ap.add_argument("--single-stream", action="store_true", help="also a SingleStream run on one device")
    ap.add_argument("--compare-pageable", action="store_true", help="plain loop also without pinned copies")
    args = ap.parse_args(argv)
    counts = sorted({1} | {int(x) for x in args.gpus.split(",") if x})  # 1 device: the scaling base
    if not args.simulate:
        try:
            import torch

            args.simulate = not torch.cuda.is_available()
        except ImportError:
            args.simulate = True
        if args.simulate:
            print("# no CUDA device: simulated devices (--simulate)")
    if args.simulate:
        args.min_duration = min(args.min_duration, 0.5)
    data, build, available = sim_setup(args) if args.simulate else gpu_setup(args)
    n = len(data.cases())
    what = (
        f"simulated devices, {args.sample_ms:g} ms/sample"
        if args.simulate
        else f"torch {args.precision} ({args.executor or 'default executor'}), batch {args.batch}, "
        f"widths {args.model or args.widths}"
    )
    title = f"bench_multigpu: {what}, {n} samples, Offline, device counts {counts}"
    print_header(title, "cpu" if args.simulate else "cuda:0")

    engines: list[Any] = []
    rows: list[list[object]] = []

    def add(r: list[object]) -> None:  # each row also as it completes: a run cut short keeps its figures
        rows.append(r)
        print("# done: " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r), flush=True)

    ss_line = ""
    base: float | None = None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        ws = Workspace.resolve(Path(tmp), env={})
        engines.append(build(0))
        stack.callback(lambda: [e.close() for e in engines])
        plain = plain_loop(engines[0], data, args.passes)
        add(["plain loop (no LoadGen)", 1, plain, "1.000", "-", "-"])
        if getattr(engines[0], "pinned", False) and args.compare_pageable:
            engines[0].pinned = False  # the host copies through pageable memory, for comparison
            pageable = plain_loop(engines[0], data, args.passes)
            engines[0].pinned = True
            add(["plain loop, pageable copies", 1, pageable, f"{pageable / plain:.3f}", "-", "-"])
        for k in counts:
            if k > available:
                add([f"harness, {k} device(s)", k, "not run", "-", "-", f"only {available} device(s) here"])
                continue
            while len(engines) < k:
                engines.append(build(len(engines)))
            sps, per_device, valid = harness_run(ws, engines[:k], data, plain * k, args)
            base = sps if k == 1 else base
            add(row(f"harness, {k} device(s)", k, sps, plain, base, per_device, valid))
        if args.per_device > 1:
            k = min(max(counts), available)
            extra = [build(i) for i in range(k) for _ in range(args.per_device - 1)]
            engines.extend(extra)
            many = engines[:k] + extra
            sps, per_device, valid = harness_run(ws, many, data, plain * k * args.per_device, args)
            name = f"harness, {k} device(s) x {args.per_device} engines"
            add(row(name, k, sps, plain, base, per_device, valid))
        if args.single_stream and not args.simulate:
            lat, valid = single_stream_run(ws, engines[0], data, plain, args)
            ss = ", ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p99", "mean") if k in lat)
            verdict = "VALID" if valid else "INVALID"
            ss_line = f"# SingleStream (LoadGen, 1 device): latency ms {ss}; {verdict}"
            print(ss_line, flush=True)
    print_table(["path", "devices", "samples/s", "vs plain x N", "scaling vs 1", "samples per device"], rows)
    if ss_line:
        print(ss_line, flush=True)
    print(
        "# vs plain x N: samples/s / (N x the plain loop's samples/s on one device); 1.000 = linear, no loss"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
