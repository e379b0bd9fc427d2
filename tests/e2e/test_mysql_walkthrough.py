"""The MySQL walkthrough, literally: real processes, the real MariaDB, rows checked with SQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import pymysql
import pytest

from saline.localcluster import LocalCluster

pytestmark = pytest.mark.e2e

# salt-compat.md's DDL, as a user would type it (without the seed's failing extra index).
DDL = [
    """CREATE TABLE `jids` (`jid` varchar(255) NOT NULL, `load` mediumtext NOT NULL,
       UNIQUE KEY `jid` (`jid`)) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `salt_returns` (`fun` varchar(50) NOT NULL, `jid` varchar(255) NOT NULL,
       `return` mediumtext NOT NULL, `id` varchar(255) NOT NULL, `success` varchar(10) NOT NULL,
       `full_ret` mediumtext NOT NULL, `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
       KEY `id` (`id`), KEY `jid` (`jid`), KEY `fun` (`fun`)) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `salt_events` (`id` BIGINT NOT NULL AUTO_INCREMENT, `tag` varchar(255) NOT NULL,
       `data` mediumtext NOT NULL, `alter_time` TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
       `master_id` varchar(255) NOT NULL, PRIMARY KEY (`id`), KEY `tag` (`tag`))
       ENGINE=InnoDB DEFAULT CHARSET=utf8""",
]


def _query(db: dict, sql: str, args: tuple = ()) -> list[tuple]:
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def salt_db(mysql_db: dict) -> dict:
    """A fresh database with Salt's tables made by hand, reached as the user ``salt``/``saltpass``."""
    conn = pymysql.connect(host=mysql_db["host"], port=mysql_db["port"], user=mysql_db["user"],
                           password=mysql_db["pass"], database=mysql_db["db"], autocommit=True)
    with conn.cursor() as cur:
        for statement in DDL:
            cur.execute(statement)
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'salt'@'{host}' IDENTIFIED BY 'saltpass'")
            cur.execute(f"GRANT ALL ON `{mysql_db['db']}`.* TO 'salt'@'{host}'")
    conn.close()
    return {**mysql_db, "user": "salt", "pass": "saltpass"}


def _mysql_opts(db: dict) -> dict:
    return {"mysql.host": db["host"], "mysql.port": db["port"], "mysql.user": db["user"],
            "mysql.pass": db["pass"], "mysql.db": db["db"]}


@pytest.fixture
def walkthrough(tmp_path: Path, salt_db: dict) -> Iterator[tuple[LocalCluster, dict]]:
    with LocalCluster(tmp_path, master_opts={"return": "mysql", **_mysql_opts(salt_db)}) as cluster:
        cluster.start_master()
        cluster.start_minion("web1")
        cluster.accept("web1")
        yield cluster, salt_db


def _wait_rows(cluster: LocalCluster, db: dict, sql: str, args: tuple, count: int) -> list[tuple]:
    rows: list[tuple] = []

    def enough() -> bool:
        nonlocal rows
        rows = _query(db, sql, args)
        return len(rows) >= count
    cluster.wait_for(enough, 20, f"{count} rows from {sql}")
    return rows


def test_walkthrough_test_ping_return_mysql(walkthrough: tuple[LocalCluster, dict]) -> None:
    cluster, db = walkthrough
    assert "mysql" not in (cluster.minion_dir("web1") / "minion").read_text()  # nothing on the minion
    result = cluster.cli("saline", "web1", "test.ping", "--return", "mysql", "-v")
    assert result.returncode == 0
    assert result.stdout.endswith("web1:\n    True\n")
    jid = re.search(r"jid (\d{20})", result.stdout).group(1)
    rows = _wait_rows(cluster, db, "SELECT fun, jid, `return`, id, success, full_ret, alter_time FROM salt_returns"
                      " WHERE jid = %s", (jid,), 1)
    assert len(rows) == 1
    fun, row_jid, ret, mid, success, full_ret, alter_time = rows[0]
    assert (fun, row_jid, ret, mid, success) == ("test.ping", jid, "true", "web1", "1")
    full = json.loads(full_ret)
    assert full["return"] is True and full["id"] == "web1" and full["jid"] == jid and full["retcode"] == 0
    assert full["fun"] == "test.ping" and full["success"] is True and "_stamp" in full
    assert alter_time is not None
    loads = _wait_rows(cluster, db, "SELECT `load` FROM jids WHERE jid = %s", (jid,), 1)
    load = json.loads(loads[0][0])
    assert load["fun"] == "test.ping" and load["tgt"] == "web1" and load["minions"] == ["web1"]


def test_failed_function_is_stored_with_success_0(walkthrough: tuple[LocalCluster, dict]) -> None:
    cluster, db = walkthrough
    result = cluster.cli("saline", "web1", "cmd.run", "echo oops; exit 4", "-v")
    assert result.returncode == 1
    jid = re.search(r"jid (\d{20})", result.stdout).group(1)
    rows = _wait_rows(cluster, db, "SELECT `return`, success, full_ret FROM salt_returns WHERE jid = %s", (jid,), 1)
    assert rows[0][0] == '"oops"' and rows[0][1] == "0"
    assert json.loads(rows[0][2])["retcode"] == 4


def test_mysql_as_job_cache_and_event_return(tmp_path: Path, salt_db: dict) -> None:
    opts = {"master_job_cache": "mysql", "event_return": "mysql", **_mysql_opts(salt_db)}
    with LocalCluster(tmp_path, master_opts=opts) as cluster:
        cluster.start_master()
        cluster.start_minion("db1")
        cluster.accept("db1")
        result = cluster.cli("saline", "db1", "test.echo", "stored in mysql", "-v")
        jid = re.search(r"jid (\d{20})", result.stdout).group(1)
        lookup = cluster.cli("saline-run", "jobs.lookup_jid", jid)
        assert lookup.stdout == "db1:\n    stored in mysql\n"
        listed = json.loads(cluster.cli("saline-run", "jobs.list_jobs", "--out", "json").stdout)
        assert listed[jid]["Function"] == "test.echo" and listed[jid]["Target"] == "db1"
        tags = [r[0] for r in _wait_rows(cluster, salt_db, "SELECT tag FROM salt_events WHERE tag LIKE %s",
                                         (f"salt/job/{jid}/%",), 2)]
        assert f"salt/job/{jid}/new" in tags and f"salt/job/{jid}/ret/db1" in tags
        master_ids = {r[0] for r in _query(salt_db, "SELECT DISTINCT master_id FROM salt_events")}
        assert master_ids == {"master"}


def test_returners_init_creates_salts_tables_then_status_reports(tmp_path: Path, mysql_db: dict) -> None:
    conn = pymysql.connect(host=mysql_db["host"], port=mysql_db["port"], user=mysql_db["user"],
                           password=mysql_db["pass"], autocommit=True)
    with conn.cursor() as cur:
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'salt'@'{host}' IDENTIFIED BY 'saltpass'")
            cur.execute(f"GRANT ALL ON `{mysql_db['db']}`.* TO 'salt'@'{host}'")
    conn.close()
    db = {**mysql_db, "user": "salt", "pass": "saltpass"}
    with LocalCluster(tmp_path, master_opts=_mysql_opts(db)) as cluster:
        cluster.start_master()
        init = cluster.cli("saline-run", "returners.init", "mysql")
        assert init.returncode == 0, init.stderr
        tables = {r[0] for r in _query(db, "SHOW TABLES")}
        assert {"jids", "salt_returns", "salt_events"} <= tables
        cluster.start_minion("m1")
        cluster.accept("m1")
        assert cluster.cli("saline", "m1", "test.ping", "--return", "mysql").returncode == 0
        _wait_rows(cluster, db, "SELECT id FROM salt_returns", (), 1)
        status = json.loads(cluster.cli("saline-run", "returners.status", "--out", "json").stdout)
        assert status["mysql"]["delivered"] >= 2 and status["mysql"]["dead"] == 0
        assert "saltpass" not in json.dumps(status)
