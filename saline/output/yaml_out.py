"""The ``yaml`` outputter: the data as block-style YAML (Salt's safe dumper, keys sorted)."""

from __future__ import annotations

from typing import Any


def _plain(data: Any) -> Any:
    """Only types the safe dumper knows: tuples and sets become lists, other objects text."""
    if isinstance(data, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else str(k): _plain(v)
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    if isinstance(data, (set, frozenset)):
        try:
            return [_plain(v) for v in sorted(data)]
        except TypeError:
            return [_plain(v) for v in data]
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", errors="replace")
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    return str(data)


def output(data: Any, **_: Any) -> str:
    import yaml

    text = yaml.safe_dump(_plain(data), default_flow_style=False, allow_unicode=True)
    # A lone scalar gets YAML's document-end marker ("true\n...\n"); it says nothing to a reader.
    if text.endswith("\n...\n"):
        text = text[: -len("...\n")]
    return text.rstrip("\n")
