"""odbc returner through two real drivers: MariaDB Connector/ODBC on the MariaDB server, and the
SQLite ODBC driver on a file. Tables per database, values, DSN names, errors, reconnects, retention."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import pymysql
import pytest

from saline.jid import gen_jid
from saline.returners import odbc as odbc_module
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.registry import create
from tests.contract.cases.odbc_mariadb import PASSWORD, USER, config as mariadb_config, driver
from tests.contract.cases.postgres import closed_port


@pytest.fixture(params=["mariadb", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The returner's config and a way to run SQL on the same database, for each driver."""
    if request.param == "mariadb":
        db = request.getfixturevalue("mysql_db")
        cfg = mariadb_config({"mysql_db": db}, tmp_path)

        def sql(query: str, *args: Any) -> list[tuple[Any, ...]]:
            conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"],
                                   database=db["db"], autocommit=True, charset="utf8mb4")
            try:
                with conn.cursor() as cur:
                    cur.execute(query, args or None)
                    return list(cur.fetchall())
            finally:
                conn.close()
    else:
        path = tmp_path / "salt.db"
        cfg = {"returner.odbc.dsn": f"DRIVER={driver('libsqlite3odbc.so')};Database={path}",
               "returner.odbc.create_schema": True}

        def sql(query: str, *args: Any) -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(path, timeout=10, isolation_level=None)
            try:
                return list(conn.execute(query.replace("%s", "?"), args).fetchall())
            finally:
                conn.close()
    yield {"kind": request.param, "cfg": cfg, "sql": sql}


def make(backend: dict[str, Any], master_opts: dict[str, Any], **extra: Any):
    opts = {**master_opts, **backend["cfg"], **{f"returner.odbc.{k}": v for k, v in extra.items()}}
    return create("odbc", opts)


def ret_for(jid: str, minion: str, value: Any = True, fun: str = "test.ping", success: bool = True) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value,
            "retcode": 0 if success else 1, "success": success, "_stamp": "2024-01-05T12:34:56.123456"}


def publish_load(jid: str, fun: str = "test.ping") -> dict[str, Any]:
    return {"cmd": "publish", "jid": jid, "fun": fun, "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root",
            "ret": "odbc"}


def test_tables_per_database(backend, master_opts) -> None:
    r = make(backend, master_opts)
    r.init_schema()
    r.init_schema()  # re-runnable
    sql = backend["sql"]
    if backend["kind"] == "mariadb":
        cols = sql("SELECT table_name, column_name, column_type, is_nullable, column_key FROM information_schema.columns "
                   "WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position")
        assert [c[1:] for c in cols if c[0] == "jids"] == [("jid", "varchar(255)", "NO", "PRI"),
                                                           ("load", "mediumtext", "NO", "")]
        assert [c[1:3] for c in cols if c[0] == "salt_returns"] == [
            ("added", "datetime"), ("fun", "varchar(100)"), ("jid", "varchar(255)"), ("retval", "mediumtext"),
            ("id", "varchar(255)"), ("success", "tinyint(1)"), ("full_ret", "mediumtext")]
        assert [c[1] for c in cols if c[0] == "salt_events"] == ["id", "tag", "data", "alter_time", "master_id"]
        indexes = {row[0] for row in sql("SELECT index_name FROM information_schema.statistics "
                                         "WHERE table_schema = DATABASE() AND table_name = 'salt_returns'")}
        charsets = {row[0] for row in sql("SELECT table_collation FROM information_schema.tables "
                                          "WHERE table_schema = DATABASE()")}
        assert all(c.startswith("utf8mb4") for c in charsets)
    else:
        cols = {t: [(c[1], c[2].lower(), c[3]) for c in sql(f"PRAGMA table_info({t})")] for t in ("jids", "salt_returns")}
        assert cols["jids"] == [("jid", "varchar(255)", 1), ("load", "text", 1)]
        assert cols["salt_returns"] == [("added", "datetime", 1), ("fun", "varchar(100)", 1), ("jid", "varchar(255)", 1),
                                        ("retval", "text", 1), ("id", "varchar(255)", 1), ("success", "boolean", 1),
                                        ("full_ret", "text", 1)]
        indexes = {row[1] for row in sql("PRAGMA index_list(salt_returns)")}
    assert {"salt_returns_added", "salt_returns_id", "salt_returns_jid", "salt_returns_fun"} <= indexes
    assert r._dialect.name == ("MariaDB/MySQL" if backend["kind"] == "mariadb" else "SQLite")
    r.close()


def test_values_written(backend, master_opts) -> None:
    r = make(backend, master_opts)
    jid = gen_jid()
    ok, bad = ret_for(jid, "m1", {"ü": ["😀", 1.5]}), ret_for(jid, "m2", "boom", success=False)
    r.save_load(jid, publish_load(jid))
    r.returns([ok, bad])
    rows = backend["sql"]("SELECT id, fun, jid, retval, full_ret, success, added FROM salt_returns ORDER BY id")
    assert [row[:3] for row in rows] == [("m1", "test.ping", jid), ("m2", "test.ping", jid)]
    assert rows[0][3] == json.dumps(ok["return"], ensure_ascii=False) and json.loads(rows[0][4]) == ok
    assert rows[0][4] == json.dumps(ok, ensure_ascii=False)
    assert [row[5] for row in rows] == [1, 0]
    added = rows[0][6] if isinstance(rows[0][6], dt.datetime) else dt.datetime.fromisoformat(rows[0][6])
    assert abs((added - dt.datetime.now()).total_seconds()) < 3600 * 14  # set by the database's default
    assert json.loads(backend["sql"]("SELECT jids.load FROM jids")[0][0]) == publish_load(jid)
    assert r.get_jid(jid) == {"m1": ok, "m2": bad}
    r.close()


def test_first_load_kept_duplicates_once_and_read_side(backend, master_opts) -> None:
    r = make(backend, master_opts)
    a, b, probe = gen_jid(), gen_jid(), gen_jid()
    r.save_loads([(a, publish_load(a, "cmd.run"), None), (probe, publish_load(probe, "saltutil.find_job"), None)])
    r.save_loads([(a, ret_for(a, "m1"), None), (b, publish_load(b, "cmd.run"), None)])
    r.returns([ret_for(a, "m1", "one", "cmd.run"), ret_for(a, "m2", "two", "cmd.run"), ret_for(a, "m1", "one", "cmd.run")])
    r.returns([ret_for(b, "m1", "newer", "cmd.run")])
    r.returns([ret_for(a, "m1", "one", "cmd.run")])
    assert backend["sql"]("SELECT COUNT(*) FROM salt_returns")[0][0] == 3
    assert r.get_load(a) == publish_load(a, "cmd.run")
    assert {m: v["return"] for m, v in r.get_fun("cmd.run").items()} == {"m1": "newer", "m2": "two"}
    assert r.get_minions() == ["m1", "m2"]
    assert set(r.get_jids()) == {a, b, probe}
    assert [j["JID"] for j in r.get_jids_filter(10)] == [a, b]
    assert [j["JID"] for j in r.get_jids_filter(2, filter_find_job=False)] == [b, probe]
    assert r.get_load(gen_jid()) == {} and r.get_jid(gen_jid()) == {}
    r.close()


def test_events(backend, master_opts) -> None:
    r = make(backend, master_opts)
    r.event_returns([{"tag": "salt/key", "data": {"id": "m😀", "act": "accept"}},
                     {"tag": "salt/auth", "data": {"result": True}}])
    rows = backend["sql"]("SELECT tag, data, master_id FROM salt_events ORDER BY id")
    assert [(t, json.loads(d), m) for t, d, m in rows] == [
        ("salt/key", {"id": "m😀", "act": "accept"}, "testmaster"), ("salt/auth", {"result": True}, "testmaster")]
    r.close()


def test_long_fun_and_id_are_cut_to_the_columns(backend, master_opts) -> None:
    r = make(backend, master_opts)
    jid = gen_jid()
    funs = [f"module{i}.function{i}" for i in range(8)]
    ret = {**ret_for(jid, "m" * 300), "fun": funs}
    r.returns([ret])
    r.returns([ret])  # the cut id still finds the stored row
    r.event_returns([{"tag": "t" * 400, "data": {}}])
    rows = backend["sql"]("SELECT fun, id, full_ret FROM salt_returns")
    assert len(rows) == 1 and rows[0][0] == ",".join(funs)[:100] and rows[0][1] == "m" * 255
    assert json.loads(rows[0][2])["id"] == "m" * 300
    assert backend["sql"]("SELECT tag FROM salt_events") == [("t" * 255,)]
    r.close()


def test_missing_table_names_it(backend, master_opts) -> None:
    r = make(backend, master_opts, create_schema=False)
    with pytest.raises(ReturnerError) as err:
        r.returns([ret_for(gen_jid(), "m1")])
    msg = str(err.value)
    assert msg.startswith("returner odbc: table salt_returns does not exist (ODBC data source '")
    assert msg.endswith("create it with: saline-run returners.init odbc (or set create_schema: true)")
    assert not isinstance(err.value, BackendUnavailable) and PASSWORD not in msg
    with pytest.raises(ReturnerError, match="table jids, salt_returns, salt_events does not exist"):
        r.check()
    r.init_schema()
    r.check()
    r.close()


def test_clean_old_jobs_and_archive(backend, master_opts) -> None:
    for archive in (False, True):
        r = make(backend, {**master_opts, "keep_jobs_seconds": 3600, "archive_jobs": archive})
        r.init_schema()
        sql = backend["sql"]
        for table in ("salt_returns", "jids", "salt_events"):
            sql(f"DELETE FROM {table}")
        long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
        old, straggler, new = (long_ago.strftime("%Y%m%d%H%M%S%f"),
                               (long_ago + dt.timedelta(seconds=1)).strftime("%Y%m%d%H%M%S%f"), gen_jid())
        r.save_loads([(j, publish_load(j), None) for j in (old, straggler, new)])
        r.returns([ret_for(old, "m1"), ret_for(straggler, "m1"), ret_for(straggler, "m2"), ret_for(new, "m1")])
        r.event_returns([{"tag": "old", "data": {}}, {"tag": "new", "data": {}}])
        # age the rows the way time would (the database sets added / alter_time itself)
        two_days = "NOW() - INTERVAL 2 DAY" if backend["kind"] == "mariadb" else "datetime('now', '-2 days')"
        sql(f"UPDATE salt_returns SET added = {two_days} WHERE jid = %s OR (jid = %s AND id = 'm1')", old, straggler)
        sql(f"UPDATE salt_events SET alter_time = {two_days} WHERE tag = 'old'")
        r.clean_old_jobs()
        assert sorted(row[0] for row in sql("SELECT jid FROM jids")) == [straggler, new]
        assert sorted(sql("SELECT jid, id FROM salt_returns")) == [(straggler, "m2"), (new, "m1")]
        assert [row[0] for row in sql("SELECT tag FROM salt_events")] == ["new"]
        if archive:
            assert [row[0] for row in sql("SELECT jid FROM jids_archive")] == [old]
            assert sorted(sql("SELECT jid, id FROM salt_returns_archive")) == [(old, "m1"), (straggler, "m1")]
            assert [row[0] for row in sql("SELECT tag FROM salt_events_archive")] == ["old"]
        r.close()


def test_generic_sql_on_tables_made_by_hand(tmp_path, master_opts, monkeypatch) -> None:
    """A database init_schema does not know (SQL Server, say) runs on standard SQL only; here that
    dialect is used against SQLite, with tables a user created by hand."""
    path = tmp_path / "hand.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE jids (jid varchar(255) PRIMARY KEY, load text);
        CREATE TABLE salt_returns (added datetime DEFAULT (datetime('now')), fun varchar(100), jid varchar(255),
                                   retval text, id varchar(255), success bit, full_ret text);
        CREATE TABLE salt_events (id INTEGER PRIMARY KEY, tag varchar(255), data text,
                                  alter_time datetime DEFAULT (datetime('now')), master_id varchar(255));
    """)
    conn.close()
    monkeypatch.setattr(odbc_module, "dialect_for", lambda dbms: odbc_module._GENERIC)
    r = create("odbc", {**master_opts, "keep_jobs_seconds": 3600,
                        "returner.odbc.dsn": f"DRIVER={driver('libsqlite3odbc.so')};Database={path}"})
    jid = gen_jid()
    r.save_loads([(jid, publish_load(jid), None), (jid, ret_for(jid, "m1"), None)])
    r.returns([ret_for(jid, "m1", [1]), ret_for(jid, "m1", [1])])
    r.event_returns([{"tag": "t", "data": {}}])
    assert r.get_jid(jid) == {"m1": ret_for(jid, "m1", [1])} and r.get_load(jid) == publish_load(jid)
    assert [j["JID"] for j in r.get_jids_filter(1)] == [jid] and r.get_minions() == ["m1"]
    r.clean_old_jobs()
    assert r.get_jids() and r.get_fun("test.ping")["m1"]["return"] == [1]
    with pytest.raises(ReturnerError, match="^returner odbc: no table definitions for SQLite: create jids"):
        r.init_schema()
    r.close()


def test_dsn_name_from_odbc_ini(tmp_path, master_opts, monkeypatch) -> None:
    """Salt's form: a DSN name, connected as DSN=..;UID=..;PWD=.. (here from an odbc.ini in ODBCINI)."""
    ini = tmp_path / "odbc.ini"
    ini.write_text(f"[saline_test_dsn]\nDriver = {driver('libsqlite3odbc.so')}\nDatabase = {tmp_path / 'dsn.db'}\n")
    monkeypatch.setenv("ODBCINI", str(ini))
    r = create("odbc", {**master_opts, "returner.odbc.dsn": "saline_test_dsn", "returner.odbc.user": "salt",
                        "returner.odbc.passwd": "p;w}d", "returner.odbc.create_schema": True})
    assert r.conn_str == "DSN=saline_test_dsn;UID=salt;PWD={p;w}}d}"
    jid = gen_jid()
    r.returns([ret_for(jid, "dsn-minion")])
    assert list(r.get_jid(jid)) == ["dsn-minion"]
    r.close()
    missing = create("odbc", {**master_opts, "returner.odbc.dsn": "saline_no_such_dsn", "returner.odbc.passwd": "Pw-X"})
    with pytest.raises(ReturnerError) as err:
        missing.get_jids()
    assert str(err.value).startswith("returner odbc: no ODBC data source named 'saline_no_such_dsn' in odbc.ini")
    assert "Pw-X" not in str(err.value)


def test_mariadb_errors(mysql_db, tmp_path, master_opts) -> None:
    good = mariadb_config({"mysql_db": mysql_db}, tmp_path)
    wrong = create("odbc", {**master_opts, **good, "returner.odbc.passwd": "Wrong-Odbc-Pw-1"})
    with pytest.raises(ReturnerError) as err:
        wrong.returns([ret_for(gen_jid(), "m1")])
    msg = str(err.value)
    assert msg.startswith("returner odbc: access denied by ODBC data source 'DRIVER=")
    assert f"for user {USER} (wrong password or unknown user)" in msg
    assert "Wrong-Odbc-Pw-1" not in msg and "\n" not in msg and not isinstance(err.value, BackendUnavailable)
    in_dsn = create("odbc", {**master_opts, "returner.odbc.dsn": good["returner.odbc.dsn"] + f";UID={USER};PWD=Secret-In-Dsn-2"})
    with pytest.raises(ReturnerError) as err:
        in_dsn.get_jids()
    assert "Secret-In-Dsn-2" not in str(err.value) and "PWD=********" in str(err.value)
    nodb = create("odbc", {**master_opts, **good, "returner.odbc.dsn": good["returner.odbc.dsn"].replace(
        mysql_db["db"], "saline_t_missing_db")})
    with pytest.raises(ReturnerError) as err:
        nodb.get_jids()
    assert str(err.value).startswith("returner odbc: database saline_t_missing_db does not exist")
    down = create("odbc", {**master_opts, **good, "returner.odbc.dsn": good["returner.odbc.dsn"].replace(
        f"PORT={mysql_db['port']}", f"PORT={closed_port()}")})
    with pytest.raises(BackendUnavailable) as err:
        down.returns([ret_for(gen_jid(), "m1")])
    assert str(err.value).startswith("returner odbc: cannot connect to ODBC data source") and PASSWORD not in str(err.value)


def test_mariadb_row_over_max_allowed_packet_is_one_clear_line(mysql_db, tmp_path, master_opts) -> None:
    r = create("odbc", {**master_opts, **mariadb_config({"mysql_db": mysql_db}, tmp_path)})
    (packet,) = r._run(lambda conn: conn.cursor().execute("SELECT @@max_allowed_packet").fetchone())
    jid = gen_jid()
    with pytest.raises(ReturnerError) as err:
        r.returns([ret_for(jid, "huge", "x" * (packet // 2 + 10))])  # stored twice: return and full_ret
    assert not isinstance(err.value, BackendUnavailable)
    assert "larger than the server accepts in one packet (max_allowed_packet" in str(err.value)
    r.returns([ret_for(jid, "fine", "x" * (packet // 4))])  # the connection is still good
    assert len(r.get_jid(jid)["fine"]["return"]) == packet // 4
    r.close()


def test_one_connection_reused_and_reopened_after_kill(mysql_db, tmp_path, master_opts) -> None:
    r = create("odbc", {**master_opts, **mariadb_config({"mysql_db": mysql_db}, tmp_path)})
    jid = gen_jid()
    first = r._run(lambda conn: conn.cursor().execute("SELECT CONNECTION_ID()").fetchone()[0])
    for i in range(10):
        r.returns([ret_for(jid, f"m{i}")])
        r.get_jid(jid)
    assert r._run(lambda conn: conn.cursor().execute("SELECT CONNECTION_ID()").fetchone()[0]) == first
    root = pymysql.connect(host=mysql_db["host"], port=mysql_db["port"], user=mysql_db["user"], password=mysql_db["pass"],
                           autocommit=True)
    with root.cursor() as cur:
        cur.execute(f"KILL {int(first)}")  # what a server restart does to a kept connection
    root.close()
    r.returns([ret_for(jid, "after-kill")])
    assert "after-kill" in r.get_jid(jid)
    assert r._run(lambda conn: conn.cursor().execute("SELECT CONNECTION_ID()").fetchone()[0]) != first
    r.close()


def test_a_forked_child_opens_its_own_connection(mysql_db, tmp_path, master_opts) -> None:
    r = create("odbc", {**master_opts, **mariadb_config({"mysql_db": mysql_db}, tmp_path)})
    jid = gen_jid()
    r.returns([ret_for(jid, "parent")])
    first = r._run(lambda conn: conn.cursor().execute("SELECT CONNECTION_ID()").fetchone()[0])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            r.returns([ret_for(jid, "child")])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    r.returns([ret_for(jid, "parent-again")])
    assert r._run(lambda conn: conn.cursor().execute("SELECT CONNECTION_ID()").fetchone()[0]) == first
    assert set(r.get_jid(jid)) == {"parent", "child", "parent-again"}
    r.close()


def test_batch_of_1000(backend, master_opts) -> None:
    r = make(backend, master_opts)
    r.init_schema()
    jid = gen_jid()
    rets = [ret_for(jid, f"minion-{i:04d}", {"i": i, "text": "x" * 200}) for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"\nodbc ({backend['kind']}): 1000 returns in {elapsed * 1000:.1f} ms = {1000 / elapsed:,.0f} rows/s")
    assert backend["sql"]("SELECT COUNT(*), SUM(success) FROM salt_returns")[0] == (1000, 1000)
    assert len(r.get_jid(jid)) == 1000
    r.close()
