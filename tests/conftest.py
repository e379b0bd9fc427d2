"""Shared fixtures: fresh databases on the real servers this machine runs (never mocks).

A server that is not reachable fails the test with one line saying which and how to start it;
nothing is skipped (``scripts/services.sh`` starts them all).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

MYSQL = {"host": "127.0.0.1", "port": int(os.environ.get("SALINE_TEST_MYSQL_PORT", 3306)), "user": "root", "pass": ""}
PG = {"host": "127.0.0.1", "port": int(os.environ.get("SALINE_TEST_PG_PORT", 5432)), "user": "postgres", "passwd": ""}
REDIS = {"host": "127.0.0.1", "port": int(os.environ.get("SALINE_TEST_REDIS_PORT", 6379))}


def require_port(name: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"{name} is not reachable on {host}:{port} ({exc.strerror}); run scripts/services.sh", pytrace=False)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mysql_db() -> Iterator[dict]:
    """A new, empty MariaDB database; dropped afterwards."""
    import pymysql

    require_port("MariaDB", MYSQL["host"], MYSQL["port"])
    name = unique_name("saline_t")
    conn = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"], autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")
    try:
        yield {**MYSQL, "db": name}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def pg_db() -> Iterator[dict]:
    """A new, empty PostgreSQL database; dropped afterwards."""
    import psycopg

    require_port("PostgreSQL", PG["host"], PG["port"])
    name = unique_name("saline_t")
    with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**PG, "db": name}
    finally:
        with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_db() -> Iterator[dict]:
    """Redis database 13, emptied before and after."""
    import redis

    require_port("Redis", REDIS["host"], REDIS["port"])
    client = redis.Redis(host=REDIS["host"], port=REDIS["port"], db=13)
    client.flushdb()
    try:
        yield {**REDIS, "db": 13}
    finally:
        client.flushdb()
        client.close()


def start_secantus(folder: Path, port: int, *extra: str) -> subprocess.Popen:
    """SecantusDB (MongoDB wire protocol; ``pip install secantusdb``, scripts/services.d/secantus.sh)
    on 127.0.0.1:``port``, its data in ``folder``; returns once it listens, fails the test if it does not."""
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "secantus.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                             "--storage-path", str(folder / "data"), "--standalone", "--log-level", "WARNING", *extra],
                            stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    stop_secantus(proc)
    tail = (folder / "secantus.log").read_text(errors="replace")[-500:]
    pytest.fail(f"SecantusDB did not start on port {port} (run scripts/services.sh): {tail}", pytrace=False)


def stop_secantus(proc: subprocess.Popen) -> None:
    """Stop it and wait until it has let go of its data folder (WiredTiger's lock)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A SecantusDB server of this test session, on a free port, its data in a temporary folder."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = start_secantus(tmp_path_factory.mktemp("secantus"), port)
    try:
        yield {"host": "127.0.0.1", "port": port}
    finally:
        stop_secantus(proc)


@pytest.fixture
def mongo_db(mongo_server: dict) -> Iterator[dict]:
    """A database name of its own on the session's SecantusDB; dropped afterwards."""
    import pymongo

    name = unique_name("saline_t")
    yield {**mongo_server, "db": name}
    client = pymongo.MongoClient(mongo_server["host"], mongo_server["port"], serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def master_opts(tmp_path: Path) -> dict:
    """Master options rooted in a temporary folder, as ``load_config`` would produce them."""
    from saline.config import MASTER_OPTIONS, _finish

    opts = {k: v[1] for k, v in MASTER_OPTIONS.items()}
    opts.update(id="testmaster", cachedir=str(tmp_path / "cache"), pki_dir=str(tmp_path / "pki"),
                sock_dir=str(tmp_path / "sock"), config_dir=str(tmp_path))
    _finish("master", opts)
    return opts


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[Any]:
    """A real three-node NATS JetStream cluster with TLS, shared by the tests of a session
    (``tests/helpers/natscluster.py``); each test uses a cluster id of its own (its streams and
    buckets are named after it), logging in as ``admin``, or as a user of its own: ``rt`` has a
    master's permissions for cluster id ``rt`` only, ``pub`` may publish on ``salt.>`` and use the
    stream ``SALT_RT`` (the nats returner's tests). ``max_payload`` is 8 MiB, as a cluster
    carrying Salt's returns needs (NATS' default is 1 MiB)."""
    from saline.cluster.config import ClusterConfig
    from tests.helpers.natscluster import NatsCluster, NatsUser, default_users, saline_permissions

    class Cluster(NatsCluster):
        def _write_config(self, node: int) -> None:
            super()._write_config(node)
            with open(self.dir / f"n{node}.conf", "a") as conf:
                conf.write("max_payload: 8388608\n")

    rt = ClusterConfig("rt", ("nats://unused:4222",))
    pub, sub, inbox = saline_permissions("rt", rt.streams(), rt.buckets())
    users = [u for u in default_users() if u.name != "admin"]
    users += [NatsUser("admin", password=uuid.uuid4().hex),
              NatsUser("rt", password=uuid.uuid4().hex, publish=pub, subscribe=sub, inbox_prefix=inbox),
              NatsUser("pub", password=uuid.uuid4().hex, subscribe=("_INBOX.>",),
                       publish=("salt.>", "$JS.API.STREAM.INFO.SALT_RT", "$JS.API.STREAM.CREATE.SALT_RT"))]
    with Cluster(users=users) as cluster:
        yield cluster


def nats_cluster_config(cluster: Any, cluster_id: str | None = None, user: str = "admin") -> Any:
    """A ClusterConfig for a fresh cluster id on ``cluster`` (the ``nats_cluster`` fixture), as ``user``."""
    from saline.cluster.config import ClusterConfig

    u = cluster.users[user]
    c = cluster.certs
    return ClusterConfig(cluster_id=cluster_id or unique_name("t"), servers=tuple(cluster.urls), user=u.name,
                         password=u.password, tls_ca=str(c["ca"]), tls_cert=str(c["client_cert"]),
                         tls_key=str(c["client_key"]), replicas=3)
