"""Go's text/tabwriter as kubectl configures it, and kubectl's rule for a table cell.

Tables pad every column but the last to max(6, widest cell + 3); describe pads to widest cell + 2
within blocks of consecutive lines. Both printers lay text out through here.
"""

from __future__ import annotations

from typing import Any, Sequence


def tabwrite(lines: Sequence[Sequence[str]], *, minwidth: int, padding: int) -> str:
    """Go's text/tabwriter: each line is a list of cells, all but the last tab-terminated.
    A column's width is set per block of consecutive lines that have a cell in it."""
    widths = [[0] * max(len(cells) - 1, 0) for cells in lines]

    def measure(first: int, last: int, column: int) -> None:
        row = first
        while row < last:
            if column >= len(lines[row]) - 1:
                row += 1
                continue
            start, width = row, minwidth
            while row < last and column < len(lines[row]) - 1:
                width = max(width, len(lines[row][column]) + padding)
                row += 1
            for k in range(start, row):
                widths[k][column] = width
            measure(start, row, column + 1)

    measure(0, len(lines), 0)
    out = []
    for cells, cell_widths in zip(lines, widths):
        padded = [text.ljust(width) for text, width in zip(cells, cell_widths)]
        out.append("".join(padded) + (cells[-1] if cells else "") + "\n")
    return "".join(out)


def cell(value: Any) -> str:
    """A table cell: kubectl cuts a value at its first line break and marks the cut."""
    text = "" if value is None else str(value)
    for i, char in enumerate(text):
        if char in "\r\n\f":
            return text[:i] + "..."
    return text
