"""saline_cache: the default job cache's file, tables and behaviour (the contract suite covers the rest)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.saline_cache import SalineCacheReturner


@pytest.fixture
def returner(master_opts: dict[str, Any]) -> Iterator[SalineCacheReturner]:
    r = registry.create("saline_cache", master_opts)
    assert isinstance(r, SalineCacheReturner)
    yield r
    r.close()


def ret(jid: str, minion: str, value: Any = True, **extra: Any) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value,
            "retcode": 0, "success": True, "_stamp": "2024-01-05T12:34:56.123456", **extra}


def test_default_file_is_the_masters_record_log(returner: SalineCacheReturner, master_opts: dict[str, Any]) -> None:
    assert master_opts["master_job_cache"] == "saline_cache"
    returner.returns([ret(gen_jid(), "m")])  # made on first use, no init needed
    path = Path(master_opts["cachedir"]) / "outbox.db"
    assert returner.database == str(path) and path.exists()
    conn = returner._db._conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    cols = {t: [(c[1], c[2], c[5]) for c in conn.execute(f"PRAGMA table_info({t})")] for t in ("jobs", "records")}
    assert cols["jobs"] == [("jid", "TEXT", 1), ("load", "BLOB", 0), ("minions", "BLOB", 0), ("started", "REAL", 0),
                            ("endtime", "TEXT", 0)]
    assert [c[0] for c in cols["records"]] == ["seq", "kind", "route", "cached", "jid", "mid", "fun", "stamp", "body"]
    assert conn.execute("SELECT kind, cached, mid, fun FROM records").fetchall() == [(0, 1, "m", "test.ping")]


def test_full_return_minions_and_endtime(returner: SalineCacheReturner) -> None:
    jid = gen_jid()
    load = {"jid": jid, "fun": "state.apply", "arg": [], "tgt": "web*", "tgt_type": "glob", "user": "root",
            "minions": ["web2", "web1"]}
    returner.save_load(jid, load)
    full = ret(jid, "web1", {"state": "ok"}, fun="state.apply", out="highstate", retcode=2, success=False)
    returner.returns([full])
    assert returner.get_jid(jid) == {"web1": full}  # out, retcode, _stamp: the whole return
    assert returner.get_load(jid) == {**load, "Minions": ["web1", "web2"]}
    returner.save_minions(jid, ["web3"], syndic_id="syndic1")
    assert returner.get_load(jid)["Minions"] == ["web1", "web2", "web3"]
    assert returner.get_endtime(jid) is False
    returner.update_endtime(jid, "2024, Jan 05 12:34:57.000000")
    assert returner.get_endtime(jid) == "2024, Jan 05 12:34:57.000000"
    # minions and endtime can come before the load: the load still fills in later
    other = gen_jid()
    returner.save_minions(other, ["a"])
    returner.update_endtime(other, "2024, Jan 05 12:34:58.000000")
    assert returner.get_jids().get(other) is None  # no load yet: not a listed job
    returner.save_load(other, {"jid": other, "fun": "test.ping"})
    assert returner.get_load(other) == {"jid": other, "fun": "test.ping", "Minions": ["a"]}
    assert returner.get_endtime(other) == "2024, Jan 05 12:34:58.000000"


def test_duplicate_delivery_replaces_itself(returner: SalineCacheReturner) -> None:
    jid = gen_jid()
    returner.returns([ret(jid, "m", "first")])
    returner.returns([ret(jid, "m", "redelivered"), ret(jid, "m", "redelivered")])
    assert returner.get_jid(jid) == {"m": ret(jid, "m", "redelivered")}
    conn = returner._db._conn
    assert conn is not None and conn.execute("SELECT COUNT(*) FROM records WHERE jid = ?", (jid,)).fetchone() == (1,)


def test_clean_old_jobs_by_start_time(master_opts: dict[str, Any]) -> None:
    r = registry.create("saline_cache", {**master_opts, "keep_jobs_seconds": 3600})
    old, new = "20010101000000000000", gen_jid()
    r.save_loads([(old, {"jid": old, "fun": "x"}, None), (new, {"jid": new, "fun": "y"}, None)])
    r.returns([ret(old, "a"), ret(new, "a"), ret("20010101000000000001", "orphan")])  # the last one without a load
    r.event_returns([{"tag": "e", "data": {}}])
    registry.create("saline_cache", {**master_opts, "keep_jobs_seconds": 0}).clean_old_jobs()
    assert r.get_jid(old) != {}
    r.clean_old_jobs()
    assert r.get_jid(old) == {} and r.get_load(old) == {} and r.get_jid("20010101000000000001") == {}
    assert r.get_jid(new) != {} and list(r.get_jids()) == [new]
    conn = r._db._conn
    assert conn is not None and conn.execute("SELECT COUNT(*) FROM records WHERE kind = 2").fetchone() == (1,)  # recent
    r.close()


def test_two_processes_worth_of_writers(master_opts: dict[str, Any]) -> None:
    """Two connections writing at once (the master and a runner): WAL and the lock timeout, no errors."""
    jid = gen_jid()
    writers = [registry.create("saline_cache", master_opts) for _ in range(2)]
    errors: list[BaseException] = []

    def write(r: SalineCacheReturner, n: int) -> None:
        try:
            for batch in range(20):
                r.returns([ret(jid, f"w{n}-{batch}-{i}") for i in range(100)])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(writers[0].get_jid(jid)) == 4000
    for w in writers:
        w.close()


def test_init_schema_on_an_existing_file(master_opts: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "cache.db"
    r = registry.create("saline_cache", {**master_opts, "saline_cache": {"database": str(path)}})
    r.init_schema()
    r.init_schema()
    tables = {n for (n,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "records", "routes", "cursors", "retries", "dead"} <= tables
    r.close()
