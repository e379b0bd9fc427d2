"""The ``newline_values_only`` outputter: the values without the minion ids, one per line.

A list value gives one line per element, so ``{"web1": ["10.0.0.1", "127.0.0.1"], "web2": 8}``
shows ``10.0.0.1``, ``127.0.0.1`` and ``8`` on three lines (Salt's outputter of that name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def output(data: Any, **_: Any) -> str:
    values = list(data.values()) if isinstance(data, Mapping) else [data]
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    return "\n".join(str(item) for item in flat)
