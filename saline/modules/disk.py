"""The ``disk`` module: filesystem usage as ``df`` reports it (Salt's ``disk.*`` on Linux).

Values are the strings ``df -P`` prints, as in Salt, so returners that turn returns into metrics
(carbon, influxdb) get the same paths and values a Salt minion sends. ``df`` runs without a shell.
"""

from __future__ import annotations

import subprocess
from typing import Any

from saline.modules.errors import CommandExecutionError

#: df flags that keep ``df -P``'s column layout (Salt's disk.usage accepts these and a few others)
_USAGE_FLAGS = frozenset("aklPx")


def _flags(args: Any, fun: str) -> list[str]:
    if args in (None, ""):
        return []
    text = str(args).lstrip("-")
    bad = sorted(set(text) - _USAGE_FLAGS)
    if not text or bad:
        raise CommandExecutionError(f"Invalid flags passed to {fun}: {args!r} (allowed: -{''.join(sorted(_USAGE_FLAGS))})")
    return ["-" + text]


def _df(extra: list[str]) -> list[list[str]]:
    """``df -P [extra]`` as rows of six columns (the last, the mount point, may hold spaces)."""
    try:
        proc = subprocess.run(["df", "-P", *extra], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"df could not run: {exc}") from None
    rows = []
    for line in proc.stdout.splitlines()[1:]:
        comps = line.split()
        # a device name with spaces: join until the second column is a number (as Salt does)
        while len(comps) >= 2 and not comps[1].isdigit() and comps[1] != "-":
            comps[0:2] = [f"{comps[0]} {comps[1]}"]
        if len(comps) >= 6:
            rows.append(comps[:5] + [" ".join(comps[5:])])  # a mount point may hold spaces
    if not rows and proc.returncode != 0:
        raise CommandExecutionError(f"df failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return rows


def usage(args: Any = None) -> dict[str, dict[str, str]]:
    """Return usage information for every mounted filesystem, keyed by mount point.

    Each entry: ``filesystem``, ``1K-blocks``, ``used``, ``available``, ``capacity`` (``"45%"``),
    the strings ``df -P`` prints. ``args`` adds df flags: ``a`` (all, with pseudo filesystems),
    ``l`` (local only), ``x`` is not accepted alone by df, ``k`` (1K blocks, the default).

    CLI Example::

        saline '*' disk.usage
        saline '*' disk.usage args=-l
    """
    out: dict[str, dict[str, str]] = {}
    for fs, blocks, used, avail, capacity, mount in _df(_flags(args, "disk.usage")):
        out[mount] = {"filesystem": fs, "1K-blocks": blocks, "used": used, "available": avail,
                      "capacity": capacity}
    return out


def inodeusage(args: Any = None) -> dict[str, dict[str, str]]:
    """Return inode usage information for every mounted filesystem, keyed by mount point.

    Each entry: ``inodes``, ``used``, ``free``, ``use`` (``"3%"``) and ``filesystem``, the strings
    ``df -iP`` prints.

    CLI Example::

        saline '*' disk.inodeusage
    """
    out: dict[str, dict[str, str]] = {}
    for fs, inodes, used, free, use, mount in _df(["-i", *_flags(args, "disk.inodeusage")]):
        out[mount] = {"inodes": inodes, "used": used, "free": free, "use": use, "filesystem": fs}
    return out


def percent(args: Any = None) -> dict[str, str] | str:
    """Return the used share of each filesystem (``{mount: "45%"}``), or of the one mount point given.

    CLI Example::

        saline '*' disk.percent
        saline '*' disk.percent /var
    """
    shares = {row[5]: row[4] for row in _df([])}
    if args in (None, ""):
        return shares
    mount = str(args)
    if mount not in shares:
        raise CommandExecutionError(f"Partition '{mount}' does not exist (not a mount point)")
    return shares[mount]
