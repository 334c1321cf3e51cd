"""The console under a long streaming run (opt-in; the test suite runs 12 s of it).

    nice .venv/bin/python tools/console_load.py [--seconds 600] [--rate 200]

Runs tests/test_reliability_console.py's streaming scenario (a fake run streaming ``rate`` samples/s
through the real RunEvents / LiveFeed / message path while a Pilot switches screens, opens the
palette and resizes) for ``seconds``, through pytest with UNET3D_LOAD_SECONDS / UNET3D_LOAD_RATE, and
shows what it prints: the UI heartbeat gaps, the UI thread's CPU per gap (worst per action: switch,
palette, resize, monitor redraw), console.heap's collections and the RSS over time. The exit status
is the test's: a freeze of a second, a buffer over its bound or a growing RSS fails it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/test_reliability_console.py::test_console_stays_responsive_and_bounded_under_a_streaming_run"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=500.0)
    a = ap.parse_args(argv)
    env = {**os.environ, "UNET3D_LOAD_SECONDS": str(a.seconds), "UNET3D_LOAD_RATE": str(a.rate)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
