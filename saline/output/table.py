"""The ``table`` outputter: returns as text tables drawn the way Salt's table outputter draws them.

A mapping whose values are lists (rows: dicts, lists or scalars) shows each key followed by a
table of its rows, as Salt does; any other mapping (``minion -> value``) becomes one two-column
table, ``Minion | Return``. Cells are centred, wrapped at 50 characters, and every row is followed
by a ``-`` rule::

    -------------------
    | Minion | Return |
    -------------------
    |  web1  |  True  |
    -------------------
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from typing import Any

from saline.output.colors import Colors, get_colors, strip_esc

PREFIX, SUFFIX, DELIM, RULE = "| ", " |", " | ", "-"
WIDTH = 50


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return strip_esc(value)
    if isinstance(value, (dict, list, tuple)):
        try:
            return strip_esc(json.dumps(value, default=str, sort_keys=True, ensure_ascii=False))
        except (TypeError, ValueError):  # keys of mixed types, or keys JSON cannot have
            return strip_esc(str(value))
    return strip_esc(str(value))


def _wrap(text: str) -> list[str]:
    lines: list[str] = []
    for line in text.split("\n") or [""]:
        lines.extend(textwrap.wrap(line, WIDTH, break_long_words=False, break_on_hyphens=False) or [""])
    return lines


def _table(rows: list[list[str]], indent: int, c: Colors) -> list[str]:
    """Rows of cell texts (a header is just the first row) as table lines."""
    if not rows:
        return []
    columns = max(len(r) for r in rows)
    physical_rows = []
    for row in rows:
        cells = [_wrap(cell) for cell in row] + [[""]] * (columns - len(row))
        height = max(len(cell) for cell in cells)
        physical_rows.append([[cell[i] if i < len(cell) else "" for cell in cells] for i in range(height)])
    widths = [max(len(line[col]) for rows_ in physical_rows for line in rows_) for col in range(columns)]
    rule = RULE * (len(PREFIX) + len(SUFFIX) + sum(widths) + len(DELIM) * (columns - 1))
    pad = " " * indent
    out = [f"{pad}{c.LIGHT_GRAY}{rule}{c.ENDC}"]
    for lines in physical_rows:
        for line in lines:
            text = PREFIX + DELIM.join(cell.center(width) for cell, width in zip(line, widths)) + SUFFIX
            out.append(f"{pad}{c.WHITE}{text}{c.ENDC}")
        out.append(f"{pad}{c.LIGHT_GRAY}{rule}{c.ENDC}")
    return out


def _row_table(rows: list[Any], indent: int, c: Colors) -> list[str]:
    """A list as a table: dicts give labelled columns, lists give columns, scalars one column."""
    if not rows:
        return []
    if all(isinstance(r, Mapping) for r in rows):
        keys: list[Any] = []
        for row in rows:
            keys.extend(k for k in row if k not in keys)
        try:
            keys.sort()
        except TypeError:
            keys.sort(key=str)
        labels = [str(k).replace("_", " ").title() for k in keys]
        body = [[_cell(row.get(k, "")) for k in keys] for row in rows]
        return _table([labels] + body, indent, c)
    if all(isinstance(r, (list, tuple)) for r in rows):
        return _table([[_cell(v) for v in r] for r in rows], indent, c)
    return _table([[_cell(r)] for r in rows], indent, c)


def output(data: Any, *, color: bool = False, **_: Any) -> str:
    c = get_colors(color)
    if isinstance(data, Mapping):
        if data and all(isinstance(v, (list, tuple)) for v in data.values()):
            out: list[str] = []
            for key in data:
                out.append(f"{c.DARK_GRAY}{strip_esc(str(key))}:{c.ENDC}")
                out.append(f"{c.DARK_GRAY}----------{c.ENDC}")
                out.extend(_row_table(list(data[key]), 4, c))
            return "\n".join(out)
        rows = [["Minion", "Return"]] + [[_cell(k), _cell(v)] for k, v in data.items()]
        return "\n".join(_table(rows, 0, c)) if data else ""
    if isinstance(data, (list, tuple)):
        return "\n".join(_row_table(list(data), 0, c))
    return _cell(data)
