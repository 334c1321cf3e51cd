"""The console under a long streaming run (opt-in; the test suite runs 12 s of it).

    nice .venv/bin/python tools/console_load.py [--seconds 600] [--rate 200]

Runs tests/test_reliability_console.py's scenario (a fake run streaming ``rate`` samples/s through the
real RunEvents / LiveFeed / message path while a Pilot switches screens, opens the palette and resizes)
and prints the UI heartbeat gaps, the UI thread's CPU per gap (worst per action: switch, palette,
resize, monitor redraw) and the RSS over time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def main(seconds: float, rate: float) -> None:
    from console import textual_compat
    from console.app import UnetConsole
    from core import config as core_config
    from core.workspace import Workspace
    from tests.test_reliability_console import SIZE, StreamingJobs, load_scenario, report

    with tempfile.TemporaryDirectory() as tmp:
        core_config.SEARCH_DIRS_OVERRIDE = [Path(tmp) / "no-config"]
        jobs = StreamingJobs(seconds=seconds, rate=rate)
        app = UnetConsole(Workspace.resolve(Path(tmp) / "ws", env={}), jobs=jobs, status_interval=0)
        async with app.run_test(size=SIZE) as pilot:
            out = await load_scenario(app, pilot, jobs)
            ev = jobs.events
            bounded = (
                ev is not None and len(ev._samples) <= ev.maxlen and len(app.logs) <= (app.logs.maxlen or 0)
            )
        print(report(out, jobs.sent, seconds))
        print(f"buffers within their bounds: {bounded}")
        print(textual_compat.state().summary())  # the figures depend on whether the patches applied
        heap = app.heap
        print(f"console.heap: {heap.freezes} freezes, {heap.full_collections} full collections")
        for kind in ("freeze", "full"):
            took = [d * 1e3 for _t, k, d, _n in heap.log if k == kind]
            if took:
                mid = sorted(took)[len(took) // 2]
                print(f"  {kind}: {len(took)} logged, {min(took):.0f}-{max(took):.0f} ms (median {mid:.0f})")
        rss = out["rss"]
        half = [r for t, r in rss if t >= rss[-1][0] / 2]
        print(f"RSS over the second half: {half[0]:.1f} -> {half[-1]:.1f} MB (max {max(half):.1f})")
        for t, r in rss[:: max(1, len(rss) // 12)]:
            print(f"  t={t:6.0f} s  RSS {r:6.1f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=500.0)
    a = ap.parse_args()
    asyncio.run(main(a.seconds, a.rate))
