"""Typos in returner options: keys under a known returner's prefix that it does not take.

``mysql.prot: 3306`` would otherwise pass unnoticed (the returner takes its default port), so the
master warns, one line per key, with the closest option the returner does take. Keys are read in
every form the option lookup accepts: dotted (``mysql.prot``), nested (``mysql: {prot: …}``), in
a ``--return_config`` profile (``alt.mysql.prot``), and under a returner's older prefixes.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator, Mapping

from saline.config import ConfigError
from saline.returners import registry
from saline.returners.base import Returner


def _paths(config: Mapping[str, Any], base: tuple[str, ...] = (), depth: int = 0) -> Iterator[tuple[str, ...]]:
    """Every key path of the config, dotted keys split and nested maps entered (a few levels)."""
    for key, value in config.items():
        if not isinstance(key, str):
            continue
        path = base + tuple(key.split("."))
        if isinstance(value, Mapping) and value and depth < 3:
            yield from _paths(value, path, depth + 1)
        yield path


def _prefixes(cls: type[Returner]) -> list[tuple[str, ...]]:
    return [tuple(p.split(".")) for p in (cls.option_prefix(), *getattr(cls, "alt_prefixes", ()))]


def _classes(heads: set[str]) -> list[type[Returner]]:
    """The classes of the returners these key parts may belong to: those whose name is in one of
    them (``mysql``, ``returner.postgres``, ``splunk_http_forwarder``), so that only the drivers of
    returners the config mentions are imported."""
    found = []
    for name in registry.available():
        if not any(name in head for head in heads):
            continue
        try:
            cls = registry.get_class(name)
        except (ConfigError, ImportError):
            continue  # a missing driver: its keys cannot be checked, and are not warned about
        if any(p[0] in heads for p in _prefixes(cls)) and cls not in found:
            found.append(cls)
    return found


def _takes(cls: type[Returner], rest: tuple[str, ...]) -> bool:
    key = ".".join(rest)
    for option in cls.options:
        suffix = option.suffix
        # a dict option may be written as nested keys under it; a dotted suffix may be reached part by part
        if key == suffix or key.startswith(suffix + ".") or suffix.startswith(key + "."):
            return True
    return False


def unknown_returner_keys(config: Mapping[str, Any]) -> list[str]:
    """One line per key under a known returner's prefix that the returner does not take."""
    paths = [p for p in _paths(config) if len(p) >= 2]
    heads = {p[0] for p in paths} | {p[1] for p in paths}
    classes = _classes(heads)
    lines: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for start in (0, 1):  # the returner's own keys, then the same under a --return_config profile
            owners = [(cls, pre) for cls in classes for pre in _prefixes(cls)
                      if path[start:start + len(pre)] == pre and len(path) > start + len(pre)]
            if not owners:
                continue
            if not any(_takes(cls, path[start + len(pre):]) for cls, pre in owners):
                cls, pre = owners[0]
                shown = ".".join(path)
                if shown not in seen:
                    seen.add(shown)
                    rest = ".".join(path[start + len(pre):])
                    close = difflib.get_close_matches(rest, [o.suffix for o in cls.options], n=1)
                    hint = f" (did you mean '{'.'.join(path[:start + len(pre)] + (close[0],))}'?)" if close else ""
                    lines.append(f"unknown option '{shown}' for returner {cls.name}{hint}; ignored")
            break
    return lines
