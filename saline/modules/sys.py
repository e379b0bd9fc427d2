"""The ``sys`` module: what the minion can run and the documentation of it (Salt's ``sys.*``).

A name may be a module (``test``: all of its functions; ``sys`` does not match ``sysctl``), a
function (``test.ping``) or a glob (``test.*``, ``*.list_*``).
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, Callable

from saline.modules.context import current


def _functions() -> dict[str, Callable[..., Any]]:
    return current().functions


def _select(names: tuple[str, ...]) -> list[str]:
    funcs = _functions()
    if not names:
        return sorted(funcs)
    chosen: set[str] = set()
    for name in names:
        name = str(name)
        if "*" in name or "?" in name or "[" in name:
            chosen.update(fnmatch.filter(funcs, name))
        elif name in funcs:
            chosen.add(name)
        else:
            prefix = name if name.endswith(".") else name + "."
            chosen.update(f for f in funcs if f.startswith(prefix))
    return sorted(chosen)


def list_functions(*modules: str) -> list[str]:
    """List the functions of the named modules (all functions when none is named).

    CLI Example::

        saline '*' sys.list_functions
        saline '*' sys.list_functions sys
        saline '*' sys.list_functions 'sys.list_*'
    """
    return _select(modules)


def list_modules(*patterns: str) -> list[str]:
    """List the loaded modules, optionally only those matching the given globs.

    CLI Example::

        saline '*' sys.list_modules
        saline '*' sys.list_modules 's*'
    """
    names = sorted({fun.split(".", 1)[0] for fun in _functions()})
    if not patterns:
        return names
    return sorted({n for n in names for p in patterns if fnmatch.fnmatch(n, str(p))})


def doc(*names: str) -> dict[str, str | None]:
    """Return the docstrings of the named functions or modules (of every function when none is named).

    CLI Example::

        saline '*' sys.doc
        saline '*' sys.doc test
        saline '*' sys.doc test.ping
    """
    funcs = _functions()
    return {fun: inspect.getdoc(funcs[fun]) for fun in _select(names)}


def argspec(*names: str) -> dict[str, dict[str, Any]]:
    """Return the arguments each named function takes: args, defaults, varargs, kwargs.

    CLI Example::

        saline '*' sys.argspec test.echo
        saline '*' sys.argspec cmd
    """
    funcs = _functions()
    out: dict[str, dict[str, Any]] = {}
    for fun in _select(names):
        try:
            spec = inspect.getfullargspec(funcs[fun])
        except TypeError:
            continue
        out[fun] = {
            "args": spec.args or None,
            "defaults": list(spec.defaults) if spec.defaults else None,
            "varargs": True if spec.varargs else None,
            "kwargs": True if spec.varkw else None,
        }
    return out
