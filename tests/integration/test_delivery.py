"""Delivery: real returners (mysql on the real MariaDB, sqlite3, a returner_dirs returner on a real
SQLite file), outages made by cutting a real TCP proxy in front of MariaDB."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pymysql
import pytest

from saline.config import ConfigError
from saline.master.delivery import Delivery
from saline.master.outbox import Outbox, Record, SqliteOutbox
from saline.returners import registry
from tests.helpers import make_ret, probe_dir, probe_query, wait_for
from tests.helpers.tcpproxy import TcpProxy

LOG = "saline.master.delivery"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def account(mysql_db: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A MariaDB user with a password (a secret to keep out of sight), on the test database only."""
    user, password = f"saline_o_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    conn = pymysql.connect(host=mysql_db["host"], port=mysql_db["port"], user=mysql_db["user"],
                           password=mysql_db["pass"], autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{mysql_db['db']}`.* TO %s@'%%'", (user,))
        yield {"user": user, "password": password}
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        conn.close()


@pytest.fixture
def proxy(mysql_db: dict[str, Any]) -> Iterator[TcpProxy]:
    with TcpProxy(mysql_db["host"], mysql_db["port"]) as p:
        yield p


@pytest.fixture
def opts(master_opts: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Fast retries so outages are short; the probe returner available through returner_dirs."""
    return {**master_opts, "returner_dirs": [probe_dir(tmp_path / "returners")], "returner_retry_max_seconds": 0.5,
            "probe.path": str(tmp_path / "probe.db"), "sqlite3.database": str(tmp_path / "returns.db")}


@pytest.fixture
def mysql_opts(opts: dict[str, Any], mysql_db: dict[str, Any], account: dict[str, str], proxy: TcpProxy) -> dict[str, Any]:
    """mysql through the proxy, with Salt's tables created (returners.init) on the real server."""
    o = {**opts, "mysql.host": "127.0.0.1", "mysql.port": proxy.port, "mysql.user": account["user"],
         "mysql.pass": account["password"], "mysql.db": mysql_db["db"], "mysql.connect_timeout": 2}
    r = registry.create("mysql", o)
    r.init_schema()
    r.close()
    return o


class Running:
    """An outbox and a started Delivery on ``opts``; stopped and closed by the fixture."""

    def __init__(self) -> None:
        self.made: list[tuple[Delivery, Outbox]] = []

    def __call__(self, opts: dict[str, Any], start: bool = True) -> Delivery:
        outbox = SqliteOutbox(Path(opts["cachedir"]) / "outbox.db")
        d = Delivery(opts, outbox)
        if start:
            d.start()
        self.made.append((d, outbox))
        return d

    def restart(self, d: Delivery, opts: dict[str, Any]) -> Delivery:
        """Stop ``d`` and close its outbox, then start afresh on the same cachedir (a master restart)."""
        d.stop()
        d.outbox.close()
        return self(opts)


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    yield r
    for d, outbox in reversed(r.made):
        d.stop()
        outbox.close()


def sql(db: dict[str, Any], query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the real MariaDB directly (not through the proxy)."""
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"],
                           database=db["db"], autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def rows_in(db: dict[str, Any]) -> tuple[int, int]:
    """(rows, distinct (jid, id)) in salt_returns."""
    return sql(db, "SELECT COUNT(*), COUNT(DISTINCT jid, id) FROM salt_returns")[0]


def returns(d: Delivery, name: str, n: int, jid: str = "20240105123456123456", prefix: str = "m",
            **kw: Any) -> list[Record]:
    items: list[Record] = []
    for i in range(n):
        items += d.items_for_return([name], make_ret(jid, f"{prefix}{i}"), **kw)
    return items


# -- batches -----------------------------------------------------------------------------------------
def test_ten_thousand_returns_through_sqlite3(opts: dict[str, Any], running: Running) -> None:
    d = running(opts)
    started = time.monotonic()
    for chunk in range(100):  # as the master submits them: a group of returns per loop turn
        d.submit(returns(d, "sqlite3", 100, jid=f"2024010512{chunk:04d}000000", prefix=f"c{chunk}-"))
    assert d.flush(60)
    elapsed = time.monotonic() - started
    db = sqlite3.connect(opts["sqlite3.database"])
    try:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT jid || '/' || id) FROM salt_returns").fetchone() == (10000, 10000)
        assert db.execute("SELECT full_ret, success FROM salt_returns WHERE id = 'c7-42'").fetchone() == ("true", "1")
    finally:
        db.close()
    status = d.status()["sqlite3"]
    assert (status["delivered"], status["pending"], status["retrying"], status["dead"]) == (10000, 0, 0, 0)
    assert status["throughput"] == pytest.approx(10000 / 60, rel=0.01) and status["last_error"] is None
    assert elapsed < 30


def test_batches_fill_up_to_the_batch_size(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "returner_batch_size": 1000})
    for chunk in range(100):
        d.submit(returns(d, "probe", 100, jid=f"2024010512{chunk:04d}000000"))
    assert d.flush(60)
    sizes = [s for (s,) in probe_query(opts["probe.path"], "SELECT size FROM batches WHERE kind = 'ret'")]
    assert sum(sizes) == 10000 and max(sizes) <= 1000
    assert len(sizes) <= 60  # about 10 full batches; far fewer calls than the 100 submits
    assert probe_query(opts["probe.path"], "SELECT COUNT(*) FROM rets")[0][0] == 10000


def test_a_lone_item_waits_at_most_the_batch_wait(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "returner_batch_wait_ms": 300})
    begin = time.monotonic()
    d.submit(returns(d, "probe", 1))
    assert wait_for(lambda: d.status()["probe"]["delivered"] == 1, 5)
    assert time.monotonic() - begin < 0.3 + 0.7
    # a few more arriving inside the wait join the same batch
    d.submit(returns(d, "probe", 1, prefix="a"))
    time.sleep(0.05)
    d.submit(returns(d, "probe", 9, prefix="b"))
    assert wait_for(lambda: d.status()["probe"]["delivered"] == 11, 5)
    assert [s for (s,) in probe_query(opts["probe.path"], "SELECT size FROM batches ORDER BY t")] == [1, 10]


def test_a_full_batch_goes_without_waiting(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "returner_batch_wait_ms": 3000, "returner_batch_size": 10})
    begin = time.monotonic()
    d.submit(returns(d, "probe", 1))
    time.sleep(0.05)
    d.submit(returns(d, "probe", 9, prefix="b"))
    assert wait_for(lambda: d.status()["probe"]["delivered"] == 10, 5)
    assert time.monotonic() - begin < 1.5  # not the 3 s wait: the batch was full
    assert [s for (s,) in probe_query(opts["probe.path"], "SELECT size FROM batches")] == [10]


def test_groups_by_return_config_and_kwargs(opts: dict[str, Any], running: Running, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    alt = tmp_path / "alt.db"
    d = running({**opts, "alternative.probe.path": str(alt)})
    items = returns(d, "probe", 3) + returns(d, "probe", 2, prefix="k", ret_kwargs={"path": str(other)})
    items += returns(d, "probe", 4, prefix="a", ret_config="alternative")
    d.submit(items)
    assert d.flush(10)
    assert probe_query(opts["probe.path"], "SELECT id FROM rets ORDER BY id") == [("m0",), ("m1",), ("m2",)]
    assert probe_query(other, "SELECT id FROM rets ORDER BY id") == [("k0",), ("k1",)]
    assert probe_query(alt, "SELECT COUNT(*) FROM rets") == [(4,)]


# -- outages -------------------------------------------------------------------------------------------
def test_mysql_outage_500_returns_arrive_exactly_once(mysql_opts: dict[str, Any], mysql_db: dict[str, Any],
                                                      proxy: TcpProxy, running: Running,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    d = running(mysql_opts)
    d.submit(returns(d, "mysql", 1, prefix="before"))
    assert d.flush(10) and proxy.open_connections == 1  # one pooled connection, kept
    proxy.cut()  # refuses new connections and resets the open one
    with caplog.at_level(logging.WARNING, logger=LOG):
        for chunk in range(10):
            d.submit(returns(d, "mysql", 50, prefix=f"c{chunk}-"))
        assert wait_for(lambda: d.status()["mysql"]["retrying"] == 500, 15), d.status()
        time.sleep(1.0)
        status = d.status()["mysql"]
        assert (status["pending"], status["retrying"], status["delivered"]) == (500, 500, 1)
        assert "cannot connect" in status["last_error"] and status["last_error_time"] is not None
        assert status["oldest_pending_age_s"] >= 1.0
        assert rows_in(mysql_db) == (1, 1)
        restored = time.time()
        proxy.restore()
        assert d.flush(30), d.status()
    assert rows_in(mysql_db) == (501, 501)  # every one, exactly once
    status = d.status()["mysql"]
    assert (status["pending"], status["retrying"], status["delivered"], status["dead"]) == (0, 0, 501, 0)
    assert status["last_success_time"] >= restored and "cannot connect" in status["last_error"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # one line per failed batch (with backoff), not one per item; each names the returner and cause
    assert 1 <= len(warnings) < 40
    assert all(r.getMessage().startswith("returner mysql: ") and "\n" not in r.getMessage() for r in warnings)
    assert any("BackendUnavailable" in r.getMessage() and "cannot connect" in r.getMessage() for r in warnings)
    assert not any(r.exc_info for r in warnings)


def test_connections_cut_while_delivering(mysql_opts: dict[str, Any], mysql_db: dict[str, Any], proxy: TcpProxy,
                                          running: Running) -> None:
    """Cuts in the middle of a stream of batches: nothing lost, nothing stored twice."""
    d = running({**mysql_opts, "returner_batch_size": 50})

    def produce() -> None:
        for chunk in range(60):
            d.submit(returns(d, "mysql", 50, prefix=f"c{chunk}-"))
            time.sleep(0.04)

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in range(3):
        flowing = d.status()["mysql"]["delivered"]
        assert wait_for(lambda: d.status()["mysql"]["delivered"] > flowing, 10), d.status()  # reconnected
        time.sleep(0.1)
        proxy.cut()
        time.sleep(0.3)
        proxy.restore()
    producer.join()
    assert d.flush(60), d.status()
    assert rows_in(mysql_db) == (3000, 3000)
    assert d.status()["mysql"]["delivered"] >= 3000
    assert proxy.accepted >= 4  # it did reconnect after each cut


def test_poison_return_is_isolated_then_buried(mysql_opts: dict[str, Any], mysql_db: dict[str, Any],
                                               running: Running, caplog: pytest.LogCaptureFixture) -> None:
    d = running({**mysql_opts, "returner_dead_after_seconds": 2, "returner_retry_max_seconds": 0.3})
    items = returns(d, "mysql", 200)
    poison = make_ret("9" * 300, "m57")  # jid longer than varchar(255): MariaDB refuses the row
    items[57] = d.items_for_return(["mysql"], poison)[0]
    begin = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOG):
        d.submit(items)
        assert wait_for(lambda: rows_in(mysql_db)[0] == 199, 10)
        assert time.monotonic() - begin < 2  # the others did not wait for the poison to be buried
        assert wait_for(lambda: d.status()["mysql"]["dead"] == 1, 15), d.status()
        assert d.flush(5)
    assert rows_in(mysql_db) == (199, 199)
    assert sql(mysql_db, "SELECT COUNT(*) FROM salt_returns WHERE id = 'm57'") == [(0,)]
    [letter] = d.dead_letters("mysql")
    assert letter["payload"] == poison and letter["attempts"] >= 2
    assert "too long" in letter["last_error"].lower()
    status = d.status()["mysql"]
    assert (status["delivered"], status["pending"], status["dead"], status["buried"]) == (199, 0, 1, 1)
    buried = [r for r in caplog.records if r.levelno == logging.ERROR and "dead letters" in r.getMessage()]
    assert len(buried) == 1 and "returner mysql: 1 item(s)" in buried[0].getMessage()


def test_a_poison_item_retrying_alone_does_not_delay_newcomers(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "returner_retry_max_seconds": 5, "returner_batch_wait_ms": 20})
    d.submit(d.items_for_return(["probe"], make_ret("20240105123456123456", "bad", poison=True)))
    for round_ in range(4):  # the poison keeps failing, its backoff growing towards 5 s
        assert wait_for(lambda: (d.outbox.dead_letters("probe") or d.outbox.counts()["probe"]["retrying"]), 5)
        begin = time.monotonic()
        d.submit(returns(d, "probe", 10, prefix=f"r{round_}-"))
        assert wait_for(lambda: d.status()["probe"]["delivered"] == 10 * (round_ + 1), 5)
        assert time.monotonic() - begin < 1.0, d.status()["probe"]
        time.sleep(0.4)
    status = d.status()["probe"]
    assert status["retrying"] == 1 and "poisoned" in status["last_error"]
    assert probe_query(opts["probe.path"], "SELECT COUNT(*) FROM rets WHERE id = 'bad'") == [(0,)]


def test_only_what_may_be_stored_already_is_checked_for_duplicates(opts: dict[str, Any], running: Running) -> None:
    """Returns handed to a returner for the first time go through ``returns_first`` (a returner
    may skip its duplicate check); the parts of a batch sent after a failure in it, and what a
    new process finds stored before it opened the outbox, go through ``returns``."""
    path = opts["probe.path"]

    def batches() -> list[tuple[int, int]]:
        return probe_query(path, "SELECT first, size FROM batches WHERE kind = 'ret' ORDER BY t")

    d = running(opts)
    d.submit(returns(d, "probe", 10))
    assert d.flush(5)
    assert batches() == [(1, 10)]
    items = returns(d, "probe", 8, prefix="p")
    items[3] = d.items_for_return(["probe"], make_ret("20240105123456123456", "p3", poison=True))[0]
    d.submit(items)
    assert wait_for(lambda: sum(n for _, n in batches()) == 17, 5), batches()
    assert {first for first, _ in batches()[1:]} == {0}  # split after the failure: every part checked
    d.stop()
    d.outbox.close()
    before = len(batches())
    quiet = running(opts, start=False)  # stored while no worker runs, then a new process starts
    quiet.submit(returns(quiet, "probe", 5, prefix="q"))
    # (the poisoned return keeps failing meanwhile, never stored; a batch with it is split)
    running.restart(quiet, opts)
    assert wait_for(lambda: probe_query(path, "SELECT COUNT(*) FROM rets") == [(22,)], 5)
    after = batches()[before:]
    assert sum(n for _, n in after) == 5 and {first for first, _ in after} == {0}, after


def test_dead_letters_replayed_once_the_tables_exist(opts: dict[str, Any], mysql_db: dict[str, Any],
                                                     account: dict[str, str], running: Running) -> None:
    """No tables yet (a user who followed Salt's seed DDL halfway): buried; returners.init; replay."""
    o = {**opts, "mysql.host": mysql_db["host"], "mysql.port": mysql_db["port"], "mysql.user": account["user"],
         "mysql.pass": account["password"], "mysql.db": mysql_db["db"], "returner_dead_after_seconds": 1,
         "returner_retry_max_seconds": 0.3}
    d = running(o)
    d.submit(returns(d, "mysql", 50))
    assert wait_for(lambda: d.status()["mysql"]["dead"] == 50, 20), d.status()
    letters = d.dead_letters("mysql", limit=1000)
    assert len(letters) == 50 and all("salt_returns does not exist" in x["last_error"] for x in letters)
    registry.create("mysql", o).init_schema()
    assert d.replay("mysql") == 50
    assert d.flush(15)
    assert rows_in(mysql_db) == (50, 50)
    status = d.status()["mysql"]
    assert (status["delivered"], status["dead"], status["pending"], status["buried"]) == (50, 0, 0, 50)
    assert d.replay("mysql") == 0


# -- configuration problems and secrets ------------------------------------------------------------------
def test_wrong_option_waits_until_the_config_is_fixed(mysql_opts: dict[str, Any], mysql_db: dict[str, Any],
                                                      running: Running, caplog: pytest.LogCaptureFixture) -> None:
    broken = {**mysql_opts, "mysql.port": "three-three-oh-six"}
    d = running(broken)
    with caplog.at_level(logging.WARNING, logger=LOG):
        d.submit(returns(d, "mysql", 20))
        assert wait_for(lambda: d.status()["mysql"]["retrying"] == 20, 10), d.status()
    status = d.status()["mysql"]
    assert "option 'port' must be int" in status["last_error"] and status["options"].get("error")
    line = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert line.startswith("returner mysql: 20 of 20 item(s) not delivered") and "port" in line
    d = running.restart(d, mysql_opts)  # the user fixes the file and restarts the master
    assert d.flush(15)
    assert rows_in(mysql_db) == (20, 20)


def test_secrets_never_in_status_errors_or_logs(opts: dict[str, Any], mysql_opts: dict[str, Any],
                                                account: dict[str, str], running: Running,
                                                caplog: pytest.LogCaptureFixture) -> None:
    token, kw_token = f"tok-{uuid.uuid4().hex}", f"kwtok-{uuid.uuid4().hex}"
    o = {**mysql_opts, "probe.token": token, "probe.expect_token": "the-right-one",
         "returner_dead_after_seconds": 0.5, "returner_retry_max_seconds": 0.2}
    with caplog.at_level(logging.DEBUG, logger=LOG):
        d = running(o)
        d.submit(returns(d, "probe", 3) + returns(d, "probe", 2, prefix="k", ret_kwargs={"token": kw_token}))
        assert wait_for(lambda: d.status()["probe"]["dead"] == 5, 15), d.status()
        d.submit(returns(d, "mysql", 2))
        assert d.flush(10)
    # the probe's own message carries the token: the master scrubbed it everywhere it shows
    status = d.status()
    shown = json.dumps(status) + json.dumps(d.dead_letters("probe")) + json.dumps(d.outbox.counts())
    shown += caplog.text + json.dumps([d.outbox.take("probe", 10)], default=str)
    assert "service refused token ********" in status["probe"]["last_error"]
    assert token not in shown and kw_token not in shown and account["password"] not in shown
    assert status["probe"]["options"]["token"] == "********"
    assert status["mysql"]["options"]["pass"] == "********" and status["mysql"]["options"]["user"] == account["user"]
    assert any("traceback of the first failure" in r.getMessage() for r in caplog.records)  # DEBUG has it, scrubbed
    letters = d.dead_letters("probe")
    assert [x["ret_kwargs"] for x in letters if x["ret_kwargs"]] == [{"token": "********"}] * 2
    # the outbox keeps what it needs to deliver (the kwargs), but nothing it shows has it
    assert all(kw_token not in (x["last_error"] or "") for x in d.outbox.dead_letters("probe"))


def test_items_for_each_kind(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "event_return": ["probe"], "event_return_whitelist": ["salt/job/*", "salt/auth"],
                 "event_return_blacklist": ["salt/job/*/new"]})
    ret = make_ret("20240105123456123456", "m1")
    [record] = d.items_for_return(["probe", "local", "sqlite3"], ret)
    assert [name for name, _rc, _kw in record.route] == ["probe", "local", "sqlite3"]
    assert (record.kind, record.jid, record.mid, record.fun, record.payload) == ("ret", ret["jid"], "m1", "test.ping", ret)
    with pytest.raises(ConfigError, match="unknown returner 'nosuch'"):
        d.items_for_return(["probe", "nosuch"], ret)
    load = {"jid": "20240105123456123456", "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob"}
    loads = d.items_for_load(["probe", "local", "sqlite3"], load["jid"], load, ["m1"])
    assert [([n for n, _rc, _kw in i.route], i.kind) for i in loads] == [(["probe", "sqlite3"], "load")]  # local keeps none
    assert loads[0].payload == {"jid": load["jid"], "load": load, "minions": ["m1"]}
    with pytest.raises(ConfigError, match="unknown option 'nope'"):
        d.items_for_load(["probe"], load["jid"], load, ["m1"], ret_kwargs={"nope": 1})
    with pytest.raises(ConfigError, match="unknown returner"):
        d.items_for_load(["nosuch"], load["jid"], load, ["m1"])
    assert d.items_for_event("salt/job/20240105123456123456/ret/m1", ret)[0].payload["tag"].endswith("/ret/m1")
    assert d.items_for_event("salt/job/20240105123456123456/new", load) == []  # blacklisted
    assert d.items_for_event("salt/minion/m1/start", {}) == []  # not whitelisted
    assert len(d.items_for_event("salt/auth", {"id": "m1"})) == 1
    d.submit(d.items_for_load(["probe"], load["jid"], load, ["m1", "m2"])
             + d.items_for_event("salt/auth", {"id": "m1"}) + d.items_for_return(["probe"], ret))
    assert d.flush(10)
    path = opts["probe.path"]
    assert probe_query(path, "SELECT jid FROM loads") == [(load["jid"],)]
    assert probe_query(path, "SELECT tag FROM events") == [("salt/auth",)]
    assert probe_query(path, "SELECT id FROM rets") == [("m1",)]


def test_event_return_must_name_an_event_returner(opts: dict[str, Any]) -> None:
    outbox = SqliteOutbox(Path(opts["cachedir"]) / "outbox.db")
    try:
        with pytest.raises(ConfigError, match="unknown returner 'nosuch'"):
            Delivery({**opts, "event_return": "nosuch"}, outbox)
        with pytest.raises(ConfigError, match="event_return.*local_cache has no event_return"):
            Delivery({**opts, "event_return": "probe,local_cache"}, outbox)
    finally:
        outbox.close()


def test_event_return_queue_holds_events_for_a_batch(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "event_return": "probe", "event_return_queue": 5, "event_return_queue_max_seconds": 0.6})
    path = opts["probe.path"]
    begin = time.monotonic()
    for i in range(3):
        d.submit(d.items_for_event(f"salt/auth/{i}", {"n": i}))
    time.sleep(0.3)
    assert d.status()["probe"]["delivered"] == 0  # held: fewer than event_return_queue
    assert wait_for(lambda: d.status()["probe"]["delivered"] == 3, 5)
    assert time.monotonic() - begin >= 0.55
    for i in range(5):
        d.submit(d.items_for_event(f"salt/key/{i}", {"n": i}))
    assert wait_for(lambda: d.status()["probe"]["delivered"] == 8, 0.5)  # a full queue goes at once
    assert probe_query(path, "SELECT size FROM batches ORDER BY t") == [(3,), (5,)]


def test_event_return_queue_without_a_time_limit_waits_for_flush(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "event_return": "probe", "event_return_queue": 10})
    d.submit(d.items_for_event("salt/auth", {"id": "m1"}) + d.items_for_event("salt/auth", {"id": "m2"}))
    time.sleep(0.5)
    assert d.status()["probe"]["pending"] == 2  # events wait for the queue to fill, as in Salt
    assert d.flush(5)
    assert probe_query(opts["probe.path"], "SELECT COUNT(*) FROM events") == [(2,)]
    # a return is never held: held events go along with it
    d.submit(d.items_for_event("salt/auth", {"id": "m3"}))
    time.sleep(0.2)
    d.submit(d.items_for_return(["probe"], make_ret("20240105123456123456", "m1")))
    assert wait_for(lambda: d.status()["probe"]["delivered"] == 4, 2)
    assert probe_query(opts["probe.path"], "SELECT kind, size FROM batches ORDER BY t") == [
        ("event", 2), ("event", 1), ("ret", 1)]


# -- lifecycle -----------------------------------------------------------------------------------------------
def test_restart_delivers_what_was_pending_and_keeps_the_counters(mysql_opts: dict[str, Any],
                                                                  mysql_db: dict[str, Any], proxy: TcpProxy,
                                                                  running: Running) -> None:
    d = running(mysql_opts)
    d.submit(returns(d, "mysql", 10, prefix="a"))
    assert d.flush(10)
    proxy.cut()
    d.submit(returns(d, "mysql", 30, prefix="b"))
    assert wait_for(lambda: d.status()["mysql"]["retrying"] == 30, 10)
    d.stop()
    assert proxy.open_connections == 0
    d.outbox.close()
    proxy.restore()
    d = running(mysql_opts, start=False)
    before = d.status()["mysql"]
    assert (before["delivered"], before["pending"]) == (10, 30) and "cannot connect" in before["last_error"]
    d.start()  # picks up what waited in the outbox, without any new submit
    assert d.flush(15)
    assert rows_in(mysql_db) == (40, 40)
    assert d.status()["mysql"]["delivered"] == 40


def test_stop_closes_the_pooled_connection(mysql_opts: dict[str, Any], proxy: TcpProxy, running: Running) -> None:
    before = proxy.accepted  # returners.init connected through the proxy too
    d = running(mysql_opts)
    for chunk in range(5):
        d.submit(returns(d, "mysql", 20, prefix=f"c{chunk}-"))
        assert d.flush(10)
    assert proxy.accepted == before + 1 and proxy.open_connections == 1  # five batches, one connection
    d.stop()
    assert wait_for(lambda: proxy.open_connections == 0, 5)


def test_flush_of_one_returner_and_timeout(opts: dict[str, Any], running: Running) -> None:
    d = running({**opts, "probe.down": True})
    d.submit(returns(d, "probe", 2) + returns(d, "sqlite3", 3))
    assert d.flush(10, returner="sqlite3")
    assert d.status()["sqlite3"]["delivered"] == 3
    begin = time.monotonic()
    assert d.flush(0.5) is False  # the probe is down: its items are still pending
    assert 0.5 <= time.monotonic() - begin < 2
    status = d.status()["probe"]
    assert status["pending"] == 2 and status["retrying"] == 2 and "cannot reach" in status["last_error"]


def test_an_idle_connection_is_closed_and_reopened_when_needed(mysql_opts: dict[str, Any], mysql_db: dict[str, Any],
                                                               proxy: TcpProxy, running: Running) -> None:
    d = running(mysql_opts)
    d.idle_close = 0.5  # 60 s in the master
    d.submit(returns(d, "mysql", 10, prefix="a"))
    assert d.flush(10) and proxy.open_connections == 1
    before = proxy.accepted
    assert wait_for(lambda: proxy.open_connections == 0, 5)  # closed by the worker, not cut
    d.submit(returns(d, "mysql", 10, prefix="b"))
    assert d.flush(10)
    assert proxy.accepted == before + 1 and rows_in(mysql_db) == (20, 20)
    assert d.status()["mysql"]["last_error"] is None  # a closed idle connection is no failure


def test_return_kwargs_given_as_json_text(opts: dict[str, Any], running: Running, tmp_path: Path) -> None:
    d = running(opts)
    other = tmp_path / "kw.db"
    items = d.items_for_return(["probe"], make_ret("20240105123456123456", "m1"),
                               ret_kwargs=json.dumps({"path": str(other)}))
    assert items[0].route == (("probe", None, {"path": str(other)}),)
    d.submit(items)
    assert d.flush(10) and probe_query(other, "SELECT id FROM rets") == [("m1",)]
    with pytest.raises(ConfigError, match="not valid JSON"):
        d.items_for_return(["probe"], {}, ret_kwargs="{path:")
    with pytest.raises(ConfigError, match="JSON object"):
        d.items_for_load(["probe"], "20240105123456123456", {}, None, ret_kwargs="[1, 2]")
