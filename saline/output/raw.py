"""The ``raw`` outputter: Python's ``str()`` of the data."""

from __future__ import annotations

from typing import Any


def output(data: Any, **_: Any) -> str:
    return data if isinstance(data, str) else str(data)
