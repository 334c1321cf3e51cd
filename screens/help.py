"""F1 / ?: contextual help for the focused widget (its HELP text, else its screen's), then every key
binding with its id (the name a keymap uses) and tooltip."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Markdown

from console import textual_compat


def _keys_table(app: App[Any]) -> str:
    rows = ["| Key | Binding id | Action | What it does |", "|---|---|---|---|"]
    seen: set[tuple[str, str]] = set()
    for _key, active in app.screen.active_bindings.items():
        b = active.binding
        ident = b.id or ""
        if not ident or (ident, b.key) in seen:  # widget internals (menus, tab) have no id
            continue
        seen.add((ident, b.key))
        key = app.get_key_display(b)
        rows.append(f"| `{key}` | `{ident}` | {b.description or b.action} | {b.tooltip} |")
    # the console's own keys that do not apply right now (Cancel without a job) are listed too
    keymap = dict(getattr(getattr(app, "settings", None), "keymap", {}) or {})
    for b in type(app).BINDINGS:
        if isinstance(b, Binding) and b.id and b.tooltip and not any(ident == b.id for ident, _k in seen):
            seen.add((b.id, b.key))
            key = ", ".join(k.strip() for k in keymap.get(b.id, b.key).split(","))
            rows.append(f"| `{key}` | `{b.id}` | {b.description} | {b.tooltip} (not now) |")
    return "\n".join(rows)


def config_line(app: App[Any]) -> str:
    """Which config file the console read (core.config), or where one would go."""
    from core import config as core_config

    settings = getattr(app, "settings", None)
    source = getattr(settings, "source", None)
    if source is not None:
        return f"The config file: `{source}`."
    return (
        f"No config file is in use; create `{core_config.default_path()}` (or `./{core_config.FILE_NAME}`, "
        f"or name one in `${core_config.ENV_CONFIG}`)."
    )


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close", id="help.close", tooltip="Close help")
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; height: 80%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    """

    def __init__(self, app: App[Any], focused: Widget | None) -> None:
        super().__init__()
        parts = ["# Help"]
        ctx = None
        node: Any = focused
        while node is not None and ctx is None:
            ctx = getattr(node, "HELP", None)
            node = node.parent
        if ctx is None:
            ctx = getattr(app.screen, "HELP", None)
        if ctx:
            parts += ["## This panel", str(ctx)]
        parts += [
            "## Keys",
            config_line(app),
            'Rebind any key in its `[keymap]` table by binding id: `"job.cancel" = "escape,ctrl+c"`.',
            "",
            _keys_table(app),
            "",
            "The command palette (`ctrl+p`) lists every action that makes sense right now.",
            "## Textual",
            textual_compat.state().summary(),
        ]
        self.text = "\n\n".join(parts)

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(self.text, id="help-text")
