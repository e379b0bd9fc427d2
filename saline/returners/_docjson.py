"""JSON documents for the document stores (couchdb, elasticsearch): what their servers accept.

Their bodies are strict JSON sent as UTF-8: NaN and Infinity are not JSON (both servers refuse the
whole document), lone surrogates cannot be encoded, and U+0000 is cut short by some of the tools
that read such documents (view servers, C JSON parsers). As in ``pgjsonb`` (PostgreSQL jsonb):
non-finite floats are stored as their names (``"nan"``, ``"inf"``, ``"-inf"``), U+0000 and lone
surrogates as U+FFFD. Bytes, sets and other values JSON has no form for go through ``_json.decode``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from saline.returners import _json

_BAD = re.compile("[\x00\ud800-\udfff]")


def safe(value: Any) -> Any:
    """A copy of ``value`` that strict JSON can carry and reads back the same everywhere."""
    return _safe(_json.decode(value))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return value if value.isascii() and "\x00" not in value else _BAD.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_safe(k if isinstance(k, str) else str(k) if isinstance(k, float) else k): _safe(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    return value
