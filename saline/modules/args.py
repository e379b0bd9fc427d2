"""Salt's argument conventions: CLI strings to a publish ``arg`` list, and back to args/kwargs.

On the command line ``saline '*' test.arg 1 two key=[1,2]`` gives the strings ``["1", "two",
"key=[1,2]"]``. :func:`parse_cli_args` turns them into the publish form Salt uses::

    [1, "two", {"__kwarg__": True, "key": [1, 2]}]

Every value goes through YAML the way Salt's ``yamlify_arg`` does, so ``1`` is an int, ``true`` a
bool and ``{a: 1}`` a dict, while text YAML would mangle stays the text the user typed: ``a: b``
(a mapping without braces), ``- a`` (a list without brackets), multi-line text, ``1_000``,
``foo # bar``, dates, ``1:20`` (YAML 1.1 reads it as the number 80) and anything using YAML
anchors. :func:`split_args` is the minion's side: the publish list back to ``(args, kwargs)``.

Both accept anything without raising: arguments come from users and other programs.
"""

from __future__ import annotations

import re
from typing import Any

from saline.jid import is_jid

# Salt's KWARG_REGEX: an identifier (dots and dashes allowed after the first character), ``=``,
# and a value that does not start with ``=`` (so ``a==b`` stays positional). ``\Z`` rather than
# ``$``, and no DOTALL: a value with a newline in it is never split into a keyword argument.
KWARG_REGEX = re.compile(r"^([^\d\W][\w.-]*)=(?!=)(.*)\Z")

_PLAIN_SCALARS = (type(None), bool, int, float, str)


def parse_kwarg(text: str) -> tuple[str | None, str | None]:
    """``("name", "value")`` for a ``name=value`` string, else ``(None, None)``."""
    match = KWARG_REGEX.match(text) if isinstance(text, str) else None
    return (match.group(1), match.group(2)) if match else (None, None)


def _loader() -> type:
    """A safe YAML loader shaped like Salt's (built on first use: the CLI must start fast)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml
    from yaml.constructor import ConstructorError
    from yaml.events import AliasEvent

    # The pure-Python loader: the C one composes nodes in C, past the alias check below.
    class ArgLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # Anchors and aliases can build self-referencing or exponentially large values
            # from a short string; an argument never needs them.
            if self.check_event(AliasEvent):
                raise ConstructorError(None, None, "aliases are not allowed in arguments")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            mapping = super().construct_mapping(node, deep=deep)
            if len(mapping) != len(node.value):
                # Salt refuses a repeated key ("conflicting ID") rather than keep the last one.
                raise ConstructorError(None, None, "a key is repeated", node.start_mark)
            return mapping

        def construct_yaml_int(self, node: Any) -> Any:
            value = str(node.value)
            if ":" in value:
                return value  # YAML 1.1 base-60 (``1:20`` is 80): keep what the user typed
            # Salt reads a leading-zero number as decimal (``0755`` is 755, not octal 493).
            if value.startswith("0") and value != "0" and not value.startswith(("0b", "0x")):
                node.value = value.lstrip("0") or "0"
            return super().construct_yaml_int(node)

        def construct_yaml_float(self, node: Any) -> Any:
            if ":" in str(node.value):
                return str(node.value)
            return super().construct_yaml_float(node)

        def construct_timestamp(self, node: Any) -> Any:
            return self.construct_scalar(node)  # dates stay text, as in Salt

    ArgLoader.add_constructor("tag:yaml.org,2002:int", ArgLoader.construct_yaml_int)
    ArgLoader.add_constructor("tag:yaml.org,2002:float", ArgLoader.construct_yaml_float)
    ArgLoader.add_constructor("tag:yaml.org,2002:timestamp", ArgLoader.construct_timestamp)
    _LOADER = ArgLoader
    return _LOADER


_LOADER: type | None = None


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Only what travels over the wire unchanged: None, bool, int, float, str, lists and dicts."""
    if depth > 100:
        return False
    if isinstance(value, _PLAIN_SCALARS):
        return True
    if isinstance(value, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN_SCALARS) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _quoted(text: str) -> bool:
    text = text.strip()
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


def yamlify_arg(arg: Any) -> Any:
    """One CLI value as Salt would pass it on: YAML-loaded unless that would lose what was typed."""
    if not isinstance(arg, str):
        return arg
    stripped = arg.strip()
    if stripped in ("", "---", "...") or "\n" in stripped or "\r" in stripped:
        return arg  # YAML reads these as None or folds the lines together
    if "_" in stripped and all(ch in "0123456789_" for ch in stripped):
        return arg  # YAML would drop the underscores and read a number
    if arg == "None":
        return None
    import yaml

    try:
        value = yaml.load(arg, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        return arg
    except Exception:  # a YAML library bug must not turn an argument into a crash
        return arg
    if "#" in arg and (value is None or isinstance(value, str)):
        return arg  # ``#`` started a comment: keep the text YAML would cut off
    if isinstance(value, dict):
        return value if arg.startswith("{") and _is_plain(value) else arg
    if isinstance(value, list):
        return value if arg.startswith("[") and _is_plain(value) else arg
    if isinstance(value, str):
        # A quoted scalar (``"'0755'"``) is how a user asks for a string: take YAML's unquoting.
        # Any other string result is YAML trimming or folding the text: keep the original.
        return value if _quoted(arg) else arg
    if value is None:
        return arg if arg.strip() not in ("null", "Null", "NULL", "~") else None
    if isinstance(value, (bool, int, float)):
        return value
    return arg  # sets, bytes and other types an argument does not carry


def _condition(args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Salt's ``condition_input``: jids typed as numbers stay strings; kwargs go last, flagged."""
    out = [str(a) if isinstance(a, int) and not isinstance(a, bool) and is_jid(str(a)) else a for a in args]
    if kwargs:
        out.append({"__kwarg__": True, **kwargs})
    return out


def parse_cli_args(args: list[str]) -> list[Any]:
    """CLI strings to the publish ``arg`` list (positional values, then one ``__kwarg__`` dict)."""
    positional: list[Any] = []
    kwargs: dict[str, Any] = {}
    for raw in _as_list(args):
        if isinstance(raw, str):
            name, value = parse_kwarg(raw)
            if name is not None:
                kwargs[name] = yamlify_arg(value)
            else:
                positional.append(yamlify_arg(raw))
        elif isinstance(raw, dict) and raw.get("__kwarg__") is True:
            kwargs.update({str(k): v for k, v in raw.items() if k != "__kwarg__"})
        else:
            positional.append(raw)
    return _condition(positional, kwargs)


def split_args(arg: Any) -> tuple[list[Any], dict[Any, Any]]:
    """A publish ``arg`` list back to ``(args, kwargs)``, as Salt's minion reads it.

    The ``{"__kwarg__": True, ...}`` dict gives keyword arguments; so does a raw ``key=value``
    string that reached the minion without going through :func:`parse_cli_args` (from the API),
    its value YAML-loaded as the CLI would have. Other values are positional, untouched.
    """
    args: list[Any] = []
    kwargs: dict[Any, Any] = {}
    for item in _as_list(arg):
        if isinstance(item, dict) and item.get("__kwarg__") is True:
            kwargs.update({k: v for k, v in item.items() if k != "__kwarg__"})
            continue
        if isinstance(item, str):
            name, value = parse_kwarg(item)
            if name is not None:
                kwargs[name] = yamlify_arg(value)
                continue
        args.append(item)
    return args, kwargs


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]  # a lone string or dict where a list belongs
