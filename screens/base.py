"""The base of the five mode screens: built once at start-up (UnetConsole.build_screens), shown many
times.

On every resume Textual re-applies the whole stylesheet to every node of the screen (in case the app's
theme, classes or pseudo-classes changed while it was hidden): 30-60 ms of UI-thread CPU per screen
switch on the 2-core dev VM, for styles that had not changed. Nodes inside the screen restyle
themselves when their own classes change, hidden or not, so the full pass is needed only when
something app-wide changed since the screen's last one; we skip it otherwise.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.screen import Screen


class ConsoleScreen(Screen[None]):
    _styled_for: tuple[Any, ...] | None = None

    def _app_style_state(self) -> tuple[Any, ...]:
        app = self.app
        return (app.theme, app.classes, app.pseudo_classes, app.ansi_color)

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        # runs before Screen._on_screen_resume (Textual calls the handlers of every class in the MRO)
        state = self._app_style_state()
        if event.refresh_styles and state == self._styled_for:
            event.refresh_styles = False
        self._styled_for = state
