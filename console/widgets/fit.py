"""A table whose columns share the table's width: fixed columns keep theirs, the text columns (detail,
evidence, run folder) take what is left, so a wide terminal shows whole texts and a narrow one still
shows every column (issue #12: Detail was cut at 40 characters on a 200-column terminal).

Textual's DataTable has fixed or content-sized columns only. FitTable rebuilds its columns (and
re-adds its rows, public API only) when the width they were fitted to changes: on a resize, not per
update; a table that streams cell updates (LiveTable.set_cells) is untouched by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from textual import events
from textual.widgets.data_table import RowKey

from console.widgets.live import LiveTable


@dataclass(frozen=True)
class Col:
    key: str
    label: str
    width: int | None = None  # fixed; None: a flexible column
    min_width: int = 8  # a flexible column's least width
    weight: int = 1  # its share of the rest; 0 with fit_content: always as wide as its widest cell
    fit_content: bool = False  # never wider than its widest cell (what it does not need goes on)


def fit_widths(
    cols: tuple[Col, ...], space: int, padding: int = 1, content: dict[str, int] | None = None
) -> list[int]:
    """Column widths for a table ``space`` cells wide: fixed ones as given; the flexible ones share
    what remains (each cell also takes 2 x ``padding``) by weight, never under their minimum; a
    ``fit_content`` one no wider than its widest cell (``content``), the others sharing what it leaves."""
    content = content or {}
    room = space - sum(c.width for c in cols if c.width is not None) - 2 * padding * len(cols)
    caps = {c.key: max(c.min_width, content[c.key]) for c in cols if c.fit_content and c.key in content}
    widths = {c.key: caps[c.key] for c in cols if c.width is None and not c.weight and c.key in caps}
    room -= sum(widths.values())
    free = [c for c in cols if c.width is None and c.key not in widths]
    settled = True
    while settled:  # a capped column that needs less than its share keeps only what it needs
        settled = False
        weight = sum(c.weight for c in free) or 1
        for c in free:
            if c.key in caps and caps[c.key] <= room * c.weight // weight:
                widths[c.key] = caps[c.key]
                room -= caps[c.key]
                free.remove(c)
                settled = True
                break
    weight = sum(c.weight for c in free) or 1
    left = room
    for n, c in enumerate(free):
        share = left if n == len(free) - 1 else room * c.weight // weight
        widths[c.key] = max(c.min_width, share)
        left -= share
    return [c.width if c.width is not None else widths[c.key] for c in cols]


class FitTable(LiveTable):
    """A LiveTable with ``Col`` columns fitted to its width (``set_columns``, then rows as usual)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cols: tuple[Col, ...] = ()
        self._fitted: list[int] = []

    def set_columns(self, *cols: Col) -> None:
        self._cols = cols
        self._fitted = self._widths()
        for c, w in zip(cols, self._fitted, strict=True):
            self.add_column(c.label, key=c.key, width=w)

    def _widths(self) -> list[int]:
        space = self.scrollable_content_region.width if self.size.width else 0
        if space <= 0:  # not laid out yet: fixed widths and minimums until the first resize
            return [c.width if c.width is not None else c.min_width for c in self._cols]
        content: dict[str, int] = {}
        for c in self._cols:
            if c.fit_content:
                cells = [self.get_cell(key, c.key) for key in self.rows]
                content[c.key] = max((cell_len(str(v)) for v in cells), default=cell_len(c.label))
                content[c.key] = max(content[c.key], cell_len(c.label))
        return fit_widths(self._cols, space, self.cell_padding, content)

    def fit(self) -> bool:
        """Refit the columns to the current width; returns whether they changed (then the rows are
        re-added with their current cells and the cursor stays on its row)."""
        widths = self._widths()
        if not self._cols or widths == self._fitted:
            return False
        self._fitted = widths
        rows = [(key, self.get_row(key)) for key in self.rows]
        cursor = self.cursor_coordinate
        self.clear(columns=True)
        for c, w in zip(self._cols, widths, strict=True):
            self.add_column(c.label, key=c.key, width=w)
        for key, cells in rows:
            self.add_row(*cells, key=key.value if isinstance(key, RowKey) else key)
        if self.row_count:
            self.move_cursor(row=min(cursor.row, self.row_count - 1), column=cursor.column, animate=False)
        return True

    def on_resize(self, event: events.Resize) -> None:
        self.fit()
