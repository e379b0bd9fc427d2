"""ANSI colors as Salt's default theme uses them, and the escape-sequence filter for shown text."""

from __future__ import annotations

from typing import NamedTuple


class Colors(NamedTuple):
    GREEN: str = ""
    CYAN: str = ""
    RED: str = ""
    YELLOW: str = ""
    LIGHT_YELLOW: str = ""
    LIGHT_GRAY: str = ""
    WHITE: str = ""
    DARK_GRAY: str = ""
    ENDC: str = ""


NO_COLORS = Colors()

# Salt writes each color as a reset followed by the attributes: "\x1b[0;32m" is green.
ANSI = Colors(
    GREEN="\x1b[0;32m",
    CYAN="\x1b[0;36m",
    RED="\x1b[0;31m",
    YELLOW="\x1b[0;33m",
    LIGHT_YELLOW="\x1b[0;1;33m",
    LIGHT_GRAY="\x1b[0;37m",
    WHITE="\x1b[0;1;37m",
    DARK_GRAY="\x1b[0;1;30m",
    ENDC="\x1b[0;0m",
)


def get_colors(color: bool) -> Colors:
    return ANSI if color else NO_COLORS


def strip_esc(text: str) -> str:
    """Defuse escape sequences in data a minion sent, so it cannot drive the terminal (as Salt)."""
    return text.replace("\x1b", "?")
