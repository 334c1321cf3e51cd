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
  and every use of Textual's private attributes live in console.textual_compat, which applies them
  only on the Textual version they were read from and says so when it refuses; the patches are
  permanent (same results). The collector's policy and the frozen generation are given back when the
  app exits (``release``).
"""

from __future__ import annotations

import collections
import gc
import sys
import time

from console.textual_compat import clear_geometry_caches

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
