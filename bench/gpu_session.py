# ruff: noqa: E501
"""One GPU call, under a hard time budget: are the new kernels right, how fast are the thin layers, and
what does the whole network cost per batch of 8 through the product's own CUDA-graph path.

    python3 bench/gpu_session.py [--budget 200] [--out DIR]     (DIR: default $OUT, else ./out)

Sections, each in a child process with its own timeout (a hung or crashed kernel cannot take the call
down: the parent notes it and goes on), each child checking the time left before every measurement:

1. ``gluon``  (cap 60 s): the Gluon halo kernel (plugins.gluon_conv) against the Triton kernels on random
   data, int8 and fp8, Cin 32 and 64: outputs poisoned first, NaN check, relative error (int8: bit for
   bit), InstanceNorm affine from the partials, a second run identical. Later sections use the Gluon
   kernel only if this passed.
2. ``layers`` (cap 70 s): int8 correctness of the Triton kernels on the GPU (custom op and W-packed
   kernel against ref.conv3x3x3_int8_sim, bit for bit), then per-layer timing at batch 8
   (triton.testing.do_bench median) of the thin layers: current W-packed fp8 (tuned tile), the same
   kernel in int8, the Gluon kernel in fp8 and int8.
3. ``net``    (rest): the full-width MLPerf network (random weights; ranges from the product's
   calibration collector on a random window), batch 8, timed as ``engine.run(windows)`` of a
   ``TorchEngine`` (the torch backend's engine; its CUDA graph of the batch is replayed), fp8 and int8,
   Triton convs and with UNET3D_GLUON_CONV=1; logits of 2 windows against the fp32 converted graph.
   Every row says which path it took.

Meanwhile two background processes compile the network's Triton kernels (fp8, int8) into Triton's
disk cache (CPU work; each kernel then runs once on one window), so the net section does not spend its
time compiling; the net section waits for them.

The compact tables are printed as each section ends and all together last; full logs and JSON go to
DIR (gpu_session.log, <section>.log, results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAPS = {"gluon": 60.0, "layers": 70.0, "net": 1e9}  # seconds per section at most
MIN_START = {"gluon": 20.0, "layers": 20.0, "net": 40.0}  # do not start a section with less than this left
RESERVE = 4.0  # seconds kept for the final table
DEV = "cuda"  # the tests run the children's code on "cpu" under Triton's interpreter, at tiny sizes
CHECK_SHAPE = (2, 32, 32, 128)  # (N, D, H, W) of the correctness data: 1024 Gluon tiles, several per CTA


# --- child side -------------------------------------------------------------------------------------


class Child:
    def __init__(
        self, section: str, deadline: float, out: Path, gluon_ok: bool, gluon_ran: bool = False
    ) -> None:
        self.section = section
        self.deadline = deadline
        self.out = out
        self.gluon_ok = gluon_ok  # the gluon section passed: use the kernel in the network
        self.gluon_ran = gluon_ran or gluon_ok  # it ran to the end without a crash: safe to time it
        self.res: dict[str, Any] = {"rows": [], "notes": []}
        self.t0 = time.time()

    def left(self) -> float:
        return self.deadline - time.time()

    def log(self, msg: str) -> None:
        print(f"[{self.section} {time.time() - self.t0:6.1f}s] {msg}", flush=True)

    def note(self, msg: str) -> None:
        self.res["notes"].append(msg)
        self.log(msg)

    def save(self) -> None:
        (self.out / f"{self.section}.json").write_text(json.dumps(self.res, indent=1, default=str))

    def row(self, **kw: Any) -> None:
        self.res["rows"].append(kw)
        self.log(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items()))
        self.save()

    def guard(self, what: str, need_s: float, fn: Callable[[], None]) -> None:
        """Run one measurement if ``need_s`` seconds are left; an exception is noted, not fatal."""
        if self.left() < need_s:
            self.note(f"skipped {what}: {self.left():.0f} s left, needs about {need_s:.0f}")
            return
        try:
            fn()
        except Exception as exc:
            traceback.print_exc()
            self.note(
                f"{what} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            )


def _rel(a: Any, b: Any) -> float:
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


def _bench_ms(fn: Callable[[], Any], rep_ms: int = 200) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def _env(c: Child) -> None:
    import torch
    import triton

    name, sms = "cpu", 0
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        name, sms = p.name, p.multi_processor_count
    c.res["env"] = dict(device=name, sms=sms, torch=torch.__version__, triton=triton.__version__,
                        cuda=torch.version.cuda, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))  # fmt: skip
    c.log(f"env: {c.res['env']}")


def _quant(x: Any, q: str, s: float) -> Any:
    from plugins import ops
    from plugins import reference as ref

    return ref.quantize_int8(x, s) if q == "int8" else (x / s).clamp(-448, 448).to(ops.FP8)


def child_gluon(c: Child) -> None:
    import torch

    from plugins import ops

    _env(c)
    torch.backends.cudnn.allow_tf32 = False
    # the four full-width cases decide; 32 -> 16 (the half-width phantom model's up4.conv1) is extra
    for q, cin, cout in (
        ("int8", 32, 32),
        ("int8", 64, 32),
        ("fp8", 32, 32),
        ("fp8", 64, 32),
        ("int8", 32, 16),
    ):

        def case(q: str = q, cin: int = cin, cout: int = cout) -> None:
            torch.manual_seed(11)
            s = 0.05
            x = torch.randn(*CHECK_SHAPE, cin, device=DEV)
            w = torch.randn(cout, cin, 3, 3, 3, device=DEV) / (27 * cin) ** 0.5
            xq = _quant(x, q, s)
            p = ops.pack_conv3(w, ops.PRECISIONS[q], s)
            want, wpart = ops.conv3d_cl(
                xq, p, 1, stats=True, cfg=[128, min(32, cout), 32, 4, 3]
            )  # plain Triton kernel
            out = torch.full_like(want, float("nan"))
            t = time.time()
            got, gpart = ops.conv3d_halo_cl(xq, p, stats=True, out=out)
            torch.cuda.synchronize()
            first_s = time.time() - t
            assert gpart is not None
            g, b = torch.rand(cout, device=DEV) + 0.5, torch.randn(cout, device=DEV)
            (a1, b1), (a2, b2) = ops.in_affine(wpart, g, b), ops.in_affine(gpart, g, b)
            again, _ = ops.conv3d_halo_cl(xq, p, stats=True)
            nan_free = not bool(torch.isnan(got).any()) and not bool(torch.isnan(gpart.mean).any())
            err = _rel(got, want)
            ok = nan_free and (torch.equal(got, want) if q == "int8" else err < 1e-3)
            ok = ok and max(_rel(a2, a1), _rel(b2, b1)) < 1e-4 and torch.equal(again, got)
            c.row(case=f"gluon {q} {cin}->{cout}", rel_err=err, bit_exact=bool(torch.equal(got, want)), nan_free=nan_free,
                  affine_rel=max(_rel(a2, a1), _rel(b2, b1)), repeat_identical=bool(torch.equal(again, got)),
                  first_call_s=first_s, ok=ok)  # fmt: skip

        c.guard(f"gluon {q} {cin}->{cout}", 4.0, case)
    main = [r for r in c.res["rows"] if r["case"].endswith("->32")]
    c.res["gluon_ran"] = len(main) == 4
    c.res["gluon_ok"] = c.res["gluon_ran"] and all(r["ok"] for r in main)
    c.save()


THIN = (  # name, edge, Cin, Cout (batch 8): 7.8 of 17.1 ms per batch with the third session's kernels
    ("in.conv2 32->32 @128^3", 128, 32, 32),
    ("up4.conv1 64->32 @128^3", 128, 64, 32),
    ("up3.conv1 128->64 @64^3", 64, 128, 64),
)


def child_layers(c: Child) -> None:
    import torch

    from plugins import ops
    from plugins import reference as ref

    _env(c)
    torch.backends.cudnn.allow_tf32 = False
    os.environ[ops.ENV_GLUON] = "0"

    def int8_checks() -> None:
        torch.manual_seed(12)
        s = 4.0 / 127
        n, d, h, w_ = CHECK_SHAPE
        x = torch.randn(n, 64, d, h, w_, device=DEV)
        w = torch.randn(32, 64, 3, 3, 3, device=DEV) / (27 * 64) ** 0.5
        got = ops.conv3x3x3(x, w, 1, "int8", s)
        want = ref.conv3x3x3_int8_sim(x, w, 1, s)
        exact = bool(torch.equal(got.float(), want.half().float()))
        x2 = torch.randn(*CHECK_SHAPE, 32, device=DEV)
        w2 = torch.randn(32, 32, 3, 3, 3, device=DEV) / (27 * 32) ** 0.5
        p = ops.pack_conv3(w2, ops.INT8, s)
        xq = ref.quantize_int8(x2, s)
        plain, _ = ops.conv3d_cl(xq, p, 1, stats=True, out_dtype=torch.float32, cfg=[128, 32, 32, 4, 3])
        packed, _ = ops.conv3d_cl(
            xq, p, 1, stats=True, out_dtype=torch.float32, cfg=[128, 64, 128, 4, 4, 0, 2]
        )
        y = torch.randn(2, 16, 16, 16, 32, device=DEV) * 40
        q = ops.in_apply(y, torch.ones(2, 32, device=DEV), torch.zeros(2, 32, device=DEV), relu=False,
                         out_dtype=ops.INT8)  # fmt: skip
        apply_exact = bool(torch.equal(q, ref.quantize_int8(y, 1.0)))
        c.row(case="triton int8", conv_vs_sim_bit_exact=exact, conv_rel=_rel(got, want),
              wpack_vs_plain_bit_exact=bool(torch.equal(packed, plain)), apply_int8_exact=apply_exact,
              ok=exact and bool(torch.equal(packed, plain)) and apply_exact)  # fmt: skip

    c.guard("int8 checks", 10.0, int8_checks)

    for name, r, cin, cout in THIN:
        c.guard(f"layer {name}", 10.0, lambda a=(name, r, cin, cout): _time_layer(c, *a))


def _time_layer(c: Child, name: str, r: int, cin: int, cout: int, n: int = 8) -> None:
    """One thin layer at batch n: the tuned Triton kernel (W-packed for these layers) in fp8 and int8,
    and the Gluon halo kernel where it fits; stats epilogue and fp16 output in every variant."""
    import torch

    from plugins import gluon_conv, ops

    flop = 2.0 * n * r**3 * cin * cout * 27
    torch.manual_seed(13)
    w = torch.randn(cout, cin, 3, 3, 3, device=DEV) / (27 * cin) ** 0.5
    x = torch.randn(n, r, r, r, cin, device=DEV, dtype=torch.float16)
    cases = {q: (_quant(x, q, 0.05), ops.pack_conv3(w, ops.PRECISIONS[q], 0.05)) for q in ("fp8", "int8")}
    for q, (xq, p) in cases.items():  # the Triton kernels first: a Gluon crash cannot cost their rows
        tile = ops.tuned_tile(ops.conv_key(n * r**3, r**3, p, 1, False, 0))
        if c.left() > 6:
            ms = _bench_ms(lambda xq=xq, p=p: ops.conv3d_cl(xq, p, 1, stats=True))
            c.row(layer=name, kernel=f"triton {q}", ms=ms, tflops=flop / ms / 1e9, tile=str(tile))
    for q, (xq, p) in cases.items():
        if c.gluon_ran and gluon_conv.fits((n, r, r, r), cin, cout) and c.left() > 8:
            ms = _bench_ms(lambda xq=xq, p=p: ops.conv3d_halo_cl(xq, p, stats=True))
            label = f"gluon {q}" + ("" if c.gluon_ok else " (its results were WRONG)")
            c.row(layer=name, kernel=label, ms=ms, tflops=flop / ms / 1e9, tile="halo 2x2x64")
            triton_ms = next(
                (
                    r["ms"]
                    for r in c.res["rows"]
                    if r.get("layer") == name and r.get("kernel") == f"triton {q}"
                ),
                None,
            )
            if c.gluon_ok and triton_ms and ms < triton_ms:  # the tuned entry that would select it
                key = ops.halo_key(ops.conv_key(n * r**3, r**3, p, 1, False, 0))
                c.res.setdefault("suggest", {})[key] = [64]
                c.save()
    del cases
    del x
    torch.cuda.empty_cache()


def child_net(c: Child) -> None:
    import torch

    from core.backends.torch.fused import INT8_INPUT_AMAX

    _env(c)
    dev = torch.device(DEV, 0) if DEV == "cuda" else torch.device(DEV)
    g = torch.Generator(device="cpu").manual_seed(0)
    xw = torch.randn((8, 1, 128, 128, 128), generator=g).clamp_(-2.2, 2.64)
    x8 = torch.clamp(torch.round(xw / INT8_INPUT_AMAX * 127), -128, 127).to(torch.int8).to(dev)
    variants = [("fp8", "0"), ("int8", "0")]
    if c.gluon_ok:
        variants += [("int8", "1"), ("fp8", "1")]
    else:
        c.note("Gluon variants skipped: the gluon section did not pass")
    timer = lambda fn: _bench_ms(fn, rep_ms=400)  # noqa: E731
    from core.model import FULL_WIDTHS, build_random_model

    net_rows(c, build_random_model(FULL_WIDTHS, seed=0), x8, dev, variants, timer)


def net_rows(
    c: Child, model: Any, x: Any, dev: Any, variants: list[tuple[str, str]], timer: Callable[[Callable[[], Any]], float],
    need_s: float = 35.0,
) -> None:  # fmt: skip
    """The network rows: for each (precision, UNET3D_GLUON_CONV) an engine of the torch backend around
    the fused executor, timed as ``timer(lambda: engine.run(x))`` (a CUDA graph replay on CUDA), and its
    logits of the first 2 windows against the fp32 converted graph. x: (batch, 1, R, R, R) int8."""
    from bench.common import fused_torch_engine, recapture_engine
    from core.backends.torch.engine import make_engine
    from plugins import ops

    batch = int(x.shape[0])
    amax: dict[str, float] = {}

    def ranges() -> None:  # the product's calibration collector on one random window (fp32, plain torch)
        from bench.common import synthetic_amax

        amax.update(synthetic_amax(model, dev, windows=1))
        c.log(f"{len(amax)} activation ranges")

    c.guard("calibration ranges", 10.0, ranges)
    want: dict[str, Any] = {}

    def fp32_reference() -> None:
        eng = make_engine(model, precision="fp32", batch_size=2, device=dev, executor="graph",
                                 cuda_graphs=False, use_plugins=False)  # fmt: skip
        want["logits"] = eng.run(x[:2]).float().clone()
        eng.close()

    c.guard("fp32 reference (converted graph, plain torch ops)", 10.0, fp32_reference)

    engines: dict[str, Any] = {}
    for q, glu in variants:

        def run(q: str = q, glu: str = glu) -> None:
            os.environ[ops.ENV_GLUON] = glu
            t = time.time()
            if glu == "0":
                eng, path = fused_torch_engine(model, q, batch, dev, amax)
                engines[q] = (eng, path)
            else:
                base, path = engines[q]
                eng = recapture_engine(base)
                path += " (recaptured)"
            build_s = time.time() - t
            graph = bool(eng.uses_cuda_graph)
            ms = timer(lambda: eng.run(x))
            err = agree = float("nan")
            if "logits" in want:
                got = eng.run(x[:2]).float()
                err = _rel(got, want["logits"])
                agree = float((got.argmax(1) == want["logits"].argmax(1)).float().mean())
            c.row(net=f"{q}, {'Gluon' if glu == '1' else 'Triton'} thin convs", ms_batch=ms, ms_window=ms / batch,
                  rel_err_vs_fp32=err, argmax_agree=agree, build_s=build_s, cuda_graph=graph, path=path)  # fmt: skip
            if glu == "1":
                eng.close()

        c.guard(f"net {q} gluon={glu}", need_s if glu == "0" else 12.0, run)
    os.environ[ops.ENV_GLUON] = "0"


def child_precompile(c: Child, precision: str) -> None:
    """Compile the fused network's Triton kernels for ``precision`` into Triton's disk cache by running it
    once on one window (kernel specializations do not depend on the batch; tiles fall back to the
    batch-8 tuned ones). Runs in the background during the gluon and layers sections, so the net
    section finds its kernels compiled."""
    import torch

    from core.backends.torch.fused import FusedUNet3D
    from plugins import reference as ref

    os.environ["UNET3D_GLUON_CONV"] = "0"
    t = time.time()
    torch.manual_seed(0)
    m = ref.UNet3D().to(DEV).eval()  # the full-width topology (no onnx needed): the same layer shapes
    f = FusedUNet3D.from_reference(m, precision=precision, device=DEV)
    x = torch.randint(-127, 128, (1, 1, 128, 128, 128), dtype=torch.int8, device=DEV)
    f(x)
    torch.cuda.synchronize()
    c.row(precompiled=precision, s=time.time() - t)


CHILDREN: dict[str, Callable[[Child], None]] = {
    "gluon": child_gluon,
    "layers": child_layers,
    "net": child_net,
    "pre_fp8": lambda c: child_precompile(c, "fp8"),
    "pre_int8": lambda c: child_precompile(c, "int8"),
}


# --- parent side ------------------------------------------------------------------------------------


def _table(section: str, res: dict[str, Any]) -> list[str]:
    rows = res.get("rows", [])
    lines = [f"== {section} =="]
    if rows:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        lines.append("| " + " | ".join(keys) + " |")
        for r in rows:
            vals = [r.get(k, "") for k in keys]
            lines.append(
                "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals) + " |"
            )
    lines += [f"note: {n}" for n in res.get("notes", [])]
    return lines


def _cmd(sec: str, deadline: float, out: Path, gluon: tuple[bool, bool]) -> list[str]:
    """The child's command line; gluon = (passed, ran to the end)."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", sec, "--deadline", str(deadline),
            "--out", str(out)] + (["--gluon-ok"] if gluon[0] else []) + (["--gluon-ran"] if gluon[1] else [])  # fmt: skip


def parent(budget: float, out: Path, sections: list[str], precompile: bool) -> int:
    t0 = time.time()
    deadline = t0 + budget - RESERVE
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    tables: list[str] = []
    gluon = (False, False)
    # the network's Triton kernels compile in the background (CPU work; each kernel then runs once on
    # one window, a few ms of GPU in all) while the gluon and layers sections run; net waits for them
    pre: list[tuple[str, subprocess.Popen[bytes], Any]] = []
    if precompile and "net" in sections:
        for sec in ("pre_fp8", "pre_int8"):
            logf = open(out / f"{sec}.log", "w")  # noqa: SIM115 - closed below
            pre.append((sec, subprocess.Popen(_cmd(sec, deadline, out, (False, False)), stdout=logf, stderr=subprocess.STDOUT,
                                              cwd=str(ROOT)), logf))  # fmt: skip
        print(
            f"[parent] compiling the network's kernels in the background ({len(pre)} processes)", flush=True
        )

    def stop_precompile(wait_s: float) -> None:
        end = time.time() + max(0.0, wait_s)
        for sec, proc, logf in pre:
            try:
                proc.wait(timeout=max(0.0, end - time.time()))
                note = f"exit {proc.returncode}"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                note = "stopped (its kernels compiled so far stay in the cache)"
            logf.close()
            try:
                child = json.loads((out / f"{sec}.json").read_text())
            except (OSError, ValueError):
                child = {}
            results[sec] = {"rows": child.get("rows", []), "notes": [*child.get("notes", []), note]}
            print(f"[parent] {sec}: {note}", flush=True)
        pre.clear()

    for sec in sections:
        if sec == "net" and pre:  # its kernels: wait for the background compile rather than redo it
            stop_precompile(min(30.0, deadline - time.time() - MIN_START["net"] - 10.0))
        left = deadline - time.time()
        if left < MIN_START[sec]:
            results[sec] = {"rows": [], "notes": [f"skipped: {left:.0f} s left"]}
            tables += _table(sec, results[sec])
            print(f"[parent] skip {sec}: {left:.0f} s left", flush=True)
            continue
        cap = min(CAPS[sec], left)
        print(f"[parent] {sec}: up to {cap:.0f} s ({left:.0f} s left)", flush=True)
        ts = time.time()
        with open(out / f"{sec}.log", "w") as logf:
            try:
                cmd = _cmd(sec, time.time() + cap - 2, out, gluon)
                proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=cap, cwd=str(ROOT))
                status = f"exit {proc.returncode}"
            except subprocess.TimeoutExpired:
                status = f"KILLED after {cap:.0f} s (timeout)"
        try:
            res = json.loads((out / f"{sec}.json").read_text())
        except (OSError, ValueError):
            res = {"rows": [], "notes": []}
        res.setdefault("notes", []).append(f"{status}, {time.time() - ts:.0f} s")
        results[sec] = res
        if sec == "gluon":
            gluon = (bool(res.get("gluon_ok")), bool(res.get("gluon_ran")))
        if "env" in res and "env" not in results:
            results["env"] = res["env"]
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        tab = _table(sec, res)
        tables += tab
        print("\n".join(tab), flush=True)
    stop_precompile(0.0)
    results["total_s"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n#################### summary ####################")
    print(f"env: {results.get('env', '?')}")
    print("\n".join(tables))
    suggest = results.get("layers", {}).get("suggest")
    if suggest:
        print("Gluon faster and correct: plugins/tuned_configs.json entries that select it per layer:")
        print(json.dumps(suggest, indent=0))
    print(f"total {time.time() - t0:.0f} s of {budget:.0f}; logs and results.json in {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=200.0, help="hard overall limit in seconds")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    ap.add_argument("--sections", default="gluon,layers,net")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--gluon-ok", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gluon-ran", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-precompile", action="store_true", help="do not compile the network in the background"
    )
    args = ap.parse_args()
    os.environ.pop("TRITON_INTERPRET", None)
    if args.child:
        c = Child(args.child, args.deadline, args.out, args.gluon_ok or args.child == "gluon", args.gluon_ran)
        try:
            CHILDREN[args.child](c)
        except Exception as exc:
            traceback.print_exc()
            c.note(f"section failed: {type(exc).__name__}: {exc}")
        c.save()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "gpu_session.log", "w")  # noqa: SIM115 - the parent's own copy of what it prints

    class Tee:
        def write(self, s: str) -> None:
            sys.__stdout__.write(s)
            log.write(s)

        def flush(self) -> None:
            sys.__stdout__.flush()
            log.flush()

    sys.stdout = Tee()  # type: ignore[assignment]
    sections = [s for s in args.sections.split(",") if s in CHILDREN]
    return parent(args.budget, args.out, sections, not args.no_precompile)


if __name__ == "__main__":
    sys.exit(main())
