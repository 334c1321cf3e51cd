"""The key footer of every screen: Textual's Footer, rebuilt only when the keys it shows changed.

Textual's Footer recomposes (removes and mounts ~20 FooterKey widgets) each time its screen publishes
``bindings_updated_signal``: every screen switch, every return from the palette or a modal, focus
changes. On the 2-core dev VM that was ~50 ms of UI-thread CPU per switch for an identical footer.
Worse, each FooterKey ``data_bind``s ``Footer.compact``, which stores ``(key, setter)`` on the Footer's
watcher list; Textual prunes that list only when ``compact`` changes (never here), so every removed
FooterKey stayed alive with its styles and caches: ~1 MB per pair of screen switches, ~0.8 MB per
palette open (Textual issue #6666, open in 8.2.8). This subclass skips the rebuild when the shown
bindings are unchanged and drops the watcher entries of removed keys when it does rebuild. Both read
Textual's private state, through console.textual_compat: on another Textual this is Textual's Footer.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Footer

from console import textual_compat


def prune_watchers(obj: Any) -> int:
    """Drop watcher entries on ``obj`` whose watching node has left the DOM (Textual #6666).
    Returns how many were dropped."""
    watchers = textual_compat.watchers(obj)
    dropped = 0
    for name, entries in watchers.items():
        keep = [(node, cb) for node, cb in entries if not textual_compat.is_closing(node)]
        keep = [(node, cb) for node, cb in keep if node is obj or node.is_attached]
        dropped += len(entries) - len(keep)
        watchers[name][:] = keep
    return dropped


class ConsoleFooter(Footer):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("compact", True)
        super().__init__(**kwargs)
        self._shown: tuple[Any, ...] | None = None

    def _signature(self) -> tuple[Any, ...]:
        """Everything Footer.compose reads: the shown bindings, their enabled state and tooltips."""
        rows = tuple(
            (b.key, b.action, b.description, b.group, b.tooltip, enabled, tooltip)
            for (_node, b, enabled, tooltip) in self.screen.active_bindings.values()
            if b.show or b.action == "command_palette"
        )
        ready = textual_compat.footer_bindings_ready(self)
        return (ready, self.compact, self.show_command_palette, rows)

    async def recompose(self) -> None:
        if not textual_compat.supported():  # Textual's own Footer (private state read below)
            await super().recompose()
            return
        if not self.is_attached or textual_compat.is_pruning(self):
            return
        shown = self._signature()
        if shown == self._shown and self.children:
            return  # the same keys: nothing to rebuild
        self._shown = shown
        await super().recompose()
        prune_watchers(self)
