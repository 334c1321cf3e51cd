"""Keep Python's full garbage collections short, rare and out of the way of the UI thread.

A full (generation 2) collection walks every object the collector tracks and holds the GIL while it
does. The console process holds ~300k of them once Textual, five screens and the backends' modules
(torch, onnxruntime: imported by the status probe) are loaded, and with Python's default policy a
streaming run triggered a full collection about twice a second: 100-200 ms each on the 2-core dev VM,
the largest part of every UI freeze over 100 ms we measured. Two measures:

* ``gc.freeze()`` moves every object alive now into a permanent generation that collections skip.
  Almost all of those 300k live for the whole session. Reference counting still frees frozen
  objects; only a reference cycle among them is never collected, so we freeze just after a full
  collection (no garbage left to trap) and only when the long-lived part grew: at start-up and when
  new modules were imported (the status probe imports the backends lazily, in a worker thread). We
  do not refreeze periodically: frozen objects that later become cyclic garbage are trapped for
  good, and Textual makes cyclic garbage continuously (refreezing every 5 s trapped ~500 objects/s).
* What stays unfrozen is the render state of the five screens (~60-130k objects after resizes), so a
  full collection still costs 30-90 ms. Python would run one whenever enough objects survived into
  the oldest generation, in the middle of a screen switch or a resize as often as not. We switch the
  automatic full collection off (generations 0 and 1 stay automatic: a few ms each) and run it
  ourselves every ``FULL_EVERY`` seconds when no key, mouse or resize event arrived for ``QUIET``
  seconds, or unconditionally after ``3 * FULL_EVERY``. Garbage between two full collections is
  bounded by that interval.
* Textual 8.2.8's Strip (one rendered line) caches itself: ``divide`` at its own length stores
  ``[self]`` and ``crop_extend`` over its whole length stores ``self`` in the Strip's own caches, a
  reference cycle, so every discarded line (with its segments and seven caches) waited for a full
  collection: ~4,000 objects/s of garbage while the monitor streams, which made each of our rare
  full collections 2-3 times longer (180-250 ms). ``break_strip_cycles`` returns the same results
  without caching ``self``: 95 % less cyclic garbage; reference counting frees the rest at once.
* What a full collection still walked (counted by type and by owner at each scheduled collection of a
  streaming run): ~25k of ~100k unfrozen objects were FIFOCaches, seven per Strip, made by Strip's
  __init__ and mostly never written (``lazy_strip_caches``: made on first store); the hidden screens'
  lines and box models for the size before the last resize, ~70 % of the screens' render state
  (``UnetConsole.drop_hidden_render_state``); and ``LRUCache.clear`` left its ring of entries with
  their values as cyclic garbage, ~15-30k objects per collection (``unlink_lru_on_clear``). After the
  three: 40-65k unfrozen objects, 2-6k of them garbage; full collections 15-88 ms instead of 28-163 ms
  (docs/RELIABILITY.md). Textual's memoised Region operations (~10k tuples of Regions) are emptied
  just before each scheduled collection (``clear_geometry_caches``). The patches of Textual classes
  are permanent (same results; each checks Textual 8.2.8's code first); the collector's policy and
  the frozen generation are given back when the app exits (``release``).
"""

from __future__ import annotations

import collections
import gc
import sys
import time
from typing import Any

FULL_EVERY = 10.0  # seconds between full collections
QUIET = 0.3  # no input for this long before one
NEVER = 1_000_000_000  # generation-2 threshold that the collector never reaches


class HeapFreezer:
    def __init__(self, full_every: float = FULL_EVERY, quiet: float = QUIET) -> None:
        self.full_every = full_every
        self.quiet = quiet
        self._modules = -1
        self._thresholds: tuple[int, int, int] | None = None
        self._last_full = time.monotonic()
        self.last_input = 0.0
        self.freezes = 0
        self.full_collections = 0
        # (monotonic time, "freeze" | "full", seconds it took, modules loaded): the latest 200
        self.log: collections.deque[tuple[float, str, float, int]] = collections.deque(maxlen=200)

    def start(self) -> None:
        """Take over generation-2 collections (``tick`` runs them)."""
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            t0, t1, _t2 = self._thresholds
            gc.set_threshold(t0, t1, NEVER)

    def maybe_freeze(self) -> bool:
        """Collect and freeze if modules were imported since the last freeze; True when it froze."""
        n = len(sys.modules)
        if n == self._modules:
            return False
        self._modules = n
        t0 = time.monotonic()
        gc.collect()
        gc.freeze()
        self.freezes += 1
        self._last_full = time.monotonic()
        self.log.append((t0, "freeze", self._last_full - t0, n))
        return True

    @property
    def stale(self) -> bool:
        """Modules were imported since the last freeze (the next check will collect and freeze)."""
        return len(sys.modules) != self._modules

    def input_seen(self) -> None:
        self.last_input = time.monotonic()

    def tick(self) -> None:
        """Called about once a second on the UI thread: freeze after imports, else a full collection
        when one is due and the user is not in the middle of something."""
        if self.maybe_freeze():
            return
        now = time.monotonic()
        since = now - self._last_full
        quiet = now - self.last_input >= self.quiet
        if (since >= self.full_every and quiet) or since >= 3 * self.full_every:
            clear_geometry_caches()
            gc.collect()
            self._last_full = time.monotonic()
            self.full_collections += 1
            self.log.append((now, "full", self._last_full - now, len(sys.modules)))

    def release(self) -> None:
        """Give the collector back its own policy and the frozen objects (the app is gone; tests run
        many apps in one process)."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        gc.unfreeze()
        self._modules = -1


def break_strip_cycles() -> bool:
    """Patch textual.strip.Strip so that no Strip caches itself (see the module docstring). The
    results are the objects Textual returns; only the self-referencing cache entry is not stored.
    Idempotent; False when Strip no longer has these methods (a Textual upgrade: re-measure)."""
    from textual.strip import Strip

    if getattr(Strip, "_unet3d_no_self_cache", False):
        return True
    divide, crop_extend = getattr(Strip, "divide", None), getattr(Strip, "crop_extend", None)
    if divide is None or crop_extend is None:
        return False

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
    return True


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


def lazy_strip_caches() -> bool:
    """Patch textual.strip.Strip so that its seven caches are created on first store, not in every
    Strip's __init__. Same results and the same caching; a rendered line that is never cropped,
    divided or styled costs the collector 2 objects instead of 9. Permanent and idempotent (Strips
    made under the patch lack the slots until written, so it cannot be undone while they live);
    False when Strip's __init__ is not the one this replaces (a Textual upgrade: re-measure)."""
    from textual.strip import Strip

    if getattr(Strip, "_unet3d_lazy_caches", False):
        return True
    if Strip.__init__.__code__.co_names != _STRIP_INIT_NAMES:
        return False
    for name in STRIP_CACHES:
        slot = Strip.__dict__.get(name)
        if slot is None or not hasattr(slot, "__set__"):
            return False
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
    return True


def unlink_lru_on_clear() -> bool:
    """Patch textual.cache.LRUCache.clear to unlink its entries. Entries are a ring of
    ``[prev, next, key, value]`` lists; ``clear`` dropped the dict and the head, leaving the ring (and
    every cached value: rendered rows, lines, box models) as cyclic garbage for the next full
    collection. LiveTable clears its DataTable's caches on every update. Idempotent, same behaviour."""
    from textual.cache import LRUCache

    if getattr(LRUCache, "_unet3d_unlink", False):
        return True
    clear = LRUCache.clear

    def clear_unlinked(self: LRUCache[Any, Any]) -> None:
        for link in self._cache.values():
            link.clear()  # only the cache holds its links; callers got link[3], the value
        clear(self)

    LRUCache.clear = clear_unlinked  # type: ignore[method-assign]
    LRUCache._unet3d_unlink = True  # type: ignore[attr-defined]
    return True


def clear_geometry_caches() -> int:
    """Empty Textual's memoised Region operations (intersection, shrink, union, ...: up to 4,096
    entries each) and Scalar.resolve, just before a scheduled full collection. Their keys and results
    are tuples of Regions and Fractions that the collector walks every time: ~10k objects after a few
    resizes. Reference counting frees them at once (no cycles); the next few seconds of layout refill
    the working set (a few hundred misses). Returns the entries dropped."""
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
