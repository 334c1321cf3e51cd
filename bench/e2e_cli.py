"""End to end through the product's own CLI on one GPU: phantom KiTS19 set -> `unet3d preprocess` ->
`unet3d calibrate` -> `unet3d run` AccuracyOnly (43 cases) at fp8 (torch backend, fused executor) and
fp32 (the reference arithmetic), with the shared phantom model; prints each run's accuracy line and
the fp8/fp32 DICE ratio against the 99.9 % target, and writes summary.json.

``--shared DIR`` is a copy of the shared folder's kits19/, tools/ and models/ (the labels, the phantom
imaging generator and the phantom model's weights). Steps already done in --work are reused.

    python bench/e2e_cli.py --shared DIR --work /tmp/e2e --jobs 16 --out OUT [--runs fp8,fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # core, when run as a script
T0 = time.time()
SUMMARY: dict[str, Any] = {"runs": {}}
ACC = re.compile(r"mean\s*=\s*([0-9.]+).*?kidney\s*=\s*([0-9.]+).*?tumor\s*=\s*([0-9.]+)", re.S)


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def sh(cmd: list[str], env: dict[str, str], tag: str) -> str:
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out = p.stdout + p.stderr
    log(f"{tag}: exit {p.returncode} in {time.time() - t:.0f} s")
    if p.returncode != 0:
        print(out[-3000:], flush=True)
    return out


def phantom_workspace(shared: Path, raw: Path, ws: Path, jobs: int, env: dict[str, str], say: Any) -> None:
    """The phantom KiTS19 set in ``raw`` (CT-like imaging beside each shared mask, the official case
    lists) and the shared phantom model as the workspace's model; steps already done are reused."""
    cases = [
        json.loads((shared / "kits19" / f"{s}_cases.json").read_text()) for s in ("inference", "calibration")
    ]
    todo = [c for c in cases[0] + cases[1] if not (raw / c / "imaging.nii.gz").exists()]
    if todo:
        # the phantom tool reads each case's mask from the shared folder and writes imaging beside a copy
        tool = str(shared / "tools" / "kits19_phantom.py")
        gen = [sys.executable, tool, "--out", str(raw), "--jobs", str(jobs)]
        say(f"phantoms ({len(todo)} cases)")
        t = time.time()
        subprocess.run([*gen, "--cases", *todo], env=env, check=True, capture_output=True)
        say(f"phantoms: {time.time() - t:.0f} s")
    for name, lst in zip(("inference", "calibration"), cases, strict=True):
        (raw / f"{name}_cases.json").write_text(json.dumps(lst))
    from core.workspace import Workspace

    w = Workspace.resolve(ws, env={"DATA_DIR": str(raw)})
    if not w.model_path.exists():
        w.model_path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(shared / "tools" / "phantom_model.py"), str(w.model_path)],
                       env=env, check=True, capture_output=True)  # fmt: skip
        say(f"phantom model -> {w.model_path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/e2e"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--backend", default="torch", help="torch (GPU); ort runs fp32 on the CPU (smoke test)")
    ap.add_argument("--runs", default="fp8,fp32", help="precisions for AccuracyOnly runs, in order")
    ap.add_argument("--method", default="minmax", help="calibration method")
    ap.add_argument("--fallback-method", default="percentile", help="if fp8 misses 99.9 %%: recalibrate so")
    ap.add_argument("--deadline-s", type=float, default=1e9, help="start no step after this many seconds")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    raw, ws = a.work / "raw", a.work / "ws"
    env = {**os.environ, "UNET3D_WORKSPACE": str(ws), "DATA_DIR": str(raw), "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "core"]
    phantom_workspace(a.shared, raw, ws, a.jobs, env, log)
    sh([*cli, "preprocess", "--jobs", str(a.jobs)], env, "unet3d preprocess")

    def calibrate(method: str) -> None:
        out = sh([*cli, "calibrate", f"--method={method}"], env, f"unet3d calibrate --method={method}")
        SUMMARY[f"calibrate_{method}"] = out.strip().splitlines()[-3:]

    def accuracy(prec: str, tag: str) -> float | None:
        run = [*cli, "run", f"--backend={a.backend}", f"--precision={prec}", "--test_mode=AccuracyOnly",
               "--scenarios=Offline", "--gpu_batch_size=8"]  # fmt: skip
        t = time.time()
        out = sh(run, env, f"unet3d run {prec} AccuracyOnly ({tag})")
        m = ACC.search(out)
        row: dict[str, Any] = {"wall_s": round(time.time() - t, 1), "tail": out.strip().splitlines()[-6:]}
        if m:
            row.update(mean=float(m[1]), kidney=float(m[2]), tumor=float(m[3]))
            log(f"  {tag}: mean {m[1]} kidney {m[2]} tumor {m[3]}")
        SUMMARY["runs"][tag] = row
        return row.get("mean")

    calibrate(a.method)
    means: dict[str, float | None] = {}
    for prec in a.runs.split(","):
        if time.time() - T0 > a.deadline_s:
            log(f"deadline: {prec} not run")
            continue
        means[prec] = accuracy(prec, f"{prec}" + (f" ({a.method})" if prec == "fp8" else ""))
    ref, q = means.get("fp32"), means.get("fp8")
    if ref and q:
        SUMMARY["ratio"] = {a.method: q / ref}
        log(f"fp8 / fp32 = {q:.5f} / {ref:.5f} = {100 * q / ref:.3f} % (target >= 99.9 %)")
        if q < 0.999 * ref and a.fallback_method and time.time() - T0 < a.deadline_s:
            calibrate(a.fallback_method)
            q2 = accuracy("fp8", f"fp8 ({a.fallback_method})")
            if q2:
                SUMMARY["ratio"][a.fallback_method] = q2 / ref
                log(f"fp8 ({a.fallback_method}) / fp32 = {100 * q2 / ref:.3f} %")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "e2e_summary.json").write_text(json.dumps(SUMMARY, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
