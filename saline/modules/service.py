"""The ``service`` module: start, stop and inspect system services (Salt's ``service.*``).

Two back ends, chosen per call as Salt chooses its ``service`` provider:

* **systemd** when the machine was booted with it (``/run/systemd/system`` exists): ``systemctl``.
* **SysV init scripts** otherwise (Debian's ``service`` wrapper over ``/etc/init.d``, what Salt's
  ``debian_service`` provider uses), e.g. in containers whose PID 1 is not systemd.

A service that exists only as a systemd unit on a machine not running systemd cannot be managed:
that is one line saying so, not a wrong answer. Every tool runs without a shell.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
import subprocess
from typing import Any

from saline.modules.errors import CommandExecutionError

INITD = "/etc/init.d"
SYSTEMD_RUN = "/run/systemd/system"
#: init.d entries that are not services
_NOT_SERVICES = frozenset({"README", "skeleton", "rc", "rcS", "functions", "halt", "reboot", "single"})
_NAME = re.compile(r"^[A-Za-z0-9@_.:+\\-]{1,256}$")


def _systemd() -> bool:
    """True when systemd is PID 1 here (what sd_booted() checks)."""
    return os.path.isdir(SYSTEMD_RUN)


def backend() -> str:
    """Return the service manager this module drives here: ``systemd`` or ``sysvinit``.

    CLI Example::

        saline '*' service.backend
    """
    if _systemd():
        return "systemd"
    if os.path.isdir(INITD):
        return "sysvinit"
    raise CommandExecutionError("no service manager here: systemd is not running (PID 1) and there is no /etc/init.d")


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "SYSTEMD_PAGER": "", "LC_ALL": "C"},
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandExecutionError(f"{argv[0]} is not installed on this minion") from None
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(f"{' '.join(argv)} did not finish in {timeout:.0f} seconds") from None


def _check_name(name: Any) -> str:
    text = "" if name is None else str(name).strip()
    if not text:
        raise CommandExecutionError("a service name is required")
    if text.startswith("-") or not _NAME.match(text) or "/" in text:
        raise CommandExecutionError(f"Invalid service name: {text!r}")
    return text


def _unit_files() -> set[str]:
    """Names of systemd service units installed on disk (readable without a running systemd)."""
    names = set()
    for folder in ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"):
        for path in glob.glob(os.path.join(folder, "*.service")):
            base = os.path.basename(path)[: -len(".service")]
            if not base.endswith("@"):
                names.add(base)
    return names


def _initd_scripts() -> set[str]:
    try:
        entries = os.listdir(INITD)
    except OSError:
        return set()
    return {e for e in entries if e not in _NOT_SERVICES and not e.startswith(".")
            and os.access(os.path.join(INITD, e), os.X_OK) and os.path.isfile(os.path.join(INITD, e))}


def get_all() -> list[str]:
    """Return the names of every service on the minion, sorted.

    CLI Example::

        saline '*' service.get_all
    """
    if backend() == "systemd":
        proc = _run(["systemctl", "list-unit-files", "--type=service", "--no-legend", "--no-pager", "--all"])
        names = {line.split()[0].removesuffix(".service") for line in proc.stdout.splitlines() if line.split()}
        return sorted(n for n in names | _initd_scripts() if not n.endswith("@"))
    return sorted(_initd_scripts())


def available(name: Any) -> bool:
    """Return True when the named service exists on the minion.

    CLI Example::

        saline '*' service.available sshd
    """
    return _check_name(name).removesuffix(".service") in get_all()


def missing(name: Any) -> bool:
    """Return True when the named service does not exist on the minion (the opposite of available).

    CLI Example::

        saline '*' service.missing sshd
    """
    return not available(name)


def _existing(name: Any) -> tuple[str, str]:
    """(back end, service name), or a one-line error for a service that cannot be managed here."""
    text = _check_name(name).removesuffix(".service")
    kind = backend()
    if kind == "systemd":
        if text not in get_all():
            raise CommandExecutionError(f"Service '{text}' is not available")
        return kind, text
    if text in _initd_scripts():
        return kind, text
    if text in _unit_files():
        raise CommandExecutionError(f"Service '{text}' has only a systemd unit, and systemctl cannot reach systemd "
                                    "here (the machine was not booted with systemd as PID 1)")
    raise CommandExecutionError(f"Service '{text}' is not available (no systemd unit, no {INITD}/{text})")


def _service_argv(kind: str, name: str, action: str) -> list[str]:
    if kind == "systemd":
        return ["systemctl", action, f"{name}.service"]
    wrapper = shutil.which("service") or "/usr/sbin/service"
    if os.access(wrapper, os.X_OK):
        return [wrapper, name, action]
    return [os.path.join(INITD, name), action]


def _action(name: Any, action: str) -> bool:
    kind, text = _existing(name)
    return _run(_service_argv(kind, text, action)).returncode == 0


def start(name: Any) -> bool:
    """Start the named service; True when it started (or was running).

    CLI Example::

        saline '*' service.start nginx
    """
    return _action(name, "start")


def stop(name: Any) -> bool:
    """Stop the named service; True when it stopped (or was not running).

    CLI Example::

        saline '*' service.stop nginx
    """
    return _action(name, "stop")


def restart(name: Any) -> bool:
    """Restart the named service; True when it came back.

    CLI Example::

        saline '*' service.restart nginx
    """
    return _action(name, "restart")


def reload_(name: Any) -> bool:
    """Reload the named service's configuration; True on success.

    CLI Example::

        saline '*' service.reload nginx
    """
    return _action(name, "reload")


__func_alias__ = {"reload_": "reload"}


def _status_one(name: str) -> bool:
    kind, text = _existing(name)
    if kind == "systemd":
        return _run(["systemctl", "is-active", "--quiet", f"{text}.service"]).returncode == 0
    # LSB: "status" exits 0 when the service runs, 3 when it does not
    return _run(_service_argv(kind, text, "status"), timeout=60).returncode == 0


def status(name: Any, sig: Any = None) -> bool | dict[str, bool]:
    """Return True when the named service is running, False when not.

    A glob (``name='ng*'``) returns ``{service: bool}`` for every service it matches. ``sig``
    names a process to look for instead (a command-line substring), as Salt's ``sig`` does.

    CLI Example::

        saline '*' service.status nginx
        saline '*' service.status 'post*'
    """
    if sig not in (None, ""):
        try:
            import psutil
        except ImportError:
            raise CommandExecutionError("psutil is not installed (pip install psutil)") from None
        needle = str(sig)
        for proc in psutil.process_iter(["cmdline"]):
            if needle in " ".join(proc.info.get("cmdline") or []):
                return True
        return False
    text = _check_name(name) if not any(c in str(name) for c in "*?[") else str(name)
    if any(c in text for c in "*?["):
        return {svc: _status_one(svc) for svc in fnmatch.filter(get_all(), text)}
    return _status_one(text)


def _runlevel() -> str:
    """The current runlevel (``runlevel``'s second field), 2 when it is unknown (Salt does the same)."""
    try:
        proc = subprocess.run(["runlevel"], capture_output=True, text=True, timeout=10, check=False)
        fields = proc.stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        fields = []
    return fields[1] if len(fields) == 2 and fields[1].isdigit() else "2"


def enabled(name: Any) -> bool:
    """Return True when the named service starts at boot.

    systemd: ``systemctl is-enabled``; SysV: an ``S`` link in the current runlevel's rc folder.

    CLI Example::

        saline '*' service.enabled nginx
    """
    kind, text = _existing(name)
    if kind == "systemd":
        return _run(["systemctl", "is-enabled", "--quiet", f"{text}.service"]).returncode == 0
    folder = f"/etc/rc{_runlevel()}.d"
    try:
        links = os.listdir(folder)
    except OSError:
        return False
    return any(re.fullmatch(r"S\d\d" + re.escape(text), link) for link in links)
