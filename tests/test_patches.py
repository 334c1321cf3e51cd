"""core.patches against independent constructions: the closed-form Gaussian, brute-force accumulation of
the 27 patches over real window grids, and the reference's result / norm_map argmax."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.patches import gaussian_map, patch_id, preconditioned_patches

ROI = 128


def closed_form_gaussian() -> np.ndarray:
    # exp(-r^2 / (2 * 3 * 16^2)), rescaled so the 8 central voxels are 1 (doc section 4.1).
    t = (np.arange(ROI) - 63.5) ** 2
    r2 = t[:, None, None] + t[None, :, None] + t[None, None, :]
    return np.exp(-(r2 - 3 * 0.25) / (2 * 3 * 16.0**2))


def h1() -> np.ndarray:
    """1-D factor of G (cube root of the 1-D window, max 1), from the closed form."""
    t = np.arange(ROI)
    return np.exp(-((t - 63.5) ** 2 - 0.25) / (2 * 3 * 16.0**2))


def origins(n: int) -> list[int]:
    return list(range(0, n - ROI + 1, 64))


def brute_patch_id(o: tuple[int, int, int], shape: tuple[int, int, int]) -> int:
    ids = []
    for oi, n in zip(o, shape, strict=True):
        ids.append(0 if oi == 0 else (2 if oi + ROI >= n else 1))
    return 9 * ids[0] + 3 * ids[1] + ids[2]


@pytest.fixture(scope="module")
def patches64() -> np.ndarray:
    return preconditioned_patches(np.float64)


def accumulate_weights(shape: tuple[int, int, int], patches: np.ndarray) -> np.ndarray:
    acc = np.zeros(shape, dtype=np.float64)
    for o in itertools.product(*(origins(n) for n in shape)):
        d, h, w = o
        acc[d : d + ROI, h : h + ROI, w : w + ROI] += patches[brute_patch_id(o, shape)]
    return acc


def test_gaussian_map_matches_closed_form() -> None:
    g = gaussian_map()
    assert g.shape == (ROI,) * 3 and g.dtype == np.float32
    np.testing.assert_allclose(g, closed_form_gaussian(), rtol=2e-6, atol=1e-9)
    assert g.max() == 1.0
    assert g[63:65, 63:65, 63:65].min() == 1.0
    assert g[0, 0, 0] == pytest.approx(3.80e-4, rel=2e-3)
    assert g[0, 63, 63] == pytest.approx(0.0724, rel=1e-3)
    assert float(g.mean(dtype=np.float64)) == pytest.approx(0.1501, abs=1e-4)
    # symmetric around 63.5 on every axis
    np.testing.assert_array_equal(g, g[::-1, :, :])
    np.testing.assert_array_equal(g, np.transpose(g, (2, 0, 1)))


def test_patch_id_rules() -> None:
    assert patch_id((0, 0, 0), (256, 256, 256)) == 0
    assert patch_id((64, 64, 64), (256, 256, 256)) == 13
    assert patch_id((128, 128, 128), (256, 256, 256)) == 26
    assert patch_id((0, 64, 128), (128, 320, 256)) == 0 * 9 + 1 * 3 + 2
    # a 128 dim is "start", a 192 dim has start and end only
    assert patch_id((0, 0, 64), (128, 128, 192)) == 2
    for shape in [(128, 192, 320), (448, 256, 512), (192, 384, 384)]:
        for o in itertools.product(*(origins(n) for n in shape)):
            assert patch_id(o, shape) == brute_patch_id(o, shape)
    with pytest.raises(ValueError):
        patch_id((0, 0), (128, 128, 128))


def test_patches_shape_dtype_and_sparse_values(patches64: np.ndarray) -> None:
    p32 = preconditioned_patches()
    assert p32.shape == (27, ROI, ROI, ROI) and p32.dtype == np.float32
    assert preconditioned_patches(np.float16).dtype == np.float16
    # independent: G / N with N separable, N_1d = sum of h over windows at 0, 64, 128 in 256
    h = h1()
    n1 = np.zeros(256)
    for o in (0, 64, 128):
        n1[o : o + ROI] += h
    g = closed_form_gaussian()
    rng = np.random.default_rng(0)
    for pid in (0, 5, 13, 21, 26):
        pd, ph, pw = pid // 9, (pid // 3) % 3, pid % 3
        nd, nh, nw = (n1[64 * p : 64 * p + ROI] for p in (pd, ph, pw))
        for _ in range(50):
            i, j, k = rng.integers(0, ROI, 3)
            expected = g[i, j, k] / (nd[i] * nh[j] * nw[k])
            assert patches64[pid, i, j, k] == pytest.approx(expected, rel=1e-12)
    # a start patch's first voxel is covered by one window only: weight 1
    assert patches64[0, 0, 0, 0] == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("shape", [(192, 192, 192), (256, 192, 320), (192, 320, 256)])
def test_patches_sum_to_one_over_covering_windows(patches64: np.ndarray, shape: tuple[int, int, int]) -> None:
    acc = accumulate_weights(shape, patches64)
    assert np.abs(acc - 1.0).max() < 2e-15


def test_128_dim_caveat(patches64: np.ndarray) -> None:
    shape = (128, 192, 192)
    acc = accumulate_weights(shape, patches64)
    h = h1()
    # the start patch divides t >= 64 by h(t) + h(t - 64) although no window at 64 exists on this axis
    expected_factor = np.ones(ROI)
    expected_factor[64:] = h[64:] / (h[64:] + h[:64])
    np.testing.assert_allclose(acc, np.broadcast_to(expected_factor[:, None, None], shape), rtol=1e-13)
    assert acc[:64].max() == pytest.approx(1.0, abs=1e-14)
    assert acc[127, 0, 0] == pytest.approx(0.0675, abs=1e-3)  # h(127) / (h(127) + h(63))
    assert acc[64:].max() < 0.933


def reference_argmax(logits: dict, shape: tuple[int, int, int]) -> np.ndarray:
    """REF base_SUT: result += logits * G; norm_map += G; result / norm_map; argmax (float64)."""
    g = closed_form_gaussian()
    result = np.zeros((3, *shape))
    norm = np.zeros((3, *shape))
    for (d, h, w), lg in logits.items():
        result[:, d : d + ROI, h : h + ROI, w : w + ROI] += lg * g
        norm[:, d : d + ROI, h : h + ROI, w : w + ROI] += g
    return np.argmax(result / norm, axis=0)


@pytest.mark.parametrize("shape", [(128, 192, 192), (256, 128, 192)])
def test_patch_accumulation_argmax_equals_reference(
    patches64: np.ndarray, shape: tuple[int, int, int]
) -> None:
    rng = np.random.default_rng(sum(shape))
    logits = {
        o: rng.standard_normal((3, ROI, ROI, ROI)) for o in itertools.product(*(origins(n) for n in shape))
    }
    ref = reference_argmax(logits, shape)
    for dtype, max_diff in ((np.float64, 0), (np.float32, 20)):
        patches = patches64.astype(dtype)
        acc = np.zeros((3, *shape), dtype=dtype)
        for o, lg in logits.items():
            d, h, w = o
            acc[:, d : d + ROI, h : h + ROI, w : w + ROI] += lg.astype(dtype) * patches[patch_id(o, shape)]
        got = np.argmax(acc, axis=0)
        # float32 may flip voxels whose two best classes are equal to float32 rounding
        assert int((got != ref).sum()) <= max_diff, dtype
