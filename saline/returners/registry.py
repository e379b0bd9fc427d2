"""The registry: Salt's returner names mapped to their classes, imported only when chosen.

Built-in returners are listed in ``BUILTIN`` (:mod:`saline.returners.builtin`). Third-party
returners join through the entry-point group ``saline.returners`` or a ``returner_dirs`` folder of
``.py`` files, each defining a subclass of :class:`saline.returners.base.Returner` with a ``name``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

from saline.config import ConfigError
from saline.returners.base import Returner, ReturnerError
from saline.returners.builtin import BUILTIN, EXTRA_OF

log = logging.getLogger(__name__)

_custom: dict[str, type[Returner]] = {}
_loaded_dirs: set[str] = set()


def available() -> list[str]:
    """Every name that can be chosen, built-in or custom, that actually exists on disk."""
    names = {n for n, target in BUILTIN.items() if importlib.util.find_spec(target.split(":")[0]) is not None}
    return sorted(names | set(_custom) | {ep.name for ep in entry_points(group="saline.returners")})


def load_dirs(dirs: list[str]) -> None:
    """Load custom returners from ``returner_dirs``; a broken file is reported, not fatal."""
    for folder in dirs:
        for path in sorted(Path(folder).glob("*.py")):
            key = str(path.resolve())
            if key in _loaded_dirs:
                continue
            _loaded_dirs.add(key)
            mod_name = f"saline_custom_returners.{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            try:
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
            except Exception as exc:  # a user's file: report it and go on with the others
                log.error("custom returner %s failed to load: %s: %s", path, type(exc).__name__, exc)
                continue
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, Returner) and obj is not Returner and obj.name:
                    _custom[obj.name] = obj


def get_class(name: str) -> type[Returner]:
    """The class of the returner called ``name``; ConfigError with one line when there is none."""
    if name in _custom:
        return _custom[name]
    target = BUILTIN.get(name)
    if target is None:
        eps = [ep for ep in entry_points(group="saline.returners") if ep.name == name]
        if eps:
            return eps[0].load()
        raise ConfigError(f"unknown returner '{name}' (available: {', '.join(available())})")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("saline"):
            raise ConfigError(f"unknown returner '{name}' (available: {', '.join(available())})") from None
        extra = EXTRA_OF.get(name) or module_name.rsplit(".", 1)[1]
        raise ConfigError(f"returner {name} needs the Python package '{exc.name}': "
                          f"pip install 'saline[{extra}]'") from None
    return getattr(module, class_name)


def create(
    name: str,
    master_opts: Mapping[str, Any],
    ret_config: str | None = None,
    ret_kwargs: Mapping[str, Any] | None = None,
) -> Returner:
    """A ready returner instance with its options resolved from ``master_opts``."""
    from saline.returners.options import resolve

    load_dirs(list(master_opts.get("returner_dirs") or []))
    cls = get_class(name)
    options = resolve(cls, master_opts, ret_config, ret_kwargs)
    try:
        return cls(options, master_opts)
    except ReturnerError:
        raise
    except ImportError as exc:
        raise ConfigError(f"returner {name} needs the Python package '{exc.name}': "
                          f"pip install 'saline[{cls.extra or name}]'") from None
