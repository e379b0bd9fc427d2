"""Outputters: how the CLI shows job returns, with Salt's names and looks (``--out=json`` ...).

:func:`render` turns data into text without a trailing newline (the caller prints it; an empty
string means print nothing, as ``quiet`` gives). Each outputter lives in its own module and is
imported only when used, so ``import saline.output`` stays cheap (no YAML unless ``--out=yaml``).

``static`` follows Salt's ``--static``: without it, a mapping of minion id -> return is shown one
minion at a time, in arrival (insertion) order, each as its own document (so ``json`` prints one
JSON object per minion); with it, the whole mapping is one document.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger(__name__)

# outputter name -> module in this package
OUTPUTTERS: dict[str, str] = {
    "nested": "nested",
    "json": "json_out",
    "yaml": "yaml_out",
    "txt": "txt",
    "raw": "raw",
    "table": "table",
    "newline_values_only": "newline_values_only",
    "quiet": "quiet",
    "pprint": "pprint_out",
}

DEFAULT_OUTPUTTER = "nested"

# Outputters whose non-static form is one document per minion; the others already show
# minions line by line, or (table) as one table.
_PER_MINION = {"nested", "json", "yaml", "raw", "pprint"}


def get_outputter(name: str | None) -> Any:
    """The module of outputter ``name``; Salt falls back to ``nested`` for an unknown name."""
    key = name or DEFAULT_OUTPUTTER
    if key not in OUTPUTTERS:
        log.error("Invalid outputter %s specified, falling back to nested", key)
        key = DEFAULT_OUTPUTTER
    return importlib.import_module(f"{__name__}.{OUTPUTTERS[key]}")


def render(data: Any, out: str = "nested", *, static: bool = False, color: bool = False,
           indent: int = 4, retcode: int = 0) -> str:
    """``data`` as outputter ``out`` shows it.

    ``color`` adds ANSI colors (nested and table only, as in Salt); ``indent`` is the indent step
    of nested and json (a negative value puts each JSON document on one line); ``retcode`` other
    than 0 makes nested show keys in red, as Salt does for a failed job.
    """
    name = out if out in OUTPUTTERS else DEFAULT_OUTPUTTER
    module = get_outputter(out)
    options = {"color": color, "indent": indent, "retcode": retcode}
    if not static and name in _PER_MINION and isinstance(data, dict) and len(data) > 1:
        parts = [module.output({key: value}, **options) for key, value in data.items()]
        return "\n".join(part for part in parts if part)
    return module.output(data, **options)
