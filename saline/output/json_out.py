"""The ``json`` outputter: the data as JSON, indented by 4 (``indent`` < 0: one line).

As in Salt, text is not escaped to ASCII and values JSON cannot hold are shown by ``repr``.
"""

from __future__ import annotations

import json
from typing import Any


def _string_keys(data: Any) -> Any:
    if isinstance(data, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else repr(k): _string_keys(v)
                for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_string_keys(v) for v in data]
    return data


def output(data: Any, *, indent: int = 4, **_: Any) -> str:
    width = indent if indent >= 0 else None
    try:
        return json.dumps(data, default=repr, indent=width, ensure_ascii=False)
    except TypeError:
        # keys JSON cannot have (tuples, ...): shown by repr rather than failing the output
        return json.dumps(_string_keys(data), default=repr, indent=width, ensure_ascii=False)
    except ValueError:  # a value that contains itself
        return json.dumps({"error": "Unable to serialize output to json"}, indent=width)
