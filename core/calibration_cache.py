"""The one calibration-cache format module: our JSON cache and TensorRT's text cache.

A calibration cache maps tensor names to **amax** (the symmetric range: real values in
[-amax, amax] map to int8 [-127, 127], scale = amax / 127). Every backend reads and writes caches
through this module only.

Our JSON format (``save`` / ``load``), version 1::

    {
      "format": "unet3d-calibration-cache",
      "version": 1,
      "method": "minmax",                 # how the ranges were found: minmax | percentile | entropy2 | ...
      "model_sha256": "<64 hex>",         # sha256 of the ONNX model the names refer to ("" = unknown)
      "created": "2026-11-29T05:40:00Z",  # UTC, ISO 8601
      "amax": {"input": 2.6397919, "Conv_0": 30.27, ...},           # per-tensor amax, > 0... or 0
      "weight_amax": {"Conv_0": [0.41, 0.38, ...], ...},            # optional: per-output-channel
                                                                    # weight amax (scale = amax/127)
      "meta": {...}                       # free-form: calibration set, window count, tool versions
    }

Weight ranges use the same convention as activations (amax, not scale), so one rule converts both.

TensorRT's text format (``to_trt_text`` / ``from_trt_text``), as in NVIDIA's ``calibrator.cache``::

    TRT-8600-MinMaxCalibration
    input: 3caa46e8
    Conv_0: 3df40000
    ...

The first line is ``TRT-<version>-<Algo>Calibration[<n>]`` (e.g. ``TRT-100200-EntropyCalibration2``);
every other line is ``<tensor name>: <8 hex digits>``, the IEEE-754 float32 bit pattern
(big-endian, as ``%08x`` of the bits) of **scale = amax / 127**. Example: the exact input amax
(304 - 101) / 76.9 = 2.6397919... gives scale 0.0207858 -> ``3caa46e8``; the 5-digit rounding
2.63979 gives ``3caa46e0``.
The text format has no model hash and no per-channel weights; those are lost on export.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import BadInputError, MissingInputError
from core.fsio import write_text_atomic as atomic_write_text

FORMAT_NAME = "unet3d-calibration-cache"
FORMAT_VERSION = 1
DEFAULT_TRT_HEADER = "TRT-100000-MinMaxCalibration"
INT8_MAX = 127.0

# e.g. TRT-8600-MinMaxCalibration, TRT-100200-EntropyCalibration2
_HEADER_RE = re.compile(r"^TRT-(\d+)-([A-Za-z]+)Calibration(\d*)$")
_LINE_RE = re.compile(r"^(.+): ([0-9A-Fa-f]{8})$")
_SHA_RE = re.compile(r"^([0-9a-f]{64})?$")
# TensorRT header algorithm names -> our method names, both ways.
_TRT_ALGOS = {
    "MinMax": "minmax",
    "Entropy": "entropy",
    "Entropy2": "entropy2",
    "Legacy": "legacy",
}


@dataclass
class CalibrationCache:
    amax: dict[str, float]
    method: str
    model_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    weight_amax: dict[str, list[float]] = field(default_factory=dict)
    created: str = ""  # ISO 8601 UTC; ``save`` stamps it when empty

    def scale(self, tensor: str) -> float:
        """The int8 scale of ``tensor`` (amax / 127)."""
        return self.amax[tensor] / INT8_MAX


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- validation ---------------------------------------------------------------------------------


def _check_amax(name: str, value: object, where: str | Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInputError(f"calibration cache: amax of {name!r} is not a number", where)
    v = float(value)
    if not math.isfinite(v) or v < 0.0:
        raise BadInputError(f"calibration cache: amax of {name!r} is {v} (must be finite and >= 0)", where)
    return v


def _validate(cache: CalibrationCache, where: str | Path | None = None) -> CalibrationCache:
    if not cache.amax:
        raise BadInputError("calibration cache has no tensors", where)
    for name, value in cache.amax.items():
        if not isinstance(name, str) or not name or name != name.strip() or "\n" in name:
            raise BadInputError(f"calibration cache: bad tensor name {name!r}", where)
        cache.amax[name] = _check_amax(name, value, where)
    for name, values in cache.weight_amax.items():
        if not isinstance(values, list) or not values:
            raise BadInputError(f"calibration cache: weight_amax of {name!r} is not a non-empty list", where)
        cache.weight_amax[name] = [_check_amax(f"{name}[{i}]", v, where) for i, v in enumerate(values)]
    if not isinstance(cache.method, str) or not cache.method:
        raise BadInputError("calibration cache: method is missing", where)
    if not isinstance(cache.model_sha256, str) or not _SHA_RE.match(cache.model_sha256):
        raise BadInputError("calibration cache: model_sha256 is not 64 lowercase hex digits", where)
    if not isinstance(cache.meta, dict):
        raise BadInputError("calibration cache: meta is not an object", where)
    return cache


# --- our JSON -----------------------------------------------------------------------------------


def to_json(cache: CalibrationCache) -> str:
    _validate(cache)
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "method": cache.method,
        "model_sha256": cache.model_sha256,
        "created": cache.created or _now(),
        "amax": dict(cache.amax),
    }
    if cache.weight_amax:
        doc["weight_amax"] = {k: list(v) for k, v in cache.weight_amax.items()}
    doc["meta"] = cache.meta
    # repr-exact floats: json writes the shortest string that round-trips a float64.
    return json.dumps(doc, indent=1) + "\n"


def from_json(text: str, source: str | Path | None = None) -> CalibrationCache:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"calibration cache is not valid JSON ({exc.msg}, line {exc.lineno})", source
        ) from None
    except RecursionError:
        raise BadInputError("calibration cache JSON is nested too deeply", source) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise BadInputError(f'not a calibration cache (no "format": "{FORMAT_NAME}")', source)
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise BadInputError(
            f"calibration cache version {version!r} is not supported (expected {FORMAT_VERSION})", source
        )
    amax = doc.get("amax")
    weight_amax = doc.get("weight_amax", {})
    if not isinstance(amax, dict):
        raise BadInputError('calibration cache: "amax" is not an object', source)
    if not isinstance(weight_amax, dict):
        raise BadInputError('calibration cache: "weight_amax" is not an object', source)
    created = doc.get("created", "")
    cache = CalibrationCache(
        amax=dict(amax),
        method=doc.get("method", ""),
        model_sha256=doc.get("model_sha256", ""),
        meta=doc.get("meta", {}),
        weight_amax=dict(weight_amax),
        created=created if isinstance(created, str) else "",
    )
    return _validate(cache, source)


def save(cache: CalibrationCache, path: str | Path) -> Path:
    """Write ``cache`` as our JSON (atomically). Stamps ``created`` when empty. Returns the path."""
    if not cache.created:
        cache.created = _now()
    atomic_write_text(path, to_json(cache))
    return Path(path)


# --- TensorRT text ------------------------------------------------------------------------------


def _scale_hex(amax: float) -> str:
    # float64 division then one rounding to float32, as NVIDIA's tools produce the file.
    return struct.pack(">f", amax / INT8_MAX).hex()


def _hex_amax(digits: str) -> float:
    (scale,) = struct.unpack(">f", bytes.fromhex(digits))
    return float(scale) * INT8_MAX


def to_trt_text(cache: CalibrationCache, header: str = DEFAULT_TRT_HEADER) -> str:
    """TensorRT's calibration-cache text: ``header`` then ``<tensor>: <float32 bits of amax/127>``."""
    if not _HEADER_RE.match(header):
        raise BadInputError(f"TensorRT cache header {header!r} is not TRT-<version>-<Algo>Calibration")
    _validate(cache)
    lines = [header] + [f"{name}: {_scale_hex(a)}" for name, a in cache.amax.items()]
    return "\n".join(lines) + "\n"


def from_trt_text(text: str, source: str | Path | None = None) -> CalibrationCache:
    """Parse a TensorRT text cache (any ``TRT-<n>-<Algo>Calibration`` header, e.g. NVIDIA's
    TRT-8402/8600 MinMax caches). amax = scale * 127. ``source`` names the file in errors."""
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise BadInputError("TensorRT calibration cache is empty", source)
    header = lines[0].strip()
    m = _HEADER_RE.match(header)
    if not m:
        raise BadInputError(
            f"first line {header[:60]!r} is not a TensorRT cache header (TRT-<version>-<Algo>Calibration)",
            source,
        )
    algo = m.group(2) + m.group(3)
    amax: dict[str, float] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        lm = _LINE_RE.match(line)
        if not lm:
            raise BadInputError(f"line {lineno} is not '<tensor>: <8 hex digits>': {line[:60]!r}", source)
        name, digits = lm.group(1), lm.group(2)
        if name in amax:
            raise BadInputError(f"line {lineno}: tensor {name!r} appears twice", source)
        value = _hex_amax(digits)
        if not math.isfinite(value) or value < 0.0:
            raise BadInputError(
                f"line {lineno}: scale of {name!r} is {value / INT8_MAX} (not finite, >= 0)", source
            )
        amax[name] = value
    cache = CalibrationCache(
        amax=amax,
        method=_TRT_ALGOS.get(algo, algo.lower()),
        model_sha256="",
        meta={"source_format": "tensorrt-text", "trt_header": header, "trt_version": int(m.group(1))},
    )
    return _validate(cache, source)


def save_trt_text(cache: CalibrationCache, path: str | Path, header: str = DEFAULT_TRT_HEADER) -> Path:
    atomic_write_text(path, to_trt_text(cache, header))
    return Path(path)


# --- either -------------------------------------------------------------------------------------


def parse(text: str, source: str | Path | None = None) -> CalibrationCache:
    """Parse our JSON or TensorRT text, whichever ``text`` is."""
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("{"):
        return from_json(head, source)
    if head.startswith("TRT-"):
        return from_trt_text(head, source)
    raise BadInputError("neither a unet3d JSON calibration cache nor a TensorRT text cache", source)


def load(path: str | Path) -> CalibrationCache:
    """Load a cache file, auto-detecting our JSON vs TensorRT text."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingInputError("calibration cache not found", path) from None
    except IsADirectoryError:
        raise BadInputError("calibration cache path is a directory", path) from None
    except OSError as exc:
        raise BadInputError(f"cannot read calibration cache ({exc.strerror})", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError("calibration cache is not UTF-8 text", path) from None
    return parse(text, path)


def check_model(cache: CalibrationCache, model_sha256: str, source: str | Path | None = None) -> None:
    """Refuse a cache made for another model. Caches without a hash (TensorRT text) pass."""
    if cache.model_sha256 and model_sha256 and cache.model_sha256 != model_sha256:
        raise BadInputError(
            f"calibration cache was made for model sha256 {cache.model_sha256[:12]}..., "
            f"not this model ({model_sha256[:12]}...); recalibrate",
            source,
        )
