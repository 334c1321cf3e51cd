"""Widgets updated many times a second for hours: they keep only what the next frame can use.

Why: every object a widget keeps is walked by each full garbage collection, which stops the UI thread
(console.heap). Textual's DataTable keys its four render caches on a counter that every
``update_cell`` increments, so after an update every cached row, cell and line is unreachable, yet
stays until the LRU bound pushes it out (10,000 cells, 1,000 rows and lines): the latency table,
updated 18 times per 0.5 s sample, grew ~30 k dead cache objects a minute. RichLog caches rendered
lines by absolute line number (1,024 of them); a log that keeps scrolling never asks for most again.

After a terminal resize every cached line and cell is for the old size: ``drop_stale_renders`` is
called by the App when the resize arrives, before the screen is laid out and rendered at the new size
(``UnetConsole.drop_stale_renders``). It used to run in ``on_resize``, which Textual sends after
that render: it threw the new size's lines away and made the table render everything a second time.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable, RichLog
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

from console import textual_compat

LOG_LINE_CACHE = 128  # rendered lines kept by a LogTail: a few screens' worth
# LiveTable's render caches (Textual: 1,000 rows / 10,000 cells / 1,000 lines): two frames of a
# full-height table (~50 rows); entries made stale by a focus, hover or size change (new keys) go
TABLE_CACHES = {
    "_row_render_cache": 128,
    "_row_renderable_cache": 128,
    "_line_cache": 128,
    "_cell_render_cache": 512,
}


class LiveTable(DataTable[Any]):
    """A DataTable whose cells change while it is shown.

    ``set_cells`` writes only the cells whose value changed (an unchanged write still invalidates
    every cached render) and then drops the render caches, which that write made stale anyway.
    Its caches are also bounded to a few frames (TABLE_CACHES)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        textual_compat.bound_caches(self, TABLE_CACHES)

    def set_cells(self, row: str, values: dict[str, Any]) -> int:
        """Update ``row``'s cells from ``{column key: value}``; returns how many changed."""
        changed = 0
        for col, value in values.items():
            try:
                current = self.get_cell(row, col)
            except CellDoesNotExist:
                current = None
            if current is not None and type(current) is type(value) and current == value:
                continue
            self.update_cell(RowKey(row), ColumnKey(col), value)
            changed += 1
        if changed:
            self.drop_stale_renders()
        return changed

    def drop_stale_renders(self) -> None:
        textual_compat.clear_table_caches(self)


class LogTail(RichLog):
    """A RichLog whose rendered-line cache holds a few screens, not 1,024 lines."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        textual_compat.bound_caches(self, {"_line_cache": LOG_LINE_CACHE})

    def drop_stale_renders(self) -> None:
        textual_compat.clear_line_cache(self)
