"""The query sample library: the preprocessed inference set, one sample per case (REF ``kits_QSL.py``).

Sample ``i`` is ``file_list[i]`` of ``preprocessed_files.json``; total count = performance count =
number of cases (43 for the official set). LoadGen's load callback reads images into memory, its
unload callback drops them. Data access goes through a :class:`DataSource` so tests can use small
in-memory volumes; :class:`PreprocessedData` is the real one (``core.preprocess``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.errors import BadInputError, MissingInputError
from core.harness.settings import loadgen
from core.jobs import NEVER, CancelToken, Progress, Reporter, null_reporter

if TYPE_CHECKING:
    from core.harness.events import RunEvents
    from core.workspace import Workspace


class DataSource(Protocol):
    """Cases of one preprocessed set, in QSL order."""

    def cases(self) -> list[str]: ...

    def image_shape(self, case: str) -> tuple[int, ...]:
        """(1, D, H, W), the shape the accuracy log reshapes responses to."""
        ...

    def load_image(self, case: str) -> np.ndarray:
        """(1, D, H, W) float32 (or int8 for an int8-input engine)."""
        ...

    def load_label(self, case: str) -> np.ndarray:
        """(1, D, H, W) uint8."""
        ...


def _shapes_from_index(index: dict[str, Any], cases: Sequence[str], where: str) -> dict[str, tuple[int, ...]]:
    """Per-case image_shape from preprocessed_files.json: a {case: shape} map, a list parallel to
    file_list, or per-case records ({"case"/"name": ..., "image_shape": ...})."""
    raw = index.get("image_shape", index.get("image_shapes", index.get("shapes")))
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(raw, dict):
        out = {str(k): tuple(int(x) for x in v) for k, v in raw.items()}
    elif isinstance(raw, list) and len(raw) == len(cases):
        out = {c: tuple(int(x) for x in s) for c, s in zip(cases, raw, strict=True)}
    else:
        for rec in index.get("cases", []) or []:
            if isinstance(rec, dict) and "image_shape" in rec:
                name = rec.get("case", rec.get("name"))
                out[str(name)] = tuple(int(x) for x in rec["image_shape"])
    missing = [c for c in cases if c not in out]
    if missing:
        raise BadInputError(f"no image_shape for {', '.join(missing[:3])} in preprocessed_files.json", where)
    for c in cases:
        s = out[c]
        if len(s) == 3:
            out[c] = (1, *s)
    return out


class PreprocessedData:
    """The agreed on-disk layout, read through ``core.preprocess`` (load_index/load_image/load_label)."""

    def __init__(self, ws: Workspace, set_name: str = "inference", dtype: str = "fp32") -> None:
        try:
            from core import preprocess
        except ImportError as exc:  # the data helper's module is not in this build
            raise MissingInputError(f"core.preprocess is not available: {exc}") from None
        self._pre = preprocess
        self.ws = ws
        self.set_name = set_name
        self.dtype = dtype
        where = ws.preprocessed_dir / set_name / "preprocessed_files.json"
        if not where.is_file():
            raise MissingInputError("preprocessed data not found (run `unet3d preprocess`)", where)
        index = preprocess.load_index(ws, set_name)
        file_list = index.get("file_list")
        if not isinstance(file_list, list) or not file_list:
            raise BadInputError("no file_list", where)
        self._cases = [case_name(c) for c in file_list]
        self._shapes = _shapes_from_index(index, self._cases, str(where))

    def cases(self) -> list[str]:
        return list(self._cases)

    def image_shape(self, case: str) -> tuple[int, ...]:
        return self._shapes[case]

    def load_image(self, case: str) -> np.ndarray:
        return self._pre.load_image(self.ws, self.set_name, case, self.dtype)

    def load_label(self, case: str) -> np.ndarray:
        return self._pre.load_label(self.ws, self.set_name, case)


def case_name(name: str) -> str:
    """'case_00041', 'case_00041.npy' or 'fp32/case_00041.npy' -> 'case_00041'."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".npy", ".pkl", ".nii.gz"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


class InMemoryData:
    """A DataSource over arrays held in memory (tests, demos)."""

    def __init__(self, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
        self._images = dict(images)
        self._labels = dict(labels)

    def cases(self) -> list[str]:
        return list(self._images)

    def image_shape(self, case: str) -> tuple[int, ...]:
        return tuple(self._images[case].shape)

    def load_image(self, case: str) -> np.ndarray:
        return self._images[case]

    def load_label(self, case: str) -> np.ndarray:
        return self._labels[case]


class KitsQSL:
    """Owns the LoadGen QSL handle and the cache of loaded volumes."""

    def __init__(
        self,
        data: DataSource,
        lg: Any | None = None,
        cancel: CancelToken = NEVER,
        events: RunEvents | None = None,
        report: Reporter = null_reporter,
    ) -> None:
        lg = loadgen(lg)
        self._lg = lg
        self.data = data
        self.cancel = cancel
        self.events = events
        self.report = report
        self.cases = data.cases()
        self.count = len(self.cases)
        if self.count == 0:
            raise MissingInputError("the preprocessed inference set has no cases")
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.error: BaseException | None = None  # first load failure; the runner re-raises it
        self.stopped = False  # set by the runner on Ctrl-C: skip further loads
        self.handle = lg.ConstructQSL(self.count, self.count, self.load_samples, self.unload_samples)

    # LoadGen callbacks: never let an exception escape into C++ (it would abort the process).
    def load_samples(self, indices: list[int]) -> None:
        if self.events is not None:
            self.events.phase("loading samples")
        for n, i in enumerate(indices, 1):
            if self.cancel.cancelled or self.stopped or self.error is not None:
                return  # the SUT answers unloaded samples with empty responses
            try:
                img = self.data.load_image(self.cases[i])
                with self._lock:
                    self._cache[i] = img
                self.report(Progress("load", n, len(indices), "case", self.cases[i]))
            except BaseException as exc:
                if self.error is None:
                    self.error = exc

    def unload_samples(self, indices: list[int]) -> None:
        with self._lock:
            for i in indices:
                self._cache.pop(i, None)

    def get(self, index: int) -> np.ndarray:
        with self._lock:
            img = self._cache.get(index)
        if img is None:
            raise BadInputError(f"sample {index} ({self.cases[index]}) was not loaded by the QSL")
        return img

    def destroy(self) -> None:
        if self.handle is not None:
            self._lg.DestroyQSL(self.handle)
            self.handle = None
        self._cache.clear()
