"""Keep Python's full garbage collections short on the UI thread.

A full (generation 2) collection walks every object the collector tracks and holds the GIL while it
does. The console process holds ~300k of them once Textual, five screens and the backends' modules
(torch, onnxruntime: imported by the status probe) are loaded, and a streaming run triggers a full
collection about twice a second: 100-200 ms each on the 2-core dev VM, the largest part of every UI
freeze over 100 ms that we measured. Almost all of those objects live for the whole session.

``gc.freeze()`` moves every object alive now into a permanent generation that collections skip, so
the collections that remain walk only what was created since (render caches, the run's buffers):
tens of ms. Reference counting still frees frozen objects; only a reference cycle among them would
never be collected, so we freeze just after a full collection (no garbage left to trap) and only when
the long-lived part grew: start-up, and whenever new modules were imported (the status probe imports
the backends lazily, in a worker thread). That is a handful of times per session, each one pause
the length of one full collection.
"""

from __future__ import annotations

import gc
import sys


class HeapFreezer:
    def __init__(self) -> None:
        self._modules = -1
        self.freezes = 0

    def maybe_freeze(self) -> bool:
        """Collect and freeze if modules were imported since the last freeze; True when it froze."""
        n = len(sys.modules)
        if n == self._modules:
            return False
        self._modules = n
        gc.collect()
        gc.freeze()
        self.freezes += 1
        return True

    @property
    def stale(self) -> bool:
        """Modules were imported since the last freeze (the next check will collect and freeze)."""
        return len(sys.modules) != self._modules

    def release(self) -> None:
        """Make the frozen objects collectable again (the app is gone; tests run many apps)."""
        gc.unfreeze()
        self._modules = -1
