"""The ``pprint`` outputter: the data as Python's ``pprint`` shows it."""

from __future__ import annotations

import pprint
from typing import Any


def output(data: Any, **_: Any) -> str:
    return pprint.pformat(data)
