"""The project's own demo phantoms: small, deterministic KiTS19-layout cases with labels and imaging.

Each case is an abdomen-like volume in Hounsfield units (air, a body with subcutaneous fat, soft
tissue, spine, aorta, liver, bowel gas) with two kidneys (ellipsoids with a bright cortex and a darker
medulla, tilted at random) and a tumour blob growing out of one of them, blurred and with noise.
Labels are 0 background, 1 kidney, 2 tumour, on the raw grid.

Geometry is realistic (z 2.5-5 mm, in-plane 0.70-0.90 mm, KiTS19's affine sign pattern) but the field
of view is chosen so that after the benchmark preprocessing every case is 128 x (128|192) x 192:
2 or 4 sliding windows, so a CPU demo runs in minutes. A case is a pure function of its seed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from core.benchmark import TARGET_SPACING
from core.cases import CaseLists
from core.fsio import write_bytes_atomic
from core.jobs import NEVER, CancelToken, Progress, Reporter, null_reporter
from core.nifti import IMAGING, SEGMENTATION, save_volume

RECIPE = 1  # bump when the phantom changes; part of every case's random stream
MANIFEST = "synthetic.json"
Z_SPACINGS = (2.5, 3.0, 4.0, 5.0)

Array = np.ndarray
CaseData = tuple[Array, Array, tuple[float, float, float], Array]


def case_seed(seed: int, name: str) -> int:
    """The seed of one case of a dataset: distinct per (dataset seed, case name)."""
    return zlib.crc32(f"{seed}:{name}".encode())


def kits_affine(spacing: Sequence[float]) -> Array:
    """KiTS19's affine: axis 0 -> -z spacing (third world axis), axes 1, 2 -> -y, -x spacing."""
    sz, sy, sx = (float(s) for s in spacing)
    return np.array(
        [[0, 0, -sx, 0], [0, -sy, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]],
        dtype=np.float64,
    )


def _raw_shape(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Pick spacing and a raw shape whose zoomed length lands inside one final size bucket.

    Zoomed lengths 108..151 end as 128 and 172..211 as 192 (rule: 64*floor((len+32)/64), min 128).
    """
    sz = float(rng.choice(Z_SPACINGS))
    sxy = float(np.float32(rng.uniform(0.70, 0.90)))  # what the float32 header will hold
    zoomed = (
        int(rng.integers(112, 148)),
        int(rng.integers(116, 148)) if rng.random() < 0.5 else int(rng.integers(176, 208)),
        int(rng.integers(176, 208)),
    )
    spacing = (sz, sxy, sxy)
    shape = tuple(max(8, round(n * t / s)) for n, t, s in zip(zoomed, TARGET_SPACING, spacing, strict=True))
    return (shape[0], shape[1], shape[2]), spacing


def _axes_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[Array]:
    """Voxel-centre coordinates in mm, centred on the volume, as broadcastable (z, y, x) arrays."""
    out = []
    for axis, (n, s) in enumerate(zip(shape, spacing, strict=True)):
        c = ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s).astype(np.float32)
        view = [1, 1, 1]
        view[axis] = n
        out.append(c.reshape(view))
    return out


def _rotation(rng: np.random.Generator, max_deg: float) -> Array:
    """A small random rotation of (z, y, x) coordinates."""
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, -np.sin(b)], [0, 1, 0], [np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def _ellipsoid_q(zyx: list[Array], center: Array, axes: Array, rot: Array) -> Array:
    """(d/a)^2 summed in the ellipsoid's rotated frame: <= 1 inside."""
    d = [zyx[i] - center[i] for i in range(3)]
    q = np.zeros(np.broadcast_shapes(*(x.shape for x in d)), dtype=np.float32)
    for i in range(3):
        local = rot[i, 0] * d[0] + rot[i, 1] * d[1] + rot[i, 2] * d[2]
        q += (local / axes[i]) ** 2
    return q


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: int) -> Array:
    """Unit-std low-frequency noise: a coarse random grid upsampled linearly."""
    coarse = tuple(max(2, -(-n // cells)) for n in shape)
    g = rng.standard_normal(coarse).astype(np.float32)
    f = ndimage.zoom(g, [n / c for n, c in zip(shape, coarse, strict=True)], order=1, grid_mode=False)
    f = f[: shape[0], : shape[1], : shape[2]]
    if f.shape != tuple(shape):
        f = np.pad(f, [(0, n - m) for n, m in zip(shape, f.shape, strict=True)], mode="edge")
    return f / (f.std() + 1e-6)


def make_case(name: str, seed: int) -> CaseData:
    """One phantom case: (image int16 HU (D,H,W), label uint8 (D,H,W), spacing (z,y,x) mm, affine).

    ``name`` is only carried for messages; the content depends on ``seed`` alone.
    """
    del name
    rng = np.random.default_rng([RECIPE, seed])
    shape, spacing = _raw_shape(rng)
    zz, yy, xx = _axes_mm(shape, spacing)
    fov = np.array(shape, dtype=np.float32) * np.array(spacing, dtype=np.float32)
    vol = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    # body: an elliptic cylinder with a slowly varying radius along z, fat layer outside muscle
    ry, rx = fov[1] * rng.uniform(0.40, 0.46), fov[2] * rng.uniform(0.42, 0.47)
    cy, cx = rng.uniform(-4, 4), rng.uniform(-4, 4)
    swell = 1.0 + 0.04 * np.sin(zz / fov[0] * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, 6))
    body_q = ((yy - cy) / (ry * swell)) ** 2 + ((xx - cx) / (rx * swell)) ** 2
    fat = rng.uniform(6, 14)
    inner_q = ((yy - cy) / (ry * swell - fat)) ** 2 + ((xx - cx) / (rx * swell - fat)) ** 2
    body, inner = body_q <= 1.0, inner_q <= 1.0
    vol[np.broadcast_to(body, shape)] = -100.0
    soft = rng.uniform(35, 55) + 8.0 * _smooth_field(rng, shape, 12)
    vol = np.where(inner, soft, vol)

    # spine (cortical ring, trabecular core, discs every ~30 mm), aorta in front of it
    sp_y, sp_x = cy + ry * rng.uniform(0.50, 0.60), cx + rng.uniform(-3, 3)
    r_sp = min(ry, rx) * rng.uniform(0.16, 0.20)
    sp_d = np.hypot(yy - sp_y, xx - sp_x)
    disc = np.mod(zz - rng.uniform(0, 30), 30.0) < 6.0
    vol = np.where(sp_d <= r_sp, np.where(disc, 90.0, 1000.0), vol)
    vol = np.where(sp_d <= 0.8 * r_sp, np.where(disc, 90.0, 300.0), vol)
    ao_d = np.hypot(yy - (sp_y - 1.9 * r_sp), xx - (sp_x + 0.5 * r_sp))
    vol = np.where(ao_d <= 0.55 * r_sp, 190.0, vol)

    # liver on one side, upper part of the field; bowel loops with gas in front
    side = -1.0 if rng.random() < 0.8 else 1.0
    liv_c = np.array([fov[0] * rng.uniform(0.15, 0.35), cy - ry * 0.15, cx + side * rx * 0.45], np.float32)
    liv_a = np.array([fov[0] * 0.35, ry * 0.55, rx * 0.45], np.float32)
    liver = (_ellipsoid_q([zz, yy, xx], liv_c, liv_a, _rotation(rng, 10)) <= 1.0) & inner
    vol = np.where(liver, 62.0, vol)
    for _ in range(int(rng.integers(3, 6))):
        bc = np.array(
            [
                rng.uniform(-0.4, 0.4) * fov[0],
                cy - ry * rng.uniform(0.3, 0.6),
                cx + rx * rng.uniform(-0.5, 0.5),
            ]
        )
        br = np.array([rng.uniform(15, 30), rng.uniform(6, 12), rng.uniform(6, 12)], np.float32)
        bq = _ellipsoid_q([zz, yy, xx], bc.astype(np.float32), br, _rotation(rng, 30))
        vol = np.where((bq <= 1.0) & inner, np.where(bq <= 0.3, -850.0, 15.0), vol)

    # kidneys: posterior, either side of the spine, long axis roughly along z
    kid_axes = []
    for s in (-1.0, 1.0):
        c = np.array(
            [
                rng.uniform(-0.08, 0.08) * fov[0],
                sp_y - ry * rng.uniform(0.15, 0.25),
                sp_x + s * rx * rng.uniform(0.38, 0.48),
            ],
            np.float32,
        )
        a = np.array(
            [
                min(fov[0] * 0.33, rng.uniform(38, 52)),
                ry * rng.uniform(0.20, 0.26),
                rx * rng.uniform(0.14, 0.18),
            ],
            np.float32,
        )
        rot = _rotation(rng, 15)
        q = _ellipsoid_q([zz, yy, xx], c, a, rot)
        kid = q <= 1.0
        cortex = rng.uniform(160, 200)
        medulla = cortex - rng.uniform(25, 50)
        vol = np.where(kid, np.where(q > rng.uniform(0.45, 0.6), cortex, medulla), vol)
        label[kid] = 1
        kid_axes.append((c, a, rot))

    # tumour: a few overlapping spheres centred near the surface of one kidney
    c, a, rot = kid_axes[int(rng.integers(0, 2))]
    u = rng.standard_normal(3).astype(np.float32)
    u /= np.linalg.norm(u)
    t_center = c + rot.T @ (a * u * rng.uniform(0.75, 0.95))
    t_r = float(min(a) * rng.uniform(0.45, 0.8))
    tumour = np.zeros(shape, dtype=bool)
    for k in range(int(rng.integers(1, 4))):
        off = rng.standard_normal(3).astype(np.float32) * (0.35 * t_r if k else 0.0)
        r = t_r * (rng.uniform(0.6, 0.9) if k else 1.0)
        d2 = (
            (zz - t_center[0] - off[0]) ** 2
            + (yy - t_center[1] - off[1]) ** 2
            + (xx - t_center[2] - off[2]) ** 2
        )
        tumour |= d2 <= r * r
    tumour &= inner
    t_hu = rng.uniform(40, 100) + rng.uniform(10, 22) * _smooth_field(rng, shape, 3)
    if rng.random() < 0.5:  # a necrotic core in some tumours
        d2 = (zz - t_center[0]) ** 2 + (yy - t_center[1]) ** 2 + (xx - t_center[2]) ** 2
        t_hu = np.where(d2 <= (0.45 * t_r) ** 2, rng.uniform(15, 35), t_hu)
    vol = np.where(tumour, t_hu, vol)
    label[tumour] = 2

    # partial-volume blur (about 0.7 mm in-plane, a third of a slice through-plane), then noise
    vol = ndimage.gaussian_filter(vol, (0.35, 0.7 / spacing[1], 0.7 / spacing[2]), truncate=2.0)
    vol += rng.standard_normal(shape, dtype=np.float32) * rng.uniform(8, 15)
    image = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
    return image, label, spacing, kits_affine(spacing)


def write_case(case_dir: str | Path, data: CaseData) -> None:
    """Write one case in the KiTS19 layout (segmentation first: a case is complete once imaging exists)."""
    image, label, _spacing, affine = data
    case_dir = Path(case_dir)
    save_volume(case_dir / SEGMENTATION, label, affine)
    save_volume(case_dir / IMAGING, image, affine)


def iter_cases(names: Sequence[str], seed: int = 0) -> Iterator[tuple[str, CaseData]]:
    """Generate cases in memory (e.g. many training cases for the demo model), one at a time."""
    for name in names:
        yield name, make_case(name, case_seed(seed, name))


def training_names(n: int, start: int = 1000) -> list[str]:
    """Names for ``n`` training cases, away from the demo's inference/calibration names."""
    return [f"case_{start + i:05d}" for i in range(n)]


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and data.get("recipe") == RECIPE else {}
    except (OSError, ValueError):
        return {}


def write_cases(
    out_dir: str | Path,
    names: Sequence[str],
    seed: int = 0,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    task: str = "synthesize",
) -> None:
    """Write phantom cases to ``out_dir/<name>/``; skips cases already written with the same seed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = _read_manifest(manifest_path)
    seeds: dict[str, int] = dict(manifest.get("cases", {}))
    for i, name in enumerate(names):
        cancel.check()
        s = case_seed(seed, name)
        case_dir = out / name
        done = seeds.get(name) == s and (case_dir / IMAGING).is_file() and (case_dir / SEGMENTATION).is_file()
        if not done:
            write_case(case_dir, make_case(name, s))
            seeds[name] = s
            doc = {"recipe": RECIPE, "cases": dict(sorted(seeds.items()))}
            write_bytes_atomic(manifest_path, (json.dumps(doc, indent=1) + "\n").encode())
        report(Progress(task, i + 1, len(names), unit="case", item=name))


def write_demo_dataset(
    out_dir: str | Path,
    n_inference: int = 4,
    n_calibration: int = 2,
    seed: int = 0,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
) -> CaseLists:
    """Write a small demo dataset (KiTS19 layout) plus its inference/calibration case lists.

    Inference cases are case_00000.., calibration cases follow them; the lists written to
    ``out_dir`` replace the official ones when ``out_dir`` is the DATA_DIR.
    """
    if n_inference < 1 or n_calibration < 0:
        from core.errors import UsageError

        raise UsageError(f"need at least one inference case (got {n_inference}, {n_calibration})")
    inference = [f"case_{i:05d}" for i in range(n_inference)]
    calibration = [f"case_{n_inference + i:05d}" for i in range(n_calibration)]
    out = Path(out_dir)
    write_cases(out, inference + calibration, seed, report, cancel)
    lists = {"inference": inference, "calibration": calibration}
    for set_name, names in lists.items():  # written even when empty, so no official list leaks in
        text = json.dumps(names, indent=1) + "\n"
        write_bytes_atomic(out / f"{set_name}_cases.json", text.encode())
    source = "DATA_DIR (inference_cases.json, calibration_cases.json)"
    return CaseLists(inference=inference, calibration=calibration, source=source)
