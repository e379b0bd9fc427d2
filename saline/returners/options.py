"""Resolve a returner's options from the config, exactly in Salt's order of precedence.

Highest first: ``--return_kwargs`` (internal names) > ``<ret_config>.<prefix>.<key>`` >
``<prefix>.<key>`` (nested maps beat flat dotted keys, as in Salt) > the declared default.
A returner's ``alt_prefixes`` (older spellings of its keys) are tried after its main prefix at
each level.
An empty string, ``None`` or the string ``"None"`` means "not set". Values are coerced to the
declared type; a wrong one raises :class:`ConfigError` naming the returner and the option.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from saline.config import ConfigError
from saline.returners.base import Option, Returner

MASK = "********"
_UNSET = object()


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    """Find ``a.b.c`` as a nested map, a flat dotted key, or any mix of the two."""
    parts = dotted.split(".")
    return _lookup(config, parts)


def _lookup(config: Mapping[str, Any], parts: list[str]) -> Any:
    for split in range(1, len(parts)):
        head = config.get(".".join(parts[:split]))
        if isinstance(head, Mapping):
            found = _lookup(head, parts[split:])
            if found is not _UNSET:
                return found
    value = config.get(".".join(parts), _UNSET)
    return _UNSET if _unset(value) else value


def _unset(value: Any) -> bool:
    return value is _UNSET or value is None or value == "" or value == "None"


def coerce(option: Option, value: Any, where: str) -> Any:
    kind = option.type
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if kind is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return list(value)
        if kind is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        return value
    except (TypeError, ValueError, json.JSONDecodeError):
        shown = MASK if option.secret else repr(value)
        raise ConfigError(f"{where}: option '{option.suffix}' must be {kind.__name__}, got {shown}") from None


def resolve(
    cls: type[Returner],
    config: Mapping[str, Any],
    ret_config: str | None = None,
    ret_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The options ``cls`` runs with, given the config and the per-call overrides."""
    prefix = cls.option_prefix()
    # A returner may also answer to older spellings of its keys (``postgres.host`` beside
    # ``returner.postgres.host``): ``alt_prefixes``, tried after the main prefix at each level.
    prefixes = (prefix, *getattr(cls, "alt_prefixes", ()))
    where = f"returner {cls.name}"
    by_name = {o.name: o for o in cls.options}
    result: dict[str, Any] = {}
    for option in cls.options:
        value: Any = _UNSET
        for base in ([f"{ret_config}.{p}" for p in prefixes] if ret_config else []) + list(prefixes):
            value = lookup(config, f"{base}.{option.suffix}")
            if value is not _UNSET:
                break
        if value is _UNSET:
            value = option.default
        result[option.name] = None if _unset(value) else coerce(option, value, where)
    for key, value in (ret_kwargs or {}).items():
        option = by_name.get(key) or next((o for o in cls.options if o.suffix == key), None)
        if option is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise ConfigError(f"{where}: --return_kwargs names unknown option '{key}' (it takes: {known})")
        result[option.name] = None if _unset(value) else coerce(option, value, where)
    missing = [o for o in cls.options if o.required and result.get(o.name) is None]
    if missing:
        names = ", ".join(f"{prefix}.{o.suffix}" for o in missing)
        raise ConfigError(f"{where}: required option {names} is not set")
    return result


def masked(cls: type[Returner], options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with every secret replaced, fit for logs, events and status output."""
    secret = {o.name for o in cls.options if o.secret}
    return {k: (MASK if k in secret and v is not None else v) for k, v in options.items()}


def secret_values(cls: type[Returner], options: Mapping[str, Any]) -> list[str]:
    return [str(options[o.name]) for o in cls.options if o.secret and options.get(o.name)]


def scrub(text: str, secrets: list[str]) -> str:
    """Remove secret values from an error message before it is logged or shown."""
    for value in secrets:
        if value and len(value) >= 2:
            text = text.replace(value, MASK)
    return text
