"""The ``nats`` returner on a real three-node NATS JetStream cluster (TLS, users with permissions).

What the contract suite (tests/contract, case ``nats``) does not show: the job cache read side
against records the masters' own JetStream outbox stored (served, two routes, minion ids with
dots, a job large enough for the ordered consumer, two masters' connections giving the same
answers, a master's restricted NATS user); JSON published for other consumers, read by a
subscriber on another connection (core NATS) and from a stream (JetStream, acknowledged, stored
once); refusals and outages as one line.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Awaitable, Callable, Iterator

import nats
import nats.errors
import pytest

from saline.cluster.bridge import NatsBridge
from saline.cluster.config import ClusterConfig
from saline.config import ConfigError
from saline.jid import gen_jid
from saline.master.outbox.base import Record
from saline.master.outbox.jetstream import JetStreamOutbox
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.conftest import nats_cluster_config, unique_name
from tests.contract.cases.postgres import closed_port
from tests.helpers import make_ret
from tests.helpers.natscluster import NatsCluster, NatsUser

NATS = (("nats", None, None),)
NATS_MYSQL = (("nats", None, None), ("mysql", None, None))
MYSQL_ALT = (("mysql", "alt", {"db": "other"}),)


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def master_opts_for(base: dict[str, Any], c: ClusterConfig, **extra: Any) -> dict[str, Any]:
    """A master of cluster ``c``, with the nats job cache (the default in a cluster)."""
    return {**base, "cluster_id": c.cluster_id, "nats_servers": list(c.servers), "nats_user": c.user,
            "nats_password": c.password, "nats_tls_ca": c.tls_ca, "nats_tls_cert": c.tls_cert,
            "nats_tls_key": c.tls_key, "master_job_cache": "nats", "keep_jobs_seconds": 3600, **extra}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text.startswith("returner nats: "), text
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture
def made() -> Iterator[list[Any]]:
    """Returners and outboxes to close after the test."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close()


# -- the job cache ----------------------------------------------------------------------------------
def test_job_cache_reads_what_the_masters_outbox_stored(nats_cluster: NatsCluster, master_opts: dict,
                                                        made: list) -> None:
    """As the master of cluster ``rt`` logs in (its restricted user): records put by the JetStream
    outbox that serves the nats job cache, read back by the returner, and by a second master's
    returner on a connection of its own, with the same answers."""
    c = nats_cluster_config(nats_cluster, "rt", user="rt")
    bridge = NatsBridge(c).connect()
    made.append(bridge)
    box = JetStreamOutbox(c, bridge, origin="m1", serves="nats", keep_seconds=3600)
    made.append(box)
    fun = f"test.{unique_name('f')}"  # the stream of cluster rt is the session's: a function of its own
    old, new, sched, big = gen_jid(), gen_jid(), gen_jid(), gen_jid()
    dotted = ["web1.example.com", "db.1*x>y", "plain"]
    load = {"fun": fun, "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root", "jid": new}
    records = [
        Record("load", {"jid": old, "load": {**load, "jid": old}, "minions": dotted}, NATS, old),
        Record("load", {"jid": new, "load": load, "minions": dotted}, NATS_MYSQL, new),
        # the second master stored the same load under its own route: the job has one load
        Record("load", {"jid": new, "load": {**load, "tgt": "second"}, "minions": None}, MYSQL_ALT, new),
        Record("load", {"jid": big, "load": {**load, "fun": "test.echo", "jid": big}, "minions": []}, NATS, big),
    ]
    records += [Record("ret", make_ret(old, m, fun, f"old {m}"), NATS, old, m, fun) for m in dotted]
    for m in dotted[:2]:  # stored twice (a --return_kwargs route too): one return per minion
        ret = make_ret(new, m, fun, f"new {m}")
        records += [Record("ret", ret, NATS_MYSQL, new, m, fun), Record("ret", ret, MYSQL_ALT, new, m, None)]
    # a minion's own scheduled job: a return without a load
    records.append(Record("ret", make_ret(sched, "plain", fun, "scheduled"), NATS, sched, "plain", fun))
    records += [Record("ret", make_ret(big, f"m{i:03d}", "test.echo", {"i": i, "b": b"\xff"}), NATS, big,
                       f"m{i:03d}", "test.echo") for i in range(150)]
    records.append(Record("event", {"tag": f"salt/job/{new}/new", "data": {"jid": new}}, NATS, None, "salt/job"))
    box.put(records)

    mine = registry.create("nats", master_opts_for(master_opts, c))
    made.append(mine)
    # another master: its own connection, to one node only, as the NKey-less admin... of the same cluster id
    a = nats_cluster_config(nats_cluster, "rt", user="admin")
    other = registry.create("nats", master_opts_for(master_opts, a, nats_servers=[nats_cluster.urls[2]]))
    made.append(other)
    assert mine.master_connection and other.master_connection
    answers = []
    for r in (mine, other):
        got = r.get_jid(new)
        assert got == {m: make_ret(new, m, fun, f"new {m}") for m in dotted[:2]}
        assert set(r.get_jid(old)) == set(dotted)
        assert r.get_load(new) == {**load, "Minions": sorted(dotted)}  # the first load stored
        assert r.get_load(gen_jid()) == {} and r.get_jid(gen_jid()) == {}
        # 150 returns: read by an ordered consumer, bytes as text
        large = r.get_jid(big)
        assert len(large) == 150 and large["m149"]["return"] == {"i": 149, "b": "\ufffd"}
        jobs = r.get_jids()
        assert {old, new, big} <= set(jobs) and jobs[new]["Function"] == fun
        assert [j["JID"] for j in r.get_jids_filter(2)] == [new, big]
        assert set(dotted) | {"m000", "m149"} <= set(r.get_minions())
        latest = r.get_fun(fun)
        assert latest == {"web1.example.com": make_ret(new, "web1.example.com", fun, "new web1.example.com"),
                          "db.1*x>y": make_ret(new, "db.1*x>y", fun, "new db.1*x>y"),
                          "plain": make_ret(sched, "plain", fun, "scheduled")}
        assert r.get_fun("no.such") == {}
        answers.append((r.get_jid(old), r.get_jids_filter(5), r.get_fun(fun)))
    assert answers[0] == answers[1]


def test_read_side_outside_a_cluster_is_one_config_line(nats_cluster: NatsCluster, master_opts: dict,
                                                        made: list) -> None:
    c = nats_cluster_config(nats_cluster, unique_name("t"))
    r = registry.create("nats", {**master_opts, "nats.servers": list(c.servers), "nats.tls_ca": c.tls_ca,
                                 "nats.tls_cert": c.tls_cert, "nats.tls_key": c.tls_key})
    made.append(r)
    for call in (lambda: r.get_jid(gen_jid()), r.get_jids, r.get_minions, lambda: r.get_fun("test.ping")):
        with pytest.raises(ConfigError, match=r"^returner nats: the job cache .* needs the master in a cluster"):
            call()
    with pytest.raises(ConfigError, match="nats.servers is not set"):
        registry.create("nats", master_opts)
    with pytest.raises(ConfigError, match=r"subject 'salt\.\{jid\}\.\{minion\}': unknown field \{minion\}"):
        registry.create("nats", {**master_opts, "nats.servers": list(c.servers), "nats.subject": "salt.{jid}.{minion}"})
    with pytest.raises(ConfigError, match="not a valid NATS subject"):
        registry.create("nats", {**master_opts, "nats.servers": list(c.servers), "nats.subject": "salt..{id}"})


# -- JSON for other consumers -------------------------------------------------------------------------
def publisher_opts(base: dict[str, Any], cluster: NatsCluster, **extra: Any) -> dict[str, Any]:
    """A single master (no cluster) publishing with the ``pub`` user."""
    certs = cluster.certs
    return {**base, "nats.servers": cluster.urls, "nats.user": "pub", "nats.password": cluster.users["pub"].password,
            "nats.tls_ca": str(certs["ca"]), "nats.tls_cert": str(certs["client_cert"]),
            "nats.tls_key": str(certs["client_key"]), "event_return": "nats", **extra}


class Subscriber:
    """A subscriber on a connection of its own (another program reading what saline publishes)."""

    def __init__(self, cluster: NatsCluster, subject: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.got: list[tuple[str, Any]] = []

        async def start() -> Any:
            nc = await nats.connect(**cluster.connect_options("admin"))

            async def cb(msg: Any) -> None:
                self.got.append((msg.subject, json.loads(msg.data)))
            await nc.subscribe(subject, cb=cb)
            await nc.flush()
            return nc
        self.nc = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def wait(self, n: int, within: float = 5.0) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # nothing more should come
        return list(self.got)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_json_on_subjects_read_by_a_subscriber(nats_cluster: NatsCluster, master_opts: dict, made: list) -> None:
    sub = Subscriber(nats_cluster, "salt.>")
    made.append(sub)
    r = registry.create("nats", publisher_opts(master_opts, nats_cluster))
    made.append(r)
    assert not r.is_cache
    jid = gen_jid()
    rets = [make_ret(jid, "web1.example.com", "test.ping", True),
            make_ret(jid, "db1", "cmd.run", {"stdout": "ünï", "raw": b"\xff"}, retcode=1, success=False)]
    r.returns(rets)
    r.returns(rets)  # a batch the outbox retries is not sent twice
    tag = f"salt/job/{jid}/ret/web1.example.com"
    r.event_returns([{"tag": tag, "data": {"jid": jid, "id": "web1.example.com", "n": [1, None]}}])
    got = sub.wait(3)
    assert got == [
        (f"salt.job.{jid}.ret.web1%2Eexample%2Ecom", rets[0]),
        (f"salt.job.{jid}.ret.db1", {**rets[1], "return": {"stdout": "ünï", "raw": "\ufffd"}}),
        (f"salt.event.salt.job.{jid}.ret.web1%2Eexample%2Ecom",
         {"tag": tag, "data": {"jid": jid, "id": "web1.example.com", "n": [1, None]}}),
    ]
    # a subject of the user's choosing, with the function in it
    custom = registry.create("nats", publisher_opts(master_opts, nats_cluster, **{"nats.subject": "salt.ops.{fun}.{id}"}))
    made.append(custom)
    custom.returns([make_ret(jid, "web2", "state.apply", {"a": 1})])
    assert sub.wait(4)[3] == ("salt.ops.state%2Eapply.web2", make_ret(jid, "web2", "state.apply", {"a": 1}))
    # no cluster: loads are not published (nothing to read them back from)
    custom.save_loads([(jid, {"fun": "test.ping"}, None)])
    assert len(sub.wait(5, within=0.3)) == 4


def test_jetstream_stream_acknowledged_and_stored_once(nats_cluster: NatsCluster, master_opts: dict,
                                                       made: list) -> None:
    r = registry.create("nats", publisher_opts(master_opts, nats_cluster, **{"nats.stream": "SALT_RT"}))
    made.append(r)
    r.init_schema()  # creates SALT_RT on salt.job.*.ret.* and salt.event.> (or finds it)
    r.init_schema()
    r.check()
    jid = gen_jid()
    rets = [make_ret(jid, f"web{i}.example.com", "test.echo", i) for i in range(300)]
    r.returns(rets)
    r.close()
    r.returns(rets)  # a new connection, its memory of what was sent gone: the stream's dedupe keeps one
    r.event_returns([{"tag": f"salt/job/{jid}/new", "data": {"jid": jid}}] * 2)  # the same event twice: once

    async def read() -> tuple[dict[str, int], list[Any]]:
        nc = await nats.connect(**nats_cluster.connect_options("admin"))
        js = nc.jetstream()
        counts = (await js.stream_info("SALT_RT", subjects_filter=f"salt.job.{jid}.ret.*")).state.subjects or {}
        first = await js.get_msg("SALT_RT", subject=f"salt.job.{jid}.ret.web7%2Eexample%2Ecom")
        event = await js.get_msg("SALT_RT", subject=f"salt.event.salt.job.{jid}.new")
        events = (await js.stream_info("SALT_RT", subjects_filter=f"salt.event.salt.job.{jid}.>")).state.subjects
        await nc.close()
        return {**counts, **(events or {})}, [json.loads(first.data), json.loads(event.data), first.headers]
    counts, (ret7, event, headers) = run(read)
    assert len(counts) == 301 and set(counts.values()) == {1}
    assert ret7 == rets[7] and event == {"tag": f"salt/job/{jid}/new", "data": {"jid": jid}}
    assert headers["Nats-Msg-Id"] == f"ret/{jid}/web7.example.com"


def test_refused_and_too_large_messages_fail_alone_in_one_line(nats_cluster: NatsCluster, master_opts: dict,
                                                               made: list) -> None:
    sub = Subscriber(nats_cluster, "salt.>")
    made.append(sub)
    jid = gen_jid()
    # the pub user may not publish outside salt.>: the server's refusal, with the subject
    refused = registry.create("nats", publisher_opts(master_opts, nats_cluster, **{"nats.subject": "other.{id}"}))
    made.append(refused)
    with pytest.raises(ReturnerError) as info:
        refused.returns([make_ret(jid, "web1", "test.ping")])
    assert not isinstance(info.value, BackendUnavailable)
    assert 'permissions violation for publish to "other.web1"' in one_line(info.value)
    # a return over the server's max_payload (8 MiB here) fails alone; the others are delivered once
    r = registry.create("nats", publisher_opts(master_opts, nats_cluster))
    made.append(r)
    rets = [make_ret(jid, "small1", "test.ping"), make_ret(jid, "huge", "cmd.run", "x" * (9 << 20)),
            make_ret(jid, "small2", "test.ping")]
    for tried in (3, 1):  # again (the outbox retrying): only the one that failed is sent
        with pytest.raises(ReturnerError) as info:
            r.returns(rets)
        assert not isinstance(info.value, BackendUnavailable)
        assert f"1 of {tried} message(s) not delivered; the return of huge for job" in one_line(info.value)
        assert "9.0 MiB, larger than the server's max_payload (8 MiB)" in str(info.value)
    assert [s for s, _ in sub.wait(2)] == [f"salt.job.{jid}.ret.small1", f"salt.job.{jid}.ret.small2"]


def test_outage_is_one_line_backend_unavailable(master_opts: dict, made: list) -> None:
    """An unreachable server fails fast; a cluster stopped under a connected returner too, on both
    sides; once it is back, the same instances work again."""
    bad = registry.create("nats", {**master_opts, "nats.servers": [f"nats://127.0.0.1:{closed_port()}"],
                                   "nats.password": "Nats-Secret-0"})
    made.append(bad)
    started = time.monotonic()
    for call in (lambda: bad.returns([make_ret(gen_jid(), "m", "test.ping")]), bad.check):
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert "Nats-Secret-0" not in one_line(info.value) and "127.0.0.1" in str(info.value)
    assert time.monotonic() - started < 10

    cluster = NatsCluster(users=[NatsUser("admin", password=unique_name("pw"))]).start()
    mine: list[Any] = []
    try:
        stopped_cluster(cluster, master_opts, mine)
    finally:
        for r in mine:
            r.close()
        cluster.stop()


def stopped_cluster(cluster: NatsCluster, master_opts: dict, mine: list) -> None:
    c = nats_cluster_config(cluster, unique_name("t"))
    # its own connection (an inbox prefix of its own), so that the test can close it
    opts = master_opts_for(master_opts, c, **{"nats.inbox_prefix": f"_INBOX_{c.cluster_id}", "nats.timeout": 3})
    cache = registry.create("nats", opts)
    mine.append(cache)
    cache.init_schema()
    jid = gen_jid()
    cache.returns([make_ret(jid, "web1", "test.ping")])
    publisher = registry.create("nats", {**master_opts, "nats.servers": list(c.servers), "nats.user": "admin",
                                         "nats.password": c.password, "nats.tls_ca": c.tls_ca,
                                         "nats.tls_cert": c.tls_cert, "nats.tls_key": c.tls_key, "nats.timeout": 3})
    mine.append(publisher)
    publisher.returns([make_ret(jid, "web1", "test.ping")])

    for node in range(3):
        cluster.kill(node)
    for call in (lambda: cache.get_jid(jid), lambda: cache.returns([make_ret(jid, "web2", "test.ping")]),
                 lambda: publisher.returns([make_ret(jid, "web2", "test.ping")]), cache.check):
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            call()
        assert time.monotonic() - started < 12, "waited too long"
        one_line(info.value)

    restarts = [threading.Thread(target=cluster.restart, args=(node, 60)) for node in range(3)]
    for t in restarts:
        t.start()
    for t in restarts:
        t.join()
    deadline = time.monotonic() + 30
    while True:  # the connections come back by themselves; the stream elects a leader
        try:
            cache.returns([make_ret(jid, "web2", "test.ping")])
            publisher.returns([make_ret(jid, "web2", "test.ping")])
            break
        except BackendUnavailable:
            assert time.monotonic() < deadline, "not back 30 s after the cluster"
            time.sleep(0.2)
    assert set(cache.get_jid(jid)) == {"web1", "web2"}
