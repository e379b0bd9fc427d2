"""A backend that goes away while returns come in, then comes back: every return arrives, once.

The shared servers stay up: the master reaches each through a TCP proxy that the test cuts
(refuses new connections, resets the open ones) and restores. One test per backend really stops
and restarts a private server of its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pymysql
import psycopg
import pytest
import redis

from tests.faults.conftest import (Cluster, figure, logs, private_mariadb, private_postgres, private_redis,
                                   wait_for)
from tests.helpers.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

JOBS = 250          # published to 2 minions: 500 returns
FAST_RETRY = {"returner_retry_max_seconds": 1, "returner_batch_wait_ms": 20}


# -- how each backend is configured and counted -----------------------------------------------------

def mysql_opts(host: str, port: int, user: str, password: str, db: str) -> dict[str, Any]:
    return {"return": "mysql", "mysql.host": host, "mysql.port": port, "mysql.user": user,
            "mysql.pass": password, "mysql.db": db, "mysql.create_schema": True, "mysql.connect_timeout": 2}


def mysql_count(host: str, port: int, user: str, password: str, db: str, jids: list[str]) -> tuple[int, int]:
    """(rows, distinct (jid, id)) in salt_returns for these jobs."""
    conn = pymysql.connect(host=host, port=port, user=user, password=password, database=db, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*), COUNT(DISTINCT jid, id) FROM salt_returns WHERE jid BETWEEN %s AND %s",
                        (min(jids), max(jids)))
            return tuple(cur.fetchone())  # type: ignore[return-value]
    except pymysql.err.ProgrammingError:  # the table is not there yet
        return (0, 0)
    finally:
        conn.close()


def pg_opts(port: int, db: str) -> dict[str, Any]:
    return {"return": "postgres", "returner.postgres.host": "127.0.0.1", "returner.postgres.port": port,
            "returner.postgres.user": "postgres", "returner.postgres.passwd": "", "returner.postgres.db": db,
            "returner.postgres.create_schema": True, "returner.postgres.connect_timeout": 2}


def pg_count(port: int, db: str, jids: list[str]) -> tuple[int, int]:
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, connect_timeout=3) as conn:
            row = conn.execute("SELECT COUNT(*), COUNT(DISTINCT (jid, id)) FROM salt_returns "
                               "WHERE jid BETWEEN %s AND %s", (min(jids), max(jids))).fetchone()
            return (row[0], row[1])
    except psycopg.errors.UndefinedTable:
        return (0, 0)


def redis_opts(port: int, db: int) -> dict[str, Any]:
    return {"return": "redis", "redis.host": "127.0.0.1", "redis.port": port, "redis.db": db,
            "redis.socket_timeout": 2}


def redis_count(port: int, db: int, jids: list[str]) -> tuple[int, int]:
    """Redis keeps one hash field per (jid, minion): a duplicate cannot show, so rows == distinct."""
    client = redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=3)
    try:
        pipe = client.pipeline()
        for jid in jids:
            pipe.hlen(f"ret:{jid}")
        n = sum(pipe.execute())
        return (n, n)
    finally:
        client.close()


def _drive(cluster: Cluster, name: str, cut: Callable[[], None], restore: Callable[[], None],
           count: Callable[[list[str]], tuple[int, int]], test: str) -> None:
    """Cut the backend, publish JOBS jobs to both minions, wait until the master holds every return,
    check none reached the backend and the status says so, restore, and count them all in."""
    cluster.start_master()
    cluster.start_minions("m1", "m2")
    cut()
    started = time.monotonic()
    jids = cluster.publish_many("*", "test.ping", JOBS)
    sent = 2 * len(jids)
    wait_for(lambda: cluster.returned(jids) == sent, 90, f"the master to accept {sent} returns")
    accepted_in = time.monotonic() - started
    status = wait_for(lambda: (s := cluster.status(name)) and s["pending"] >= sent and s["last_error"] and s,
                      30, f"{name} to show its returns pending")
    assert "Traceback" not in status["last_error"]
    restore()
    restored = time.monotonic()
    wait_for(lambda: count(jids)[0] >= sent, 90, f"{sent} returns in {name}", 0.25)
    drained_in = time.monotonic() - restored
    time.sleep(1.0)  # anything delivered twice would show now
    rows, distinct = count(jids)
    assert (rows, distinct) == (sent, sent), logs(cluster)
    final = wait_for(lambda: (s := cluster.status(name)) and s["pending"] == 0 and s, 30, f"{name}'s outbox to drain")
    assert final["dead"] == 0
    figure(test, backend=name, sent=sent, arrived=rows, distinct=distinct, pending_peak=status["pending"],
           accepted_s=round(accepted_in, 1), drained_s=round(drained_in, 1))


# -- the shared servers, behind a proxy ---------------------------------------------------------------

def salt_user(db: dict) -> dict:
    """The user ``salt``/``saltpass`` with every right on the test's database (an empty password
    means "not set" to Salt's option lookup, so root's cannot be given)."""
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], autocommit=True)
    with conn.cursor() as cur:
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'salt'@'{host}' IDENTIFIED BY 'saltpass'")
            cur.execute(f"GRANT ALL ON `{db['db']}`.* TO 'salt'@'{host}'")
    conn.close()
    return {**db, "user": "salt", "pass": "saltpass"}


def test_mysql_cut_by_proxy(make_cluster: Callable[..., Cluster], mysql_db: dict) -> None:
    mysql_db = salt_user(mysql_db)
    with TcpProxy(mysql_db["host"], mysql_db["port"]) as proxy:
        db = ("127.0.0.1", proxy.port, mysql_db["user"], mysql_db["pass"], mysql_db["db"])
        cluster = make_cluster({**mysql_opts(*db), **FAST_RETRY})
        direct = (mysql_db["host"], mysql_db["port"], mysql_db["user"], mysql_db["pass"], mysql_db["db"])
        _drive(cluster, "mysql", proxy.cut, proxy.restore, lambda jids: mysql_count(*direct, jids),
               "backend_cut_mysql")


def test_postgres_cut_by_proxy(make_cluster: Callable[..., Cluster], pg_db: dict) -> None:
    with TcpProxy(pg_db["host"], pg_db["port"]) as proxy:
        cluster = make_cluster({**pg_opts(proxy.port, pg_db["db"]), **FAST_RETRY})
        _drive(cluster, "postgres", proxy.cut, proxy.restore, lambda jids: pg_count(pg_db["port"], pg_db["db"], jids),
               "backend_cut_postgres")


def test_redis_cut_by_proxy(make_cluster: Callable[..., Cluster], redis_db: dict) -> None:
    with TcpProxy(redis_db["host"], redis_db["port"]) as proxy:
        cluster = make_cluster({**redis_opts(proxy.port, redis_db["db"]), **FAST_RETRY})
        _drive(cluster, "redis", proxy.cut, proxy.restore,
               lambda jids: redis_count(redis_db["port"], redis_db["db"], jids), "backend_cut_redis")


# -- private servers, really stopped ------------------------------------------------------------------

def _stop_in_the_middle(cluster: Cluster, name: str, server: Any, count: Callable[[list[str]], tuple[int, int]],
                        test: str, kill: bool) -> None:
    """Half the jobs go through, the server stops (SIGKILL or a clean stop) while the other half
    return, then starts again on the same port and data folder: every return is there, once."""
    cluster.start_master()
    cluster.start_minions("m1", "m2")
    first = cluster.publish_many("*", "test.ping", JOBS // 2)
    wait_for(lambda: count(first)[0] >= len(first) * 2, 60, f"the first returns in {name}", 0.25)
    server.stop(kill=kill)
    second = cluster.publish_many("*", "test.ping", JOBS - JOBS // 2)
    jids = first + second
    sent = 2 * len(jids)
    wait_for(lambda: cluster.returned(jids) == sent, 60, f"the master to accept {sent} returns")
    pending = wait_for(lambda: (s := cluster.status(name)) and s["pending"] >= len(second) * 2 and s["pending"],
                       30, f"{name} to show the second half pending")
    server.start()
    restarted = time.monotonic()
    wait_for(lambda: count(jids)[0] >= sent, 60, f"{sent} returns in {name}", 0.25)
    drained_in = time.monotonic() - restarted
    time.sleep(1.0)
    rows, distinct = count(jids)
    assert (rows, distinct) == (sent, sent), logs(cluster)
    figure(test, backend=name, sent=sent, arrived=rows, distinct=distinct, pending_while_down=pending,
           drained_s=round(drained_in, 1), stop="SIGKILL" if kill else "clean")


def test_private_mariadb_killed_and_restarted(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    with private_mariadb(tmp_path / "mariadb") as server:
        db = ("127.0.0.1", server.port, "root", "any", "salt")  # no grant tables: any password
        cluster = make_cluster({**mysql_opts(*db), **FAST_RETRY})
        _stop_in_the_middle(cluster, "mysql", server, lambda jids: mysql_count(*db, jids),
                            "private_mariadb_restart", kill=True)


def test_private_postgres_stopped_and_restarted(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    with private_postgres() as server:
        with psycopg.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE salt")
        cluster = make_cluster({**pg_opts(server.port, "salt"), **FAST_RETRY})
        _stop_in_the_middle(cluster, "postgres", server, lambda jids: pg_count(server.port, "salt", jids),
                            "private_postgres_restart", kill=False)


def test_private_redis_killed_and_restarted(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis") as server:
        cluster = make_cluster({**redis_opts(server.port, 0), **FAST_RETRY})
        # Redis here keeps nothing on disk (--save ''): what it held before the kill is gone, so
        # this counts only the returns sent while it was down and after.
        _stop_in_the_middle_redis(cluster, server)


def _stop_in_the_middle_redis(cluster: Cluster, server: Any) -> None:
    cluster.start_master()
    cluster.start_minions("m1", "m2")
    warm = cluster.publish_many("*", "test.ping", 10)
    wait_for(lambda: redis_count(server.port, 0, warm)[0] == 20, 30, "the first returns in redis", 0.25)
    server.stop(kill=True)
    jids = cluster.publish_many("*", "test.ping", JOBS)
    sent = 2 * len(jids)
    wait_for(lambda: cluster.returned(jids) == sent, 60, f"the master to accept {sent} returns")
    pending = wait_for(lambda: (s := cluster.status("redis")) and s["pending"] >= sent and s["pending"], 30,
                       "redis to show the returns pending")
    server.start()
    restarted = time.monotonic()
    wait_for(lambda: redis_count(server.port, 0, jids)[0] >= sent, 60, f"{sent} returns in redis", 0.25)
    drained_in = time.monotonic() - restarted
    rows, distinct = redis_count(server.port, 0, jids)
    assert rows == sent, logs(cluster)
    figure("private_redis_restart", backend="redis", sent=sent, arrived=rows, distinct=distinct,
           pending_while_down=pending, drained_s=round(drained_in, 1), stop="SIGKILL")
