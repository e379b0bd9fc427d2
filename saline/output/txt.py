"""The ``txt`` outputter: ``minion: value`` lines, one per line of a text value (Salt's txt)."""

from __future__ import annotations

import pprint
from collections.abc import Mapping
from typing import Any


def output(data: Any, **_: Any) -> str:
    lines: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            if isinstance(value, str):
                lines.extend(f"{key}: {line}" for line in value.splitlines())
            else:
                lines.append(f"{key}: {value}")
    elif isinstance(data, str):
        lines.append(data)
    else:
        lines.append(pprint.pformat(data))
    return "\n".join(lines)
