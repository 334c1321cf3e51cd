"""A submitter's whole path through the product's own CLI, end to end, on one machine:

    phantom KiTS19 set -> unet3d preprocess -> unet3d calibrate -> [measure] -> unet3d run Offline
    PerformanceOnly (full length) -> AccuracyOnly -> PerformanceOnly --audit_test=TEST01 ->
    unet3d submission stage -> unet3d submission check (built-in pre-check + MLCommons' checker)

Every step is a `python -m core ...` command in its own process, as a submitter types it; this script
only orders them, times them and keeps their output. ``--measure`` first runs a short (labelled,
never staged) Offline run whose throughput sizes the full runs (core.harness.settings.expected).
``--gate FILE`` makes the timed runs wait until FILE exists (the caller finishes other GPU work
first). Progress goes to OUT/e2e_submission.log and OUT/progress.json; at the end OUT holds the staged
tree (tar.gz: truncated accuracy logs), the checker's output and `unet3d history --json`.

On the H200 (``--shared``: a copy of the shared folder's kits19/, tools/ and models/):

    python bench/e2e_submission.py --shared DIR --work /tmp/sub --out OUT --checker DIR/inference \
        --backend torch --precision fp8 --batch 8 --streams 2 --jobs 16 --measure 20

Rehearsal on a CPU (the demo workspace, ort/fp32, shortened runs):

    python bench/e2e_submission.py --demo --work /tmp/sub --out OUT --checker DIR/inference \
        --backend ort --precision fp32 --batch 1 --min-duration 10 --min-query-count 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.e2e_cli import phantom_workspace  # noqa: E402 - after the path insert

T0 = time.time()
STEPS: list[dict[str, Any]] = []


class Run:
    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env = out, env
        self.log = (out / "e2e_submission.log").open("a", buffering=1)

    def say(self, msg: str) -> None:
        line = f"[{time.time() - T0:7.1f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def step(self, name: str, cmd: list[str], *, ok: tuple[int, ...] = (0,)) -> int:
        """Run one command, its output into OUT/<name>.txt; record its exit code and wall time."""
        t = time.time()
        self.say(f"{name}: {' '.join(cmd[2:] if cmd[:2] == [sys.executable, '-m'] else cmd)}")
        row: dict[str, Any] = {"step": name, "started_s": round(t - T0, 1), "status": "running"}
        STEPS.append(row)
        self.progress()
        with (self.out / f"{name}.txt").open("w") as fh:
            p = subprocess.run(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        status = "ok" if p.returncode in ok else "failed"
        row.update(rc=p.returncode, wall_s=round(time.time() - t, 1), status=status)
        tail = (self.out / f"{name}.txt").read_text(errors="replace").strip().splitlines()[-4:]
        lines = "".join(f"\n    {x}" for x in tail)
        self.say(f"{name}: exit {p.returncode} in {row['wall_s']:.0f} s{lines}")
        self.progress()
        return p.returncode

    def progress(self) -> None:
        doc = {"elapsed_s": round(time.time() - T0, 1), "steps": STEPS}
        (self.out / "progress.json").write_text(json.dumps(doc))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--shared", type=Path, help="copy of the shared kits19/, tools/, models/ (phantom set)")
    src.add_argument("--demo", action="store_true", help="the demo workspace (4 synthetic cases, CPU)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checker", type=Path, help="a checkout of mlcommons/inference (its checker is run)")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--precision", default="fp8")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--streams", type=int, default=1, help="--gpu_inference_streams")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--measure", type=float, default=0.0, help="seconds of a sizing run first (0: none)")
    ap.add_argument("--min-duration", type=float, help="shortened runs (labelled; never compliant)")
    ap.add_argument("--min-query-count", type=int, help="shortened runs")
    ap.add_argument("--gate", type=Path, help="the timed runs wait until this file exists (FILE.ready "
                    "is written when the data, model and calibration are in place)")
    ap.add_argument("--expected-qps", type=Path, help="a file holding the Offline samples/s measured "
                    "beforehand (read after the gate): --offline_expected_qps of the first full run")
    ap.add_argument("--submitter", default="unet3d-console")
    ap.add_argument("--system-name", default="")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    ws = a.work / "ws"
    env = {**os.environ, "UNET3D_WORKSPACE": str(ws), "PYTHONUNBUFFERED": "1"}
    if a.shared:
        env["DATA_DIR"] = str(a.work / "raw")
    r = Run(a.out, env)
    cli = [sys.executable, "-m", "core"]

    # the data and the model
    if a.demo:
        if r.step("demo", [*cli, "demo", f"--workspace={ws}", "--skip_performance"]) != 0:
            return 1
    else:
        phantom_workspace(a.shared, a.work / "raw", ws, a.jobs, env, r.say)
        if r.step("preprocess", [*cli, "preprocess", "--jobs", str(a.jobs)]) != 0:
            return 1
    if a.precision in ("int8", "fp8") and r.step("calibrate", [*cli, "calibrate"]) != 0:
        return 1

    if a.gate is not None:
        a.gate.with_name(a.gate.name + ".ready").touch()
        r.say(f"waiting for {a.gate}")
        while not a.gate.exists():
            time.sleep(1.0)
        r.say("gate open")
    qps = a.expected_qps.read_text().strip() if a.expected_qps and a.expected_qps.is_file() else ""
    run = [*cli, "run", "--scenarios=Offline", f"--backend={a.backend}", f"--precision={a.precision}",
           f"--gpu_batch_size={a.batch}"]  # fmt: skip
    if a.streams > 1:
        run.append(f"--gpu_inference_streams={a.streams}")
    short = [f"--min_duration={a.min_duration:g}"] if a.min_duration else []
    short += [f"--min_query_count={a.min_query_count}"] if a.min_query_count else []
    if a.measure:  # sizes the full runs: the next run's expected QPS comes from this one's throughput
        r.step("measure", [*run, "--test_mode=PerformanceOnly", f"--min_duration={a.measure:g}"], ok=(0, 1))
    # exit 1 (INVALID, or accuracy under the official target: the phantom model's) still gets staged
    perf = [*run, "--test_mode=PerformanceOnly"]
    sized = [f"--offline_expected_qps={float(qps):g}"] if qps else []  # the later runs: from this one
    failed = r.step("performance", [*perf, *sized, *short], ok=(0, 1))
    failed |= r.step("accuracy", [*run, "--test_mode=AccuracyOnly"], ok=(0, 1))
    failed |= r.step("test01", [*perf, "--audit_test=TEST01", *short], ok=(0, 1))

    sub = a.work / "submission"
    name = a.system_name or f"{a.backend}_{a.precision}_b{a.batch}"
    r.step("stage", [*cli, "submission", "stage", "--out", str(sub), "--submitter", a.submitter,
                     "--system-name", name, "--force"])  # fmt: skip
    check = [*cli, "submission", "check", str(sub)] + (["--checker", str(a.checker)] if a.checker else [])
    r.step("check", check, ok=(0, 1))
    r.step("history", [*cli, "history", "--json"])
    if sub.is_dir():
        with tarfile.open(a.out / "submission.tar.gz", "w:gz") as tar:
            tar.add(sub, arcname="submission")
    r.say("done")
    r.progress()
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
