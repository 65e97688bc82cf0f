"""Tables that fit the terminal: columns declared with a priority, the least important dropped
until the rest fit the width (``--wide`` keeps them all).

A table is declared once as a list of ``Column``s (header, priority, how a row gives its
cell); ``fit`` picks the columns that fit a width, ``render`` builds the rich ``Table``. A new
column is one more ``Column`` in the list. Pure but for ``render`` (rich).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

# What rich's default box costs around each cell: a border and one space of padding each side.
CELL_OVERHEAD = 3
TABLE_OVERHEAD = 1  # the last border
WRAP_AT = 32  # a long text cell (errors, drift) may wrap to this width before its column is dropped


@dataclass(frozen=True)
class Column:
    """``priority``: 0 is always shown; higher numbers are dropped first when the table does not
    fit. ``cell(row)`` gives the cell's text. ``wraps``: a text that may wrap to ``WRAP_AT``."""

    header: str
    priority: int
    cell: Callable[[Any], str]
    justify: str = "right"
    wraps: bool = False


def natural_width(column: Column, cells: Sequence[str]) -> int:
    """The width the column wants: its header's or its widest cell's (a wrapping text column at
    most ``WRAP_AT``, never less than its longest word)."""
    width = max([len(column.header)] + [len(c) for c in cells])
    if column.wraps and width > WRAP_AT:
        longest_word = max([len(w) for c in cells for w in c.split()] + [len(column.header), 1])
        width = max(WRAP_AT, longest_word)
    return width


def fit(columns: Sequence[Column], rows: Sequence[Any], width: Optional[int]) -> tuple[list[int], list[str]]:
    """The indices of the columns to show in ``width`` characters (None: all), in order, and
    the headers of those dropped. Columns go lowest priority first (the rightmost of a
    priority first), then those dropped that fit again come back, most important first;
    priority 0 columns are always kept, even when they alone do not fit (rich then wraps
    their cells)."""
    cells = [[c.cell(r) for r in rows] for c in columns]
    widths = [natural_width(c, cs) for c, cs in zip(columns, cells)]
    # A column with nothing in any row (no subject, no drift reference) says nothing: left out.
    kept = [i for i, cs in enumerate(cells) if columns[i].priority == 0 or not rows
            or any(x.strip() not in ("", "-") for x in cs)]
    if width is None:
        return kept, []

    def total() -> int:
        return sum(widths[i] + CELL_OVERHEAD for i in kept) + TABLE_OVERHEAD

    order = sorted((i for i in kept if columns[i].priority > 0), key=lambda i: (-columns[i].priority, -i))
    dropped = []
    for i in order:
        if total() <= width:
            break
        kept.remove(i)
        dropped.append(i)
    # A wide column dropped may have freed room for a narrower one dropped before it.
    for i in sorted(dropped, key=lambda i: (columns[i].priority, i)):
        if total() + widths[i] + CELL_OVERHEAD <= width:
            kept = sorted(kept + [i])
            dropped.remove(i)
    return kept, [columns[i].header for i in sorted(dropped)]


def required_width(columns: Sequence[Column], rows: Sequence[Any]) -> int:
    """The width every column needs at its natural width (``--wide``)."""
    return sum(natural_width(c, [c.cell(r) for r in rows]) + CELL_OVERHEAD for c in columns) + TABLE_OVERHEAD


def render(columns: Sequence[Column], rows: Sequence[Any], width: Optional[int], title: Optional[str] = None):
    """A rich Table of the columns that fit ``width`` (None: all), and the dropped headers."""
    from rich.table import Table

    kept, dropped = fit(columns, rows, width)
    table = Table(title=title)
    for i in kept:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, overflow="fold" if c.wraps else "ellipsis",
                         no_wrap=not c.wraps)
    for r in rows:
        table.add_row(*(columns[i].cell(r) for i in kept))
    return table, dropped
