"""The ``network`` module: interfaces, addresses, sockets and reachability (Salt's ``network.*``).

Interfaces come from psutil; ``netstat`` is read from ``/proc/net`` (what ``netstat -tulpnea``
prints, in Salt's shape, without needing net-tools); ``ping`` runs the system's ``ping`` without a
shell; ``connect`` opens a real socket.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
from typing import Any

from saline.modules.errors import CommandExecutionError

# /proc/net/tcp state codes, named as netstat names them
_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}
# a host name or address as ping and connect take them: no spaces, no option-like leading dash
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]-]{1,253}$")


def _check_host(host: Any) -> str:
    text = "" if host is None else str(host).strip()
    if not text:
        raise CommandExecutionError("Required argument, host, is missing.")
    if text.startswith("-") or not _HOST.match(text):
        raise CommandExecutionError(f"Invalid host name or address: {text!r}")
    return text


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # a dependency of saline; its absence is an installation problem
        raise CommandExecutionError("psutil is not installed (pip install psutil)") from None
    return psutil


def _prefixlen(netmask: str | None) -> str:
    if not netmask:
        return "128"
    try:
        return str(ipaddress.IPv6Network(f"::/{netmask}").prefixlen)
    except ValueError:
        return str(bin(int(ipaddress.IPv6Address(netmask))).count("1"))


def _scope(address: ipaddress.IPv6Address) -> str:
    if address.is_loopback:
        return "host"
    if address.is_link_local:
        return "link"
    if address.is_site_local:
        return "site"
    return "global"


def interfaces() -> dict[str, dict[str, Any]]:
    """Return a dictionary of information about every network interface.

    ``{name: {"hwaddr", "up", "inet": [{"address", "netmask", "broadcast", "label"}],
    "inet6": [{"address", "prefixlen", "scope"}]}}``, as Salt shows them.

    CLI Example::

        saline '*' network.interfaces
    """
    psutil = _psutil()
    stats = psutil.net_if_stats()
    out: dict[str, dict[str, Any]] = {}
    for name, addrs in psutil.net_if_addrs().items():
        entry: dict[str, Any] = {"hwaddr": "", "up": bool(stats[name].isup) if name in stats else False}
        inet: list[dict[str, str]] = []
        inet6: list[dict[str, str]] = []
        for addr in addrs:
            if addr.family == psutil.AF_LINK:
                entry["hwaddr"] = addr.address
            elif addr.family == socket.AF_INET:
                item = {"address": addr.address, "netmask": addr.netmask or "", "label": name}
                if addr.broadcast:
                    item["broadcast"] = addr.broadcast
                inet.append(item)
            elif addr.family == socket.AF_INET6:
                address = addr.address.split("%", 1)[0]
                inet6.append({"address": address, "prefixlen": _prefixlen(addr.netmask),
                              "scope": _scope(ipaddress.IPv6Address(address))})
        if inet:
            entry["inet"] = inet
        if inet6:
            entry["inet6"] = inet6
        out[name] = entry
    return out


def _addrs(key: str, interface: Any, include_loopback: bool, cidr: Any, type: Any) -> list[str]:
    if type not in (None, "", "public", "private"):
        raise CommandExecutionError(f"Invalid type {type!r}: use 'public' or 'private'")
    network = None
    if cidr not in (None, ""):
        try:
            network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            raise CommandExecutionError(f"Invalid CIDR: {cidr!r}") from None
    ifaces = interfaces()
    if interface not in (None, ""):
        if str(interface) not in ifaces:
            raise CommandExecutionError(f"Interface '{interface}' not found")
        ifaces = {str(interface): ifaces[str(interface)]}
    found: set[str] = set()
    for entry in ifaces.values():
        for item in entry.get(key, []):
            address = ipaddress.ip_address(item["address"])
            if address.is_loopback and not include_loopback:
                continue
            if network is not None and (address.version != network.version or address not in network):
                continue
            if type == "public" and address.is_private:
                continue
            if type == "private" and not address.is_private:
                continue
            found.add(str(address))
    return sorted(found, key=ipaddress.ip_address)


def ip_addrs(interface: Any = None, include_loopback: bool = False, cidr: Any = None, type: Any = None) -> list[str]:
    """Return the IPv4 addresses of the minion (without loopback unless ``include_loopback=True``).

    ``interface`` limits them to one interface, ``cidr`` to one network, ``type`` to ``public`` or
    ``private`` addresses.

    CLI Example::

        saline '*' network.ip_addrs
        saline '*' network.ip_addrs cidr=10.0.0.0/8
        saline '*' network.ip_addrs interface=eth0 type=private
    """
    return _addrs("inet", interface, bool(include_loopback), cidr, type)


def ip_addrs6(interface: Any = None, include_loopback: bool = False, cidr: Any = None) -> list[str]:
    """Return the IPv6 addresses of the minion (without loopback unless ``include_loopback=True``).

    CLI Example::

        saline '*' network.ip_addrs6
    """
    return _addrs("inet6", interface, bool(include_loopback), cidr, None)


# -- netstat ---------------------------------------------------------------------------------------

def _hex_address(text: str) -> str:
    """``0100007F:0016`` (or its 32-digit IPv6 form) as netstat -n prints it: ``127.0.0.1:22``."""
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = str(ipaddress.IPv4Address(raw[::-1]))
    else:
        # four little-endian 32-bit words
        host = str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    port = int(port_hex, 16)
    return f"{host}:{port if port else '*'}"


def _socket_owners() -> dict[str, str]:
    """socket inode -> ``pid/name`` for every process whose fds we may read (root sees all)."""
    owners: dict[str, str] = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        name = None
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                if name is None:
                    try:
                        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
                            name = fh.read().strip()
                    except OSError:
                        name = "-"
                owners.setdefault(link[8:-1], f"{pid}/{name}")
    return owners


def netstat() -> list[dict[str, str]]:
    """Return the TCP and UDP sockets of the minion, as ``netstat -tulpnea`` shows them.

    Each: ``proto``, ``recv-q``, ``send-q``, ``local-address``, ``remote-address``, ``state``
    (TCP only), ``user`` (uid), ``inode``, ``program`` (``pid/name``, ``-`` when unknown).

    CLI Example::

        saline '*' network.netstat
    """
    owners = _socket_owners()
    out: list[dict[str, str]] = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/net/{proto}", encoding="ascii") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            comps = line.split()
            if len(comps) < 10:
                continue
            tx_queue, rx_queue = comps[4].split(":")
            entry = {"proto": proto, "recv-q": str(int(rx_queue, 16)), "send-q": str(int(tx_queue, 16)),
                     "local-address": _hex_address(comps[1]), "remote-address": _hex_address(comps[2])}
            if proto.startswith("tcp"):
                entry["state"] = _TCP_STATES.get(comps[3], comps[3])
            entry.update({"user": comps[7], "inode": comps[9], "program": owners.get(comps[9], "-")})
            out.append(entry)
    return out


# -- reachability ----------------------------------------------------------------------------------

def ping(host: Any, timeout: Any = False, return_boolean: bool = False) -> str | bool:
    """Ping ``host`` four times (``ping -c 4``) and return ping's output.

    ``return_boolean=True`` returns True when every ping was answered. ``timeout`` (seconds) is
    how long to wait for each answer (``ping -W``), as in Salt.

    CLI Example::

        saline '*' network.ping archlinux.org
        saline '*' network.ping 127.0.0.1 return_boolean=True timeout=3
    """
    target = _check_host(host)
    argv = ["ping", "-c", "4"]
    if timeout not in (False, None, ""):
        try:
            seconds = int(timeout)
        except (TypeError, ValueError):
            raise CommandExecutionError(f"timeout must be a number of seconds, got {timeout!r}") from None
        if seconds <= 0:
            raise CommandExecutionError(f"timeout must be a positive number of seconds, got {timeout!r}")
        argv += ["-W", str(seconds)]
    argv.append(target)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise CommandExecutionError("ping is not installed on this minion (Debian: iputils-ping)") from None
    except subprocess.TimeoutExpired:
        raise CommandExecutionError(f"ping {target} did not finish in 60 seconds") from None
    if return_boolean:
        return proc.returncode == 0
    return (proc.stdout + proc.stderr).strip()


def connect(host: Any = None, port: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Test connectivity to ``host`` on ``port``: ``{"result": bool, "comment": str}``.

    Keyword arguments: ``proto`` (``tcp``, the default, or ``udp``), ``timeout`` (seconds, 5),
    ``family`` (``ipv4`` or ``ipv6``).

    CLI Example::

        saline '*' network.connect archlinux.org 80
        saline '*' network.connect 127.0.0.1 53 proto=udp timeout=3
    """
    ret: dict[str, Any] = {"result": False, "comment": ""}
    unknown = sorted(k for k in kwargs if k not in ("proto", "timeout", "family") and not k.startswith("__"))
    if unknown:
        return {**ret, "comment": f"Invalid keyword arguments: {', '.join(unknown)} (proto, timeout, family)"}
    try:
        target = _check_host(host)
    except CommandExecutionError as exc:
        return {**ret, "comment": str(exc)}
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except (TypeError, ValueError):
        return {**ret, "comment": "Required argument, port, is missing." if port in (None, "")
                else f"Invalid port {port!r}: a number between 1 and 65535"}
    proto = str(kwargs.get("proto") or "tcp").lower()
    if proto not in ("tcp", "udp"):
        return {**ret, "comment": f"Invalid proto {proto!r}: use tcp or udp"}
    family_name = kwargs.get("family")
    family = {None: socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(family_name, -1)
    if family == -1:
        return {**ret, "comment": f"Invalid family {family_name!r}: use ipv4 or ipv6"}
    try:
        timeout = float(kwargs.get("timeout") or 5)
    except (TypeError, ValueError):
        return {**ret, "comment": f"Invalid timeout {kwargs.get('timeout')!r}"}
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    try:
        infos = socket.getaddrinfo(target, number, family, kind)
    except socket.gaierror as exc:
        return {**ret, "comment": f"Unable to resolve {target}: {exc.strerror}"}
    af, socktype, sproto, _name, sockaddr = infos[0]
    address = sockaddr[0]
    try:
        with socket.socket(af, socktype, sproto) as sock:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            if proto == "udp":
                # UDP has no handshake: send a probe and treat an ICMP refusal as a failure
                sock.send(b"\0")
                try:
                    sock.recv(1)
                except socket.timeout:
                    pass
    except OSError:
        return {**ret, "comment": f"Unable to connect to {target} ({address}) on {proto} port {number}"}
    return {"result": True, "comment": f"Successfully connected to {target} ({address}) on {proto} port {number}"}
