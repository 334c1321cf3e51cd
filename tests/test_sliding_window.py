"""core.sliding_window against an independent reference (REF base_SUT: result / norm_map with the
Gaussian, float64), plus grid order, batching, hooks, cancel, errors and the torch path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.signal import windows as sw

from core.errors import BadInputError, Cancelled
from core.jobs import CancelToken
from core.sliding_window import Window, segment, segment_torch, window_count, window_grid

ROI = 128


def ref_gaussian() -> np.ndarray:
    g1 = sw.gaussian(ROI, std=16)
    g = np.cbrt(np.einsum("i,j,k->ijk", g1, g1, g1))
    return g / g.max()


class FakeEngine:
    """Logits that depend on the voxel value and on the position inside the window, so overlapping
    windows disagree and the weighting matters."""

    name = "fake"
    precision = "fp32"

    def __init__(self, batch_size: int = 2, seed: int = 0) -> None:
        self.batch_size = batch_size
        rng = np.random.default_rng(seed)
        self.field = rng.standard_normal((3, ROI, ROI, ROI)).astype(np.float32)
        self.calls: list[int] = []

    def infer(self, windows: np.ndarray) -> np.ndarray:
        assert windows.ndim == 5 and windows.shape[1:] == (1, ROI, ROI, ROI)
        assert len(windows) <= self.batch_size
        self.calls.append(len(windows))
        x = windows.astype(np.float32)
        scale = np.array([0.5, -0.7, 1.1], dtype=np.float32)[None, :, None, None, None]
        return (x * scale + self.field[None]).astype(np.float32)

    def close(self) -> None:
        pass


def reference_segment(volume: np.ndarray, engine: FakeEngine) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) exactly as the reference: window by window, result += logits*G, norm += G."""
    _, d, h, w = volume.shape
    g = ref_gaussian()
    result = np.zeros((3, d, h, w))
    norm = np.zeros((3, d, h, w))
    for i in range(0, d - ROI + 1, 64):
        for j in range(0, h - ROI + 1, 64):
            for k in range(0, w - ROI + 1, 64):
                lg = engine.infer(volume[None, :, i : i + ROI, j : j + ROI, k : k + ROI])[0]
                result[:, i : i + ROI, j : j + ROI, k : k + ROI] += lg * g
                norm[:, i : i + ROI, j : j + ROI, k : k + ROI] += g
    scores = result / norm
    return np.argmax(scores, axis=0).astype(np.uint8), scores


def random_volume(shape: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)


def test_grid_order_count_and_patch_ids() -> None:
    grid = window_grid((192, 256, 128))
    expected = list(itertools.product([0, 64], [0, 64, 128], [0]))
    assert [w.origin for w in grid] == expected  # axis 0 outermost
    assert [w.patch_id for w in grid] == [0, 3, 6, 18, 21, 24]  # d=64 of 192 is "end"
    assert grid[0].slices == (slice(0, 128), slice(0, 128), slice(0, 128))
    # doc section 3: case_00000 (192, 384, 384) has 50 windows
    assert len(window_grid((192, 384, 384))) == window_count((192, 384, 384)) == 50
    assert Window((0, 0, 0), 0) == grid[0]
    for bad in [(100, 128, 128), (128, 160, 128), (128, 128), (64, 128, 128)]:
        with pytest.raises(BadInputError):
            window_grid(bad)


@pytest.mark.parametrize("shape", [(128, 128, 128), (128, 192, 192), (256, 128, 192)])
def test_segment_matches_reference(shape: tuple[int, int, int]) -> None:
    vol = random_volume(shape)
    engine = FakeEngine(batch_size=3)
    ref, scores = reference_segment(vol, engine)
    got = segment(vol, engine, 3)
    assert got.shape == shape and got.dtype == np.uint8
    diff = got != ref
    # float32 accumulation may flip only voxels whose two best reference scores are nearly equal
    top2 = np.sort(scores, axis=0)
    margin = top2[-1] - top2[-2]
    assert int(diff.sum()) <= 5
    assert np.all(margin[diff] < 1e-5)
    assert set(np.unique(got)) == {0, 1, 2}


def test_batching_hooks_and_batch_size_default() -> None:
    shape = (192, 192, 128)
    vol = random_volume(shape, seed=2)
    e1, e3 = FakeEngine(batch_size=1), FakeEngine(batch_size=3)
    seen: list[tuple[int, int]] = []
    a = segment(vol, e1, 1)
    b = segment(vol, e3, None, on_batch=lambda done, total: seen.append((done, total)))
    np.testing.assert_array_equal(a, b)
    assert e1.calls == [1, 1, 1, 1] and e3.calls == [3, 1]
    assert seen == [(3, 4), (4, 4)]


def test_tie_rule_lowest_class() -> None:
    class Const(FakeEngine):
        def __init__(self, values: tuple[float, float, float]) -> None:
            super().__init__(batch_size=4)
            self.values = np.array(values, dtype=np.float32)

        def infer(self, windows: np.ndarray) -> np.ndarray:
            out = np.empty((len(windows), 3, ROI, ROI, ROI), dtype=np.float32)
            out[:] = self.values[None, :, None, None, None]
            return out

    vol = random_volume((128, 192, 128))
    assert not segment(vol, Const((1.0, 1.0, 1.0)), 4).any()
    assert (segment(vol, Const((0.0, 2.0, 2.0)), 4) == 1).all()
    assert (segment(vol, Const((0.0, 1.0, 2.0)), 4) == 2).all()


def test_cancel_and_errors() -> None:
    vol = random_volume((128, 128, 192))
    token = CancelToken()
    engine = FakeEngine(batch_size=1)

    def cancel_after_first(done: int, total: int) -> None:
        token.cancel()

    with pytest.raises(Cancelled):
        segment(vol, engine, 1, cancel=token, on_batch=cancel_after_first)
    assert engine.calls == [1]
    with pytest.raises(BadInputError, match=r"expected \(1, D, H, W\)"):
        segment(vol[0], engine, 1)
    with pytest.raises(BadInputError, match="multiple of 64"):
        segment(random_volume((128, 130, 128)), engine, 1)

    class Wrong(FakeEngine):
        def infer(self, windows: np.ndarray) -> np.ndarray:
            return np.zeros((len(windows), 2, ROI, ROI, ROI), dtype=np.float32)

    with pytest.raises(BadInputError, match="returned shape"):
        segment(vol, Wrong(), 1)
    with pytest.raises(BadInputError, match="patches"):
        segment(vol, engine, 1, patches=np.zeros((26, ROI, ROI, ROI), np.float32))


def test_float16_patches_accumulate_in_float32() -> None:
    from core.patches import preconditioned_patches

    vol = random_volume((128, 192, 128), seed=3)
    engine = FakeEngine(batch_size=2)
    ref, _ = reference_segment(vol, engine)
    got = segment(vol, engine, 2, patches=preconditioned_patches(np.float16))
    assert (got != ref).mean() < 1e-4  # fp16 weights: a few near-ties may flip


@pytest.mark.parametrize("shape", [(128, 192, 192), (256, 128, 128)])
def test_torch_path_equals_numpy_path(shape: tuple[int, int, int]) -> None:
    torch = pytest.importorskip("torch")
    vol = random_volume(shape, seed=4)
    engine = FakeEngine(batch_size=2)
    expected = segment(vol, engine, 2)

    def infer_fn(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(engine.infer(x.numpy()))

    seen: list[int] = []
    got = segment_torch(torch.from_numpy(vol), infer_fn, 2, on_batch=lambda d, t: seen.append(d))
    assert got.dtype == torch.uint8 and tuple(got.shape) == shape
    np.testing.assert_array_equal(got.numpy(), expected)
    assert seen[-1] == window_count(shape)

    # hooks: a replacement accumulate/argmax is used instead of the default
    calls = {"acc": 0, "argmax": 0}

    from core.sliding_window import accumulate_torch, argmax_lowest_torch

    def acc_fn(acc, logits, patches, windows):  # type: ignore[no-untyped-def]
        calls["acc"] += 1
        accumulate_torch(acc, logits, patches, windows)

    def argmax_fn(acc):  # type: ignore[no-untyped-def]
        calls["argmax"] += 1
        return argmax_lowest_torch(acc)

    got2 = segment_torch(torch.from_numpy(vol), infer_fn, 2, accumulate_fn=acc_fn, argmax_fn=argmax_fn)
    np.testing.assert_array_equal(got2.numpy(), expected)
    assert calls == {"acc": -(-window_count(shape) // 2), "argmax": 1}


def test_torch_argmax_ties_lowest() -> None:
    torch = pytest.importorskip("torch")
    from core.sliding_window import argmax_lowest_torch

    acc = torch.tensor([[1.0, 0.0, 2.0, 3.0], [1.0, 2.0, 2.0, 1.0], [0.5, 2.0, 2.0, 3.0]]).reshape(3, 1, 1, 4)
    got = argmax_lowest_torch(acc).flatten().tolist()
    assert got == np.argmax(acc.numpy(), axis=0).flatten().tolist() == [0, 1, 0, 0]
