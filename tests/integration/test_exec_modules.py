"""The monitoring and upkeep execution modules against this machine's real system.

disk/network/service/pkg/file/user/status run through ``execute`` as a job would: real ``df``,
real sockets and ``ping``, a real init-script service the test installs and starts, real dpkg,
real files. Every bad argument is checked to be one line with success False.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.modules.args import parse_cli_args
from saline.modules.context import ExecContext
from saline.modules.grains import core_grains
from saline.modules.loader import execute, load_functions


@pytest.fixture(scope="module")
def functions() -> dict:
    return load_functions({})


@pytest.fixture
def ctx(tmp_path: Path) -> ExecContext:
    opts = {"id": "m1", "cachedir": str(tmp_path)}
    return ExecContext(opts=opts, grains=core_grains(opts), jid="20240101000000000000")


def run(functions: dict, ctx: ExecContext, fun: str, *cli: str) -> dict[str, Any]:
    return execute(functions, fun, parse_cli_args(list(cli)), ctx)


def ok(functions: dict, ctx: ExecContext, fun: str, *cli: str) -> Any:
    ret = run(functions, ctx, fun, *cli)
    assert ret["success"] is True and ret["retcode"] == 0, ret
    return ret["return"]


def fails(functions: dict, ctx: ExecContext, fun: str, *cli: str, match: str) -> str:
    """The job fails with one line (no traceback) matching ``match``."""
    ret = run(functions, ctx, fun, *cli)
    assert ret["success"] is False and ret["retcode"] == 1, ret
    text = ret["return"] if isinstance(ret["return"], str) else ret["return"].get("comment", "")
    assert "\n" not in text and "Traceback" not in text, text
    assert re.search(match, text), text
    return text


# -- disk ------------------------------------------------------------------------------------------

def test_disk(functions: dict, ctx: ExecContext) -> None:
    usage = ok(functions, ctx, "disk.usage")
    root = usage["/"]
    assert set(root) == {"filesystem", "1K-blocks", "used", "available", "capacity"}
    st = os.statvfs("/")
    assert abs(int(root["1K-blocks"]) - st.f_blocks * st.f_frsize // 1024) <= 1
    assert re.fullmatch(r"\d+%", root["capacity"])
    inodes = ok(functions, ctx, "disk.inodeusage")["/"]
    assert set(inodes) == {"inodes", "used", "free", "use", "filesystem"} and int(inodes["inodes"]) == st.f_files
    assert ok(functions, ctx, "disk.percent", "/") == root["capacity"]
    assert ok(functions, ctx, "disk.percent")["/"] == root["capacity"]
    assert "/" in ok(functions, ctx, "disk.usage", "args=-l")
    fails(functions, ctx, "disk.usage", "args=-T", match=r"Invalid flags passed to disk.usage")
    fails(functions, ctx, "disk.percent", "/no/such/mount", match=r"Partition '/no/such/mount' does not exist")


# -- network ---------------------------------------------------------------------------------------

def test_network_interfaces_and_addresses(functions: dict, ctx: ExecContext) -> None:
    ifaces = ok(functions, ctx, "network.interfaces")
    lo = ifaces["lo"]
    assert lo["up"] is True and {"address": "127.0.0.1", "netmask": "255.0.0.0", "label": "lo"} in lo["inet"]
    assert ok(functions, ctx, "network.ip_addrs", "include_loopback=True", "cidr=127.0.0.0/8") == ["127.0.0.1"]
    assert "127.0.0.1" not in ok(functions, ctx, "network.ip_addrs")
    assert ok(functions, ctx, "network.ip_addrs", "interface=lo", "include_loopback=True") == ["127.0.0.1"]
    fails(functions, ctx, "network.ip_addrs", "cidr=300.1.0.0/8", match="Invalid CIDR")
    fails(functions, ctx, "network.ip_addrs", "interface=nosuch0", match="Interface 'nosuch0' not found")
    fails(functions, ctx, "network.ip_addrs", "type=weird", match="Invalid type")


def test_network_netstat_sees_a_listening_socket(functions: dict, ctx: ExecContext) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        rows = ok(functions, ctx, "network.netstat")
    mine = [r for r in rows if r["local-address"] == f"127.0.0.1:{port}"]
    assert len(mine) == 1
    row = mine[0]
    assert row["proto"] == "tcp" and row["state"] == "LISTEN" and row["remote-address"] == "0.0.0.0:*"
    assert row["program"] == f"{os.getpid()}/{Path('/proc/self/comm').read_text().strip()}"
    assert row["user"] == str(os.getuid()) and row["recv-q"] == "0"


def test_network_ping_and_connect(functions: dict, ctx: ExecContext) -> None:
    out = ok(functions, ctx, "network.ping", "127.0.0.1", "timeout=5")
    assert "127.0.0.1" in out and re.search(r"\b0% packet loss", out)
    assert ok(functions, ctx, "network.ping", "127.0.0.1", "return_boolean=True", "timeout=2") is True
    fails(functions, ctx, "network.ping", "-f", match="Invalid host name")
    fails(functions, ctx, "network.ping", "127.0.0.1", "timeout=soon", match="timeout must be a number")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ok(functions, ctx, "network.connect", "127.0.0.1", str(port)) == {
            "result": True, "comment": f"Successfully connected to 127.0.0.1 (127.0.0.1) on tcp port {port}"}
    fails(functions, ctx, "network.connect", "127.0.0.1", str(port), match="Unable to connect")
    fails(functions, ctx, "network.connect", "127.0.0.1", match="Required argument, port, is missing")
    fails(functions, ctx, "network.connect", "127.0.0.1", "99999", match="Invalid port")
    fails(functions, ctx, "network.connect", "127.0.0.1", "80", "proto=sctp", match="Invalid proto")


# -- service ---------------------------------------------------------------------------------------

INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: saline test service (a Python HTTP server)
### END INIT INFO
PIDFILE={pidfile}
case "$1" in
  start) start-stop-daemon --start --quiet --oknodo --background --make-pidfile --pidfile $PIDFILE \\
           --exec {python} -- -m http.server {port} --bind 127.0.0.1 ;;
  stop) start-stop-daemon --stop --quiet --oknodo --retry 5 --pidfile $PIDFILE --remove-pidfile ;;
  restart) "$0" stop && "$0" start ;;
  status) start-stop-daemon --status --pidfile $PIDFILE ;;
  *) echo "Usage: $0 {{start|stop|restart|status}}"; exit 2 ;;
esac
"""


@pytest.fixture
def initd_service(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real SysV service: an init script in /etc/init.d that runs a Python HTTP server.

    This machine's PID 1 is not systemd (systemctl cannot reach a systemd), so the service module
    drives init scripts through Debian's ``service`` wrapper, as Salt's debian_service does.
    The script and its rc links are removed afterwards.
    """
    name = f"saline-test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    script = Path("/etc/init.d") / name
    script.write_text(INIT_SCRIPT.format(name=name, pidfile=tmp_path / "svc.pid", port=port,
                                         python=os.path.realpath("/usr/bin/python3")))
    script.chmod(0o755)
    try:
        yield name, port
    finally:
        subprocess.run([str(script), "stop"], capture_output=True, check=False)
        subprocess.run(["update-rc.d", "-f", name, "remove"], capture_output=True, check=False)
        script.unlink()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def test_service_lifecycle(functions: dict, ctx: ExecContext, initd_service: tuple[str, int]) -> None:
    name, port = initd_service
    assert name in ok(functions, ctx, "service.get_all")
    assert ok(functions, ctx, "service.available", name) is True
    assert ok(functions, ctx, "service.status", name) is False
    assert ok(functions, ctx, "service.start", name) is True
    assert ok(functions, ctx, "service.status", name) is True
    assert _answers(port)  # the service really runs
    assert ok(functions, ctx, "service.status", name.rsplit("-", 1)[0] + "-*")[name] is True
    assert ok(functions, ctx, "service.restart", name) is True
    assert ok(functions, ctx, "service.status", name) is True and _answers(port)
    assert ok(functions, ctx, "service.enabled", name) is False
    subprocess.run(["update-rc.d", name, "defaults"], check=True, capture_output=True)
    assert ok(functions, ctx, "service.enabled", name) is True
    assert ok(functions, ctx, "service.stop", name) is True
    assert ok(functions, ctx, "service.status", name) is False
    fails(functions, ctx, "service.status", "no-such-service-here", match="Service 'no-such-service-here' is not available")
    fails(functions, ctx, "service.start", "-rf", match="Invalid service name")


def test_service_says_when_systemd_is_not_there(functions: dict, ctx: ExecContext) -> None:
    backend = ok(functions, ctx, "service.backend")
    if backend == "systemd":
        assert os.path.isdir("/run/systemd/system")
        return
    units = [p.stem for p in Path("/lib/systemd/system").glob("*.service")
             if not p.stem.endswith("@") and not Path(f"/etc/init.d/{p.stem}").exists()]
    assert units, "a Debian machine ships systemd unit files without init scripts"
    fails(functions, ctx, "service.status", units[0], match="only a systemd unit, and systemctl cannot reach systemd")


# -- pkg -------------------------------------------------------------------------------------------

def test_pkg_queries(functions: dict, ctx: ExecContext) -> None:
    bash = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "bash"], capture_output=True, text=True,
                          check=True).stdout
    assert ok(functions, ctx, "pkg.version", "bash") == bash
    assert ok(functions, ctx, "pkg.version", "bash", "no-such-package-xyz") == {"bash": bash, "no-such-package-xyz": ""}
    pkgs = ok(functions, ctx, "pkg.list_pkgs")
    assert pkgs["bash"] == bash and len(pkgs) > 50
    assert ok(functions, ctx, "pkg.list_pkgs", "versions_as_list=True")["bash"] == [bash]
    upgrades = ok(functions, ctx, "pkg.list_upgrades", "refresh=False")
    assert isinstance(upgrades, dict) and all(isinstance(v, str) and v for v in upgrades.values())
    fails(functions, ctx, "pkg.version", "Bad Name", match="Invalid package name")
    fails(functions, ctx, "pkg.install", "no-such-package-xyz", match="Unable to locate package no-such-package-xyz")
    fails(functions, ctx, "pkg.install", match="give a package name")
    fails(functions, ctx, "pkg.list_pkgs", "colour=blue", match="Invalid keyword arguments")


# -- file ------------------------------------------------------------------------------------------

def test_file(functions: dict, ctx: ExecContext, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    assert ok(functions, ctx, "file.write", str(path), "one", "two words") == f'Wrote 2 lines to "{path}"'
    assert ok(functions, ctx, "file.read", str(path)) == "one\ntwo words\n"
    assert ok(functions, ctx, "file.file_exists", str(path)) is True
    assert ok(functions, ctx, "file.file_exists", str(tmp_path)) is False
    digest = hashlib.sha256(b"one\ntwo words\n").hexdigest()
    assert ok(functions, ctx, "file.get_hash", str(path)) == digest
    assert ok(functions, ctx, "file.get_hash", str(path), "form=md5") == hashlib.md5(b"one\ntwo words\n").hexdigest()
    os.chmod(path, 0o640)
    st = ok(functions, ctx, "file.stats", str(path), "hash_type=sha256")
    assert (st["mode"], st["type"], st["size"], st["sum"], st["user"]) == ("0640", "file", 14, digest, "root")
    assert st["target"] == str(path) and st["inode"] == path.stat().st_ino
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "big.log").write_bytes(b"x" * 5000 + b"needle")
    (tmp_path / "sub" / "small.LOG").write_text("hay")
    find = lambda *a: ok(functions, ctx, "file.find", str(tmp_path), *a)  # noqa: E731
    assert find("name=*.log") == [str(tmp_path / "sub" / "big.log")]
    assert sorted(find("iname=*.log")) == sorted([str(tmp_path / "sub" / "big.log"), str(tmp_path / "sub" / "small.LOG")])
    assert find("type=d", "mindepth=1") == [str(tmp_path / "sub")]
    assert find("type=f", "size=+4k", "print=name,size") == [["big.log", 5006]]
    assert find("grep=needle") == [str(tmp_path / "sub" / "big.log")]
    assert find("type=f", "maxdepth=1") == [str(path)]
    assert find("mtime=-1h", "type=f", "name=notes*") == [str(path)]
    fails(functions, ctx, "file.read", str(tmp_path / "missing"), match="File not found")
    fails(functions, ctx, "file.read", "relative/path", match="Path must be absolute")
    fails(functions, ctx, "file.stats", str(tmp_path / "missing"), match="Path not found")
    fails(functions, ctx, "file.get_hash", str(path), "form=crc99", match="Invalid hash type 'crc99'")
    fails(functions, ctx, "file.find", str(tmp_path), "colour=red", match="Unknown option for file.find: 'colour'")
    fails(functions, ctx, "file.find", str(tmp_path), "size=huge", match="Invalid size")
    fails(functions, ctx, "file.find", str(tmp_path), "print=owner", match="Invalid print field")
    fails(functions, ctx, "file.write", "/no/such/dir/x", "a", match="Cannot write /no/such/dir/x")


# -- user ------------------------------------------------------------------------------------------

def test_user(functions: dict, ctx: ExecContext) -> None:
    root = ok(functions, ctx, "user.info", "root")
    assert {k: root[k] for k in ("uid", "gid", "home", "name", "shell")} == {
        "uid": 0, "gid": 0, "home": "/root", "name": "root", "shell": "/bin/bash"}
    assert "root" in root["groups"] and set(root) >= {"fullname", "roomnumber", "workphone", "homephone", "passwd"}
    users = ok(functions, ctx, "user.list_users")
    assert "root" in users and users == sorted(users)
    fails(functions, ctx, "user.info", "no-such-user-xyz", match="User 'no-such-user-xyz' does not exist")


# -- status ----------------------------------------------------------------------------------------

def test_status(functions: dict, ctx: ExecContext) -> None:
    info = ok(functions, ctx, "status.cpuinfo")
    assert "model name" in info or "processor" in info
    assert isinstance(info.get("flags", []), list)
    stats = ok(functions, ctx, "status.cpustats")
    assert set(stats["cpu"]) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert isinstance(stats["ctxt"], int) and stats["intr"]["total"] > 0 and stats["btime"] > 1_000_000_000
    net = ok(functions, ctx, "status.netstats")
    assert isinstance(net["TcpExt"]["ListenOverflows"], int) and "InOctets" in net["IpExt"]
    procs = ok(functions, ctx, "status.procs")
    assert procs[str(os.getpid())]["user"] == "root" and "pytest" in procs[str(os.getpid())]["cmd"]
    users = ok(functions, ctx, "status.w")
    assert isinstance(users, list) and all(set(u) == {"idle", "jcpu", "login", "pcpu", "tty", "user", "what"}
                                           for u in users)


def test_sys_doc_documents_every_new_function(functions: dict, ctx: ExecContext) -> None:
    docs = ok(functions, ctx, "sys.doc", "disk", "network", "service", "pkg", "file", "user", "status")
    wanted = {"disk.usage", "disk.inodeusage", "disk.percent", "network.interfaces", "network.ip_addrs",
              "network.netstat", "network.ping", "network.connect", "service.status", "service.start",
              "service.stop", "service.restart", "service.enabled", "service.get_all", "pkg.version",
              "pkg.list_pkgs", "pkg.list_upgrades", "pkg.install", "pkg.remove", "pkg.refresh_db",
              "file.file_exists", "file.stats", "file.read", "file.write", "file.get_hash", "file.find",
              "user.info", "user.list_users", "status.cpuinfo", "status.cpustats", "status.netstats",
              "status.procs", "status.w"}
    assert wanted <= set(docs)
    for fun in docs:
        assert docs[fun] and "CLI Example" in docs[fun], fun
