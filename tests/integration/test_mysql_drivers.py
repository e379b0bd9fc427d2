"""mysql over its two drivers, on the real MariaDB server: which one is taken, that both store
the very same bytes, how batches go on the wire, and the contract table on PyMySQL (the contract
suite itself runs on the driver ``auto`` takes: mysqlclient)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import MySQLdb
import pymysql
import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import ReturnerError
from saline.returners.mysql import MysqlReturner
from tests.contract import test_contract as contract
from tests.contract.cases import mysql as mysql_case
from tests.integration.test_returner_mysql import account, ping, query  # noqa: F401  (fixture)

DRIVERS = ["mysqlclient", "pymysql"]
HOSTILE = ["'); DROP TABLE salt_returns; --", "\\'; DELETE FROM jids; #", '" OR "1"="1', "x` ; DROP TABLE `jids",
           "%s %(x)s {0} %%", "nul\x00byte", "ctrl-z\x1a end", "back\\slash\\", "cr\r\nlf", "tab\there",
           "emoji 😀 漢字 \u2028 e\u0301", "lone \udcff surrogate"]


@pytest.fixture
def opts(master_opts: dict[str, Any], mysql_db: dict[str, Any], account: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    return {**master_opts, "mysql.host": mysql_db["host"], "mysql.port": mysql_db["port"],
            "mysql.user": account["user"], "mysql.pass": account["password"], "mysql.db": mysql_db["db"]}


@pytest.fixture
def make(opts: dict[str, Any]) -> Iterator[Callable[..., MysqlReturner]]:
    made: list[MysqlReturner] = []

    def factory(driver: str = "auto", **extra: Any) -> MysqlReturner:
        r = registry.create("mysql", {**opts, "mysql.driver": driver, **extra})
        assert isinstance(r, MysqlReturner)
        made.append(r)
        return r

    yield factory
    for r in made:
        r.close()


def session(r: MysqlReturner, name: str) -> int:
    with r._conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE %s", (name,))
        return int(cur.fetchone()[1])


# -- which driver ------------------------------------------------------------------------------------
def test_auto_takes_mysqlclient_and_a_forced_driver_is_used(make: Callable[..., MysqlReturner]) -> None:
    auto, forced_c, forced_py = make(), make("mysqlclient"), make("PyMySQL")
    assert (auto.driver, forced_c.driver, forced_py.driver) == ("mysqlclient", "mysqlclient", "pymysql")
    auto.init_schema()
    forced_py.returns([ping(gen_jid(), "a")])
    auto.returns([ping(gen_jid(), "b")])
    assert isinstance(auto._conn, MySQLdb.connections.Connection)
    assert isinstance(forced_py._conn, pymysql.connections.Connection)
    assert sorted(auto.get_minions()) == ["a", "b"]


def test_without_mysqlclient_auto_takes_pymysql(make: Callable[..., MysqlReturner], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # what an install without mysqlclient sees
    r = make()
    assert r.driver == "pymysql"
    r.init_schema()
    jid = gen_jid()
    r.returns([ping(jid, "a")])
    assert list(r.get_jid(jid)) == ["a"]
    with pytest.raises(ConfigError) as info:
        make("mysqlclient")
    assert str(info.value) == ("returner mysql: mysql.driver is mysqlclient, but the Python package 'mysqlclient' "
                               "is not installed: pip install 'saline[mysql-c]'")
    monkeypatch.setitem(sys.modules, "pymysql", None)
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value) == ("returner mysql needs the Python package 'mysqlclient' or 'PyMySQL': "
                               "pip install 'saline[mysql]'")


def test_an_unknown_driver_is_one_line(make: Callable[..., MysqlReturner]) -> None:
    with pytest.raises(ConfigError) as info:
        make("odbc")
    assert str(info.value) == "returner mysql: option 'driver' must be auto, mysqlclient or pymysql, got 'odbc'"


# -- the same bytes ----------------------------------------------------------------------------------
def _everything(r: MysqlReturner, jid: str) -> None:
    r.save_loads([(jid, {"jid": jid, "fun": "test.arg", "arg": HOSTILE, "tgt": "*"}, None),
                  (jid, {"jid": jid, "fun": "second load, ignored"}, None)])
    rets = [{**ping(jid, f"m{i:02d}"), "fun": "test.echo", "fun_args": [text], "return": text}
            for i, text in enumerate(HOSTILE)]
    rets += [{**ping(jid, "multi"), "fun": ["test.ping", "test.arg"], "return": {"test.ping": True, "x": HOSTILE}},
             {"jid": jid, "id": "ssh", "fun": "cmd.run", "return": b"\xff bytes"},  # no success: '0'
             {**ping(jid, "failed"), "return": None, "retcode": 1, "success": False},
             {**ping(jid, "long"), "fun": "custom." + "f" * 80, "return": {"nan": float("nan"), "set": {1, 2}}},
             {**ping(jid, "big"), "return": "0123456789abcdef-ß-漢\n" * 60000}]  # 1.5 MB: a statement alone
    r.returns(rets)
    r.returns(rets[:3])  # delivered again: stored once
    r.event_returns([{"tag": f"salt/job/{jid}/ret/{i}", "data": {"text": text, "i": i}} for i, text in enumerate(HOSTILE)])


def _dump(db: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "salt_returns": query(db, "SELECT HEX(fun), HEX(jid), HEX(`return`), HEX(id), success, HEX(full_ret) "
                                  "FROM salt_returns ORDER BY id, fun"),
        "jids": query(db, "SELECT HEX(jid), HEX(`load`) FROM jids ORDER BY jid"),
        "salt_events": query(db, "SELECT HEX(tag), HEX(data), master_id FROM salt_events ORDER BY id"),
    }


def test_both_drivers_store_the_same_bytes(make: Callable[..., MysqlReturner], mysql_db: dict[str, Any]) -> None:
    jid = gen_jid()
    dumps = {}
    for driver in DRIVERS:
        r = make(driver, **{"mysql.create_schema": True})
        _everything(r, jid)
        dumps[driver] = _dump(mysql_db)
        query(mysql_db, "DELETE FROM salt_returns")
        query(mysql_db, "DELETE FROM jids")
        query(mysql_db, "DELETE FROM salt_events")
    assert dumps["mysqlclient"] == dumps["pymysql"]
    got = dumps["pymysql"]
    assert len(got["salt_returns"]) == len(HOSTILE) + 5 and len(got["jids"]) == 1 and len(got["salt_events"]) == len(HOSTILE)
    # and what Salt's readers expect: the JSON text of json.dumps(ensure_ascii=False)
    returns = {bytes.fromhex(row[3]).decode(): row for row in got["salt_returns"]}
    for i, text in enumerate(HOSTILE[:-1]):  # (the lone surrogate is stored as its JSON escape)
        row = returns[f"m{i:02d}"]
        assert bytes.fromhex(row[2]) == json.dumps(text, ensure_ascii=False).encode()
        assert json.loads(bytes.fromhex(row[5]))["fun_args"] == [text] and row[4] == "1"
    assert json.loads(bytes.fromhex(returns[f"m{len(HOSTILE) - 1:02d}"][2])) == "lone \udcff surrogate"
    assert (returns["ssh"][4], returns["failed"][4]) == ("0", "0")
    assert bytes.fromhex(returns["multi"][0]) == b"test.ping,test.arg"
    assert json.loads(bytes.fromhex(got["jids"][0][1]))["arg"] == HOSTILE


@pytest.mark.parametrize("driver", DRIVERS)
def test_escaping_follows_no_backslash_escapes(make: Callable[..., MysqlReturner], driver: str) -> None:
    r = make(driver)
    r.init_schema()
    with r._conn.cursor() as cur:  # a server whose sql_mode has NO_BACKSLASH_ESCAPES
        cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
    jid = gen_jid()
    r.returns([{**ping(jid, f"m{i}"), "return": text} for i, text in enumerate(HOSTILE)])
    assert {m: v["return"] for m, v in r.get_jid(jid).items()} == {f"m{i}": t for i, t in enumerate(HOSTILE)}


# -- on the wire -------------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_batch_is_multi_row_statements_cut_below_the_packet_limit(make: Callable[..., MysqlReturner], driver: str,
                                                                     mysql_db: dict[str, Any]) -> None:
    r = make(driver)
    r.init_schema()
    inserts, sent = session(r, "Com_insert"), session(r, "Bytes_received")
    r.returns([ping(gen_jid(), f"minion{i:04d}") for i in range(1000)])
    statements, volume = session(r, "Com_insert") - inserts, session(r, "Bytes_received") - sent
    first = r._driver.first_statement
    if first is None:
        assert statements == 1  # 1,000 returns, one INSERT
    else:  # a small first statement, then each twice the last: a few for 1,000 returns, not one per row
        assert volume > first and statements == math.ceil(math.log2(volume / first + 1))
    # a server with a small max_allowed_packet: the statements are cut to fit it
    r._max_packet = 300_000
    limit = r._driver.statement_size(r._max_packet)
    jid = gen_jid()
    rets = [{**ping(jid, f"big{i:03d}"), "return": "x" * 3000} for i in range(200)]  # ASCII: a byte per character
    inserts, sent = session(r, "Com_insert"), session(r, "Bytes_received")
    r.returns(rets)
    statements = session(r, "Com_insert") - inserts
    volume = session(r, "Bytes_received") - sent
    assert statements >= math.ceil(200 * 6000 / limit) and volume / statements < limit
    assert query(mysql_db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM salt_returns WHERE jid = %s", jid) == [(200, 200)]


def test_mysqlclient_builds_the_next_statement_while_the_server_runs_the_last(
        make: Callable[..., MysqlReturner], mysql_db: dict[str, Any]) -> None:
    r = make("mysqlclient")
    r.init_schema()
    jid = gen_jid()
    rets = [{**ping(jid, f"m{i:04d}"), "return": "x" * 500} for i in range(400)]  # 200 kB: three statements
    locker = MySQLdb.connect(host=mysql_db["host"], port=mysql_db["port"], user=mysql_db["user"],
                             password=mysql_db["pass"], database=mysql_db["db"])
    with r._conn.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 10")  # the serial way would wait for the lock here
    seen: list[tuple[str, str]] = []
    made = r._return_rows

    def rows(batch: Any) -> Iterator[tuple[str, ...]]:
        for n, row in enumerate(made(batch)):
            if n == 0:  # the server gets the first statement only once the table is locked
                locker.query("LOCK TABLES `salt_returns` WRITE")
            if n == 150:  # in the second statement: the first is at the server, waiting for the lock
                locker.query(f"SELECT COMMAND, INFO FROM information_schema.PROCESSLIST WHERE ID = {r._conn.thread_id()}")
                seen.extend((command, (info or "")[:30]) for command, info in locker.store_result().fetch_row(0))
                locker.query("UNLOCK TABLES")
            yield row

    r._return_rows = rows  # type: ignore[method-assign]
    try:
        r.returns_first(rets)
    finally:
        locker.close()
    assert seen == [("Query", "INSERT INTO `salt_returns` (`f")]
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(400,)]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_statement_refused_in_the_middle_of_a_batch_stores_none_of_it(
        make: Callable[..., MysqlReturner], driver: str, where: str, mysql_db: dict[str, Any]) -> None:
    r = make(driver)
    r.init_schema()
    jid = gen_jid()
    rets = [{**ping(jid, f"m{i:04d}"), "return": "x" * 500} for i in range(400)]
    rets[0 if where == "first" else -1]["jid"] = "j" * 300  # longer than the column: refused in strict mode
    connection = r._conn.thread_id()
    with pytest.raises(ReturnerError, match="returner mysql"):
        r.returns_first(rets)
    assert r._conn is not None and r._conn.thread_id() == connection  # rolled back, not dropped
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(0,)]
    r.returns_first(rets[1:] if where == "first" else rets[:-1])  # the connection is still in order
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(399,)]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_return_too_large_while_a_statement_is_at_the_server_leaves_the_connection_in_order(
        make: Callable[..., MysqlReturner], driver: str, mysql_db: dict[str, Any]) -> None:
    r = make(driver)
    r.init_schema()
    jid = gen_jid()
    r._max_packet = 300_000
    rets = [{**ping(jid, f"m{i:04d}"), "return": "x" * 500} for i in range(400)]
    rets.append({**ping(jid, "huge"), "return": "y" * 400_000})  # found when the earlier rows are sent
    connection = r._conn.thread_id()
    with pytest.raises(ReturnerError, match="max_allowed_packet"):
        r.returns_first(rets)
    assert r._conn is not None and r._conn.thread_id() == connection  # rolled back, not dropped
    r.returns_first(rets[:-1])
    # read on the same connection: each answer is the one to its own statement (none left unread)
    assert len(r.get_jid(jid)) == 400
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(400,)]


@pytest.mark.parametrize("driver", DRIVERS)
def test_one_statement_per_call(make: Callable[..., MysqlReturner], driver: str) -> None:
    r = make(driver)
    r.init_schema()
    with pytest.raises(r._driver.error) as info:  # no multi-statements: a stacked query is a syntax error
        with r._conn.cursor() as cur:
            cur.execute("SELECT 1; SELECT 2")
    assert info.value.args[0] == 1064


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_batch_retried_after_a_cut_connection_is_stored_once(make: Callable[..., MysqlReturner], driver: str,
                                                                 mysql_db: dict[str, Any]) -> None:
    r = make(driver)
    r.init_schema()
    jid = gen_jid()
    batch = [ping(jid, f"m{i:03d}") for i in range(300)]
    r.returns(batch)
    query(mysql_db, f"KILL CONNECTION {r._conn.thread_id()}")  # the ack was lost with the connection
    time.sleep(0.2)
    r.returns(batch + [ping(jid, "late")])  # the outbox delivers the batch again
    assert query(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE jid = %s", jid) == [(301,)]


# -- the contract table on PyMySQL ---------------------------------------------------------------------
CONTRACT = [name for name in dir(contract) if name.startswith("test_") and name != "test_clean_old_jobs"]


@pytest.mark.parametrize("name", CONTRACT)
def test_contract_on_pymysql(name: str, mysql_db: dict[str, Any], tmp_path: Path, master_opts: dict[str, Any]) -> None:
    env = contract.Env(mysql_case.case("pymysql"), {"mysql_db": mysql_db}, tmp_path, master_opts)
    try:
        assert env.make(init=False).driver == "pymysql"
        getattr(contract, name)(env)
    finally:
        env.close()
