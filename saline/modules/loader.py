"""Finding execution functions and running one job the way Salt's minion does.

:func:`load_functions` maps public names (``"test.ping"``) to functions: the built-in modules
first, then every ``*.py`` in each ``module_dirs`` folder, which may replace a built-in module of
the same name (as Salt's synced ``_modules`` do). A module's public name is its file name, or its
``__virtualname__``, or the string its ``__virtual__()`` returns; ``__virtual__()`` returning
False (or ``(False, reason)``) leaves the module out. Functions whose names start with ``_`` are
private, ``__func_alias__`` renames (``{"list_": "list"}``) and ``__load__`` lists the functions
to expose. Custom modules also get Salt's dunders: ``__salt__``, ``__opts__``, ``__grains__`` and
``__context__`` (where ``__context__["retcode"]`` is the job's retcode).

:func:`execute` runs one function and shapes the result as Salt's minion does.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
import traceback
import types
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Callable

from saline.modules.args import split_args
from saline.modules.context import ExecContext, maybe_current, use
from saline.modules.errors import CommandExecutionError, InvocationError, JobKilled

log = logging.getLogger(__name__)

BUILTIN_MODULES = ("test", "cmd", "grains", "sys", "status", "saltutil", "disk", "network", "service", "pkg",
                   "file", "user", "schedule", "beacons")

EX_GENERIC = 1


class Functions(dict):
    """``{"mod.fun": callable}``, plus why modules that did not load were left out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: module name -> reason, for modules that failed to load or declined to
        self.errors: dict[str, str] = {}


class _GrainsView(Mapping):
    """``__grains__`` for custom modules: the current job's grains, else the minion's own."""

    def __init__(self, opts: Mapping[str, Any]) -> None:
        self._opts = opts
        self._fallback: dict | None = None

    def _data(self) -> Mapping[str, Any]:
        ctx = maybe_current()
        if ctx is not None:
            return ctx.grains
        if self._fallback is None:
            from saline.modules.grains import core_grains

            self._fallback = {**core_grains(dict(self._opts)), **(self._opts.get("grains") or {})}
        return self._fallback

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


class _ContextView(MutableMapping):
    """``__context__`` for custom modules: a shared dict whose ``retcode`` is the job's retcode."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        ctx = maybe_current()
        if key == "retcode" and ctx is not None:
            return ctx.retcode
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        ctx = maybe_current()
        if key == "retcode" and ctx is not None:
            ctx.retcode = value
        else:
            self._data[key] = value

    def __delitem__(self, key: str) -> None:
        ctx = maybe_current()
        if key == "retcode" and ctx is not None:
            ctx.retcode = 0
        else:
            del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def custom_module_files(opts: Mapping[str, Any]) -> list[Path]:
    """The ``*.py`` files of every ``module_dirs`` folder, in load order."""
    dirs = opts.get("module_dirs") or []
    if isinstance(dirs, str):
        dirs = [dirs]
    files: list[Path] = []
    for folder in dirs:
        path = Path(str(folder))
        if not path.is_dir():
            continue
        files.extend(p for p in sorted(path.glob("*.py")) if not p.name.startswith("_") and p.is_file())
    return files


def _public_name(module: types.ModuleType, default: str) -> str | None | tuple[None, str]:
    """The module's public name, or ``(None, reason)`` when its ``__virtual__`` declines."""
    name = getattr(module, "__virtualname__", None) or default
    virtual = getattr(module, "__virtual__", None)
    if virtual is None:
        return name
    result = virtual()
    if isinstance(result, tuple):
        ok, reason = (result + (None, None))[:2]
        if ok is False or ok is None:
            return None, str(reason or f"{name}.__virtual__ returned False")
        result = ok
    if result is False or result is None:
        return None, f"'{name}' __virtual__ returned False"
    return result if isinstance(result, str) else name


def _module_functions(module: types.ModuleType) -> dict[str, Callable[..., Any]]:
    """The public functions a module defines (not ones it imported), under their public names."""
    aliases = getattr(module, "__func_alias__", None) or {}
    listed = getattr(module, "__load__", None)
    names = list(listed) if listed is not None else list(vars(module))
    out: dict[str, Callable[..., Any]] = {}
    for attr in names:
        if not isinstance(attr, str) or attr.startswith("_"):
            continue
        obj = getattr(module, attr, None)
        if not inspect.isfunction(obj):
            continue
        if listed is None and obj.__module__ != module.__name__:
            continue  # ``from x import helper`` does not make ``helper`` an execution function
        out[str(aliases.get(attr, attr))] = obj
    return out


def _add_module(functions: Functions, module: types.ModuleType, default_name: str) -> None:
    named = _public_name(module, default_name)
    if isinstance(named, tuple):
        functions.errors[default_name] = named[1]
        log.info("module %s not loaded: %s", default_name, named[1])
        return
    assert named is not None
    for prefix in [k for k in functions if k.startswith(named + ".")]:
        del functions[prefix]  # a custom module replaces a built-in one whole
    for fname, func in _module_functions(module).items():
        functions[f"{named}.{fname}"] = func
    functions.errors.pop(named, None)


def _load_custom(path: Path, functions: Functions, opts: Mapping[str, Any],
                 grains: _GrainsView, context: _ContextView) -> None:
    mod_name = f"saline_custom_modules.{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise ImportError("not a loadable Python file")
        module = importlib.util.module_from_spec(spec)
        # Salt's dunders, set before the module's code runs so module-level code may use them.
        module.__salt__ = functions  # type: ignore[attr-defined]
        module.__opts__ = opts  # type: ignore[attr-defined]
        module.__grains__ = grains  # type: ignore[attr-defined]
        module.__context__ = context  # type: ignore[attr-defined]
        module.__pillar__ = {}  # type: ignore[attr-defined]
        sys.modules[mod_name] = module  # dataclasses and pickle look modules up here
        spec.loader.exec_module(module)
        _add_module(functions, module, path.stem)
    except Exception as exc:  # a user's file: report it and go on with the others
        sys.modules.pop(mod_name, None)
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        functions.errors[path.stem] = reason
        log.error("custom module %s failed to load: %s", path, reason)


def load_functions(opts: Mapping[str, Any]) -> Functions:
    """Every execution function: the built-in modules, then those of ``opts["module_dirs"]``."""
    functions = Functions()
    for name in BUILTIN_MODULES:
        module = importlib.import_module(f"saline.modules.{name}")
        _add_module(functions, module, name)
    grains = _GrainsView(opts)
    context = _ContextView()
    for path in custom_module_files(opts):
        _load_custom(path, functions, opts, grains, context)
    return functions


# -- running one job ------------------------------------------------------------------------------

def _usage(fun: str, func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    try:
        sig = inspect.signature(func)
        # Annotations are for the code's readers; the usage line shows names and defaults only.
        plain = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
        signature = str(sig.replace(parameters=plain, return_annotation=inspect.Signature.empty))
    except (TypeError, ValueError):
        signature = "(...)"
    return f"Usage: {fun}{signature}" + (f"\n{first}" if first else "")


def _bind(fun: str, func: Callable[..., Any], args: list, kwargs: dict) -> str | None:
    """None when ``func(*args, **kwargs)`` binds; else the error text for the job's return."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: let the call itself decide
    params = signature.parameters.values()
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    invalid = [f"{k}={v}" for k, v in kwargs.items()
               if not isinstance(k, str) or not (takes_kwargs or k in named)]
    if invalid:
        # Salt's wording for a keyword the function does not take
        return f"ERROR executing '{fun}': The following keyword arguments are not valid: {', '.join(invalid)}"
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        return f"Passed invalid arguments to {fun}: {exc}\n{_usage(fun, func)}"
    return None


def _collect(value: Any) -> Any:
    """A generator's items: merged when all are dicts, else a list (Salt's minion does this)."""
    items = list(value)
    if items and all(isinstance(i, dict) for i in items):
        merged: dict = {}
        for item in items:
            merged.update(item)
        return merged
    return items


def _failed(ret: Any) -> bool:
    """A dict return whose ``result`` or ``success`` key is present and falsy."""
    if not isinstance(ret, dict):
        return False
    return any(key in ret and not ret[key] for key in ("result", "success"))


def _error(message: str) -> dict[str, Any]:
    return {"return": message, "retcode": EX_GENERIC, "success": False, "out": "nested"}


def execute(functions: Mapping[str, Callable[..., Any]], fun: str, arg: Any, ctx: ExecContext) -> dict[str, Any]:
    """Run ``fun`` with the publish ``arg`` list in ``ctx``.

    Returns ``{"return", "retcode", "success"}`` (plus ``"out": "nested"`` when it failed before
    or while running), never raising for what the function does.
    """
    ctx.retcode = 0
    ctx.functions = dict(functions) if not isinstance(functions, dict) else functions
    func = functions.get(fun) if isinstance(fun, str) else None
    if func is None:
        message = f"'{fun}' is not available."
        errors = getattr(functions, "errors", {})
        module = fun.split(".", 1)[0] if isinstance(fun, str) else ""
        if module in errors:
            message += f" Possible reasons: '{errors[module]}'"
        return _error(message)
    args, kwargs = split_args(arg)
    problem = _bind(fun, func, args, kwargs)
    if problem is not None:
        log.warning("%s", problem.splitlines()[0])
        return _error(problem)
    with use(ctx):
        try:
            ret = func(*args, **kwargs)
            if isinstance(ret, types.GeneratorType):
                ret = _collect(ret)
        except JobKilled as exc:
            return _error(str(exc) or f"Job {ctx.jid} was killed")
        except CommandExecutionError as exc:
            log.error("A command in '%s' had a problem: %s", fun, exc)
            return _error(f"ERROR: {exc}")
        except InvocationError as exc:
            log.error("Problem executing '%s': %s", fun, exc)
            return _error(f"ERROR executing '{fun}': {exc}")
        except (Exception, SystemExit) as exc:
            log.warning("The minion function caused an exception", exc_info=True)
            return _error(f"The minion function caused an exception: {type(exc).__name__}: {exc}\n"
                          f"{traceback.format_exc()}")
    retcode = ctx.retcode
    if not isinstance(retcode, int) or isinstance(retcode, bool):
        try:
            retcode = int(retcode)
        except (TypeError, ValueError):
            retcode = EX_GENERIC
    if retcode == 0 and _failed(ret):
        retcode = EX_GENERIC
    return {"return": ret, "retcode": retcode, "success": retcode == 0}
