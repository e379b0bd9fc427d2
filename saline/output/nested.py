"""The ``nested`` outputter, Salt's default: nested data as indented ``key:`` / ``- item`` lines.

A mapping at the top prints its keys at column 0 and each value 4 further in; a mapping deeper
down starts with a ``----------`` line. Keys are sorted. Strings print as they are (each line of
a multi-line string on its own line), lists print ``- item`` per element, and a list or mapping
inside a list starts with ``|_`` and is indented by 2::

    web1:
        ----------
        pkgs:
            - vim
            - curl
        result:
            True
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Number
from typing import Any

from saline.output.colors import Colors, get_colors, strip_esc


class NestDisplay:
    def __init__(self, colors: Colors, retcode: int = 0, step: int = 4) -> None:
        self.c = colors
        self.retcode = retcode
        self.step = step if step > 0 else 4

    def line(self, indent: int, color: str, msg: str, prefix: str = "", suffix: str = "") -> str:
        return f"{' ' * indent}{color}{prefix}{msg}{self.c.ENDC}{suffix}"

    def _key_color(self) -> str:
        return self.c.RED if self.retcode != 0 else self.c.CYAN

    def display(self, ret: Any, indent: int, prefix: str, out: list[str]) -> list[str]:
        if isinstance(ret, (bytes, bytearray)):
            try:
                ret = bytes(ret).decode("utf-8")
            except UnicodeDecodeError:
                ret = repr(bytes(ret))
        if ret is None or isinstance(ret, bool):
            out.append(self.line(indent, self.c.LIGHT_YELLOW, str(ret), prefix=prefix))
        elif isinstance(ret, Number):
            out.append(self.line(indent, self.c.LIGHT_YELLOW, repr(ret), prefix=prefix))
        elif isinstance(ret, str):
            for number, text in enumerate(ret.splitlines()):
                # later lines of a multi-line string line up under the first one's text
                line_prefix = prefix if number == 0 else " " * len(prefix)
                out.append(self.line(indent, self.c.GREEN, strip_esc(text), prefix=line_prefix))
        elif isinstance(ret, (list, tuple, set, frozenset)):
            items = list(ret) if isinstance(ret, (list, tuple)) else _sorted(ret)
            color = self.c.RED if self.retcode != 0 else self.c.GREEN
            for item in items:
                if isinstance(item, (list, tuple, set, frozenset, Mapping)):
                    out.append(self.line(indent, color, "|_"))
                    self.display(item, indent + self.step // 2, "" if isinstance(item, Mapping) else "- ", out)
                else:
                    self.display(item, indent, "- ", out)
        elif isinstance(ret, Mapping):
            if indent:
                out.append(self.line(indent, self._key_color(), "----------"))
            for key in _sorted(ret.keys()):
                out.append(self.line(indent, self._key_color(), strip_esc(str(key)), prefix=prefix, suffix=":"))
                self.display(ret[key], indent + self.step, "", out)
        else:
            self.display(str(ret), indent, prefix, out)
        return out


def _sorted(keys: Any) -> list[Any]:
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=lambda k: (type(k).__name__, str(k)))


def output(data: Any, *, color: bool = False, indent: int = 4, retcode: int = 0, **_: Any) -> str:
    return "\n".join(NestDisplay(get_colors(color), retcode, indent).display(data, 0, "", []))
