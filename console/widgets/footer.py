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


# actions whose keys the footer keeps at any width; the others give way from the right (issue #12: below
# ~110 columns Help and Quit fell off the end and left stray glyphs behind the palette key)
KEEP = {"help", "quit_console", "cancel_job", "pause", "resume", "command_palette"}


class ConsoleFooter(Footer):
    DEFAULT_CSS = """
    ConsoleFooter.-compact FooterLabel { margin: 0 1 0 0; }
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("compact", True)
        super().__init__(**kwargs)
        self._shown: tuple[Any, ...] | None = None
        self._fitted: tuple[Any, ...] | None = None

    @staticmethod
    def _kept(child: Any) -> bool:
        action = str(getattr(child, "action", "")).split("(", 1)[0].removeprefix("app.")
        return action in KEEP

    def fit(self, width: int) -> int:
        """Show as many keys as ``width`` columns hold, never cutting one: the kept ones (help, quit,
        cancel, pause, palette) always, the others from the left; the screens group's label goes
        first. Returns how many were hidden. Called before a resize's layout and after a rebuild."""
        from textual.geometry import Size

        children = list(self.children)
        state = (width, tuple(id(c) for c in children))
        if state == self._fitted or not children:
            return 0
        self._fitted = state
        size = Size(width, 1)

        def outer(c: Any) -> int:
            return (
                c.get_content_width(size, size)
                + c.styles.margin.width
                + c.styles.padding.width
                + (c.styles.border.spacing.width)
            )

        need = {c: outer(c) for c in children}
        shown = set(children)
        label = [c for c in children if type(c).__name__ == "FooterLabel"]  # the screens group's
        others = [c for c in reversed(children) if c not in label and not self._kept(c)]
        for c in [*label, *others]:  # what gives way, in this order
            if sum(need[x] for x in shown) <= width:
                break
            shown.discard(c)
        for n, c in enumerate(children):  # a group's label never stays without its keys
            if type(c).__name__ == "KeyGroup" and c not in shown and n + 1 < len(children):
                shown.discard(children[n + 1])
        hidden = 0
        for c in children:
            c.display = c in shown
            hidden += c not in shown
        return hidden

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
            self.fit(self.app.size.width)  # the terminal may have changed size while it was hidden
            return  # the same keys: nothing to rebuild
        self._shown = shown
        await super().recompose()
        prune_watchers(self)
        self.fit(self.app.size.width)
