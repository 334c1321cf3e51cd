"""Shared helpers of the bench scripts: an MLPerf-topology ONNX generator with random weights, FLOP
counting from the graph, the Section-3 workload shapes, and table / header printing.

The generator writes the exact 3D-UNet KiTS19 topology (spec section 7.1) at any channel widths:
input block, 4 stride-2 down blocks, a stride-2 bottleneck, 5 up blocks (ConvTranspose k2 s2 with
bias -> Concat(upsampled, skip) -> 2 conv blocks) and a 1x1x1 output conv, every conv block being
Conv (no bias) -> InstanceNormalization -> Relu. Node names follow the numbering of the official
export (``Conv_0`` ... ``ConvTranspose_36/44/52/60/68``) so the decoder names line up with NVIDIA's.
Weights are He-initialised (speed does not depend on them; tests use two seeds as two "models").
"""

from __future__ import annotations

import datetime as _dt
import itertools
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FULL_WIDTHS = (32, 64, 128, 256, 320)
HALF_WIDTHS = (16, 32, 64, 128, 160)  # the shared phantom model's widths
TINY_WIDTHS = (4, 8, 8, 8, 8)
WIDTH_PRESETS = {"full": FULL_WIDTHS, "half": HALF_WIDTHS, "tiny": TINY_WIDTHS}

# (D, H, W) of the 43 inference cases after preprocessing (spec section 3.1), in case-list order.
INFERENCE_SHAPES: tuple[tuple[int, int, int], ...] = (
    (192, 384, 384), (192, 384, 384), (256, 448, 448), (320, 320, 320), (256, 320, 320),
    (256, 256, 256), (320, 384, 384), (128, 320, 320), (320, 384, 384), (192, 384, 384),
    (192, 384, 384), (256, 320, 320), (128, 448, 448), (192, 320, 320), (320, 384, 384),
    (192, 320, 320), (192, 320, 320), (192, 384, 384), (256, 320, 320), (320, 448, 448),
    (320, 320, 320), (128, 320, 320), (320, 320, 320), (320, 320, 320), (128, 320, 320),
    (320, 448, 448), (320, 384, 384), (128, 320, 320), (192, 384, 384), (128, 192, 320),
    (192, 384, 384), (320, 256, 256), (320, 320, 320), (384, 320, 320), (320, 448, 448),
    (384, 384, 384), (256, 256, 256), (448, 320, 320), (448, 320, 320), (384, 256, 256),
    (192, 384, 384), (448, 320, 320), (384, 384, 384),
)  # fmt: skip


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


def make_unet3d_onnx(
    widths: Sequence[int] = FULL_WIDTHS,
    *,
    seed: int = 0,
    classes: int = 3,
    dynamic_batch: bool = True,
    epsilon: float = 1e-5,
    spatial: int | None = 128,
) -> onnx.ModelProto:
    """The MLPerf 3D-UNet topology at ``widths`` with random He-init weights, opset 12.
    ``spatial=None`` declares symbolic D, H, W (any multiple of 32 runs; tests use small inputs)."""
    w = tuple(int(x) for x in widths)
    if len(w) != 5:
        raise ValueError(f"need 5 widths, got {w}")
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def name(op: str) -> str:
        n = f"{op}_{counter[0]}"
        counter[0] += 1
        return n

    def init(n: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(a.astype(np.float32), n))
        return n

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    def block(x: str, cin: int, cout: int, stride: int) -> str:
        c = name("Conv")
        wt = init(f"{c}.weight", he((cout, cin, 3, 3, 3), cin * 27))
        nodes.append(
            helper.make_node(
                "Conv", [x, wt], [f"{c}__output"], c,
                dilations=[1, 1, 1], group=1, kernel_shape=[3, 3, 3],
                pads=[1, 1, 1, 1, 1, 1], strides=[stride] * 3,
            )
        )  # fmt: skip
        i = name("InstanceNormalization")
        g = init(f"{i}.scale", 1.0 + 0.1 * rng.standard_normal(cout))
        b = init(f"{i}.bias", 0.1 * rng.standard_normal(cout))
        nodes.append(
            helper.make_node(
                "InstanceNormalization", [f"{c}__output", g, b], [f"{i}__output"], i, epsilon=epsilon
            )
        )
        r = name("Relu")
        nodes.append(helper.make_node("Relu", [f"{i}__output"], [f"{r}__output"], r))
        return f"{r}__output"

    x = block("input", 1, w[0], 1)
    x = block(x, w[0], w[0], 1)
    skips = [x]
    for cin, cout in itertools.pairwise(w):
        x = block(x, cin, cout, 2)
        x = block(x, cout, cout, 1)
        skips.append(x)
    x = block(x, w[4], w[4], 2)  # bottleneck
    x = block(x, w[4], w[4], 1)
    ups = [(w[4], w[4]), (w[4], w[3]), (w[3], w[2]), (w[2], w[1]), (w[1], w[0])]
    for (cin, cout), skip in zip(ups, reversed(skips), strict=True):
        t = name("ConvTranspose")
        wt = init(f"{t}.weight", he((cin, cout, 2, 2, 2), cin))
        bt = init(f"{t}.bias", 0.1 * rng.standard_normal(cout))
        nodes.append(
            helper.make_node(
                "ConvTranspose", [x, wt, bt], [f"{t}__output"], t,
                dilations=[1, 1, 1], group=1, kernel_shape=[2, 2, 2], pads=[0] * 6, strides=[2, 2, 2],
            )
        )  # fmt: skip
        c = name("Concat")
        nodes.append(helper.make_node("Concat", [f"{t}__output", skip], [f"{c}__output"], c, axis=1))
        x = block(f"{c}__output", 2 * cout, cout, 1)
        x = block(x, cout, cout, 1)
    o = name("Conv")
    wt = init(f"{o}.weight", he((classes, w[0], 1, 1, 1), w[0]))
    bt = init(f"{o}.bias", 0.1 * rng.standard_normal(classes))
    nodes.append(
        helper.make_node(
            "Conv", [x, wt, bt], ["output"], o,
            dilations=[1, 1, 1], group=1, kernel_shape=[1, 1, 1], pads=[0] * 6, strides=[1, 1, 1],
        )
    )  # fmt: skip
    batch: str | int = "batch_size" if dynamic_batch else 1
    dhw: list[str | int] = ["D", "H", "W"] if spatial is None else [spatial] * 3
    graph = helper.make_graph(
        nodes,
        "unet3d_kits19",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, *dhw])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, classes, *dhw])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 12)], producer_name="unet3d-bench"
    )
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def write_unet3d_onnx(path: str | Path, widths: Sequence[int] = FULL_WIDTHS, *, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(make_unet3d_onnx(widths, seed=seed), str(path))
    return path


def param_count(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def window_gflop(widths: Sequence[int], roi: int = 128) -> float:
    """GFLOP (2 x MAC) of the convolutions and transposed convolutions for one roi^3 window
    (954.6 for the full widths, spec section 7.1)."""
    w = tuple(widths)
    macs = 0.0
    s = roi

    def conv(cin: int, cout: int, size: int, k: int = 27) -> float:
        return cin * cout * k * size**3

    macs += conv(1, w[0], s) + conv(w[0], w[0], s)
    for cin, cout in itertools.pairwise(w):
        s //= 2
        macs += conv(cin, cout, s) + conv(cout, cout, s)
    s //= 2
    macs += conv(w[4], w[4], s) * 2
    ups = [(w[4], w[4]), (w[4], w[3]), (w[3], w[2]), (w[2], w[1]), (w[1], w[0])]
    for cin, cout in ups:
        macs += cin * cout * 8 * s**3  # transposed conv: every input voxel feeds 8 outputs
        s *= 2
        macs += conv(2 * cout, cout, s) + conv(cout, cout, s)
    macs += w[0] * 3 * s**3
    return 2.0 * macs / 1e9


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


def synthetic_amax(model: onnx.ModelProto, device: object = "cpu", windows: int = 1, seed: int = 0) -> dict:
    """Activation ranges of ``model`` (surgered names, as core.calibration records them) from random
    windows: enough to build int8/fp8 engines for speed measurements, meaningless for accuracy."""
    import torch

    from core.backends import torch_cuda as tc
    from core.benchmark import INT8_INPUT_AMAX_DEFAULT
    from core.calibration import Collector

    net = tc.prepare(tc.convert(tc.surgered(model), fuse_relu=False), device, torch.float32)
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


def torch_backend_api() -> dict[str, Any]:
    """make_engine / TorchEngine / convert / load_onnx / Kernels / gemm_inputs of the torch backend,
    wherever the backend keeps them (found from the registered backend object's module and its package,
    so the benches follow a reorganisation of the backend)."""
    import importlib
    import pkgutil

    from core.backends import get_backend

    mod = sys.modules[type(get_backend("torch")).__module__]
    names = ("make_engine", "TorchEngine", "convert", "load_onnx", "Kernels", "gemm_inputs")
    found = {n: getattr(mod, n) for n in names if hasattr(mod, n)}
    pkg_name = mod.__name__ if hasattr(mod, "__path__") else mod.__name__.rpartition(".")[0]
    pkg = importlib.import_module(pkg_name)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg_name + "."):
        if len(found) == len(names):
            break
        try:
            sub = importlib.import_module(info.name)
        except Exception:  # another backend's module whose library is missing here
            continue
        found.update({n: getattr(sub, n) for n in names if n not in found and hasattr(sub, n)})
    missing = [n for n in names if n not in found]
    if missing:
        raise ImportError(f"torch backend: {', '.join(missing)} not found under {pkg_name}")
    return found


def fused_torch_engine(
    api: dict[str, Any],
    model: onnx.ModelProto,
    precision: str,
    batch: int,
    device: Any,
    amax: dict[str, float],
) -> tuple[Any, str, str]:
    """(engine, path, note): the torch backend's engine around the fused executor (plugins.unet) for an
    original-form model, with CUDA graphs on CUDA. Through ``make_engine(executor="fused")`` where the
    backend takes the precision; otherwise (int8 until the backend routes it) the same TorchEngine built
    here as the backend's fused branch builds it, with the calibration ranges turned into int8 scales."""
    from plugins.unet import INT8_INPUT_AMAX, FusedUNet3D, act_scales_from_amax

    try:
        eng = api["make_engine"](
            model, precision=precision, batch_size=batch, device=device, amax=amax, executor="fused"
        )
        return eng, "make_engine(executor=fused) -> TorchEngine (CUDA graph replay)", ""
    except Exception as exc:  # the backend refuses this precision for the fused executor
        note = f"make_engine({precision}, executor=fused) refused: {type(exc).__name__}: {exc}"
    m = api["load_onnx"](model)
    idx = {i: amax[t] for i, t in enumerate(api["gemm_inputs"](m)) if t in amax}
    input_amax = float(amax.get("input", INT8_INPUT_AMAX))
    f = FusedUNet3D.from_onnx(
        m, precision=precision, device=device, act_scales=act_scales_from_amax(idx, precision),
        input_amax=input_amax,
    )  # fmt: skip
    eng = api["TorchEngine"](
        api["convert"](m), precision=precision, batch_size=batch, device=device, kernels=api["Kernels"](True),
        cuda_graphs=True, input_amax=input_amax, fn=f,
    )  # fmt: skip
    return (
        eng,
        "TorchEngine(fn=FusedUNet3D) built as the backend's fused branch would (CUDA graph replay)",
        note,
    )


def recapture_engine(api: dict[str, Any], eng: Any) -> Any:
    """A second TorchEngine around the same window function, captured again (on CUDA): kernel choices
    made at call time (plugins.ops' UNET3D_GLUON_CONV) are then what the environment says now."""
    return api["TorchEngine"](
        eng.net, precision=eng.precision, batch_size=eng.batch_size, device=eng.device,
        kernels=api["Kernels"](True), cuda_graphs=True, input_amax=eng.input_amax, fn=eng._fn,
    )  # fmt: skip
