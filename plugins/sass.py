"""What a compiled kernel's machine code holds, read without a GPU: Triton compiles for sm_90 on any
machine and its wheel carries cuobjdump. Used by bench/sass_report.py and the kernel tests (wgmma,
ldmatrix and TMA counts; registers, stack, shared memory)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

# wgmma (IGMMA int8, QGMMA e4m3, HGMMA fp16), mma.sync, ldmatrix, TMA loads, cp.async, barriers, local memory
WATCH = ("IGMMA", "QGMMA", "HGMMA", "IMMA", "HMMA", "LDSM", "UTMALDG", "LDGSTS", "BAR.SYNC", "LDL", "STL")


def _tool(name: str) -> str:
    import triton.backends.nvidia as nv

    return str(Path(nv.__file__).parent / "bin" / name)


def sass_counts(cubin: bytes) -> tuple[Counter[str], dict[str, int], str]:
    """(instruction counts by watched prefix, resource usage {REG, STACK, SHARED, LOCAL}, SASS text)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([_tool("cuobjdump"), "--dump-sass", str(path)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
        res = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", str(path)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)", sass)
    counts: Counter[str] = Counter()
    for op in ops:
        for w in WATCH:
            if op.startswith(w):
                counts[w] += 1
    usage = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", res)}
    return counts, usage, sass
