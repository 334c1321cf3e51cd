"""Backend registry. Modules are imported lazily so that a missing library (onnxruntime, torch,
tensorrt) only matters when that backend is chosen."""

from __future__ import annotations

import importlib

from core.backends.base import Availability, Backend, Engine, VolumeEngine
from core.errors import BackendUnavailableError, UsageError

# name -> (module, attribute holding the Backend instance)
_REGISTRY: dict[str, tuple[str, str]] = {
    "ort": ("core.backends.ort", "BACKEND"),
    "torch": ("core.backends.torch", "BACKEND"),
    "tensorrt": ("core.backends.tensorrt", "BACKEND"),
}

__all__ = [
    "Availability",
    "Backend",
    "Engine",
    "VolumeEngine",
    "availability",
    "backend_names",
    "get_backend",
]


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise UsageError(f"--backend={name} is not one of {', '.join(_REGISTRY)}")
    module, attr = _REGISTRY[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:  # the backend's own module is missing a library at import time
        raise BackendUnavailableError(f"backend {name} is unavailable: {exc}") from None


def availability(name: str) -> Availability:
    try:
        return get_backend(name).availability()
    except BackendUnavailableError as exc:
        return Availability(False, str(exc))
    except ModuleNotFoundError as exc:
        return Availability(False, f"not built yet: {exc}")
