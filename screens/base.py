"""The base of the five mode screens: built once at start-up (UnetConsole.build_screens), shown many
times.

On every resume Textual re-applies the whole stylesheet to every node of the screen (in case the app's
theme, classes or pseudo-classes changed while it was hidden): 30-60 ms of UI-thread CPU per screen
switch on the 2-core dev VM, for styles that had not changed. Nodes inside the screen restyle
themselves when their own classes change, hidden or not, so the full pass is needed only when
something app-wide changed since the screen's last one; we skip it otherwise.

A hidden screen keeps the rendered lines and box models of its last size until it is shown again,
when Textual lays it out and renders it at the new size anyway. After a resize those are dead weight
that every full garbage collection walks (console.heap): ``drop_render_state`` lets them go.

A screen whose layout changes size posts itself a Resize, and Textual's handler lays the whole screen
out (and renders it) again at the size it was just laid out at: on every resize, and on every switch
to a screen after a resize (``App.switch_mode`` lays the screen out first). That second pass cost
2-15 ms of UI-thread CPU per resize or switch (the run form: 7-15 ms, its reflow alone); when the
screen's compositor already holds a layout at the event's size we skip it (``_on_resize``). Changes
made since are still laid out by the screen's next update (Textual's own layout requests).

All three rely on Textual's private handlers and attributes: console.textual_compat gates them on the
Textual version they were read from (on another one the screen behaves as Textual's own).
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.screen import Screen

from console import textual_compat


class ConsoleScreen(Screen[None]):
    _styled_for: tuple[Any, ...] | None = None

    def _app_style_state(self) -> tuple[Any, ...]:
        app = self.app
        return (app.theme, app.classes, app.pseudo_classes, app.ansi_color)

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        # runs before Screen._on_screen_resume (Textual calls the handlers of every class in the MRO)
        if not textual_compat.supported():
            return
        state = self._app_style_state()
        if event.refresh_styles and state == self._styled_for:
            event.refresh_styles = False
        self._styled_for = state

    async def _on_resize(self, event: events.Resize) -> None:
        # runs before Screen._on_resize; prevent_default() stops the dispatch there (Textual 8.2.8)
        if event.size == textual_compat.compositor_size(self) and not self._breakpoints():
            event.stop()
            event.prevent_default()

    def _breakpoints(self) -> bool:
        """Screen._on_resize also sets breakpoint classes: never skip it where any are configured."""
        app = self.app
        horizontal = (
            app.HORIZONTAL_BREAKPOINTS if self.HORIZONTAL_BREAKPOINTS is None else self.HORIZONTAL_BREAKPOINTS
        )
        vertical = (
            app.VERTICAL_BREAKPOINTS if self.VERTICAL_BREAKPOINTS is None else self.VERTICAL_BREAKPOINTS
        )
        return bool(horizontal or vertical)

    def drop_render_state(self) -> int:
        """Forget every widget's rendered lines and box models (the screen is hidden and the terminal
        was resized: it will be laid out and rendered at the new size when shown). Each widget is
        marked dirty, so whatever is rendered next is rendered afresh. Returns the widgets dropped."""
        from textual.widget import Widget

        n = 0
        for widget in self.walk_children(Widget, with_self=True):
            if not textual_compat.forget_render_state(widget):
                return n
            drop = getattr(widget, "drop_stale_renders", None)  # LiveTable, LogTail
            if drop is not None:
                drop()
            n += 1
        return n
