"""Compile the conv kernels for sm_90 without a GPU and report what the machine code holds.

For each kernel: registers, stack (spills), shared memory, and counts of the instructions that matter:
wgmma (IGMMA int8, QGMMA e4m3, HGMMA fp16), ldmatrix (LDSM), TMA loads (UTMALDG), cp.async (LDGSTS),
CTA barriers (BAR.SYNC), local memory (LDL/STL). Kernels: the Gluon halo kernel (plugins.gluon_conv)
and the Triton W-packed / plain implicit-GEMM kernels (plugins._kernels) at the thin layers' tuned tiles,
int8 and fp8. Needs only Triton (no torch, no GPU); uses the cuobjdump that Triton's wheel carries.

    python bench/sass_report.py [--out DIR] [--only gluon|triton]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.sass import WATCH, sass_counts


def gluon_kernels() -> list[tuple[str, Any]]:
    from plugins import gluon_conv as gc

    out = []
    for cin, cout in ((32, 32), (64, 32), (32, 16)):
        for int8 in (True, False) if cout == 32 else (True,):
            cfg = gc.HaloConfig(cin, cout, int8)
            out.append(
                (
                    f"gluon halo {cin}->{cout} {'int8' if int8 else 'fp8'} TW={cfg.tw}",
                    lambda c=cfg: gc.compile_sm90(c),
                )
            )
    return out


def _compile(
    fn: Any, ptrs: dict[str, str], ints: list[str], consts: dict[str, Any], warps: int, stages: int
) -> Any:
    """triton.compile for sm_90 with pointers and sizes marked 16-divisible, as the JIT specializes them."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {**ptrs, **{n: "i32" for n in ints}, **{n: "constexpr" for n in consts}}
    names = fn.arg_names
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in [*ptrs, *ints]}
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    return triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages}
    )


def _triton_wpack(cin: int, int8: bool, bm: int, bk: int, warps: int, stages: int, ca: int, pk: int) -> Any:
    from plugins import _kernels as k

    ty = "*i8" if int8 else "*fp8e4nv"
    ptrs = {"x_ptr": ty, "w_ptr": ty, "out_ptr": "*fp16", "colscale_ptr": "*fp32", "pmean_ptr": "*fp32",
            "pm2_ptr": "*fp32"}  # fmt: skip
    consts = dict(CIN=cin, COUT=32, P=pk, STATS=True, IEEE=False, UPCAST=False, CACHE_A=bool(ca & 1), BM=bm,
                  BK=bk, CACHE_B=bool(ca & 2), INT8=int8)  # fmt: skip
    return _compile(k.conv_wpack_kernel, ptrs, ["D", "H", "W"], consts, warps, stages)


def _triton_igemm(ks: int, stride: int, int8: bool, pro: bool, epi: int, tile: tuple[int, ...]) -> Any:
    """conv_igemm_kernel as plugins.unet calls it: 3^3 (stats, fp16 out; prologue or not) or the
    ConvTranspose 1x1x1 (bias, pixel-shuffle t-major epilogue into an 8-bit concat buffer)."""
    from plugins import _kernels as k

    ty = "*i8" if int8 else "*fp8e4nv"
    bm, bn, bk, warps, stages = tile
    ptrs = {"x_ptr": "*fp16" if pro else ty, "w_ptr": ty, "out_ptr": ty if epi else "*fp16",
            "pa_ptr": "*fp32", "pb_ptr": "*fp32", "colscale_ptr": "*fp32", "bias_ptr": "*fp32",
            "pmean_ptr": "*fp32", "pm2_ptr": "*fp32"}  # fmt: skip
    ints = ["D", "H", "W", "Do", "Ho", "Wo", "Cin", "Cout", "OC", "OFF", "XC"]
    consts = dict(KS=ks, STRIDE=stride, PRO=pro, PRO_RELU=True, HAS_BIAS=epi > 0, STATS=epi == 0, EPI=epi,
                  FP8_A=not int8, FP8_OUT=epi > 0 and not int8, IEEE=False, UPCAST=False, EMU=False, BM=bm,
                  BN=bn, BK=bk, CACHE_A=False, EPK=8 if epi == 2 else 1, CACHE_B=False, INT8=int8,
                  INT8_OUT=epi > 0 and int8)  # fmt: skip
    return _compile(k.conv_igemm_kernel, ptrs, ints, consts, warps, stages)


def _triton_apply(int8: bool) -> Any:
    from plugins import _kernels as k

    ptrs = {"x_ptr": "*fp16", "out_ptr": "*i8" if int8 else "*fp8e4nv", "a_ptr": "*fp32", "b_ptr": "*fp32"}
    consts = dict(RELU=True, FP8_OUT=not int8, EMU=False, BV=128, BC=32, INT8_OUT=int8)
    return _compile(k.in_apply_kernel, ptrs, ["S", "C", "TV", "OC", "OFF"], consts, 4, 1)


def triton_kernels() -> list[tuple[str, Any]]:
    # the tuned W-packed tiles of the two 128^3 layers (plugins/tuned_configs.json, fp8 keys)
    tiles = {32: (128, 128, 4, 4, 0, 2), 64: (128, 128, 4, 3, 2, 2)}
    out = []
    for cin, (bm, bk, warps, stages, ca, pk) in tiles.items():
        for int8 in (True, False):
            name = f"triton wpack {cin}->32 {'int8' if int8 else 'fp8'} BM={bm} BK={bk} P={pk}"
            out.append(
                (name, lambda c=cin, i=int8, t=(bm, bk, warps, stages, ca, pk): _triton_wpack(c, i, *t))
            )
    for int8 in (True, False):  # the other int8 / fp8 variants the fused network runs: do they compile?
        q = "int8" if int8 else "fp8"
        out.append(
            (
                f"triton igemm 3^3 s2 {q} stats",
                lambda i=int8: _triton_igemm(3, 2, i, False, 0, (128, 64, 64, 4, 3)),
            )
        )
        out.append(
            (
                f"triton igemm 3^3 {q} fused prologue",
                lambda i=int8: _triton_igemm(3, 1, i, True, 0, (128, 64, 64, 4, 3)),
            )
        )
        out.append(
            (
                f"triton igemm 1^3 deconv -> {q} concat",
                lambda i=int8: _triton_igemm(1, 1, i, False, 2, (128, 64, 64, 4, 3)),
            )
        )
        out.append((f"triton apply fp16 -> {q}", lambda i=int8: _triton_apply(i)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="also write each kernel's SASS here")
    ap.add_argument("--only", choices=["gluon", "triton"], default=None)
    args = ap.parse_args()
    import triton

    print(f"# sm_90 compile report, Triton {triton.__version__}, no GPU (cuobjdump from Triton's wheel)")
    kernels = ([] if args.only == "triton" else gluon_kernels()) + (
        [] if args.only == "gluon" else triton_kernels()
    )
    cols = ["REG", "STACK", "SHARED(B)", *WATCH]
    print("| kernel | compile s | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, build in kernels:
        t = time.time()
        try:
            kern = build()
        except Exception as exc:  # report and go on: one kernel failing must not hide the others
            print(f"| {name} | FAILED: {type(exc).__name__}: {str(exc).splitlines()[-1][:120]} |")
            continue
        dt = time.time() - t
        counts, usage, sass = sass_counts(kern.asm["cubin"])
        shared = int(getattr(kern.metadata, "shared", 0))
        vals = [usage.get("REG", -1), usage.get("STACK", -1), shared, *(counts.get(w, 0) for w in WATCH)]
        print(f"| {name} | {dt:.1f} | " + " | ".join(str(v) for v in vals) + " |", flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
            (args.out / f"{stem}.sass").write_text(sass)
            (args.out / f"{stem}.ptx").write_text(kern.asm["ptx"])
    return 0


if __name__ == "__main__":
    os.environ.pop("TRITON_INTERPRET", None)
    sys.exit(main())
