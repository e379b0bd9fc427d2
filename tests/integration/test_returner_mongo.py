"""mongo and mongo_return on SecantusDB (MongoDB wire protocol): what the contract suite does not cover.

Salt's documents and key escaping, the defects of Salt's returners ruled out (a client per call,
only the first event of a batch, a load stored again and again, map-reduce in ``get_jids``,
duplicates of a retried batch), the exclusive ``uri``/``host``, ``mongo.indexes``, retention of
events, oversized documents; and, on a private server started here, an outage and restart and
authentication. The other tests use the session's server (``mongo_db``: a database of their own).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pymongo
import pytest
from pymongo import monitoring

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.registry import create
from tests.conftest import start_secantus, stop_secantus


def opts(db: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"mongo.host": db["host"], "mongo.port": db["port"], "mongo.db": db["db"], "id": "testmaster", **extra}


@pytest.fixture
def raw(mongo_db: dict[str, Any]) -> Iterator[Any]:
    """The test's database through a plain pymongo client, to see what was stored."""
    client = pymongo.MongoClient(mongo_db["host"], mongo_db["port"], serverSelectionTimeoutMS=5000)
    yield client[mongo_db["db"]]
    client.close()


def ret(jid: str, minion: str, value: Any, fun: str = "test.ping", **extra: Any) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value,
            "retcode": 0, "success": True, **extra}


class Commands(monitoring.CommandListener):
    """Every command the returner's client sends, by name (pymongo's command monitoring)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Commands:
    """Counts the MongoClients made from here on (``made``) and records their commands."""
    listener = Commands()
    listener.made = 0  # type: ignore[attr-defined]
    real = pymongo.MongoClient

    def make(*args: Any, **kwargs: Any) -> pymongo.MongoClient:
        listener.made += 1  # type: ignore[attr-defined]
        return real(*args, event_listeners=[listener], **kwargs)

    monkeypatch.setattr(pymongo, "MongoClient", make)
    return listener


def sockets_to(port: int) -> int:
    """Established TCP connections of this process to ``port`` (/proc: its socket inodes)."""
    mine = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in mine:
                count += 1
    return count


def settled_sockets_to(port: int, want: int | None = None, timeout: float = 15.0) -> int:
    """``sockets_to`` once it is ``want`` (or, without ``want``, once it has not changed for half a
    second), or after ``timeout``: a closed client's monitor threads let go a moment later."""
    deadline = time.monotonic() + timeout
    last, since = sockets_to(port), time.monotonic()
    while time.monotonic() < deadline:
        if want is not None and last == want:
            break
        if want is None and time.monotonic() - since >= 0.5:
            break
        time.sleep(0.05)
        count = sockets_to(port)
        if count != last:
            last, since = count, time.monotonic()
    return last


# -- Salt's documents ---------------------------------------------------------------------------------
def test_salt_documents_and_key_escaping(mongo_db: dict[str, Any], raw: Any) -> None:
    r = create("mongo", opts(mongo_db))
    jid = gen_jid()
    load = {"fun": "state.apply", "arg": [{"pillar.key": 1}], "tgt": "web*", "tgt_type": "glob", "user": "root",
            "kwargs": {"a.b": {"$set": "x"}, "50%": "p", "c\\d": 1, "lit%2e": 2}, "jid": jid}
    r.save_loads([(jid, load, ["web1"])])
    value = {"file_|-/etc/motd_|-/etc/motd_|-managed": {"result": True, "changes": {"diff.lines": 3}},
             "list": [{"in.list": 1}], "n": 2 ** 70, "blob": b"\xff"}
    r.returns([ret(jid, "web1", value, "state.apply", out="highstate")])

    doc = raw.saltReturns.find_one({"jid": jid}, {"_id": 0})
    assert set(doc) == {"minion", "jid", "return", "fun", "full_ret", "out"}
    assert (doc["minion"], doc["jid"], doc["fun"], doc["out"]) == ("web1", jid, "state.apply", "highstate")
    dashed = {"file_|-/etc/motd_|-/etc/motd_|-managed": {"result": True, "changes": {"diff-lines": 3}},
              "list": [{"in-list": 1}], "n": str(2 ** 70), "blob": "\ufffd"}
    assert doc["return"] == dashed  # Salt's _remove_dots (here inside lists too)
    assert doc["full_ret"]["return"] == dashed and doc["full_ret"]["id"] == "web1"
    assert doc["full_ret"]["retcode"] == 0 and doc["full_ret"]["success"] is True

    stored = raw.jobs.find_one({"jid": jid}, {"_id": 0})
    assert stored["kwargs"] == {"a%2eb": {"%24set": "x"}, "50%25": "p", "c%5cd": 1, "lit%252e": 2}
    assert stored["arg"] == [{"pillar%2ekey": 1}]
    assert r.get_load(jid) == load  # read back with the keys as they were
    assert r.get_jid(jid)["web1"]["return"] == dashed

    r.event_returns([{"tag": f"salt/job/{jid}/new", "data": {"k.v": 1, "_stamp": "2024-01-05T12:34:56"}}])
    event = raw.events.find_one({"tag": f"salt/job/{jid}/new"}, {"_id": 0})
    assert event["data"] == {"k.v": 1, "_stamp": "2024-01-05T12:34:56"} and event["master_id"] == "testmaster"
    assert isinstance(event["alter_time"], dt.datetime)
    r.close()


def test_mongo_return_writes_the_same_documents(mongo_db: dict[str, Any], raw: Any) -> None:
    r = create("mongo_return", opts(mongo_db))
    assert not r.has_read_side() and not r.supports("save_loads") and not r.supports("event_returns")
    jid = gen_jid()
    r.returns([ret(jid, "web1", {"a.b": 1}), ret("req", "web1", "called locally", "test.echo")])
    doc = raw.saltReturns.find_one({"jid": jid}, {"_id": 0})
    assert doc["return"] == {"a-b": 1} and doc["full_ret"]["return"] == {"a-b": 1}
    local = raw.saltReturns.find_one({"fun": "test.echo"}, {"_id": 0})
    assert local["jid"] != "req" and len(local["jid"]) == 20  # a jid of its own, as Salt's req rule
    assert raw.jobs.count_documents({}) == 0  # mongo_return keeps no loads
    reader = create("mongo", opts(mongo_db))  # the mongo returner reads what mongo_return wrote
    assert reader.get_jid(jid)["web1"]["return"] == {"a-b": 1}
    r.close()
    reader.close()


# -- Salt's defects, ruled out ----------------------------------------------------------------------------
def test_one_pooled_client_per_returner(mongo_db: dict[str, Any], clients: Commands) -> None:
    """salt#55999: Salt made a MongoClient per call and never closed it."""
    before = settled_sockets_to(mongo_db["port"])  # other clients of this process, if any
    r = create("mongo", opts(mongo_db))
    for i in range(40):
        jid = gen_jid()
        r.save_loads([(jid, {"fun": "test.ping", "jid": jid}, None)])
        r.returns([ret(jid, f"m{i}", True)])
        r.event_returns([{"tag": f"salt/job/{jid}/ret/m{i}", "data": {}}])
        assert r.get_jid(jid) and r.get_load(jid)
        r.get_fun("test.ping")
        r.get_minions()
    assert clients.made == 1  # type: ignore[attr-defined]
    during = sockets_to(mongo_db["port"]) - before
    assert 1 <= during <= 3, during  # the pool's one connection and pymongo's monitors
    r.close()
    assert settled_sockets_to(mongo_db["port"], before) == before  # closed: nothing of it left open
    r.get_minions()  # a closed returner makes its client again, once
    assert clients.made == 2  # type: ignore[attr-defined]
    r.close()


def test_every_event_of_a_batch_is_stored(mongo_db: dict[str, Any], raw: Any, clients: Commands) -> None:
    r = create("mongo", opts(mongo_db))
    jid = gen_jid()
    r.event_returns([{"tag": f"salt/job/{jid}/ret/m{i}", "data": {"i": i}} for i in range(250)])
    assert raw.events.count_documents({}) == 250  # Salt's stored events[0] only
    assert sorted(d["data"]["i"] for d in raw.events.find({}, {"data": 1})) == list(range(250))
    assert clients.names.count("insert") == 1  # one insert_many for the batch
    r.close()


def test_a_repeated_load_is_stored_once(mongo_db: dict[str, Any], raw: Any) -> None:
    r = create("mongo", opts(mongo_db))
    jid = gen_jid()
    publish = {"fun": "test.ping", "tgt": "*", "jid": jid}
    r.save_loads([(jid, publish, None), (jid, {"fun": "a return's payload", "jid": jid}, None)])
    for n in range(5):  # Salt saved a load again for every return of the job
        r.save_loads([(jid, {"fun": f"again {n}", "jid": jid}, None)])
    assert raw.jobs.count_documents({"jid": jid}) == 1
    assert r.get_load(jid) == publish
    r.close()


def test_get_jids_without_map_reduce(mongo_db: dict[str, Any], raw: Any, clients: Commands) -> None:
    jids = [gen_jid() for _ in range(30)]
    # a jobs collection as Salt left it: a document per publish and another per return
    raw.jobs.insert_many([{"jid": j, "fun": "test.arg", "tgt": "*", "arg": [n]} for n, j in enumerate(jids)])
    raw.jobs.insert_many([{"jid": j, "fun": "saltutil.find_job", "id": "web1"} for j in jids[:10]])
    r = create("mongo", opts(mongo_db))
    listing = r.get_jids()
    assert sorted(listing) == jids
    assert all(listing[j]["Function"] == "test.arg" and listing[j]["Arguments"] == [n] for n, j in enumerate(jids))
    newest = r.get_jids_filter(5)
    assert [j["JID"] for j in newest] == jids[-5:]
    assert "find" in clients.names
    assert not {"mapReduce", "mapreduce"} & set(clients.names)  # Salt's get_jids used inline map-reduce
    r.close()


def test_retried_batch_is_not_duplicated(mongo_db: dict[str, Any], raw: Any) -> None:
    r = create("mongo", opts(mongo_db))
    jid = gen_jid()
    batch = [ret(jid, f"m{i:03d}", i) for i in range(200)]
    r.returns(batch)
    r.returns(batch)  # the outbox retried a batch that had been stored
    r.returns(batch[150:] + [ret(jid, f"m{i:03d}", i) for i in range(200, 220)])  # a half-stored one
    assert raw.saltReturns.count_documents({"jid": jid}) == 220
    unique = [i for i in raw.saltReturns.index_information().values() if i.get("unique")]
    assert [i["key"] for i in unique] == [[("jid", 1), ("minion", 1)]]
    r.close()


def test_salt_written_duplicates_fall_back_to_a_lookup(mongo_db: dict[str, Any], raw: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Salt never deduplicated: its saltReturns may repeat a (jid, minion), so no unique index."""
    raw.saltReturns.insert_many([{"minion": "old", "jid": "req", "fun": "test.ping", "return": True},
                                 {"minion": "old", "jid": "req", "fun": "test.ping", "return": True}])
    r = create("mongo", opts(mongo_db))
    jid = gen_jid()
    batch = [ret(jid, f"m{i}", i) for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="saline.returners.mongo"):
        r.returns(batch)
    assert "no unique (jid, minion) index" in caplog.text and "lookup" in caplog.text
    r.returns(batch + [ret(jid, "m20", 20), ret(jid, "m20", 20)])
    assert raw.saltReturns.count_documents({"jid": jid}) == 21
    # a batch never sent before: copies inside it left out, no lookup (the caller vouches for it)
    r.returns_first([ret(jid, "m21", 21), ret(jid, "m21", 21), ret(jid, "m0", 0)])
    assert raw.saltReturns.count_documents({"jid": jid}) == 23
    assert raw.saltReturns.count_documents({"jid": "req"}) == 2  # Salt's own documents stay as they are
    assert any(i["key"] == [("jid", 1), ("minion", 1)] for i in raw.saltReturns.index_information().values())
    r.close()


# -- options ----------------------------------------------------------------------------------------------
def test_uri_and_host_are_exclusive(mongo_db: dict[str, Any], raw: Any) -> None:
    uri = f"mongodb://{mongo_db['host']}:{mongo_db['port']}"
    for name in ("mongo", "mongo_return"):
        with pytest.raises(ConfigError) as info:
            create(name, {"mongo.uri": uri, "mongo.host": "127.0.0.1"})
        assert str(info.value) == f"returner {name}: set mongo.uri or mongo.host, not both"
    with pytest.raises(ConfigError) as info:
        create("mongo", {"mongo.uri": "mongodb://salt:p@ss@127.0.0.1/"})
    assert str(info.value).startswith("returner mongo: mongo.uri is not a MongoDB URI:") and "p@ss" not in str(info.value)
    with pytest.raises(ConfigError, match="must start with mongodb://"):
        create("mongo", {"mongo.uri": "http://127.0.0.1/"})
    # the URI's database, else mongo.db
    jid = gen_jid()
    named = create("mongo", {"mongo.uri": f"{uri}/{mongo_db['db']}", "mongo.db": "not_this_one"})
    unnamed = create("mongo", {"mongo.uri": f"{uri}/?appname=x", "mongo.db": mongo_db["db"]})
    named.returns([ret(jid, "a", 1)])
    unnamed.returns([ret(jid, "b", 2)])
    assert sorted(d["minion"] for d in raw.saltReturns.find({"jid": jid})) == ["a", "b"]
    named.close()
    unnamed.close()


def test_indexes_option(mongo_db: dict[str, Any], raw: Any) -> None:
    plain = create("mongo", opts(mongo_db))
    plain.init_schema()
    assert set(raw.saltReturns.index_information()) == {"_id_", "jid_1_minion_1"}
    assert set(raw.jobs.index_information()) == {"_id_", "jid_1"}
    indexed = create("mongo", opts(mongo_db, **{"mongo.indexes": True}))
    indexed.init_schema()
    assert set(raw.saltReturns.index_information()) == {"_id_", "jid_1_minion_1", "minion_1", "jid_1", "fun_1"}
    assert set(raw.events.index_information()) == {"_id_", "tag_1"}
    plain.close()
    indexed.close()


def test_clean_old_jobs_drops_old_events(mongo_db: dict[str, Any], raw: Any) -> None:
    r = create("mongo", opts(mongo_db, keep_jobs_seconds=3600))
    r.event_returns([{"tag": "fresh", "data": {}}])
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    raw.events.insert_one({"tag": "stale", "data": {}, "master_id": "testmaster", "alter_time": long_ago})
    raw.jobs.insert_many([{"jid": "20000101000000000000", "fun": "old"}, {"jid": "req", "fun": "not a jid"}])
    r.clean_old_jobs()
    assert [d["tag"] for d in raw.events.find()] == ["fresh"]
    assert [d["fun"] for d in raw.jobs.find()] == ["not a jid"]
    r.close()


def test_too_large_or_too_deep_is_one_line_and_stores_nothing_of_its_batch(mongo_db: dict[str, Any], raw: Any) -> None:
    r = create("mongo", opts(mongo_db))
    jid = gen_jid()
    big = "x" * (9 * 1024 * 1024)  # stored twice (return and full_ret): over the 16 MiB of a document
    with pytest.raises(ReturnerError) as info:
        r.returns([ret(jid, "small", 1), ret(jid, "big", big, "cmd.run")])
    message = str(info.value)
    assert message.startswith("returner mongo: the return of big for job " + jid) and "\n" not in message
    assert "as a BSON document" in message and not isinstance(info.value, BackendUnavailable)
    assert raw.saltReturns.count_documents({"jid": jid}) == 0  # the batch is refused whole, before sending
    r.returns([ret(jid, "small", 1)])
    assert raw.saltReturns.count_documents({"jid": jid}) == 1
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ReturnerError) as info:
        r.returns([ret(jid, "deep", deep)])
    assert str(info.value) == f"returner mongo: the return of deep for job {jid} is nested too deep to be stored"
    r.close()


# -- a private server: an outage, then authentication ---------------------------------------------------------
def test_outage_restart_and_authentication(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tmp_path / "secantus"
    proc = start_secantus(folder, port)
    try:
        base = {"mongo.host": "127.0.0.1", "mongo.port": port, "mongo.db": "salt", "mongo.timeout": 2}
        r = create("mongo", base)
        first = gen_jid()
        r.returns([ret(first, "m1", "before")])
        admin = pymongo.MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=5000)
        admin.admin.command("createUser", "salt", pwd="Mongo-Secret-5", roles=[{"role": "readWrite", "db": "salt"}])
        admin.close()

        stop_secantus(proc)
        with pytest.raises(BackendUnavailable) as info:
            r.returns([ret(gen_jid(), "m1", "during")])
        assert str(info.value) == f"returner mongo: cannot reach MongoDB at 127.0.0.1:{port}: connection refused"

        proc = start_secantus(folder, port, "--auth")
        # the same returner instance, not closed: its client finds the server again
        anonymous_error = None
        try:
            r.returns([ret(gen_jid(), "m1", "after")])
        except ReturnerError as exc:
            anonymous_error = str(exc)
        assert anonymous_error is not None and not anonymous_error.startswith("returner mongo: cannot reach")
        assert "asks for a user and password" in anonymous_error and "\n" not in anonymous_error
        r.close()

        good = create("mongo", {**base, "mongo.user": "salt", "mongo.password": "Mongo-Secret-5"})
        second = gen_jid()
        good.returns([ret(second, "m1", "with a user")])
        assert good.get_jid(first)["m1"]["return"] == "before"  # kept across the restart
        assert good.get_jid(second)["m1"]["return"] == "with a user"
        good.close()

        wrong = create("mongo", {**base, "mongo.user": "salt", "mongo.password": "Not-The-Secret"})
        with pytest.raises(ReturnerError) as info:
            wrong.returns([ret(gen_jid(), "m1", "never")])
        message = str(info.value)
        assert not isinstance(info.value, BackendUnavailable)
        assert message == ("returner mongo: authentication failed for user 'salt' on MongoDB at "
                           f"127.0.0.1:{port} (check mongo.user and mongo.password)")
        wrong.close()
    finally:
        stop_secantus(proc)
