"""The one place the console reaches into Textual's private internals, gated on the version they were
read from.

The console's responsiveness work (console.heap, docs/RELIABILITY.md row 8) needs what Textual does not
offer publicly: three process-wide patches (``textual.strip.Strip`` never caches itself and makes its
seven caches on first store; ``textual.cache.LRUCache.clear`` unlinks its ring of entries) and reads
and writes of private attributes of apps, screens and widgets (the mode screen stacks, a screen's
compositor size, render and line caches, watcher lists). Every one was read from Textual
``TEXTUAL_VERSION``, the version pyproject pins. On any other version nothing is patched and every
accessor below does nothing (returns its "unknown" value): the console then works as plain Textual
does, with longer pauses under a streaming run. A patch whose target no longer has the shape it was
written against is refused the same way, on the pinned version too. A refusal is said loudly: a
logging warning, a warning line in the console's log and a notification at start-up
(``UnetConsole.on_mount``), and ``state()`` for the Help screen. Before raising the pin: read the new
Textual's code for each use here, then re-measure with ``tools/console_load.py``.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TEXTUAL_VERSION = "8.2.8"  # what every use below was read from (pyproject's pin)
PATCHES = ("strip-no-self-cache", "strip-lazy-caches", "lru-unlink-on-clear")

log = logging.getLogger("unet3d.console")


def installed_version() -> str:
    try:
        return importlib.metadata.version("textual")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_supported: bool | None = None  # installed_version() == TEXTUAL_VERSION, checked once per process


def supported() -> bool:
    """The installed Textual is the one the private uses were read from (checked once)."""
    global _supported
    if _supported is None:
        _supported = installed_version() == TEXTUAL_VERSION
    return _supported


@dataclass
class CompatState:
    version: str
    supported: bool
    applied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # patch -> why

    @property
    def ok(self) -> bool:
        return self.supported and not self.refused

    def summary(self) -> str:
        if self.ok:
            return f"Textual {self.version}: {len(self.applied)} responsiveness patches applied"
        if not self.supported:
            return (
                f"Textual {self.version} is not {TEXTUAL_VERSION}, the version the console's responsiveness "
                "patches were written for: all are off (the console works, with longer pauses under load)"
            )
        why = "; ".join(f"{name}: {reason}" for name, reason in self.refused.items())
        return f"Textual {self.version}: responsiveness patches refused ({why}); the console works, slower"


_state: CompatState | None = None


def state() -> CompatState:
    """What ``apply`` did (before it ran: what it would find)."""
    if _state is not None:
        return _state
    return CompatState(installed_version(), supported())


def apply() -> CompatState:
    """Apply every patch that this Textual allows (idempotent); warn once about each refusal."""
    global _state
    version, ok = installed_version(), supported()
    done = CompatState(version, ok)
    patches = (break_strip_cycles, lazy_strip_caches, unlink_lru_on_clear)
    for name, patch in zip(PATCHES, patches, strict=True):
        why = patch()
        if why:
            done.refused[name] = why
        else:
            done.applied.append(name)
    if not done.ok and (_state is None or _state.refused != done.refused):
        log.warning("%s", done.summary())
    _state = done
    return done


def _version_refusal() -> str:
    return "" if supported() else f"Textual {installed_version()} is not {TEXTUAL_VERSION}"


# --------------------------------------------------------------------------- the process-wide patches


def break_strip_cycles() -> str:
    """Strip.divide at its own length and Strip.crop_extend over its whole length return ``[self]`` /
    ``self`` without storing them in the Strip's own caches (a reference cycle that kept every
    discarded line for the next full collection; console.heap). Same results. Returns "" when applied
    (or already), else why not."""
    from textual.strip import Strip

    if why := _version_refusal():
        return why
    if getattr(Strip, "_unet3d_no_self_cache", False):
        return ""
    divide, crop_extend = getattr(Strip, "divide", None), getattr(Strip, "crop_extend", None)
    if divide is None or crop_extend is None:
        return "Strip.divide or Strip.crop_extend is gone"
    names = divide.__code__.co_names + crop_extend.__code__.co_names
    if "_divide_cache" not in names or "_crop_extend_cache" not in names:
        return "Strip.divide / crop_extend no longer use the caches this patch keeps self out of"

    def divide_no_self(self: Strip, cuts: Any) -> Any:
        cell_length = self.cell_length
        cuts = [cut for cut in cuts if cut <= cell_length]
        if cuts == [cell_length]:
            return [self]  # Textual caches this list in self._divide_cache: a cycle
        return divide(self, cuts)

    def crop_extend_no_self(self: Strip, start: int, end: int, style: Any) -> Strip:
        if start <= 0 and end == self.cell_length:
            return self  # Textual caches self in self._crop_extend_cache: a cycle
        return crop_extend(self, start, end, style)

    Strip.divide = divide_no_self  # type: ignore[method-assign]
    Strip.crop_extend = crop_extend_no_self  # type: ignore[method-assign]
    Strip._unet3d_no_self_cache = True  # type: ignore[attr-defined]
    return ""


# Textual 8.2.8's Strip.__init__ creates seven FIFOCaches per Strip (crop, divide, style, ...), most of
# which are never written: 7 of the ~9 objects a rendered line costs the collector.
STRIP_CACHES = {
    "_divide_cache": 4,
    "_crop_cache": 16,
    "_style_cache": 16,
    "_filter_cache": 4,
    "_line_length_cache": 4,
    "_crop_extend_cache": 4,
    "_offsets_cache": 4,
}
_STRIP_INIT_NAMES = (  # what Textual 8.2.8's Strip.__init__ touches; anything else: not patched
    "list",
    "_segments",
    "_cell_length",
    "FIFOCache",
    *STRIP_CACHES,
    "_render_cache",
    "_link_ids",
    "_cell_count",
)


class _NoCacheYet:
    """What a Strip cache that was never written reads as: every lookup misses; the first store
    creates the Strip's own FIFOCache (of Textual's size) in the slot."""

    __slots__ = ("_size", "_slot", "_strip")

    def __init__(self, strip: Any, slot: Any, size: int) -> None:
        self._strip, self._slot, self._size = strip, slot, size

    def get(self, key: Any, default: Any = None) -> Any:
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        from textual.cache import FIFOCache

        cache: FIFOCache[Any, Any] = FIFOCache(self._size)
        cache[key] = value
        self._slot.__set__(self._strip, cache)

    def __len__(self) -> int:
        return 0

    def clear(self) -> None:
        pass


class _LazySlot:
    """Data descriptor in place of a Strip cache slot (see _NoCacheYet)."""

    __slots__ = ("size", "slot")

    def __init__(self, slot: Any, size: int) -> None:
        self.slot, self.size = slot, size

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        try:
            return self.slot.__get__(obj, owner)
        except AttributeError:
            return _NoCacheYet(obj, self.slot, self.size)

    def __set__(self, obj: Any, value: Any) -> None:
        self.slot.__set__(obj, value)

    def __delete__(self, obj: Any) -> None:
        self.slot.__delete__(obj)


def lazy_strip_caches() -> str:
    """Strip's seven caches are created on first store, not in every Strip's __init__. Same results
    and the same caching; a rendered line that is never cropped, divided or styled costs the collector
    2 objects instead of 9. Permanent (Strips made under the patch lack the slots until written, so it
    cannot be undone while they live). Returns "" when applied (or already), else why not."""
    from textual.strip import Strip

    if why := _version_refusal():
        return why
    if getattr(Strip, "_unet3d_lazy_caches", False):
        return ""
    if Strip.__init__.__code__.co_names != _STRIP_INIT_NAMES:
        return "Strip.__init__ is not the one this patch replaces"
    for name in STRIP_CACHES:
        slot = Strip.__dict__.get(name)
        if slot is None or not hasattr(slot, "__set__"):
            return f"Strip.{name} is not a slot"
    for name, size in STRIP_CACHES.items():
        setattr(Strip, name, _LazySlot(Strip.__dict__[name], size))

    def init_without_caches(self: Strip, segments: Any, cell_length: int | None = None) -> None:
        self._segments = list(segments)
        self._cell_length = cell_length
        self._render_cache = None
        self._link_ids = None
        self._cell_count = None

    Strip.__init__ = init_without_caches  # type: ignore[method-assign]
    Strip._unet3d_lazy_caches = True  # type: ignore[attr-defined]
    return ""


def _lru_links_are_rings() -> bool:
    """LRUCache keeps ``{key: [prev, next, key, value]}`` in ``_cache`` (what the patch unlinks)."""
    from textual.cache import LRUCache

    probe: LRUCache[str, int] = LRUCache(2)
    probe["a"], probe["b"] = 1, 2
    links = getattr(probe, "_cache", None)
    if not isinstance(links, dict) or set(links) != {"a", "b"}:
        return False
    link = links["a"]
    return isinstance(link, list) and len(link) == 4 and link[2] == "a" and link[3] == 1


def unlink_lru_on_clear() -> str:
    """LRUCache.clear unlinks its entries first. They are a ring of ``[prev, next, key, value]`` lists;
    ``clear`` dropped the dict and the head, leaving the ring (and every cached value: rendered rows,
    lines, box models) as cyclic garbage for the next full collection. LiveTable clears its
    DataTable's caches on every update. Same behaviour. Returns "" when applied (or already), else
    why not."""
    from textual.cache import LRUCache

    if why := _version_refusal():
        return why
    if getattr(LRUCache, "_unet3d_unlink", False):
        return ""
    if not _lru_links_are_rings():
        return "LRUCache no longer keeps its entries as [prev, next, key, value] links in _cache"
    clear = LRUCache.clear

    def clear_unlinked(self: LRUCache[Any, Any]) -> None:
        for link in self._cache.values():
            link.clear()  # only the cache holds its links; callers got link[3], the value
        clear(self)

    LRUCache.clear = clear_unlinked  # type: ignore[method-assign]
    LRUCache._unet3d_unlink = True  # type: ignore[attr-defined]
    return ""


# --------------------------------------------------------------------------- private attributes


def clear_geometry_caches() -> int:
    """Empty Textual's memoised Region operations (intersection, shrink, union, ...: up to 4,096
    entries each) and Scalar.resolve, just before a scheduled full collection (console.heap). Their
    keys and results are tuples of Regions and Fractions that the collector walks every time.
    Reference counting frees them at once; the next few seconds of layout refill the working set.
    Returns the entries dropped (0 on another Textual)."""
    if not supported():
        return 0
    from textual.css.scalar import Scalar
    from textual.geometry import Region

    n = 0
    for cls in (Region, Scalar):
        for value in vars(cls).values():
            func = getattr(value, "__func__", value)  # a classmethod's function
            info, clear = getattr(func, "cache_info", None), getattr(func, "cache_clear", None)
            if info is not None and clear is not None:
                n += info().currsize
                clear()
    return n


def screen_stacks(app: Any) -> Mapping[str, list[Any]]:
    """The app's screen stack per mode (App._screen_stacks); empty on another Textual."""
    stacks = getattr(app, "_screen_stacks", None) if supported() else None
    return stacks if isinstance(stacks, Mapping) else {}


def compositor_size(screen: Any) -> Any:
    """The size the screen's compositor last laid it out at (Screen._compositor); None if unknown."""
    if not supported():
        return None
    return getattr(getattr(screen, "_compositor", None), "size", None)


def forget_render_state(widget: Any) -> bool:
    """Drop a widget's rendered lines and box models and mark it dirty, so whatever is rendered next
    is rendered afresh (Widget._set_dirty, _render_cache, _box_model_cache). False when not done."""
    if not supported():
        return False
    set_dirty = getattr(widget, "_set_dirty", None)
    if set_dirty is None:
        return False
    set_dirty()  # clears the styles cache (its lines) and marks the whole widget for render
    if getattr(widget, "_dirty_regions", None):
        cache = widget._render_cache
        widget._render_cache = type(cache)(cache.size, [])  # re-rendered: it is dirty
    box_models = getattr(widget, "_box_model_cache", None)
    if box_models is not None:
        box_models.clear()  # keyed by the container's size
    return True


def bound_caches(obj: Any, sizes: Mapping[str, int]) -> int:
    """Set the maxsize of the widget's named private LRU caches (DataTable's render caches, RichLog's
    line cache); returns how many were bounded."""
    if not supported():
        return 0
    n = 0
    for name, size in sizes.items():
        cache = getattr(obj, name, None)
        if cache is not None and hasattr(cache, "maxsize"):
            cache.maxsize = size
            n += 1
    return n


def clear_table_caches(table: Any) -> bool:
    """Empty a DataTable's four render caches (DataTable._clear_caches)."""
    clear = getattr(table, "_clear_caches", None) if supported() else None
    if clear is None:
        return False
    clear()
    return True


def clear_line_cache(log_widget: Any) -> bool:
    """Empty a RichLog's rendered-line cache (RichLog._line_cache)."""
    cache = getattr(log_widget, "_line_cache", None) if supported() else None
    if cache is None:
        return False
    cache.clear()
    return True


def watchers(obj: Any) -> dict[str, list[tuple[Any, Any]]]:
    """The ``{attribute: [(watching node, callback)]}`` other nodes registered on ``obj`` (Textual keeps
    it in the attribute ``__watchers``); empty on another Textual."""
    found = getattr(obj, "__watchers", None) if supported() else None
    return found if isinstance(found, dict) else {}


def is_closing(node: Any) -> bool:
    """The node is being closed or is closed (MessagePump._closing / _closed)."""
    return bool(getattr(node, "_closing", False) or getattr(node, "_closed", False))


def is_pruning(widget: Any) -> bool:
    """The widget is being removed with its children (Widget._pruning)."""
    return bool(getattr(widget, "_pruning", False))


def footer_bindings_ready(footer: Any) -> Any:
    """Footer._bindings_ready: the Footer has read its screen's bindings at least once."""
    return getattr(footer, "_bindings_ready", None)
