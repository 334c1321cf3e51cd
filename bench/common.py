"""Shared helpers of the bench scripts: width presets, random-weight activation ranges for int8/fp8
engines, and table / header printing. The models are core.model.build_random_model's (the one
MLPerf-topology generator), the workload shapes core.benchmark.INFERENCE_SHAPES.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from core.model import FULL_WIDTHS, PHANTOM_WIDTHS, TINY_WIDTHS

WIDTH_PRESETS = {"full": FULL_WIDTHS, "half": PHANTOM_WIDTHS, "tiny": TINY_WIDTHS}


def parse_widths(text: str | Sequence[int]) -> tuple[int, ...]:
    """'full' | 'half' | 'tiny' | '32,64,128,256,320' -> 5 widths."""
    if not isinstance(text, str):
        widths = tuple(int(w) for w in text)
    elif text in WIDTH_PRESETS:
        widths = WIDTH_PRESETS[text]
    else:
        widths = tuple(int(w) for w in text.split(","))
    if len(widths) != 5 or min(widths) < 1:
        raise ValueError(f"widths must be 5 positive integers or one of {', '.join(WIDTH_PRESETS)}: {text}")
    return widths


# --- printing -----------------------------------------------------------------------------------


def device_description(device: str) -> str:
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            idx = torch.device(device).index or 0
            p = torch.cuda.get_device_properties(idx)
            return (
                f"{device} {p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
            )
        cpu = platform.processor() or platform.machine()
        return f"cpu ({cpu}, {torch.get_num_threads()} threads), torch {torch.__version__}"
    except ImportError:
        return f"{device} (torch not installed)"


def print_header(title: str, device: str) -> None:
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    print(f"# {title}")
    print(f"# command: {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"# device:  {device_description(device)}")
    print(f"# date:    {now}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(n) for h, n in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (n + 2) for n in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.rjust(n) for c, n in zip(r, widths, strict=True)) + " |")


def synthetic_amax(model: Any, device: object = "cpu", windows: int = 1, seed: int = 0) -> dict:
    """Activation ranges of ``model`` (surgered names, as core.calibration records them) from random
    windows: enough to build int8/fp8 engines for speed measurements, meaningless for accuracy."""
    import torch

    from core.backends.torch.convert import convert, prepare, surgered
    from core.benchmark import INT8_INPUT_AMAX_DEFAULT
    from core.calibration import Collector

    net = prepare(convert(surgered(model), fuse_relu=False), device, torch.float32)
    col = Collector(net, histograms=False)
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.inference_mode():
        for _ in range(windows):
            x = torch.randn((1, 1, 128, 128, 128), generator=g).clamp_(-2.2, 2.64).to(device)
            col.observe(net.input_name, x)
            net(x)
    col.close()
    amax = col.amax("minmax")
    amax[net.input_name] = INT8_INPUT_AMAX_DEFAULT
    return amax


# --- the torch backend's engines, for the benches --------------------------------------------------


def fused_torch_engine(
    model: Any,
    precision: str,
    batch: int,
    device: Any,
    amax: dict[str, float],
) -> tuple[Any, str]:
    """(engine, path): the torch backend's own engine around the fused executor for an original-form
    model (``make_engine(executor="fused")``: what ``unet3d run`` loads), with its CUDA graphs."""
    from core.backends.torch.engine import make_engine

    eng = make_engine(
        model, precision=precision, batch_size=batch, device=device, amax=amax, executor="fused"
    )
    return eng, "make_engine(executor=fused) -> TorchEngine (CUDA graph replay)"


def recapture_engine(eng: Any) -> Any:
    """A second TorchEngine around the same window function, captured again (on CUDA): kernel choices
    made at call time (plugins.ops' UNET3D_GLUON_CONV) are then what the environment says now."""
    from core.backends.torch.engine import TorchEngine
    from core.backends.torch.nodes import Kernels

    return TorchEngine(
        eng.net, precision=eng.precision, batch_size=eng.batch_size, device=eng.device,
        kernels=Kernels(True), cuda_graphs=True, input_amax=eng.input_amax, fn=eng._fn,
    )  # fmt: skip
