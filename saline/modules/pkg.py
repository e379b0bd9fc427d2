"""The ``pkg`` module: Debian packages through dpkg and apt (Salt's ``pkg.*`` of ``aptpkg``).

Installed versions come from ``dpkg-query``; ``install``/``remove`` run ``apt-get`` without a
shell, non-interactively, keeping existing configuration files (``--force-confold``), and return
what changed as Salt does: ``{name: {"old": version, "new": version}}``. apt waits up to
``LOCK_TIMEOUT`` seconds for another apt or dpkg holding its lock.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from saline.modules.errors import CommandExecutionError

LOCK_TIMEOUT = 120
#: a Debian package name, optionally with an architecture (``libc6:i386``)
_PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?$")
_APT_OPTS = ["-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}", "-o", "DPkg::Options::=--force-confold",
             "-o", "DPkg::Options::=--force-confdef"]


def _env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none", "LC_ALL": "C"}


def _run(argv: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=_env(),
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandExecutionError(f"{argv[0]} is not installed: the pkg module needs dpkg and apt (Debian family)") from None
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(f"{' '.join(argv[:3])} did not finish in {timeout:.0f} seconds") from None


def _apt_error(proc: subprocess.CompletedProcess) -> str:
    """apt's own reason: its last ``E:`` line, else the last line it printed."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def _check_names(names: Any) -> list[str]:
    out = []
    for name in names:
        text = str(name).strip()
        if not _PKG_NAME.match(text):
            raise CommandExecutionError(f"Invalid package name: {text!r}")
        out.append(text)
    return out


def list_pkgs(versions_as_list: bool = False, removed: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Return the installed packages as ``{name: version}``.

    ``versions_as_list=True`` gives each a list of versions. ``removed=True`` lists packages that
    were removed but left their configuration files, with an empty version.

    CLI Example::

        saline '*' pkg.list_pkgs
        saline '*' pkg.list_pkgs versions_as_list=True
    """
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise CommandExecutionError(f"Invalid keyword arguments for pkg.list_pkgs: {', '.join(unknown)}")
    proc = _run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${binary:Package}\t${Version}\t${Architecture}\n"],
                timeout=120)
    if proc.returncode != 0:
        raise CommandExecutionError(f"dpkg-query failed: {_apt_error(proc)}")
    out: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 4:
            continue
        status, name, version, _arch = parts
        status = status.strip()
        if status.startswith("ii"):
            value = version
        elif removed and status.startswith("rc"):
            value = ""
        else:
            continue
        if versions_as_list:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def version(*names: str, **kwargs: Any) -> str | dict[str, str]:
    """Return the installed version of a package ("" when it is not installed).

    With several names, ``{name: version}``.

    CLI Example::

        saline '*' pkg.version bash
        saline '*' pkg.version bash coreutils
    """
    if not names:
        raise CommandExecutionError("pkg.version needs at least one package name")
    checked = _check_names(names)
    installed = list_pkgs(**kwargs)
    found = {name: installed.get(name, "") for name in checked}
    return found[checked[0]] if len(checked) == 1 else found


def refresh_db(cache_valid_time: Any = 0, failhard: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Update the package lists (``apt-get update``); ``{source: True|False|None}``.

    True: new lists were fetched; None: the source was unchanged (``Hit``); False: it failed or
    was ignored. ``failhard=True`` fails the job when a source could not be fetched.
    ``cache_valid_time`` (seconds) skips the update when the lists are younger than that.

    CLI Example::

        saline '*' pkg.refresh_db
    """
    try:
        valid = float(cache_valid_time or 0)
    except (TypeError, ValueError):
        raise CommandExecutionError(f"cache_valid_time must be a number of seconds, got {cache_valid_time!r}") from None
    if valid > 0:
        import time

        try:
            age = time.time() - os.path.getmtime("/var/lib/apt/periodic/update-success-stamp")
        except OSError:
            age = float("inf")
        if age < valid:
            return {}
    proc = _run(["apt-get", "-q", "update", "-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}"])
    ret: dict[str, Any] = {}
    errors: list[str] = []
    for line in proc.stdout.splitlines():
        cols = line.split()
        if not cols:
            continue
        ident = re.sub(r" \[[^\]]*B\]$", "", " ".join(cols[1:]))
        if cols[0].startswith("Get"):
            ret[ident] = True
        elif cols[0].startswith("Hit"):
            ret[ident] = None
        elif cols[0].startswith("Ign"):
            ret[ident] = False
        elif cols[0].startswith("Err"):
            ret[ident] = False
            errors.append(ident)
    if proc.returncode != 0 and not ret:
        raise CommandExecutionError(f"apt-get update failed: {_apt_error(proc)}")
    if failhard and errors:
        raise CommandExecutionError(f"Error getting repos: {', '.join(errors)}")
    return ret


def _changes(old: dict[str, str], new: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"old": old.get(name, ""), "new": new.get(name, "")}
            for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)}


def _targets(name: Any, pkgs: Any, fun: str) -> list[str]:
    if pkgs not in (None, ""):
        if isinstance(pkgs, str):
            pkgs = [p for p in re.split(r"[,\s]+", pkgs) if p]
        if not isinstance(pkgs, list):
            raise CommandExecutionError(f"{fun}: pkgs must be a list of package names")
        names: list[str] = []
        for item in pkgs:
            if isinstance(item, dict):  # Salt's [{"name": "version"}]
                names.extend(f"{k}={v}" if v else str(k) for k, v in item.items())
            else:
                names.append(str(item))
    elif name not in (None, ""):
        names = [str(name)]
    else:
        raise CommandExecutionError(f"{fun}: give a package name or pkgs=[...]")
    for target in names:
        base, _, ver = target.partition("=")
        _check_names([base])
        if ver and not re.match(r"^[A-Za-z0-9.+~:-]+$", ver):
            raise CommandExecutionError(f"Invalid version for {base}: {ver!r}")
    return names


def install(name: Any = None, refresh: bool = False, pkgs: Any = None, version: Any = None,
            **kwargs: Any) -> dict[str, dict[str, str]]:
    """Install a package (or ``pkgs=[...]``) with apt-get; ``{name: {"old": "", "new": version}}``.

    ``version`` pins the version of the single ``name``; ``refresh=True`` runs ``pkg.refresh_db``
    first. Configuration files already on disk are kept.

    CLI Example::

        saline '*' pkg.install sl
        saline '*' pkg.install pkgs='["sl", "cowsay"]' refresh=True
    """
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise CommandExecutionError(f"Invalid keyword arguments for pkg.install: {', '.join(unknown)}")
    targets = _targets(name, pkgs, "pkg.install")
    if version not in (None, "") and len(targets) == 1 and "=" not in targets[0]:
        targets = [f"{targets[0]}={version}"]
        _targets(None, targets, "pkg.install")
    if refresh:
        refresh_db()
    old = list_pkgs()
    proc = _run(["apt-get", "-q", "-y", *_APT_OPTS, "install", *targets])
    new = list_pkgs()
    changes = _changes(old, new)
    if proc.returncode != 0:
        raise CommandExecutionError(f"apt-get install {' '.join(targets)} failed: {_apt_error(proc)}")
    return changes


def remove(name: Any = None, pkgs: Any = None, **kwargs: Any) -> dict[str, dict[str, str]]:
    """Remove a package (or ``pkgs=[...]``), keeping its configuration files; what changed.

    CLI Example::

        saline '*' pkg.remove sl
    """
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise CommandExecutionError(f"Invalid keyword arguments for pkg.remove: {', '.join(unknown)}")
    targets = [t.partition("=")[0] for t in _targets(name, pkgs, "pkg.remove")]
    old = list_pkgs()
    present = [t for t in targets if t in old]
    if not present:
        return {}
    proc = _run(["apt-get", "-q", "-y", *_APT_OPTS, "remove", *present])
    new = list_pkgs()
    changes = _changes(old, new)
    if proc.returncode != 0:
        raise CommandExecutionError(f"apt-get remove {' '.join(present)} failed: {_apt_error(proc)}")
    return changes


def list_upgrades(refresh: bool = True, dist_upgrade: bool = True, **kwargs: Any) -> dict[str, str]:
    """Return the packages apt would upgrade: ``{name: new version}``.

    ``refresh=True`` (the default, as in Salt) runs ``pkg.refresh_db`` first; ``dist_upgrade=False``
    lists what a plain ``upgrade`` would take.

    CLI Example::

        saline '*' pkg.list_upgrades
        saline '*' pkg.list_upgrades refresh=False
    """
    unknown = sorted(k for k in kwargs if not k.startswith("__"))
    if unknown:
        raise CommandExecutionError(f"Invalid keyword arguments for pkg.list_upgrades: {', '.join(unknown)}")
    if refresh:
        refresh_db()
    proc = _run(["apt-get", "--just-print", "-o", f"DPkg::Lock::Timeout={LOCK_TIMEOUT}",
                 "dist-upgrade" if dist_upgrade else "upgrade"], timeout=300)
    if proc.returncode != 0:
        raise CommandExecutionError(f"apt-get --just-print failed: {_apt_error(proc)}")
    out: dict[str, str] = {}
    # "Inst bash [5.2.15-2] (5.2.15-2+b2 Debian:12.5/stable [amd64])"
    for match in re.finditer(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+)", proc.stdout, re.MULTILINE):
        out[match.group(1)] = match.group(2)
    return out
