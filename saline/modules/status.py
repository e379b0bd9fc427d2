"""The ``status`` module: uptime, load, memory, disk, CPU, network and process figures of the
minion (Salt's ``status.*``).

Linux only, read from ``/proc`` and ``os.statvfs`` like Salt does there; ``procs`` through psutil,
``w`` from the ``w`` command (without a shell).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import re
import struct
import time
from typing import Any

from saline.modules.errors import CommandExecutionError

# utmp records (glibc, 64-bit): ut_type is the first short; USER_PROCESS marks a logged-in user.
_UTMP_FILES = ("/var/run/utmp", "/run/utmp")
_UTMP_RECORD = 384
_USER_PROCESS = 7

# Kernel and virtual filesystems that hold no data of their own; skipped by diskusage().
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devpts", "cgroup", "cgroup2", "mqueue", "debugfs", "tracefs", "securityfs",
    "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "autofs", "binfmt_misc", "rpc_pipefs",
    "nsfs", "selinuxfs", "efivarfs", "devtmpfs", "ramfs", "fuse.gvfsd-fuse", "fuse.portal",
    "nfsd", "sockfs", "pipefs", "rootfs",
})


def _logged_in_users() -> int:
    for path in _UTMP_FILES:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        count = 0
        for offset in range(0, len(data) - _UTMP_RECORD + 1, _UTMP_RECORD):
            (ut_type,) = struct.unpack_from("<h", data, offset)
            if ut_type == _USER_PROCESS:
                count += 1
        return count
    return 0


def uptime() -> dict[str, Any]:
    """Return the uptime of the minion: seconds, boot time (ISO and epoch), days, ``H:MM`` and users.

    CLI Example::

        saline '*' status.uptime
    """
    now = time.time()
    try:
        with open("/proc/uptime", encoding="ascii") as fh:
            seconds = int(float(fh.read().split()[0]))
    except (OSError, ValueError, IndexError):
        raise CommandExecutionError("File /proc/uptime was not found.") from None
    boot = dt.datetime.fromtimestamp(now - seconds, dt.timezone.utc).replace(tzinfo=None)
    up = dt.timedelta(seconds=seconds)
    return {
        "seconds": seconds,
        "since_iso": boot.isoformat(),
        "since_t": int(now - seconds),
        "days": up.days,
        "time": f"{up.seconds // 3600}:{up.seconds % 3600 // 60:02d}",
        "users": _logged_in_users(),
    }


def loadavg() -> dict[str, float]:
    """Return the load averages of the last 1, 5 and 15 minutes.

    CLI Example::

        saline '*' status.loadavg
    """
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        raise CommandExecutionError("Error while getting load average") from None
    return {"1-min": one, "5-min": five, "15-min": fifteen}


def meminfo() -> dict[str, dict[str, str]]:
    """Return /proc/meminfo as ``{key: {"value": "...", "unit": "kB"}}`` (no unit where it has none).

    CLI Example::

        saline '*' status.meminfo
    """
    out: dict[str, dict[str, str]] = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 2:
            continue
        entry = {"value": parts[1]}
        if len(parts) > 2:
            entry["unit"] = parts[2]
        out[parts[0].rstrip(":")] = entry
    return out


def _mounts() -> list[tuple[str, str]]:
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            # /proc/mounts escapes spaces and tabs in paths as octal (\040)
            path = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            out.append((path, parts[2]))
    return out


def diskusage(*paths: str) -> dict[str, dict[str, int]]:
    """Return available and total bytes of filesystems: ``{path: {"available": n, "total": n}}``.

    Arguments starting with ``/`` are paths; others are filesystem types (globs allowed, ``ext*``).
    With no argument, every mounted filesystem except kernel and virtual ones.

    CLI Example::

        saline '*' status.diskusage
        saline '*' status.diskusage / /var
        saline '*' status.diskusage ext? xfs
    """
    selected: set[str] = set()
    fstypes = [str(p) for p in paths if not str(p).startswith("/")]
    selected.update(str(p) for p in paths if str(p).startswith("/"))
    if not paths:
        selected.update(path for path, fstype in _mounts() if fstype not in PSEUDO_FILESYSTEMS)
    elif fstypes:
        selected.update(path for path, fstype in _mounts()
                        if any(fnmatch.fnmatchcase(fstype, pattern) for pattern in fstypes))
    out: dict[str, dict[str, int]] = {}
    for path in sorted(selected):
        try:
            stats = os.statvfs(path)
        except OSError:
            continue
        total = stats.f_blocks * stats.f_frsize
        if not paths and total == 0:
            continue  # an empty virtual mount the type list did not know
        out[path] = {"available": stats.f_bavail * stats.f_frsize, "total": total}
    return out


def _number(text: str) -> int | float | str:
    """A figure from /proc as a number (Salt's ``_number``): int, else float, else the text."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def cpuinfo() -> dict[str, Any]:
    """Return /proc/cpuinfo as ``{field: value}`` (``flags`` as a list; the last CPU's values, as Salt).

    CLI Example::

        saline '*' status.cpuinfo
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        raise CommandExecutionError("File /proc/cpuinfo was not found.") from None
    out: dict[str, Any] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        out[key] = value.split() if key == "flags" else value.strip()
    return out


_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpustats() -> dict[str, Any]:
    """Return /proc/stat: ``cpu`` as ``{user, nice, system, idle, iowait, irq, softirq, steal}`` (in
    clock ticks), each ``cpuN`` likewise, ``intr`` and ``softirq`` as ``{total, irqs|softirqs}``,
    and the plain counters (``ctxt``, ``btime``, ``processes``, ``procs_running``, ``procs_blocked``).

    CLI Example::

        saline '*' status.cpustats
    """
    try:
        with open("/proc/stat", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        raise CommandExecutionError("File /proc/stat was not found.") from None
    out: dict[str, Any] = {}
    for line in lines:
        comps = line.split()
        if len(comps) < 2:
            continue
        name = comps[0]
        if name.startswith("cpu"):
            out[name] = {field: _number(value) for field, value in zip(_CPU_FIELDS, comps[1:9])}
        elif name == "intr":
            out[name] = {"total": _number(comps[1]), "irqs": [_number(x) for x in comps[2:]]}
        elif name == "softirq":
            out[name] = {"total": _number(comps[1]), "softirqs": [_number(x) for x in comps[2:]]}
        else:
            out[name] = _number(comps[1])
    return out


def netstats() -> dict[str, dict[str, Any]]:
    """Return the kernel's network counters of /proc/net/netstat: ``{"TcpExt": {...}, "IpExt": {...}}``.

    CLI Example::

        saline '*' status.netstats
    """
    try:
        with open("/proc/net/netstat", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        raise CommandExecutionError("File /proc/net/netstat was not found.") from None
    out: dict[str, dict[str, Any]] = {}
    # each group is a line of names followed by a line of values, both starting with "Group:"
    for names, values in zip(lines[0::2], lines[1::2]):
        head, vals = names.split(), values.split()
        if not head or head[0] != vals[0]:
            continue
        out[head[0].rstrip(":")] = {k: _number(v) for k, v in zip(head[1:], vals[1:])}
    return out


def procs() -> dict[str, dict[str, str]]:
    """Return the processes of the minion: ``{pid: {"user": name, "cmd": command line}}``.

    CLI Example::

        saline '*' status.procs
    """
    import psutil

    out: dict[str, dict[str, str]] = {}
    for proc in psutil.process_iter(["pid", "username", "cmdline", "name"]):
        info = proc.info
        cmdline = info.get("cmdline")
        cmd = " ".join(cmdline) if cmdline else f"[{info.get('name') or '?'}]"  # kernel threads, as ps
        out[str(info["pid"])] = {"user": info.get("username") or "?", "cmd": cmd}
    return out


def w() -> list[dict[str, str]]:  # pylint: disable=invalid-name
    """Return who is logged in and what they run (``w``): a list of ``{user, tty, login, idle,
    jcpu, pcpu, what}``.

    CLI Example::

        saline '*' status.w
    """
    import subprocess

    try:
        proc = subprocess.run(["w", "-fh"], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise CommandExecutionError("w is not installed on this minion (Debian: procps)") from None
    except subprocess.TimeoutExpired:
        raise CommandExecutionError("w did not finish in 30 seconds") from None
    out = []
    for row in proc.stdout.splitlines():
        comps = row.split()
        if len(comps) < 6:
            continue
        out.append({"idle": comps[3], "jcpu": comps[4], "login": comps[2], "pcpu": comps[5], "tty": comps[1],
                    "user": comps[0], "what": " ".join(comps[6:])})
    return out
