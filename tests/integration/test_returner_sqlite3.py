"""sqlite3: Salt's tables and quirks, and what saline adds (the contract suite covers the rest)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import ReturnerError
from saline.returners.sqlite3 import Sqlite3Returner

# Salt's schema, as its documentation gives it
SALT_DDL = """
CREATE TABLE jids (jid TEXT PRIMARY KEY, load TEXT NOT NULL);
CREATE TABLE salt_returns (fun TEXT KEY, jid TEXT KEY, id TEXT KEY, fun_args TEXT, date TEXT NOT NULL,
  full_ret TEXT NOT NULL, success TEXT NOT NULL);
"""


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "salt.db")


@pytest.fixture
def returner(master_opts: dict[str, Any], db: str) -> Iterator[Sqlite3Returner]:
    r = registry.create("sqlite3", {**master_opts, "sqlite3.database": db})
    assert isinstance(r, Sqlite3Returner)
    yield r
    r.close()


def rows(db: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def ret(jid: str, minion: str, value: Any = True, fun: str = "test.ping", fun_args: list[Any] | None = None,
        **extra: Any) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": fun_args or [], "return": value,
            "retcode": 0, "success": True, **extra}


def test_database_is_required(master_opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="required option sqlite3.database is not set"):
        registry.create("sqlite3", master_opts)


def test_salts_values_and_quirks(returner: Sqlite3Returner, db: str) -> None:
    jid = gen_jid()
    before = dt.datetime.now()
    returner.returns([
        ret(jid, "web1", {"k": [1, "ü"]}, "test.arg", ["x", {"k": 1}]),
        ret(jid, "web2", False, retcode=1, success=False),
        {"jid": jid, "id": "ssh", "fun": "cmd.run", "return": "out"},  # no success key (salt-ssh)
    ])
    after = dt.datetime.now()
    got = rows(db, "SELECT id, fun, fun_args, full_ret, success, typeof(success), date FROM salt_returns "
                   "WHERE jid = ? ORDER BY id", jid)
    assert [g[:6] for g in got] == [
        ("ssh", "cmd.run", None, '"out"', "", "text"),
        ("web1", "test.arg", "['x', {'k': 1}]", '{"k": [1, "ü"]}', "1", "text"),  # Python repr; the value only
        ("web2", "test.ping", None, "false", "0", "text"),  # empty fun_args: NULL
    ]
    for row in got:  # local time of storage, str(datetime.now())
        assert before <= dt.datetime.strptime(row[6], "%Y-%m-%d %H:%M:%S.%f") <= after
    # unlike Salt (fetchone), every minion of the job
    assert returner.get_jid(jid) == {"ssh": {"return": "out"}, "web1": {"return": {"k": [1, "ü"]}},
                                     "web2": {"return": False}}


def test_loads_first_wins_and_listing(returner: Sqlite3Returner, db: str) -> None:
    jid = gen_jid()
    load = {"jid": jid, "fun": "test.arg", "arg": ["a"], "tgt": "web*", "tgt_type": "glob", "user": "ops"}
    returner.save_load(jid, load)
    returner.save_load(jid, {"jid": jid, "fun": "later"})  # Salt raised IntegrityError here
    assert rows(db, "SELECT load FROM jids") == [(json.dumps(load, ensure_ascii=False),)]
    assert returner.get_load(jid) == load
    assert returner.get_jids()[jid]["User"] == "ops"


def test_get_fun_is_the_newest_per_minion(returner: Sqlite3Returner) -> None:
    first, second = gen_jid(), gen_jid()
    returner.returns([ret(first, "a", "old"), ret(first, "b", "only")])
    returner.returns([ret(second, "a", "new"), ret(second, "b", "echo", fun="test.echo")])
    assert returner.get_fun("test.ping") == {"a": "new", "b": "only"}


def test_salt_made_database_without_saline_tables(master_opts: dict[str, Any], db: str) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(SALT_DDL)
    conn.close()
    r = registry.create("sqlite3", {**master_opts, "sqlite3.database": db, "sqlite3.create_schema": False})
    jid = gen_jid()
    r.returns([ret(jid, "a")])  # Salt's own tables are enough for returns
    assert r.get_jid(jid) == {"a": {"return": True}}
    with pytest.raises(ReturnerError) as info:
        r.event_returns([{"tag": "salt/auth", "data": {}}])
    assert str(info.value) == (f"returner sqlite3: table salt_events does not exist in {db} "
                               f"(run: saline-run returners.init sqlite3)")
    r.init_schema()
    r.event_returns([{"tag": "salt/auth", "data": {"id": "a"}}])
    assert rows(db, "SELECT tag, data, master_id FROM salt_events") == [("salt/auth", '{"id": "a"}', master_opts["id"])]
    names = {n for (n,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"salt_returns_jid_id", "salt_returns_fun_id", "salt_events_tag"} <= names
    r.close()


def test_schema_is_salts(returner: Sqlite3Returner, db: str) -> None:
    returner.init_schema()
    sql = dict(rows(db, "SELECT name, sql FROM sqlite_master WHERE type = 'table'"))

    def norm(text: str) -> str:
        return " ".join(text.replace("IF NOT EXISTS ", "").split()).replace("( ", "(")

    expected = [s.strip() for s in SALT_DDL.strip().split(";") if s.strip()]
    assert norm(sql["jids"]) == norm(expected[0])
    assert norm(sql["salt_returns"]) == norm(expected[1])
    assert [c[1:3] for c in rows(db, "PRAGMA table_info(salt_events)")] == [
        ("id", "INTEGER"), ("tag", "TEXT"), ("data", "TEXT"), ("alter_time", "TEXT"), ("master_id", "TEXT")]


def test_wal_one_connection_and_retention(master_opts: dict[str, Any], db: str) -> None:
    r = registry.create("sqlite3", {**master_opts, "sqlite3.database": db, "keep_jobs_seconds": 3600})
    old, new = "20010101000000000000", gen_jid()
    r.save_loads([(old, {"jid": old, "fun": "x"}, None), (new, {"jid": new, "fun": "y"}, None)])
    r.returns([ret(old, "a"), ret(new, "a")])
    conn = r._db._conn
    assert conn is not None and conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    r.clean_old_jobs()
    assert r._db._conn is conn  # the same connection throughout
    assert r.get_jid(old) == {} and r.get_load(old) == {}
    assert r.get_jid(new) == {"a": {"return": True}}
    r.close()
