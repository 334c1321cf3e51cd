# ruff: noqa: E501, N806
"""Kernel benchmarks on CUDA: per-layer Triton (fp16 / fp8) vs cuDNN for the full-width model's layer
shapes (widths 32..320, 128^3 .. 4^3, batch 8), the norm / shuffle / first / last / accumulate /
argmax kernels vs their torch equivalents, and the whole fused network per window (CUDA graph) with a
per-kernel time breakdown. Prints tables; ``--out DIR`` also writes results.json and the tuned tiles
(tuned_configs.json, for plugins/tuned_configs.json).

    python bench/bench_kernels.py --out /tmp/bench [--tune] [--budget-s 400] [--sections net,layers,misc]
    python bench/bench_kernels.py --out /tmp/bench --sections net,tune,net2 --precisions fp8 --net-modes apply

Network figures (net, net2, window) come from the product's path: the torch backend's TorchEngine around
the fused executor (``make_engine(executor="fused")``), timed as ``engine.run`` (its CUDA graph replay);
each line names the path. Precisions fp16, bf16, fp8, int8 (int8: TorchEngine built the same way while
the backend's fused branch refuses it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as tnf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins import ops
from plugins import reference as ref

WIDTHS = (32, 64, 128, 256, 320)
MAX_CANDS = 14
RESULTS: dict[str, Any] = {}
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def bench(fn: Any, rep: int = 60, warmup: int = 10) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def layer_table(f: tuple[int, ...] = WIDTHS, r: int = 128) -> list[dict[str, Any]]:
    """GEMM layers of the fused network after the first conv: name, kernel, input edge, Cin, Cout, stride,
    prologue (norm fused on load)."""
    out = [dict(name="in.conv2", ks=3, s=r, cin=f[0], cout=f[0], stride=1, pro=True)]
    s = r
    for i in range(1, 5):
        out.append(dict(name=f"down{i}.conv1", ks=3, s=s, cin=f[i - 1], cout=f[i], stride=2, pro=True))
        s //= 2
        out.append(dict(name=f"down{i}.conv2", ks=3, s=s, cin=f[i], cout=f[i], stride=1, pro=True))
    out.append(dict(name="bott.conv1", ks=3, s=s, cin=f[4], cout=f[4], stride=2, pro=True))
    s //= 2
    out.append(dict(name="bott.conv2", ks=3, s=s, cin=f[4], cout=f[4], stride=1, pro=True))
    ups = [(f[4], f[4]), (f[4], f[3]), (f[3], f[2]), (f[2], f[1]), (f[1], f[0])]
    for i, (cin, k) in enumerate(ups):
        out.append(dict(name=f"up{i}.deconv", ks=1, s=s, cin=cin, cout=8 * k, stride=1, pro=True))
        s *= 2
        out.append(dict(name=f"up{i}.conv1", ks=3, s=s, cin=2 * k, cout=k, stride=1, pro=False))
        out.append(dict(name=f"up{i}.conv2", ks=3, s=s, cin=k, cout=k, stride=1, pro=True))
    return out


def flops(layer: dict[str, Any], n: int) -> float:
    so = layer["s"] // layer["stride"]
    return 2.0 * n * so**3 * layer["cout"] * layer["cin"] * layer["ks"] ** 3


def section_layers(
    n: int,
    tune: bool,
    budget_s: float,
    names: set[str] | None = None,
    precs: tuple[str, ...] = ("fp16", "fp8"),
    mode: str = "fused",
) -> None:
    """``mode`` "fused": the norm applied in the conv's prologue (pre-norm fp16 input); "apply": the input
    is already normalized (fp8 / fp16), as the fused executor's apply mode feeds it."""
    log(f"== per-layer GEMMs, batch {n}: cuDNN fp16 vs Triton {precs} ({mode} prologue, stats epilogue)")
    torch.backends.cudnn.benchmark = True
    rows = []
    tuned: dict[str, list[int]] = {}
    table = layer_table()
    if names:  # in the order given (most important first, in case the budget runs out)
        table = [next(t for t in table if t["name"] == nm) for nm in names]
    for L in table:
        if mode == "apply":
            L = {**L, "pro": False}
        if time.time() - T0 > budget_s:
            log("budget reached, stopping the layer section")
            break
        s, cin, cout, st = L["s"], L["cin"], L["cout"], L["stride"]
        so = s // st
        x16 = torch.randn(n, s, s, s, cin, device="cuda", dtype=torch.float16)
        a = torch.rand(n, cin, device="cuda") + 0.5
        b = torch.randn(n, cin, device="cuda") * 0.1
        row: dict[str, Any] = dict(L)
        fl = flops(L, n)
        # cuDNN fp16 equivalent (channels-last), the conv alone (no norm)
        xc = ops.from_cl(x16)
        if L["ks"] == 3:
            w = torch.randn(cout, cin, 3, 3, 3, device="cuda") / (27 * cin) ** 0.5
            wc = w.half().contiguous(memory_format=torch.channels_last_3d)
            row["cudnn_ms"] = bench(lambda xc=xc, wc=wc, st=st: tnf.conv3d(xc, wc, None, st, 1))
        else:
            k = cout // 8
            wt = torch.randn(cin, k, 2, 2, 2, device="cuda") / cin**0.5
            bt = torch.randn(k, device="cuda")
            row["cudnn_ms"] = bench(
                lambda xc=xc, wt=wt, bt=bt: tnf.conv_transpose3d(xc, wt.half(), bt.half(), 2)
            )
            w2, b2 = ref.deconv_to_conv1x1(wt, bt)
        for prec in precs:
            dt = ops.PRECISIONS[prec]
            p = ops.pack_conv3(w, dt, 0.05) if L["ks"] == 3 else ops.pack_conv1(w2, b2, dt, 0.05)
            xin = x16 if L["pro"] else (x16.to(ops.FP8) if prec == "fp8" else x16)
            if prec == "int8" and not L["pro"]:
                xin = ref.quantize_int8(x16, 0.05)
            pro = (a, b) if L["pro"] else None
            if L["ks"] == 3:

                def run(cfg: Any, p: Any = p, xin: Any = xin, pro: Any = pro, st: int = st) -> Any:
                    return ops.conv3d_cl(xin, p, st, pro=pro, stats=True, cfg=cfg)
            else:
                buf = torch.empty(n, 2 * s, 2 * s, 2 * s, 2 * (cout // 8), device="cuda", dtype=dt)

                def run(cfg: Any, p: Any = p, xin: Any = xin, pro: Any = pro, buf: Any = buf) -> Any:
                    return ops.conv3d_cl(
                        xin, p, 1, pro=pro, out=buf, pixel_shuffle=True, cfg=cfg, tmajor=True
                    )

            key = ops.conv_key(n * so**3, so**3, p, st, pro is not None, 2 if L["ks"] == 1 else 0)
            best = (float("inf"), ops.conv_default_cfg(so**3, p))
            cands = [best[1]]
            if tune:
                cands += [
                    c
                    for c in ops.conv_candidates(so**3, p)
                    if c != best[1] and (L["ks"] == 3 or c[1] % 8 == 0)
                ]
            for cfg in cands:
                try:
                    run(cfg)
                    torch.cuda.synchronize()
                    ms = bench(lambda cfg=cfg: run(cfg), rep=30, warmup=3)
                except Exception as exc:  # a tile that does not compile (shared memory) is skipped
                    log(f"  {L['name']} {prec} {cfg}: {type(exc).__name__}: {str(exc)[:100]}")
                    continue
                if ms < best[0]:
                    best = (ms, cfg)
            row[f"{prec}_ms"] = best[0]
            row[f"{prec}_cfg"] = best[1]
            tuned[key] = best[1]
        row["tflops_cudnn"] = fl / row["cudnn_ms"] / 1e9
        for prec in precs:
            row[f"tflops_{prec}"] = fl / row[f"{prec}_ms"] / 1e9
        rows.append(row)
        log(
            f"{L['name']:14s} {s:3d}^3 {cin:3d}->{cout:4d} s{st} | cuDNN {row['cudnn_ms']:7.3f} ms "
            f"{row['tflops_cudnn']:5.0f} TF | "
            + " | ".join(
                f"{p} {row[p + '_ms']:7.3f} ms {row['tflops_' + p]:5.0f} TF {row[p + '_cfg']}" for p in precs
            )
        )
        del x16
    RESULTS.setdefault("layers", []).extend(rows)
    RESULTS.setdefault("tuned", {}).update(tuned)
    tot = {k: sum(r[k] for r in rows) for k in ("cudnn_ms", *(p + "_ms" for p in precs))}
    log(
        f"sum over layers (batch {n}): "
        + ", ".join(f"{k} {v:.2f} ({v / n:.3f}/window)" for k, v in tot.items())
    )
    ops.TUNED.update(tuned)


def _apply_case(lay: dict[str, Any], n: int, prec: str) -> tuple[Any, str]:
    """One GEMM layer as the fused executor's apply mode runs it (input already normalized, in the GEMM
    dtype; stats epilogue; ConvTranspose with t-major pixel-shuffle stores): (run(cfg), tuned key)."""
    s, cin, cout, st = lay["s"], lay["cin"], lay["cout"], lay["stride"]
    so = (s // st) ** 3
    dt = ops.PRECISIONS[prec]
    x = torch.randn(n, s, s, s, cin, device="cuda", dtype=torch.float16)
    x = ref.quantize_int8(x, 0.05) if dt == ops.INT8 else x.to(dt)
    if lay["ks"] == 3:
        w = torch.randn(cout, cin, 3, 3, 3, device="cuda") / (27 * cin) ** 0.5
        p = ops.pack_conv3(w, dt, 0.05)

        def run(cfg: Any) -> Any:
            return ops.conv3d_cl(x, p, st, stats=True, cfg=cfg)

        return run, ops.conv_key(n * so, so, p, st, False, 0)
    k = cout // 8
    w2, b2 = ref.deconv_to_conv1x1(
        torch.randn(cin, k, 2, 2, 2, device="cuda") / cin**0.5, torch.randn(k, device="cuda")
    )
    w2, b2 = ops.tmajor_rows(w2, b2)
    p = ops.pack_conv1(w2, b2, dt, 0.05)
    buf = torch.empty(n, 2 * s, 2 * s, 2 * s, 2 * k, device="cuda", dtype=dt)

    def run1(cfg: Any) -> Any:
        return ops.conv3d_cl(x, p, 1, out=buf, pixel_shuffle=True, cfg=cfg, tmajor=True)

    return run1, ops.conv_key(n * so, so, p, 1, False, 2)


def _compile_job(job: tuple[dict[str, Any], str, list[list[int]]]) -> list[str]:
    """Worker process: compile (run once, batch 1) each tile of one layer into Triton's disk cache, so
    the timing process only loads kernels. Kernel specialization does not depend on the batch."""
    lay, prec, cfgs = job
    run, _ = _apply_case(lay, 1, prec)
    errors = []
    for cfg in cfgs:
        try:
            run(cfg)
        except Exception as exc:  # e.g. out of shared memory: the timing pass skips it too
            errors.append(f"{lay['name']} {cfg}: {type(exc).__name__}: {str(exc)[:80]}")
    torch.cuda.synchronize()
    return errors


def _precompile(jobs: list[tuple[dict[str, Any], str, list[int]]], workers: int) -> None:
    import concurrent.futures as cf
    import multiprocessing as mp

    t = time.time()
    chunks: list[tuple[dict[str, Any], str, list[list[int]]]] = []
    by_layer: dict[str, list[tuple[dict[str, Any], str, list[int]]]] = defaultdict(list)
    for j in jobs:
        by_layer[j[0]["name"] + j[1]].append(j)
    for js in by_layer.values():
        for i in range(0, len(js), 4):
            chunks.append((js[i][0], js[i][1], [c for _, _, c in js[i : i + 4]]))
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        errs = [e for r in ex.map(_compile_job, chunks) for e in r]
    log(
        f"  precompiled {len(jobs)} kernels in {time.time() - t:.0f} s on {workers} processes ({len(errs)} failed)"
    )


def section_tune(n: int, prec: str, budget_s: float, workers: int, min_gflop: float = 20.0) -> None:
    """Tune every GEMM layer of the fused network in apply mode: stage A times every (BM, BN, BK) tile
    with each L1 flag set (activations, weights: ca bits 0, 1; 4 or 8 warps by tile size, 3 stages); stage B times the
    best three with 4/8 warps and 3/4 stages. Kernels are compiled in parallel first. Layers under
    ``min_gflop`` per batch (< 1 % of the network together) keep the heuristic tile."""
    log(f"== tuning all GEMM layers, {prec}, apply mode, batch {n}")
    table = sorted(layer_table(), key=lambda lay: -flops(lay, n))
    table = [{**lay, "pro": False} for lay in table if flops(lay, n) / 1e9 >= min_gflop]
    meta = {}
    for lay in table:
        so = (lay["s"] // lay["stride"]) ** 3
        pk = ops.PackedConv(None, None, None, lay["ks"], lay["cin"], lay["cout"], 1.0, ops.PRECISIONS[prec])  # type: ignore[arg-type]
        tiles = sorted({tuple(c[:3]) for c in ops.conv_candidates(so, pk)})
        meta[lay["name"]] = [
            [*t, 8 if t[0] * t[1] >= 128 * 128 else 4, 3, ca] for t in tiles for ca in (0, 1, 2, 3)
        ]
        if lay["ks"] == 3 and lay["stride"] == 1:  # W-packed rows: P outputs along W per GEMM row
            so_dims = (lay["s"],) * 3
            for p_ in (2, 4):
                bn = p_ * lay["cout"]
                for bm in (64, 128, 256):
                    for bk in (32, 64, 128):
                        t = [bm, bn, bk, 8 if bm * bn >= 128 * 128 else 4, 3]
                        if bm * bn <= 256 * 128 and ops.wpack_fits(so_dims, pk, [*t, 0, p_]):
                            meta[lay["name"]] += [[*t, ca, p_] for ca in (0, 1, 2, 3)]
    _precompile([(lay, prec, c) for lay in table for c in meta[lay["name"]]], workers)
    rows, tuned = [], {}

    def time_all(lay: dict[str, Any], cands: list[list[int]]) -> list[tuple[float, list[int]]]:
        run, _ = _apply_case(lay, n, prec)
        out = []
        for cfg in cands:
            try:
                run(cfg)
                torch.cuda.synchronize()
                out.append((bench(lambda cfg=cfg: run(cfg), rep=25, warmup=3), cfg))
            except Exception:
                continue
        return sorted(out)

    stage_a: dict[str, list[tuple[float, list[int]]]] = {}
    for lay in table:
        if time.time() - T0 > budget_s:
            log("budget reached in stage A")
            break
        stage_a[lay["name"]] = time_all(lay, meta[lay["name"]])
    stage_b: dict[str, list[list[int]]] = {}
    for lay in table:
        res = stage_a.get(lay["name"]) or []
        cands = []
        for _, c in res[:3]:
            for warps in (4, 8):
                for stages in (3, 4):
                    v = [*c[:3], warps, stages, *c[5:]]
                    if v != c and not (warps == 8 and c[0] * c[1] < 128 * 64) and v not in cands:
                        cands.append(v)
        stage_b[lay["name"]] = cands
    _precompile([(lay, prec, c) for lay in table for c in stage_b[lay["name"]]], workers)
    for lay in table:
        res = stage_a.get(lay["name"])
        if not res:
            continue
        if time.time() - T0 < budget_s:
            res = sorted(res + time_all(lay, stage_b[lay["name"]]))
        run, key = _apply_case(lay, n, prec)
        default = ops.conv_default_cfg(
            (lay["s"] // lay["stride"]) ** 3,
            ops.PackedConv(None, None, None, lay["ks"], lay["cin"], lay["cout"], 1.0, ops.PRECISIONS[prec]),
        )  # type: ignore[arg-type]
        old = ops.TUNED.get(key) or default
        t_old = bench(lambda run=run, old=old: run(old), rep=25, warmup=3)
        best_ms, best = res[0]
        no_ca = next((ms for ms, c in res if not c[5]), float("inf"))
        plain = next((ms for ms, c in res if len(c) < 7), float("inf"))
        fl = flops(lay, n)
        tuned[key] = best
        rows.append(dict(name=lay["name"], key=key, gflop=fl / 1e9, ms=best_ms, tflops=fl / best_ms / 1e9, cfg=best,
                         before_ms=t_old, before_cfg=old, best_without_l1_ms=no_ca, best_unpacked_ms=plain))  # fmt: skip
        log(f"{lay['name']:14s} {lay['s']:3d}^3 {lay['cin']:3d}->{lay['cout']:4d} s{lay['stride']} | before {t_old:7.3f} ms {old} | "
            f"tuned {best_ms:7.3f} ms {fl / best_ms / 1e9:5.0f} TF {best} | best without L1 gather {no_ca:7.3f} ms, unpacked {plain:7.3f} ms")  # fmt: skip
    RESULTS.setdefault("tune", []).extend(rows)
    RESULTS.setdefault("tuned", {}).update(tuned)
    ops.TUNED.update(tuned)
    log(f"sum over tuned layers (batch {n}): before {sum(r['before_ms'] for r in rows):.2f} ms, "
        f"after {sum(r['ms'] for r in rows):.2f} ms")  # fmt: skip


def section_tune_apply(n: int) -> None:
    """Tune the InstanceNorm apply pass (fp16 pre-norm -> normalized, ReLU, fp8) of the three largest
    activation shapes: voxels per program (BV) and warps."""
    log(f"== tuning the apply pass (fp16 -> fp8), batch {n}")
    rows, tuned = [], {}
    for c, r in ((32, 128), (64, 64), (128, 32)):
        x = torch.randn(n, r, r, r, c, device="cuda", dtype=torch.float16)
        a, b = torch.rand(n, c, device="cuda") + 0.5, torch.randn(n, c, device="cuda")
        out = torch.empty(x.shape, device="cuda", dtype=ops.FP8)
        key = ops.apply_key(r**3, c, x.dtype, ops.FP8)
        ops.TUNED.pop(key, None)
        t_default = bench(lambda x=x, a=a, b=b, out=out: ops.in_apply(x, a, b, out=out))
        best = (t_default, None)
        for bv in (32, 64, 128, 256, 512):
            for warps in (4, 8):
                ops.TUNED[key] = [bv, warps]
                try:
                    t = bench(lambda x=x, a=a, b=b, out=out: ops.in_apply(x, a, b, out=out))
                except Exception:
                    continue
                if t < best[0]:
                    best = (t, [bv, warps])
        ops.TUNED.pop(key, None)
        if best[1] is not None:
            tuned[key] = best[1]
            ops.TUNED[key] = best[1]
        gbs = x.numel() * 3 / best[0] / 1e6
        rows.append(dict(key=key, default_ms=t_default, ms=best[0], cfg=best[1], gb_s=gbs))
        log(f"apply {c}ch {r}^3: default {t_default:.3f} ms -> {best[0]:.3f} ms {best[1]} ({gbs:.0f} GB/s)")
    RESULTS.setdefault("tune_apply", []).extend(rows)
    RESULTS.setdefault("tuned", {}).update(tuned)


def section_misc(n: int) -> None:
    log(f"== memory-bound kernels, batch {n}")
    res = {}
    for c, s in ((32, 128), (64, 64), (128, 32)):
        x = torch.randn(n, c, s, s, s, device="cuda").half().contiguous(memory_format=torch.channels_last_3d)
        g, b = torch.rand(c, device="cuda"), torch.randn(c, device="cuda")
        nbytes = x.numel() * 2 * 3  # read twice (stats, apply), write once
        t_ours = bench(lambda x=x, g=g, b=b: ops.instance_norm_relu(x, g, b))
        t_torch = bench(
            lambda x=x, g=g, b=b: torch.relu(tnf.instance_norm(x, weight=g.half(), bias=b.half()))
        )
        res[f"in_relu_{c}x{s}"] = (t_ours, t_torch)
        log(
            f"IN+ReLU {c}ch {s}^3: ours {t_ours:.3f} ms ({nbytes / t_ours / 1e6:.0f} GB/s) | torch {t_torch:.3f} ms"
        )
    x8k = (
        torch.randn(n, 8 * 32, 64, 64, 64, device="cuda")
        .half()
        .contiguous(memory_format=torch.channels_last_3d)
    )
    skip = (
        torch.randn(n, 32, 128, 128, 128, device="cuda")
        .half()
        .contiguous(memory_format=torch.channels_last_3d)
    )
    t_ours = bench(lambda: ops.pixel_shuffle3d_concat(x8k, skip))
    t_torch = bench(
        lambda: ref.pixel_shuffle3d_concat(x8k, skip).contiguous(memory_format=torch.channels_last_3d)
    )
    nbytes = (x8k.numel() + skip.numel()) * 2 * 2
    res["pixel_shuffle_concat_32"] = (t_ours, t_torch)
    log(
        f"pixel shuffle+concat 32+32 @128^3: ours {t_ours:.3f} ms ({nbytes / t_ours / 1e6:.0f} GB/s) | torch {t_torch:.3f}"
    )
    xi = torch.randint(-127, 128, (n, 1, 128, 128, 128), dtype=torch.int8, device="cuda")
    w = torch.randn(32, 1, 3, 3, 3, device="cuda")
    t_ours = bench(lambda: ops.conv3x3x3_c1(xi, w, 0.02))
    xh = xi.half()
    t_torch = bench(lambda: tnf.conv3d(xh, w.half(), padding=1))
    res["c1"] = (t_ours, t_torch)
    log(f"first conv int8 1->32 @128^3: ours {t_ours:.3f} ms | cuDNN fp16 (NCDHW) {t_torch:.3f} ms")
    y = (
        torch.randn(n, 32, 128, 128, 128, device="cuda")
        .half()
        .contiguous(memory_format=torch.channels_last_3d)
    )
    wo, bo = torch.randn(3, 32, device="cuda"), torch.randn(3, device="cuda")
    t_ours = bench(lambda: ops.conv1x1x1_bias(y, wo, bo))
    t_torch = bench(lambda: tnf.conv3d(y, wo.half().reshape(3, 32, 1, 1, 1), bo.half()))
    res["c1x1"] = (t_ours, t_torch)
    log(f"output conv 32->3 @128^3: ours {t_ours:.3f} ms | cuDNN fp16 {t_torch:.3f} ms")
    from core.sliding_window import default_patches_tensor, window_grid

    dims = (256, 320, 320)
    grid = window_grid(dims)[:8]
    patches = default_patches_tensor("cuda", torch.float16)
    logits = torch.randn(8, 3, 128, 128, 128, device="cuda")
    acc = torch.zeros(3, *dims, device="cuda")
    t_ours = bench(lambda: ops.accumulate_fn(acc, logits, patches, grid))
    from core.sliding_window import accumulate_torch, argmax_lowest_torch

    t_torch = bench(lambda: accumulate_torch(acc, logits, patches, grid))
    res["accumulate_8"] = (t_ours, t_torch)
    log(f"accumulate 8 windows: ours {t_ours:.3f} ms | torch {t_torch:.3f} ms")
    t_ours = bench(lambda: ops.argmax_fn(acc))
    t_torch = bench(lambda: argmax_lowest_torch(acc))
    res["argmax_256x320x320"] = (t_ours, t_torch)
    log(f"argmax 256x320x320: ours {t_ours:.3f} ms | torch {t_torch:.3f} ms")
    RESULTS["misc"] = res


def _net_setup(n: int) -> tuple[Any, dict[str, float], Any]:
    """(full-width random model, calibration ranges, n random int8 windows)."""
    from bench.common import synthetic_amax
    from core.backends.torch.fused import INT8_INPUT_AMAX
    from core.model import FULL_WIDTHS, build_random_model

    model = build_random_model(FULL_WIDTHS, seed=0)
    amax = synthetic_amax(model, "cuda:0", windows=1)
    g = torch.Generator(device="cpu").manual_seed(0)
    xw = torch.randn((n, 1, 128, 128, 128), generator=g).clamp_(-2.2, 2.64)
    x = torch.clamp(torch.round(xw / INT8_INPUT_AMAX * 127), -128, 127).to(torch.int8).cuda()
    return model, amax, x


def section_net(n: int, precisions: list[str], tag: str, modes: tuple[str, ...] = ("fused", "apply")) -> None:
    """The whole fused network (full width, random weights, batch n) timed through the torch backend's
    own engine: ``engine.run(windows)`` of the TorchEngine that ``make_engine(executor="fused")`` returns,
    i.e. the replay of the CUDA graph it
    captured, input copy included; every line says which path it took. Logits of 2 windows against the
    fp32 converted graph (cuDNN)."""
    from bench.common import fused_torch_engine, recapture_engine

    log(f"== whole fused network, full width, random weights, batch {n}, TorchEngine CUDA graph ({tag})")
    from core.backends.torch.engine import make_engine

    model, amax, x = _net_setup(n)
    ref_eng = make_engine(model, precision="fp32", batch_size=2, device="cuda:0", executor="graph",
                                 cuda_graphs=False, use_plugins=False)  # fmt: skip
    want = ref_eng.run(x[:2]).float().clone()
    ref_eng.close()
    out = RESULTS.setdefault("net", {})
    for prec in precisions:
        eng, path = fused_torch_engine(model, prec, n, "cuda:0", amax)
        f = eng._fn
        for mode in modes:
            if mode != f.prologue:  # the backend builds the default (apply); the other mode recaptured
                f.prologue = mode
                f.pack()
                eng = recapture_engine(eng)
            got = eng.run(x[:2]).float()
            err = float((got.double() - want.double()).norm() / want.double().norm())
            agree = float((got.argmax(1) == want.argmax(1)).float().mean())
            t_eager = bench(lambda f=f: f(x), rep=200)
            t_graph = bench(lambda eng=eng: eng.run(x), rep=300)
            prec_tag = f"{prec}/{mode}"
            out[f"{tag}_{prec_tag}"] = dict(eager_ms=t_eager, graph_ms=t_graph, per_window_ms=t_graph / n, rel_err=err,
                                            argmax_agree=agree, path=path)  # fmt: skip
            log(
                f"{prec_tag}: eager {t_eager:.2f} ms, engine {t_graph:.2f} ms per batch -> {t_graph / n:.3f} ms/window "
                f"({954.6 / (t_graph / n):.0f} TFLOP/s eff.); vs fp32: rel err {err:.2e}, argmax agree {agree:.5f}; "
                f"est. {1000 / (t_graph / n * 64.2):.2f} samples/s at 64.2 windows/sample (net only) [{path}]"
            )
            if mode == "apply":  # the same without the shared skip buffers (one apply pass more per level)
                f.share_skips = False
                f.pack()
                e2 = recapture_engine(eng)
                t2 = bench(lambda e2=e2: e2.run(x), rep=300)
                out[f"{tag}_{prec_tag}_unshared_graph_ms"] = t2
                log(
                    f"  without shared skip buffers: {t2:.2f} ms per batch -> {t2 / n:.3f} ms/window [{path}, recaptured]"
                )
                e2.close()
                f.share_skips = True
                f.pack()
            # per-kernel breakdown (eager, GPU time by kernel name)
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                f(x)
                torch.cuda.synchronize()
            agg: dict[str, float] = defaultdict(float)
            for e in prof.key_averages():
                if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0) > 0:
                    agg[e.key] += getattr(e, "self_device_time_total", 0.0) / 1000.0
            total = sum(agg.values()) or 1.0
            top = sorted(agg.items(), key=lambda kv: -kv[1])[:10]
            out[f"{tag}_{prec_tag}_breakdown_ms"] = dict(top)
            log(
                "  breakdown (ms per batch, eager): "
                + "; ".join(f"{k[:40]} {v:.2f} ({100 * v / total:.0f}%)" for k, v in top)
            )
        eng.close()
        del eng, f
        torch.cuda.empty_cache()


def section_window(n: int, prec: str, mode: str = "apply") -> None:
    """Sliding window on one typical volume (256x320x320 = 48 windows) through the engine's own
    ``segment_device`` (upload, windows, CUDA graph, stitching, argmax: what ``unet3d run`` does per
    sample, minus the host copies)."""
    import numpy as np

    from bench.common import fused_torch_engine, recapture_engine

    model, amax, _ = _net_setup(1)
    eng, path = fused_torch_engine(model, prec, n, "cuda:0", amax)
    if mode != eng._fn.prologue:
        eng._fn.prologue = mode
        eng._fn.pack()
        eng = recapture_engine(eng)
    rng = np.random.default_rng(0)
    vol = eng.upload(rng.standard_normal((1, 256, 320, 320), dtype=np.float32).clip(-2.2, 2.64))

    def run() -> Any:
        return eng.segment_device(vol)

    run()
    torch.cuda.synchronize()
    t = bench(run, rep=2000, warmup=1)
    RESULTS.setdefault("window", {})[f"{prec}/{mode}"] = dict(
        ms_per_volume=t, windows=48, ms_per_window=t / 48, path=f"{path}; segment_device"
    )
    log(f"sliding window {prec}/{mode}, 256x320x320 (48 windows): {t:.1f} ms -> {t / 48:.3f} ms/window, "
        f"{1000 / (t / 48 * 64.2):.2f} samples/s at the inference set's 64.2 windows/sample [{path}; segment_device]")  # fmt: skip
    eng.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--sections", default="net,window,misc,layers,net2")
    ap.add_argument("--precisions", default="fp16,fp8,bf16")
    ap.add_argument("--layers", default="", help="comma list of layer names for the layer section")
    ap.add_argument("--layer-mode", default="fused", choices=["fused", "apply"])
    ap.add_argument("--max-cands", type=int, default=14)
    ap.add_argument("--net-modes", default="fused,apply")
    ap.add_argument(
        "--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="compile processes (tune)"
    )
    ap.add_argument("--tuned-out", type=Path, default=None, help="also write the merged tuned tiles here")
    args = ap.parse_args()
    global MAX_CANDS
    MAX_CANDS = args.max_cands
    import triton

    RESULTS["env"] = dict(
        torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
        device=torch.cuda.get_device_name(0), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )  # fmt: skip
    log(f"env: {RESULTS['env']}")
    secs = args.sections.split(",")
    precs = args.precisions.split(",")

    def save() -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))
            if "tuned" in RESULTS:
                merged = {**ops.TUNED, **RESULTS["tuned"]}
                (args.out / "tuned_configs.json").write_text(json.dumps(merged, indent=0, sort_keys=True))
                if args.tuned_out:
                    args.tuned_out.write_text(json.dumps(merged, indent=0, sort_keys=True))

    for sec in secs:
        if time.time() - T0 > args.budget_s and sec != "window":
            log(f"budget reached, skipping {sec}")
            continue
        try:
            if sec == "net":
                section_net(args.batch, precs, "default_tiles", tuple(args.net_modes.split(",")))
            elif sec == "tune_apply":
                section_tune_apply(args.batch)
            elif sec == "tune":
                section_tune(args.batch, "fp8" if "fp8" in precs else precs[0], args.budget_s, args.workers)
            elif sec == "misc":
                section_misc(args.batch)
            elif sec == "layers":
                names = args.layers.split(",") if args.layers else None
                lp = tuple(p for p in precs if p in ("fp16", "fp8", "int8"))
                section_layers(args.batch, args.tune, args.budget_s, names, lp, args.layer_mode)
            elif sec == "net2":
                section_net(
                    args.batch,
                    [p for p in precs if p != "bf16"],
                    "tuned_tiles",
                    tuple(args.net_modes.split(",")),
                )
            elif sec == "window":
                prec = "fp8" if "fp8" in precs else precs[0]
                nets = RESULTS.get("net", {})
                best = min(
                    ("fused", "apply"),
                    key=lambda md: nets.get(f"default_tiles_{prec}/{md}", {}).get("graph_ms", float("inf")),
                )
                section_window(args.batch, prec, best)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            log(f"section {sec} failed: {type(exc).__name__}: {exc}")
        save()
    return 0


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    sys.exit(main())
