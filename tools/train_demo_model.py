"""How the shipped demo model (core/data/demo_model.onnx) was made.

A SMALL 3D-UNet with exactly the MLPerf topology (benchmark spec section 7.1: input block 1->w1,
four stride-2 down blocks, a stride-2 bottleneck, five up blocks of ConvTranspose(k2, s2) +
Concat(upsampled, skip) + two conv blocks, conv blocks = Conv3d(k3, no bias) -> InstanceNorm3d(affine)
-> ReLU, a 1x1x1 output conv with bias): plugins.reference.UNet3D at core.model.TINY_WIDTHS, trained
with torch on CPU on the project's phantoms (core.synthetic) preprocessed with the one preprocessing
(core.preprocess.preprocess_case): random crops with foreground oversampling, cross-entropy + soft Dice.

It is exported like the official file (opset 12, ``input`` [batch_size,1,128,128,128] float32 ->
``output``, dynamic axis ``batch_size``, do_constant_folding False, TorchScript exporter) and then
scored with the benchmark's own sliding window (core.sliding_window) and DICE (core.accuracy.dice) on
the demo's inference cases (core.synthetic.write_demo_dataset's cases, seed 0). The measured FP32 DICE
goes to ``<model>.fp32_dice.json`` (key ``mean``), which core.accuracy uses as the FP32 reference.

    nice -n 10 .venv/bin/python tools/train_demo_model.py --out core/data/demo_model.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from torch import nn  # noqa: E402

from core.model import TINY_WIDTHS  # noqa: E402 - the demo model's widths
from plugins.reference import UNet3D  # noqa: E402 - the one torch model of the MLPerf topology

# --------------------------------------------------------------------------- data


def load_training_cases(n: int, seed: int, cache: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Phantom cases (core.synthetic) through the benchmark preprocessing, cached as .npz."""
    from core.preprocess import preprocess_case
    from core.synthetic import iter_cases, training_names

    cache.mkdir(parents=True, exist_ok=True)
    names = training_names(n)
    out = []
    todo = [nm for nm in names if not (cache / f"{nm}_s{seed}.npz").exists()]
    gen = dict(iter_cases(todo, seed=seed)) if todo else {}
    for name in names:
        path = cache / f"{name}_s{seed}.npz"
        if not path.exists():
            image, label, spacing, _affine = gen[name]
            img, lab, _meta = preprocess_case(image, label, spacing)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, image=img.astype(np.float32), label=lab.astype(np.uint8))
            os.replace(tmp, path)
            print(f"  preprocessed {name} -> {img.shape}", flush=True)
        with np.load(path) as z:
            out.append((z["image"], z["label"]))
    return out


def foreground(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel coordinates of kidney+tumour and of tumour alone (computed once per case)."""
    return np.argwhere(label[0] > 0).astype(np.int16), np.argwhere(label[0] == 2).astype(np.int16)


def random_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    label: np.ndarray,
    fg: tuple[np.ndarray, np.ndarray],
    size: int,
    fg_prob: float,
    tumor_prob: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A size^3 crop; with probability fg_prob near a random kidney/tumour voxel (a tumour voxel with
    probability tumor_prob)."""
    dims = image.shape[1:]
    if rng.random() < fg_prob:
        pts = fg[1] if (rng.random() < tumor_prob and len(fg[1])) else fg[0]
        centre = pts[rng.integers(len(pts))] if len(pts) else np.array(dims) // 2
        jitter = rng.integers(-size // 4, size // 4 + 1, 3)
        lo = [
            int(np.clip(c - size // 2 + j, 0, d - size)) for c, j, d in zip(centre, jitter, dims, strict=True)
        ]
    else:
        lo = [int(rng.integers(0, d - size + 1)) for d in dims]
    sl = (slice(None), *(slice(a, a + size) for a in lo))
    img, lab = image[sl], label[sl]
    for axis in (1, 2, 3):  # flips: kidneys sit on both sides anyway
        if rng.random() < 0.5:
            img, lab = np.flip(img, axis), np.flip(lab, axis)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def loss_fn(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(Weighted) cross-entropy + soft Dice over kidney and tumour (batch Dice, smooth 1)."""
    ce = F.cross_entropy(logits, target, weight=class_weight)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, 3).permute(0, 4, 1, 2, 3).to(prob.dtype)
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1.0 - dice[1:].mean())


# --------------------------------------------------------------------------- export and evaluation


def load_onnx_weights(model: nn.Module, path: Path) -> None:
    """Continue training from an exported file: its initializers carry the state-dict names."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    state = model.state_dict()
    missing = [k for k in state if k not in inits and not k.endswith(("running_mean", "running_var"))]
    if missing:
        raise SystemExit(f"{path}: no initializer for {missing[:3]}")
    model.load_state_dict(
        {k: torch.from_numpy(inits[k].copy()) if k in inits else v for k, v in state.items()}
    )


def export_onnx(model: nn.Module, path: Path) -> None:
    """Exactly like the official dynbatch file: opset 12, TorchScript exporter, no constant folding."""
    model.eval()
    dummy = torch.zeros(1, 1, 128, 128, 128)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        (dummy,),
        str(tmp),
        opset_version=12,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}},
        do_constant_folding=False,
        dynamo=False,
    )
    # node names as in the official file (older torch exporters): <OpType>_<index>, e.g. Conv_0,
    # ConvTranspose_36; NVIDIA's calibration caches and surgery notes refer to these
    import onnx

    m = onnx.load(str(tmp))
    for i, node in enumerate(m.graph.node):
        node.name = f"{node.op_type}_{i}"
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp))
    os.replace(tmp, path)


class _OrtEngine:
    """Minimal engine over onnxruntime (used only if core.backends.ort is not in the tree)."""

    name, precision, batch_size = "ort", "fp32", 1

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def infer(self, windows: np.ndarray) -> np.ndarray:
        return self.sess.run(["output"], {"input": windows.astype(np.float32)})[0]

    def close(self) -> None:
        pass


def evaluate(onnx_path: Path, n_cases: int, seed: int, threads: int) -> dict:
    """DICE of the exported model on the demo's inference cases, with the benchmark's sliding window."""
    from core.accuracy import dice
    from core.preprocess import preprocess_case
    from core.sliding_window import segment
    from core.synthetic import iter_cases

    try:
        from core.backends import get_backend

        engine = get_backend("ort").load(onnx_path, precision="fp32", batch_size=1)
    except Exception:
        engine = _OrtEngine(onnx_path, threads)
    names = [f"case_{i:05d}" for i in range(n_cases)]
    rows = []
    for name, (image, label, spacing, _aff) in iter_cases(names, seed=seed):
        img, lab, _ = preprocess_case(image, label, spacing)
        pred = segment(img, engine, batch_size=1)
        k, t = dice(pred, lab[0])
        rows.append({"case": name, "kidney": k, "tumor": t, "composite": (k + t) / 2})
        print(f"  eval {name} {img.shape[1:]}: kidney {k:.4f} tumor {t:.4f}", flush=True)
    engine.close()
    kidney = float(np.mean([r["kidney"] for r in rows]))
    tumor = float(np.mean([r["tumor"] for r in rows]))
    return {"mean": (kidney + tumor) / 2, "kidney": kidney, "tumor": tumor, "cases": rows}


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "core" / "data" / "demo_model.onnx"))
    ap.add_argument("--widths", default=",".join(map(str, TINY_WIDTHS)))
    ap.add_argument("--train_cases", type=int, default=16)
    ap.add_argument("--train_seed", type=int, default=7)
    ap.add_argument("--eval_cases", type=int, default=4, help="the demo's inference cases (seed 0)")
    ap.add_argument("--eval_seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--final_frac", type=float, default=0.15, help="last part of training on larger crops")
    ap.add_argument("--final_crop", type=int, default=96)
    ap.add_argument("--max_minutes", type=float, default=45.0, help="wall-clock cap (busy machine)")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--fg_prob", type=float, default=0.7)
    ap.add_argument("--tumor_prob", type=float, default=0.5, help="foreground crops centred on tumour")
    ap.add_argument("--tumor_weight", type=float, default=1.0, help="cross-entropy weight of class 2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(ROOT / ".dev" / "data" / "demo_train"))
    ap.add_argument("--time_only", type=int, default=0, help="time N steps and exit")
    ap.add_argument("--init_from", help="start from the weights of an ONNX file this script exported")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    widths = tuple(int(w) for w in args.widths.split(","))
    out = Path(args.out)
    t_start = time.time()

    print(f"data: {args.train_cases} phantom cases (seed {args.train_seed})", flush=True)
    cases = load_training_cases(args.train_cases, args.train_seed, Path(args.cache))
    fgs = [foreground(lab) for _img, lab in cases]
    t_data = time.time() - t_start

    if len(widths) != 5:
        raise SystemExit("--widths: need 5 widths (input block, down blocks 1-4; bottleneck = the last)")
    model = UNet3D(widths, random_affine=False)  # torch's InstanceNorm init (1, 0), as trained
    if args.init_from:
        load_onnx_weights(model, Path(args.init_from))
        print(f"weights from {args.init_from}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: widths {widths}, {n_params:,} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    class_weight = torch.tensor([1.0, 1.0, args.tumor_weight])
    steps = args.time_only or args.steps
    budget = args.max_minutes * 60
    t0 = time.time()
    losses: list[float] = []
    done = 0
    model.train()
    for step in range(steps):
        # progress by steps or by the time budget, whichever is further: on a busy shared machine
        # the schedule (warm-up, cosine decay, final large-crop phase) still completes in time
        frac = max(step / steps, (time.time() - t0) / budget)
        if step and step % 100 == 0:
            print(f"  progress {frac:.2f} (cpu {time.process_time():.0f}s)", flush=True)
        if frac >= 1.0:
            print(f"time budget reached after {done} steps", flush=True)
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * frac))
        # most steps on small crops (cheap); the last ones on larger crops, so that the deep
        # InstanceNorms see statistics closer to a 128^3 window's
        final = frac >= 1.0 - args.final_frac
        crop, batch = (args.final_crop, 1) if final else (args.crop, args.batch)
        xs, ys = [], []
        for _ in range(batch):
            k = int(rng.integers(len(cases)))
            x, y = random_crop(rng, cases[k][0], cases[k][1], fgs[k], crop, args.fg_prob, args.tumor_prob)
            xs.append(x)
            ys.append(y[0])
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        loss = loss_fn(model(x), y, class_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 10 == 0 or done == steps:
            el = time.time() - t0
            print(
                f"step {done}/{steps} loss {np.mean(losses[-10:]):.4f} {el:.0f}s ({el / done:.2f} s/step)",
                flush=True,
            )
    t_train = time.time() - t0
    if args.time_only:
        return 0

    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out)
    from core.fsio import sha256_file, write_text_atomic

    sha = sha256_file(out)
    print(f"exported {out} ({out.stat().st_size:,} bytes, sha256 {sha[:16]})", flush=True)
    t1 = time.time()
    scores = evaluate(out, args.eval_cases, args.eval_seed, args.threads)
    t_eval = time.time() - t1
    print(
        f"FP32 DICE on the demo cases: mean {scores['mean']:.5f} kidney {scores['kidney']:.4f} "
        f"tumor {scores['tumor']:.4f}",
        flush=True,
    )

    doc = {
        "mean": round(scores["mean"], 6),
        "kidney": round(scores["kidney"], 6),
        "tumor": round(scores["tumor"], 6),
        "what": "FP32 mean DICE of this model on the demo's inference cases (core.synthetic, seed "
        f"{args.eval_seed}, case_00000..case_{args.eval_cases - 1:05d}), ORT, core.sliding_window",
        "cases": [
            {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in scores["cases"]
        ],
        "model": {
            "file": out.name,
            "sha256": sha,
            "bytes": out.stat().st_size,
            "parameters": n_params,
            "topology": "MLPerf 3D-UNet (spec 7.1) with widths " + ",".join(map(str, widths)),
            "onnx": "opset 12, input [batch_size,1,128,128,128] float32 -> output, do_constant_folding False",
        },
        "training": {
            "script": "tools/train_demo_model.py",
            "data": f"{args.train_cases} core.synthetic phantoms (training_names, seed {args.train_seed}), "
            "core.preprocess.preprocess_case",
            "steps": done,
            "crop": args.crop,
            "batch": args.batch,
            "final_frac": args.final_frac,
            "max_minutes": args.max_minutes,
            "final_crop": args.final_crop,
            "lr": args.lr,
            "fg_prob": args.fg_prob,
            "tumor_prob": args.tumor_prob,
            "tumor_weight": args.tumor_weight,
            "loss": "cross-entropy + soft Dice (kidney, tumour)",
            "optimizer": "AdamW, 20-step warm-up, cosine decay",
            "seed": args.seed,
            "init_from": Path(args.init_from).name if args.init_from else None,
            "final_loss": round(float(np.mean(losses[-10:])), 5) if losses else None,
            "seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "eval": round(t_eval, 1)},
            "cpu_seconds": round(time.process_time(), 1),
            "threads": args.threads,
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
    }
    meta = out.with_name(out.stem + ".fp32_dice.json")
    write_text_atomic(meta, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {meta}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
