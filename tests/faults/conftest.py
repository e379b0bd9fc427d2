"""What the fault tests share: clusters of real processes, private database servers, counting.

Every fault test counts what was sent and what arrived and asserts they are equal. The shared
MariaDB, PostgreSQL and Redis servers are never stopped here (other people and CI use them): an
outage of those is a :class:`~tests.helpers.tcpproxy.TcpProxy` between the master and the server,
cut and restored. The tests that really stop a server start a private one in a temporary folder
on a free port (:func:`private_mariadb`, :func:`private_postgres`, :func:`private_redis`).

Each test records its figures with :func:`figure`; they are appended as JSON lines to
``$SALINE_FAULT_FIGURES`` (default ``<tmp>/saline-fault-figures.jsonl``), where
docs/reliability.md takes them from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from saline.client import LocalClient
from saline.localcluster import LocalCluster, free_port

FIGURES = Path(os.environ.get("SALINE_FAULT_FIGURES") or Path(tempfile.gettempdir()) / "saline-fault-figures.jsonl")
JID_RE = re.compile(r"(\d{20})")


def figure(test: str, **values: Any) -> None:
    """Record the figures of one test (and print them, for ``pytest -s``)."""
    line = json.dumps({"test": test, "at": time.strftime("%Y-%m-%d %H:%M:%S"), **values}, sort_keys=True)
    print(f"FIGURE {line}")
    with open(FIGURES, "a") as fh:
        fh.write(line + "\n")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until ``predicate`` gives something true; that value. Fails the test at timeout."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last value: {value!r})")


def logs(cluster: LocalCluster) -> str:
    return "\n".join(f"== {p}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(cluster.root.rglob("*.log")))


class Cluster(LocalCluster):
    """A LocalCluster with the helpers the fault tests need."""

    def start_master(self) -> subprocess.Popen:
        # A master killed with SIGKILL leaves its socket file behind; LocalCluster waits for that
        # file to appear, so it goes first (the new master would replace it anyway).
        with contextlib.suppress(FileNotFoundError):
            (self.master_dir / "sock" / "master.sock").unlink()
        proc = super().start_master()
        wait_for(lambda: self._answers(), 20, "the master to answer on its socket", 0.05)
        return proc

    def _answers(self) -> bool:
        from saline.transport.local import MasterUnreachable

        try:
            self.client.runner("master.stats")
            return True
        except MasterUnreachable:
            return False

    @property
    def client(self) -> LocalClient:
        return LocalClient(str(self.master_dir / "sock"))

    def publish_many(self, tgt: Any, fun: str, n: int, arg: list[Any] | None = None, **kw: Any) -> list[str]:
        """Publish ``n`` jobs without waiting (as ``saline --async`` does); their jids."""
        jids = []
        client = self.client
        for _ in range(n):
            published = client.publish(tgt, fun, list(arg or []), **kw)
            assert published["minions"], f"no minion matched {tgt!r}"
            jids.append(published["jid"])
        return jids

    def runner(self, fun: str, *arg: Any, **kwarg: Any) -> Any:
        return self.client.runner(fun, list(arg), kwarg)

    def returned(self, jids: list[str]) -> int:
        """How many returns of these jobs the master has accepted (it acked them), from its own state
        through ``jobs.active``-free means: the default job cache (the outbox's own file, where the
        master keeps each return as it stores it), read with SQLite."""
        import sqlite3

        path = self.master_dir / "cache" / "outbox.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            total = 0
            for start in range(0, len(jids), 500):
                chunk = jids[start:start + 500]
                total += conn.execute("SELECT COUNT(*) FROM records WHERE kind = 0 AND cached = 1 AND jid IN"
                                      f" ({','.join('?' * len(chunk))})", chunk).fetchone()[0]
            return total
        finally:
            conn.close()

    def status(self, name: str) -> dict[str, Any]:
        return self.runner("returners.status").get(name, {})

    def start_minions(self, *ids: str, **extra: Any) -> None:
        for mid in ids:
            self.start_minion(mid, **extra)
        for mid in ids:
            self.accept(mid)

    def master_log(self) -> str:
        path = self.master_dir / "master.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(master_opts: dict[str, Any] | None = None, minion_opts: dict[str, Any] | None = None,
             name: str = "cluster") -> Cluster:
        cluster = Cluster(tmp_path / name, master_opts=master_opts, minion_opts=minion_opts)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()


# -- private servers that a test may really stop ----------------------------------------------------

def _port_open(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class PrivateServer:
    """A database server of the test's own, in a temporary folder, on a free port."""

    def __init__(self, kind: str, root: Path, start: Callable[["PrivateServer"], None],
                 stop: Callable[["PrivateServer", bool], None]) -> None:
        self.kind, self.root, self.port = kind, root, free_port()
        self._start, self._stop = start, stop
        self.proc: subprocess.Popen | None = None
        self.stops = 0

    def start(self, timeout: float = 30) -> None:
        self._start(self)
        wait_for(lambda: _port_open(self.port), timeout, f"the private {self.kind} on port {self.port}", 0.05)

    def stop(self, kill: bool = False) -> None:
        self._stop(self, kill)
        wait_for(lambda: not _port_open(self.port), 30, f"the private {self.kind} to stop", 0.05)
        self.stops += 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stop(self, True)


def _popen_stop(server: PrivateServer, kill: bool) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def private_mariadb(root: Path) -> Iterator[PrivateServer]:
    """mariadb-install-db into ``root`` and mariadbd on a free port (as root, no grant tables)."""
    data = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)

    def start(server: PrivateServer) -> None:
        server.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={server.port}", "--bind-address=127.0.0.1",
             f"--socket={root / 's'}", "--user=root", "--skip-grant-tables", "--innodb-buffer-pool-size=16M",
             "--skip-log-bin", f"--pid-file={root / 'pid'}", f"--log-error={root / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    server = PrivateServer("MariaDB", root, start, _popen_stop)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivateServer]:
    """initdb and pg_ctl as the ``postgres`` user in a folder it owns, trust auth, a free port.
    The folder is made directly under the temporary folder: pytest's own are root's alone."""
    root = Path(tempfile.mkdtemp(prefix="saline-pg-"))
    shutil.chown(root, "postgres")
    data = root / "data"
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True, timeout=120)

    def pg_ctl(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), *args],
                       check=True, capture_output=True, timeout=60)

    def start(server: PrivateServer) -> None:
        pg_ctl("-l", str(root / "log"), "-w", "-o",
               f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(server: PrivateServer, kill: bool) -> None:
        pg_ctl("-m", "immediate" if kill else "fast", "-w", "stop")

    server = PrivateServer("PostgreSQL", root, start, stop)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def private_redis(root: Path) -> Iterator[PrivateServer]:
    root.mkdir(parents=True, exist_ok=True)

    def start(server: PrivateServer) -> None:
        server.proc = subprocess.Popen(
            ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    server = PrivateServer("Redis", root, start, _popen_stop)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- raw ZeroMQ peers, for what a real minion would never send ----------------------------------------

class RawPeer:
    """A hand-made ZeroMQ peer of the master: a DEALER on the return port or a SUB on the publish
    port, with CURVE keys of the test's choosing (or none at all)."""

    def __init__(self, kind: int, port: int, server_key: bytes | None, keys: tuple[bytes, bytes] | None = None,
                 max_size: int = -1) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(kind)
        self.sock.linger = 0
        self.sock.maxmsgsize = max_size
        if server_key is not None:
            public, secret = keys or zmq.curve_keypair()
            self.public = public.decode()
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
            self.sock.curve_serverkey = server_key
        if kind == zmq.SUB:
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def send(self, message: Any) -> bool:
        """Queue a message; False when the socket has no connection to queue it on (a DEALER whose
        handshake the master refused has none, and would block)."""
        import msgpack
        import zmq

        data = message if isinstance(message, bytes) else msgpack.packb(message, use_bin_type=True)
        try:
            self.sock.send(data, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next message decoded, or None when nothing came within ``timeout`` seconds."""
        import msgpack

        if not self.sock.poll(int(timeout * 1000)):
            return None
        return msgpack.unpackb(self.sock.recv(), raw=False, strict_map_key=False)

    def request(self, message: Any, timeout: float = 5.0) -> dict[str, Any] | None:
        if not self.send(message):
            return None
        return self.recv(timeout)

    def drain(self, timeout: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is None:
                break
            out.append(message)
        return out

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def key_pair() -> tuple[bytes, bytes]:
    import zmq

    return zmq.curve_keypair()


def install_key(cluster: LocalCluster, state: str, mid: str, public: bytes) -> None:
    """Put a minion key in one of the master's folders, as saline-key leaves it."""
    from saline.transport.keys import KeyStore

    KeyStore(cluster.master_dir / "pki").add(state, mid, public.decode())


def master_key(cluster: LocalCluster) -> bytes:
    return (cluster.master_dir / "pki" / "master.pub").read_bytes().strip()
