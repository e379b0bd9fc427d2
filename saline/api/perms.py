"""Salt's permission lists (``external_auth``), checked on every call.

A user's list holds, in Salt's syntax:

* ``'.*'``, ``'test.*'``, ``'cmd.run'``: execution functions (regular expressions) on any target;
* ``{'web*': ['test.*', 'cmd.run']}``: those functions on minions the target ``web*`` (a glob, or
  any compound expression) reaches: the job's minions must all be among them;
* ``{'*': [{'test.arg': {'args': ['a.*'], 'kwargs': {'k': 'v.*'}}}]}``: inside a target's list,
  a function with its arguments restricted (each a regular expression);
* ``'@runner'``, ``'@wheel'``, ``'@jobs'`` (the ``jobs`` runner), and ``{'@runner': ['jobs.*']}``,
  ``{'@wheel': ['key.list_all']}``: master-side functions.

A function expression must match the whole name (``fullmatch``): Salt's ``re.match`` lets
``'test'`` grant ``test.ping`` and ``'cmd.run'`` grant ``cmd.run_all``; saline does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

#: the target expressions of the local client (Salt's tgt_type names)
Expander = Callable[[Any, str], Awaitable[list[str]]]


@dataclass(frozen=True)
class Call:
    """What a lowstate asks: the client's kind (``local``, ``runner``, ``wheel``), the function,
    its arguments and, for ``local``, the target."""
    kind: str
    fun: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    tgt: Any = None
    tgt_type: str = "glob"


def _fun_ok(expr: Any, fun: str) -> bool:
    try:
        return re.fullmatch(str(expr), fun) is not None
    except re.error:
        return False


def _args_ok(spec: Any, call: Call) -> bool:
    """``{'args': [regex, ...], 'kwargs': {name: regex}}``: each given pattern must match."""
    if not isinstance(spec, dict):
        return spec is None
    for i, pattern in enumerate(spec.get("args") or []):
        if i >= len(call.args) or not _fun_ok(pattern, str(call.args[i])):
            return False
    given = dict(call.kwargs)
    for name, pattern in (spec.get("kwargs") or {}).items():
        if name not in given or not _fun_ok(pattern, str(given[name])):
            return False
    return True


def _funs_ok(entries: Any, call: Call) -> bool:
    """A list of function entries (strings, or ``{fun: {args, kwargs}}`` maps) that grants ``call``."""
    for entry in entries if isinstance(entries, list) else [entries]:
        if isinstance(entry, str) and _fun_ok(entry, call.fun):
            return True
        if isinstance(entry, dict):
            for fun, spec in entry.items():
                if _fun_ok(fun, call.fun) and _args_ok(spec, call):
                    return True
    return False


def master_side_allowed(perms: list[Any], call: Call) -> bool:
    """``runner`` and ``wheel`` calls: ``@runner``/``@wheel`` (all, or a list), ``@jobs`` for jobs.*."""
    key = f"@{call.kind}"
    for entry in perms:
        if entry == key:
            return True
        if entry == "@jobs" and call.kind == "runner" and call.fun.startswith("jobs."):
            return True
        if isinstance(entry, dict):
            if key in entry and _funs_ok(entry[key], call):
                return True
            if "@jobs" in entry and call.kind == "runner" and call.fun.startswith("jobs.") and _funs_ok(entry["@jobs"], call):
                return True
    return False


async def local_allowed(perms: list[Any], call: Call, minions: list[str], expand: Expander) -> bool:
    """An execution-function call on ``minions`` (the minions the job's target reaches)."""
    for entry in perms:
        if isinstance(entry, str):
            if not entry.startswith("@") and _fun_ok(entry, call.fun):
                return True
            continue
        if not isinstance(entry, dict):
            continue
        for target, funs in entry.items():
            if not isinstance(target, str) or target.startswith("@"):
                continue
            if not _funs_ok(funs, call):
                continue
            if target in ("*", ".*"):
                return True
            allowed = set(await expand(target, "compound"))
            if set(minions) <= allowed:
                return True
    return False
