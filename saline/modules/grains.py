"""The ``grains`` module: facts about the minion, and Salt's functions for reading them.

:func:`core_grains` collects the core grains once, at minion start, from the standard library
only (``/proc``, ``/etc/os-release``, ``socket``, ``platform``). The execution functions
(``grains.items``, ``grains.get``, ...) read the grains of the running job's context, which the
minion fills with the core grains and the ``grains`` of its config on top.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import platform
import grp
import pwd
import socket
import struct
import sys
from pathlib import Path
from typing import Any, Mapping

import saline
from saline.modules.context import current

# Only these are execution functions; core_grains and the helpers are for the minion.
__load__ = ["items", "item", "get", "ls"]

DEFAULT_TARGET_DELIM = ":"

# os-release ID -> Salt's ``os`` grain
_OS_NAME = {
    "debian": "Debian", "ubuntu": "Ubuntu", "linuxmint": "Mint", "raspbian": "Raspbian",
    "centos": "CentOS", "rhel": "RedHat", "fedora": "Fedora", "rocky": "Rocky",
    "almalinux": "AlmaLinux", "amzn": "Amazon", "ol": "OEL", "scientific": "Scientific",
    "opensuse-leap": "SUSE", "opensuse-tumbleweed": "SUSE", "opensuse": "SUSE", "sles": "SUSE",
    "arch": "Arch", "manjaro": "Manjaro", "alpine": "Alpine", "gentoo": "Gentoo", "void": "Void",
    "nixos": "NixOS", "devuan": "Devuan", "kali": "Kali", "pop": "Pop", "photon": "VMware Photon OS",
}

# Salt's ``os`` grain -> ``os_family``
_OS_FAMILY = {
    "Debian": "Debian", "Ubuntu": "Debian", "Mint": "Debian", "Raspbian": "Debian", "Devuan": "Debian",
    "Kali": "Debian", "Pop": "Debian",
    "CentOS": "RedHat", "RedHat": "RedHat", "Fedora": "RedHat", "Rocky": "RedHat", "AlmaLinux": "RedHat",
    "Amazon": "RedHat", "OEL": "RedHat", "Scientific": "RedHat", "VMware Photon OS": "RedHat",
    "SUSE": "Suse", "Arch": "Arch", "Manjaro": "Arch", "Alpine": "Alpine", "Gentoo": "Gentoo",
    "Void": "Void", "NixOS": "NixOS",
}

# platform.machine() -> the Debian package architecture Salt reports as ``osarch`` there
_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "i386": "i386", "armv7l": "armhf",
             "ppc64le": "ppc64el", "s390x": "s390x", "riscv64": "riscv64"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _os_release() -> dict[str, str]:
    text = _read("/etc/os-release") or _read("/usr/lib/os-release")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _os_grains() -> dict[str, Any]:
    kernel = platform.system()
    if kernel != "Linux":
        release = platform.release()
        return {"os": kernel, "os_family": kernel, "osrelease": release, "osfullname": kernel,
                "oscodename": "", "osfinger": f"{kernel}-{release.split('.')[0]}"}
    rel = _os_release()
    os_id = rel.get("ID", "").lower()
    name = _OS_NAME.get(os_id) or (rel.get("NAME", "Linux").split() or ["Linux"])[0]
    family = _OS_FAMILY.get(name)
    if family is None:
        for like in rel.get("ID_LIKE", "").split():
            if like in _OS_NAME:
                family = _OS_FAMILY.get(_OS_NAME[like])
                break
    release = rel.get("VERSION_ID", "")
    if name == "Debian" and not release:
        release = _read("/etc/debian_version").strip()  # testing/sid carry no VERSION_ID
    fullname = rel.get("NAME", name).removesuffix(" GNU/Linux").removesuffix(" Linux") or name
    grains: dict[str, Any] = {
        "os": name,
        "os_family": family or name,
        "osfullname": fullname,
        "osrelease": release,
        "oscodename": rel.get("VERSION_CODENAME", ""),
        "osfinger": f"{fullname}-{release.split('.')[0]}" if release else fullname,
    }
    info = [int(p) if p.isdigit() else p for p in release.split(".")] if release else []
    if info:
        grains["osrelease_info"] = info
        if isinstance(info[0], int):
            grains["osmajorrelease"] = info[0]
    return grains


def _iface_ipv4(name: str) -> str | None:
    """The primary IPv4 address of one interface (SIOCGIFADDR), or None."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        return socket.inet_ntoa(packed[20:24])
    except OSError:
        return None
    finally:
        sock.close()


def _interfaces() -> dict[str, dict[str, list[str]]]:
    """``{iface: {"inet": [...], "inet6": [...], "hwaddr": "..."}}`` from ioctl and /proc."""
    out: dict[str, dict[str, Any]] = {}
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        names = []
    for name in names:
        entry: dict[str, Any] = {"inet": [], "inet6": []}
        addr = _iface_ipv4(name)
        if addr:
            entry["inet"].append(addr)
        hwaddr = _read(f"/sys/class/net/{name}/address").strip()
        if hwaddr:
            entry["hwaddr"] = hwaddr
        out[name] = entry
    # /proc/net/if_inet6: address (32 hex digits), index, prefix, scope, flags, interface
    for line in _read("/proc/net/if_inet6").splitlines():
        parts = line.split()
        if len(parts) < 6 or len(parts[0]) != 32:
            continue
        try:
            addr6 = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
        except ValueError:
            continue
        out.setdefault(parts[5], {"inet": [], "inet6": []})["inet6"].append(addr6)
    return out


def _sorted_ips(addrs: list[str]) -> list[str]:
    return sorted(set(addrs), key=ipaddress.ip_address)


def _fqdn_ips(fqdn: str, family: socket.AddressFamily) -> list[str]:
    try:
        infos = socket.getaddrinfo(fqdn, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return _sorted_ips([info[4][0] for info in infos])


def _cpu_grains() -> dict[str, Any]:
    model = ""
    flags: list[str] = []
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not model and key in ("model name", "Processor", "cpu model", "uarch"):
            model = value.strip()
        elif not flags and key in ("flags", "Features"):
            flags = value.split()
    return {"num_cpus": os.cpu_count() or 1, "cpu_model": model or platform.processor(), "cpu_flags": flags}


def _mem_grains() -> dict[str, int]:
    mem = swap = 0
    for line in _read("/proc/meminfo").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            if parts[0] == "MemTotal:":
                mem = int(parts[1]) // 1024
            elif parts[0] == "SwapTotal:":
                swap = int(parts[1]) // 1024
    return {"mem_total": mem, "swap_total": swap}


def _user_grains() -> dict[str, Any]:
    uid, gid = os.geteuid(), os.getegid()
    try:
        username = pwd.getpwuid(uid).pw_name
    except KeyError:
        username = str(uid)
    try:
        groupname = grp.getgrgid(gid).gr_name
    except KeyError:
        groupname = str(gid)
    return {"username": username, "uid": uid, "groupname": groupname, "gid": gid}


def _virtual() -> str:
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return "container"
    cgroup = _read("/proc/1/cgroup")
    if any(word in cgroup for word in ("docker", "lxc", "kubepods", "containerd")):
        return "container"
    if "hypervisor" in _read("/proc/cpuinfo"):
        return "VirtualMachine"  # a VM whose kind the standard library cannot tell
    return "physical"


def _version_info(version: str) -> list[int]:
    out = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return out


def core_grains(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The minion's core grains, with ``opts["grains"]`` (the config's custom grains) on top."""
    fqdn = socket.getfqdn()
    host = socket.gethostname()
    interfaces = _interfaces()
    ipv4 = [a for entry in interfaces.values() for a in entry["inet"]]
    if "127.0.0.1" not in ipv4:
        ipv4.append("127.0.0.1")
    ipv6 = [a for entry in interfaces.values() for a in entry["inet6"]]
    version_info = list(sys.version_info)
    grains: dict[str, Any] = {
        "id": opts.get("id") or fqdn,
        "kernel": platform.system(),
        "kernelrelease": platform.release(),
        "kernelversion": platform.version(),
        "host": host.split(".")[0],
        "localhost": host,
        "nodename": platform.node(),
        "fqdn": fqdn,
        "domain": fqdn.partition(".")[2],
        "ipv4": _sorted_ips(ipv4),
        "ipv6": _sorted_ips(ipv6),
        "ip4_interfaces": {name: list(e["inet"]) for name, e in interfaces.items()},
        "ip6_interfaces": {name: list(e["inet6"]) for name, e in interfaces.items()},
        "ip_interfaces": {name: list(e["inet"]) + list(e["inet6"]) for name, e in interfaces.items()},
        "hwaddr_interfaces": {name: e["hwaddr"] for name, e in interfaces.items() if "hwaddr" in e},
        "fqdn_ip4": _fqdn_ips(fqdn, socket.AF_INET),
        "fqdn_ip6": _fqdn_ips(fqdn, socket.AF_INET6),
        "pythonversion": version_info,
        "pythonexecutable": sys.executable,
        "pythonpath": list(sys.path),
        "saltversion": saline.__version__,
        "salineversion": saline.__version__,
        "saltversioninfo": _version_info(saline.__version__),
        "cpuarch": platform.machine(),
        "path": os.environ.get("PATH", ""),
        "shell": os.environ.get("SHELL", "/bin/sh"),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "machine_id": _read("/etc/machine-id").strip(),
        "init": _read("/proc/1/comm").strip() or "unknown",
        "virtual": _virtual(),
        "master": opts.get("master", ""),
    }
    grains.update(_os_grains())
    grains.update(_cpu_grains())
    grains.update(_mem_grains())
    grains.update(_user_grains())
    grains["osarch"] = (_DEB_ARCH.get(grains["cpuarch"], grains["cpuarch"])
                        if grains["os_family"] == "Debian" else grains["cpuarch"])
    custom = opts.get("grains") or {}
    if isinstance(custom, Mapping):
        grains.update(custom)
    return grains


# -- execution functions ------------------------------------------------------------------------

def traverse(data: Any, key: str, default: Any = "", delimiter: str = DEFAULT_TARGET_DELIM) -> Any:
    """``data["a"]["b"]`` for ``"a:b"``; list levels take an index or search their dicts."""
    node = data
    for part in str(key).split(delimiter) if delimiter else [str(key)]:
        if isinstance(node, Mapping):
            if part not in node:
                return default
            node = node[part]
        elif isinstance(node, list):
            try:
                node = node[int(part)]
                continue
            except (ValueError, IndexError):
                pass
            for item in node:
                if isinstance(item, Mapping) and part in item:
                    node = item[part]
                    break
            else:
                return default
        else:
            return default
    return node


def items() -> dict[str, Any]:
    """Return all of the minion's grains.

    CLI Example::

        saline '*' grains.items
    """
    return dict(current().grains)


def item(*args: str, **kwargs: Any) -> dict[str, Any]:
    """Return the named grains as a dict (``""`` for one that is not set); ``a:b`` reaches nested values.

    CLI Example::

        saline '*' grains.item os osrelease oscodename
    """
    default = kwargs.get("default", "")
    delimiter = kwargs.get("delimiter", DEFAULT_TARGET_DELIM)
    grains = current().grains
    return {str(key): traverse(grains, str(key), default, delimiter) for key in args}


def get(key: str, default: Any = "", delimiter: str = DEFAULT_TARGET_DELIM) -> Any:
    """Return one grain, or ``default``; ``key`` may reach into nested data with ``:`` (``pkg:apache``).

    CLI Example::

        saline '*' grains.get pkg:apache
        saline '*' grains.get abc::def|ghi delimiter='|'
    """
    return traverse(current().grains, key, default, delimiter)


def ls() -> list[str]:
    """Return the sorted names of all grains.

    CLI Example::

        saline '*' grains.ls
    """
    return sorted(str(k) for k in current().grains)

