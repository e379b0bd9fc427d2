"""The outbox seam (:mod:`saline.master.outbox`): one record per return, a cursor per returner.

The first part is the seam's contract, run against every implementation (``outbox`` fixture);
the rest is what is special to the SQLite file: a real file, real processes killed with SIGKILL,
real unwritable folders, the job cache kept in place.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.master.outbox import Burial, Outbox, OutboxError, Record, RecordTooLarge, Retry, SqliteOutbox
from tests.helpers import make_ret

ROOT = Path(__file__).resolve().parents[2]
MYSQL = (("mysql", None, None),)
REDIS = (("redis", None, None),)
JID = "20240101000000000000"


@pytest.fixture(params=["sqlite", "jetstream"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    """Each implementation of the seam: the SQLite file, and a JetStream stream on a real
    three-node NATS cluster (a cluster id of its own for each test)."""
    if request.param == "sqlite":
        box: Outbox = SqliteOutbox(tmp_path / "cache" / "outbox.db")
    else:
        from saline.cluster.bridge import NatsBridge
        from saline.master.outbox.jetstream import JetStreamOutbox
        from tests.conftest import nats_cluster_config

        config = nats_cluster_config(request.getfixturevalue("nats_cluster"))
        bridge = NatsBridge(config).connect()
        box = JetStreamOutbox(config, bridge, origin="test")
        request.addfinalizer(bridge.close)
    yield box
    box.close()


def is_jetstream(box: Outbox) -> bool:
    return box.path.__class__ is str and str(box.path).startswith("nats://")


def take_all(box: Outbox, returner: str, n: int) -> list:
    """Take until ``n`` rows (a take gives up to its limit: a stream may hand over part first)."""
    rows = box.take(returner, n)
    deadline = time.monotonic() + 5
    while len(rows) < n and time.monotonic() < deadline:
        rows += box.take(returner, n - len(rows), after=max(r.seq for r in rows) if rows else None)
    return rows


def eventually(check: Any, within: float = 3.0) -> bool:
    """``check()`` true now, or within a few seconds (a stream's consumer counts its acks a moment
    after they were sent)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rets(n: int, start: int = 0, route: Any = MYSQL, jid: str | None = None) -> list[Record]:
    out = []
    for i in range(start, start + n):
        j = jid or f"2024010100000000{i:04d}"
        out.append(Record("ret", make_ret(j, f"m{i}"), route, j, f"m{i}", "test.ping"))
    return out


def done(box: Outbox, returner: str, rows: list) -> None:
    box.settle(returner, rows, [r.seq for r in rows])


# -- the seam's contract ------------------------------------------------------------------------
def test_one_record_many_returners_each_with_its_cursor(outbox: Outbox) -> None:
    both = (("mysql", None, None), ("redis", "alt", {"db": 3}))
    outbox.put(rets(5, route=both))
    outbox.put([Record("event", {"tag": "salt/auth", "data": {"id": "m1"}}, REDIS, None, "salt/auth"),
                Record("load", {"jid": "j1", "load": {"fun": "test.ping", "arg": [1, {"k": b"\x00"}]},
                                "minions": ["m1"]}, (("mysql", "alt", {"db": "other", "port": 3307}),), "j1")])
    first = outbox.take("mysql", 3)
    assert [r.payload["id"] for r in first] == ["m0", "m1", "m2"]
    assert [r.seq for r in first] == sorted(r.seq for r in first)
    if not is_jetstream(outbox):
        # taken rows stay stored until settled: a new batch of the one consumer sees them again (a
        # JetStream consumer hands them out again after its ack wait, or at once when not tried)
        assert [r.seq for r in outbox.take("mysql", 3)] == [r.seq for r in first]
        first = outbox.take("mysql", 3)
    done(outbox, "mysql", first)
    rest = take_all(outbox, "mysql", 3)
    assert [r.kind for r in rest] == ["ret", "ret", "load"]
    load = rest[-1]
    assert load.payload == {"jid": "j1", "load": {"fun": "test.ping", "arg": [1, {"k": b"\x00"}]}, "minions": ["m1"]}
    assert (load.ret_config, load.ret_kwargs, load.attempts, load.first_failure) == \
        ("alt", {"db": "other", "port": 3307}, 0, None)
    # redis reads the same records with its own options, and the event only it gets
    taken = take_all(outbox, "redis", 6)
    assert [(r.kind, r.ret_config, r.ret_kwargs) for r in taken] == [("ret", "alt", {"db": 3})] * 5 + [("event", None, None)]
    counts = outbox.counts()
    assert counts["mysql"]["delivered"] == 3 and counts["mysql"]["pending"] == 3
    # (a consumer counts what it has not settled: the load, not for redis, until the take skipped it)
    assert counts["redis"]["pending"] in ((6, 7) if is_jetstream(outbox) else (6,)) and counts["redis"]["delivered"] == 0
    assert counts["mysql"]["last_success_time"] is not None
    assert outbox.has_pending("mysql") and outbox.next_due("mysql") <= time.time()
    done(outbox, "mysql", rest)
    assert eventually(lambda: not outbox.has_pending("mysql")) and outbox.take("mysql", 10) == []
    assert outbox.has_pending() and outbox.has_pending("redis")


def test_a_batch_fills_up_with_what_came_since(outbox: Outbox) -> None:
    outbox.put(rets(2))
    first = outbox.take("mysql", 10)
    outbox.put(rets(3, start=2))
    more = outbox.take("mysql", 10, after=max(r.seq for r in first))
    assert [r.payload["id"] for r in more] == ["m2", "m3", "m4"]
    done(outbox, "mysql", first + more)
    assert outbox.counts()["mysql"]["delivered"] == 5 and not outbox.has_pending("mysql")


def test_retry_waits_then_counts_attempts_and_error(outbox: Outbox) -> None:
    outbox.put(rets(3))
    rows = outbox.take("mysql", 10)
    assert not any(r.maybe_delivered for r in rows)  # handed out for the first time
    before = time.time()
    outbox.settle("mysql", rows, [rows[2].seq], [Retry([rows[0].seq, rows[1].seq], "BackendUnavailable: down", 1.5)])
    assert outbox.take("mysql", 10) == []  # not due yet
    if not is_jetstream(outbox):  # (a JetStream worker's take waits for the server, whenever)
        assert before + 1.5 <= outbox.next_due("mysql") <= time.time() + 1.5
    time.sleep(max(0.0, before + 1.55 - time.time()))
    later = outbox.take("mysql", 10)
    assert [r.seq for r in later] == [rows[0].seq, rows[1].seq]
    retried = later[0]
    assert retried.attempts == 1 and all(r.maybe_delivered for r in later)  # a retry may be stored already
    if is_jetstream(outbox):  # the stream keeps no error with a message: its age counts instead
        assert retried.first_failure == retried.enqueued
    else:
        assert retried.last_error == "BackendUnavailable: down" and before <= retried.first_failure <= time.time()
    first_failure = retried.first_failure
    outbox.settle("mysql", later, [later[1].seq], [Retry([retried.seq], "ReturnerError: still", 0)])
    again = outbox.take("mysql", 1)[0]
    assert again.attempts == 2 and again.first_failure == first_failure  # the first failure is kept
    c = outbox.counts()["mysql"]
    assert (c["pending"], c["delivered"], c["last_error"]) == (1, 2, "ReturnerError: still")
    assert c["last_error_time"] >= before
    if not is_jetstream(outbox):
        assert c["retrying"] == 1 and outbox.next_due("nobody") is None


def test_bury_dead_letters_and_replay(outbox: Outbox) -> None:
    outbox.put(rets(4))
    rows = outbox.take("mysql", 10)
    outbox.settle("mysql", rows, [rows[0].seq, rows[2].seq], [Retry([rows[1].seq], "ReturnerError: too long", 0)],
                  [Burial([rows[3].seq], "ReturnerError: too long")])
    retried = outbox.take("mysql", 10)
    outbox.settle("mysql", retried, burials=[Burial([retried[0].seq], "ReturnerError: too long")])
    assert outbox.take("mysql", 10) == []
    dead = outbox.dead_letters("mysql")
    assert [d["payload"]["id"] for d in dead] == ["m3", "m1"]
    assert dead[1]["payload"] == rows[1].payload and dead[1]["attempts"] == 2 and dead[0]["attempts"] == 1
    assert all(d["last_error"] == "ReturnerError: too long" and d["died"] >= d["enqueued"] for d in dead)
    assert dead[0]["first_failure"] is not None  # buried without a retry: its first failure is now
    assert outbox.dead_letters("mysql", limit=1) == dead[:1] and outbox.dead_letters("redis") == []
    c = outbox.counts()["mysql"]
    assert (c["pending"], c["dead"], c["buried"], c["delivered"]) == (0, 2, 2, 2)
    assert outbox.replay("mysql") == 2
    back = outbox.take("mysql", 10)
    assert [r.payload["id"] for r in back] == ["m3", "m1"] and all(r.attempts == 0 for r in back)
    assert all(r.maybe_delivered for r in back)  # a dead letter may have been stored before it died
    done(outbox, "mysql", back)
    c = outbox.counts()["mysql"]
    assert (c["pending"], c["dead"], c["delivered"]) == (0, 0, 4)
    assert outbox.replay("mysql") == 0


def test_rows_not_tried_come_back_as_they_were(outbox: Outbox) -> None:
    """A worker stopped in the middle of a batch settles only what it tried: the rest, and what
    follows, is taken again (nothing skipped)."""
    outbox.put(rets(6))
    rows = outbox.take("mysql", 10)
    outbox.settle("mysql", rows, [rows[0].seq, rows[1].seq, rows[4].seq], [Retry([rows[5].seq], "x", 0)])
    back = outbox.take("mysql", 10)
    if is_jetstream(outbox):  # each message on its own: m4 was acknowledged, m5 is back as a retry
        assert sorted(r.payload["id"] for r in back) == ["m2", "m3", "m5"]
    else:  # a cursor: it stays before the first row not tried, and m5's retry waits behind it
        assert [r.payload["id"] for r in back] == ["m2", "m3", "m4", "m5"]
        assert all(r.attempts == 0 for r in back)
    assert all(r.maybe_delivered for r in back)  # handed out before, whether or not tried
    done(outbox, "mysql", back)
    assert eventually(lambda: not outbox.has_pending("mysql"))


def test_a_batch_its_worker_gave_up_on_is_taken_again(outbox: Outbox) -> None:
    """A worker whose take or settle failed (the store unreachable for a moment) drops its batch
    and starts a new one: the rows it held come back in it, marked as maybe sent, however long
    the ack wait (a stream's worker must not go on reporting them in progress)."""
    outbox.put(rets(3))
    given_up = take_all(outbox, "mysql", 3)
    assert len(given_up) == 3
    back: list = []
    deadline = time.monotonic() + 5
    while len(back) < 3 and time.monotonic() < deadline:
        back += outbox.take("mysql", 10, after=max(r.seq for r in back) if back else None)
    assert sorted(r.payload["id"] for r in back) == ["m0", "m1", "m2"]
    assert all(r.maybe_delivered for r in back)
    done(outbox, "mysql", back)
    assert eventually(lambda: not outbox.has_pending("mysql"))
    assert outbox.counts()["mysql"]["delivered"] == 3


@pytest.mark.parametrize("outbox", ["jetstream"], indirect=True)  # a file's take is one read: nothing half-taken
def test_a_take_that_fails_half_way_gives_back_what_it_fetched(outbox: Outbox) -> None:
    """A stream's take that fails after its fetch (here the routes bucket unreadable) sends the
    records back at once, not after the ack wait (60 s), and holds none of them."""
    outbox.put(rets(3))
    real = outbox._route_for

    async def unreadable(rid: str) -> Any:
        raise ConnectionError("routes bucket unreadable")
    outbox._route_for = unreadable
    with pytest.raises(OutboxError, match="routes bucket unreadable"):
        outbox.take("mysql", 10)
    outbox._route_for = real
    assert outbox._taken.get("mysql", {}) == {}
    back = take_all(outbox, "mysql", 3)
    assert sorted(r.payload["id"] for r in back) == ["m0", "m1", "m2"] and all(r.maybe_delivered for r in back)
    done(outbox, "mysql", back)


def test_a_returner_seen_first_later_starts_where_the_log_is(outbox: Outbox) -> None:
    outbox.put(rets(3))
    outbox.put(rets(2, start=3, route=REDIS))
    assert [r.payload["id"] for r in outbox.take("redis", 10)] == ["m3", "m4"]
    assert [r.payload["id"] for r in outbox.take("mysql", 10)] == ["m0", "m1", "m2"]


def test_the_job_cache_holds_a_return_once_per_job_and_minion(tmp_path: Path) -> None:
    box = SqliteOutbox(tmp_path / "outbox.db", serves="saline_cache")
    try:
        both = (("saline_cache", None, None), ("mysql", None, None))
        box.put(rets(2, jid=JID, route=both))
        box.put(rets(2, jid=JID, route=both))  # resent, the master's own check bypassed
        box.put(rets(2, jid=JID, route=REDIS))  # the same returns for another returner: stored for it
        assert len(box.take("mysql", 10)) == 2 and len(box.take("redis", 10)) == 2
        assert box.returned(JID) == {"m0", "m1"}
    finally:
        box.close()


# -- the SQLite file ------------------------------------------------------------------------------
def test_the_job_cache_is_kept_in_place_and_pruned_after_keep_jobs(tmp_path: Path) -> None:
    from saline.jid import gen_jid
    from saline.returners.saline_cache import SalineCacheReturner

    JID = gen_jid()  # a job started now: kept for keep_jobs
    box = SqliteOutbox(tmp_path / "outbox.db", shared=True, serves="saline_cache")
    try:
        cache_and_mysql = (("saline_cache", None, None), ("mysql", None, None))
        box.put(rets(3, route=cache_and_mysql, jid=JID))
        box.put([Record("load", {"jid": JID, "load": {"fun": "test.ping", "jid": JID}, "minions": ["m0", "m1", "m2"]},
                        (("saline_cache", None, None),), JID)])
        cache = SalineCacheReturner({}, {"cachedir": str(tmp_path)})
        assert sorted(cache.get_jid(JID)) == ["m0", "m1", "m2"] and cache.get_load(JID)["fun"] == "test.ping"
        assert box.counts().get("saline_cache") is None  # nothing to deliver to it
        assert box.prune(keep_seconds=3600) == 0  # mysql has not delivered them, and they are the cache
        done(box, "mysql", box.take("mysql", 10))
        box.put(rets(1, start=9))  # a newer record (the newest always stays)
        assert box.prune(keep_seconds=3600) == 0  # delivered, but still the job cache
        assert box.prune(keep_seconds=0.000001) == 3  # older than keep_jobs: gone
        assert cache.get_jid(JID) == {}
        cache.close()
    finally:
        box.close()


def test_puts_and_replays_longer_than_one_insert_statement_keep_every_record_once_in_order(tmp_path: Path) -> None:
    """Records go in as INSERTs of up to ROWS_PER_INSERT rows: two whole statements and the rows
    left over, in one transaction, and the same for dead letters replayed."""
    from saline.master.outbox.sqlite import ROWS_PER_INSERT

    n = 2 * ROWS_PER_INSERT + 5
    box = SqliteOutbox(tmp_path / "outbox.db", serves="saline_cache")
    try:
        cache_and_mysql = (("saline_cache", None, None), ("mysql", None, None))
        other = "20240102000000000000"
        copies = rets(3, jid=other, route=cache_and_mysql)  # in the middle of the first statement
        records = rets(50, route=cache_and_mysql) + copies + copies + rets(n - 56, start=50, route=cache_and_mysql)
        box.put(records)
        kept = records[:53] + records[56:]  # a copy of a return the job cache holds is not stored again
        rows = take_all(box, "mysql", len(records))
        assert [(r.payload["jid"], r.payload["id"]) for r in rows] == [(rec.jid, rec.mid) for rec in kept]
        assert [r.seq for r in rows] == sorted(r.seq for r in rows) and len({r.seq for r in rows}) == len(kept)
        assert box.returned(other) == {"m0", "m1", "m2"}
        box.settle("mysql", rows, [], burials=[Burial([r.seq for r in rows], "ReturnerError: too long")])
        assert box.replay("mysql") == len(kept)
        back = take_all(box, "mysql", len(kept))
        assert sorted(r.payload["id"] for r in back) == sorted(rec.mid for rec in kept)
        assert len({r.seq for r in back}) == len(kept) and min(r.seq for r in back) > rows[-1].seq
    finally:
        box.close()


def test_delivered_records_are_pruned_and_sequences_never_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = SqliteOutbox(path)
    box.put(rets(5))
    rows = box.take("mysql", 10)
    done(box, "mysql", rows)
    assert box.prune(0) == 4  # the newest stays
    box.close()
    box = SqliteOutbox(path)
    try:
        box.put(rets(1, start=5))
        new = box.take("mysql", 10)
        assert [r.payload["id"] for r in new] == ["m5"] and new[0].seq > max(r.seq for r in rows)
    finally:
        box.close()


def test_counters_and_queue_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = SqliteOutbox(path)
    box.put(rets(10))
    rows = box.take("mysql", 10)
    box.settle("mysql", rows, [r.seq for r in rows[:6]] + [r.seq for r in rows[8:]],
               [Retry([rows[6].seq], "ReturnerError: x", 0)], [Burial([rows[7].seq], "ReturnerError: y")])
    box.close()
    box = SqliteOutbox(path)
    try:
        expected = {"delivered": 8, "pending": 1, "retrying": 1, "dead": 1, "buried": 1, "last_error": "ReturnerError: y"}
        assert {k: box.counts()["mysql"][k] for k in expected} == expected
        assert [r.payload["id"] for r in box.take("mysql", 10)] == ["m6"]
    finally:
        box.close()


def test_a_second_master_on_the_same_cachedir_is_refused(tmp_path: Path) -> None:
    for shared in (False, True):
        first = SqliteOutbox(tmp_path / f"outbox{shared}.db", shared=shared)
        try:
            with pytest.raises(OutboxError) as err:
                SqliteOutbox(tmp_path / f"outbox{shared}.db", shared=shared)
            assert "another saline-master" in str(err.value) and "\n" not in str(err.value)
        finally:
            first.close()
        SqliteOutbox(tmp_path / f"outbox{shared}.db", shared=shared).close()  # free once the first is closed


def test_shared_outbox_one_master_and_its_delivery_processes(tmp_path: Path) -> None:
    """A master whose returners run in processes opens the file shared: a delivery process (no
    guard) takes and settles in the same file, and learns the routes the master adds."""
    path = tmp_path / "outbox.db"
    master = SqliteOutbox(path, shared=True)
    try:
        worker = SqliteOutbox(path, shared=True, guard=False)
        try:
            master.put(rets(3))
            taken = worker.take("mysql", 10)
            assert [r.payload["id"] for r in taken] == ["m0", "m1", "m2"]
            worker.settle("mysql", taken, [r.seq for r in taken[:2]], [Retry([taken[2].seq], "x", 0)])
            master.put(rets(1, start=3, route=(("mysql", "alt", None),)))  # a route the worker has not seen
            assert [(r.payload["id"], r.ret_config) for r in worker.take("mysql", 10)] == [("m2", None), ("m3", "alt")]
        finally:
            worker.close()
        assert master.counts()["mysql"]["delivered"] == 2
    finally:
        master.close()


CHILD = textwrap.dedent("""
    import sys
    from saline.master.outbox import Record, SqliteOutbox
    box = SqliteOutbox(sys.argv[1])
    route = (("mysql", None, None),)
    n = 0
    while True:
        box.put([Record("ret", {"id": f"m{n + k}", "jid": "20240101000000000000"}, route, "20240101000000000000",
                        f"m{n + k}") for k in range(10)])
        n += 10
        sys.stdout.write(f"{n}\\n")
        sys.stdout.flush()
""")


def test_records_survive_a_sigkill_of_the_writer(tmp_path: Path) -> None:
    """Everything ``put`` returned for is there after the process is killed mid-stream."""
    path = tmp_path / "outbox.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    acked = 0
    assert child.stdout is not None
    for line in child.stdout:
        acked = int(line)
        if acked >= 5000:
            break
    child.send_signal(signal.SIGKILL)  # while it is still writing
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    box = SqliteOutbox(path)
    try:
        ids = {r.payload["id"] for r in box.take("mysql", 1_000_000)}
    finally:
        box.close()
    assert {f"m{i}" for i in range(acked)} <= ids  # every acknowledged record
    assert len(ids) >= acked and len(ids) % 10 == 0  # and whole transactions only


def test_put_is_one_transaction(outbox: Outbox) -> None:
    class Unpackable:
        def __str__(self) -> str:
            raise ValueError("no text either")

    with pytest.raises(OutboxError, match="cannot encode"):
        outbox.put(rets(3) + [Record("ret", {"x": Unpackable()}, MYSQL, "j", "x")])
    assert outbox.take("mysql", 10) == []
    outbox.put(rets(1))  # a route learnt in the failed transaction is stored again with the next one
    assert len(outbox.take("mysql", 10)) == 1


def test_a_record_larger_than_the_store_takes_is_named_and_nothing_stored(outbox: Outbox) -> None:
    big = Record("ret", make_ret("20240101000000009999", "big", "test.echo", "x" * (9 * 1024 * 1024)), MYSQL,
                 "20240101000000009999", "big", "test.echo")
    if not is_jetstream(outbox):  # a file takes it
        outbox.put(rets(1) + [big])
        assert [r.payload["id"] for r in take_all(outbox, "mysql", 2)] == ["m0", "big"]
        return
    with pytest.raises(RecordTooLarge) as raised:  # the servers' max_payload (8 MiB here) does not
        outbox.put(rets(2) + [big] + rets(1, start=2))
    assert raised.value.indexes == [2] and raised.value.sizes[0] > 9 * 1024 * 1024
    assert "max_payload" in raised.value.why(0) and "9.0 MiB, more than the 8.0 MiB" in raised.value.why(0)
    assert outbox.take("mysql", 10) == []  # nothing of that put was stored: the caller puts the rest again
    outbox.put(rets(3))
    assert len(take_all(outbox, "mysql", 3)) == 3


def test_a_resent_record_the_stream_calls_a_duplicate_but_does_not_hold_is_stored(outbox: Outbox) -> None:
    if not is_jetstream(outbox):  # a file has no duplicate window: a copy resent is simply stored once
        return
    outbox.put(rets(1))
    (first,) = take_all(outbox, "mysql", 1)
    done(outbox, "mysql", [first])
    # the stream forgets the record but keeps its message id in the duplicate window, as it does
    # for a write dropped in a leader change: the copy a minion resends is called a duplicate
    bridge, stream = outbox.bridge, outbox.config.stream
    bridge.call(bridge.js.delete_msg(stream, first.seq), timeout=10)
    outbox.put(rets(1))
    (again,) = take_all(outbox, "mysql", 1)
    assert again.payload["id"] == "m0" and again.seq > first.seq
    stored = bridge.call(bridge.js.get_msg(stream, seq=again.seq), timeout=10)
    assert stored.headers["Nats-Msg-Id"].startswith(f"ret/{first.payload['jid']}/m0/")
    done(outbox, "mysql", [again])
    outbox.put(rets(1))  # a true duplicate (the stream holds it): acknowledged, not stored again
    assert take_all(outbox, "mysql", 1) == []


def test_put_from_many_threads_while_draining(outbox: Outbox) -> None:
    """Concurrent writers and a consumer: every record delivered exactly once."""
    seen: list[str] = []
    stop = threading.Event()

    def drain() -> None:
        while True:
            rows = outbox.take("mysql", 200)
            if not rows and stop.is_set() and len(seen) >= 2000:
                return
            seen.extend(r.payload["id"] for r in rows)
            done(outbox, "mysql", rows)

    def write(k: int) -> None:
        for i in range(100):
            outbox.put([Record("ret", {"id": f"w{k}-{i}-{j}"}, MYSQL, f"j{k}-{i}", f"{j}") for j in range(5)])

    consumer = threading.Thread(target=drain)
    consumer.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    consumer.join(30)
    assert len(seen) == 2000 and len(set(seen)) == 2000
    assert outbox.counts()["mysql"]["delivered"] == 2000


def test_what_an_earlier_delivery_process_may_have_sent_is_marked(tmp_path: Path) -> None:
    """A delivery process that opens the file cannot tell which of the records already there its
    killed predecessor sent: those may be stored, the records stored after it opened are not."""
    path = tmp_path / "cache" / "outbox.db"
    master = SqliteOutbox(path, shared=True)
    master.put(rets(2))
    worker = SqliteOutbox(path, shared=True, guard=False)
    master.put(rets(2, start=2))
    rows = worker.take("mysql", 10)
    assert [(r.payload["id"], r.maybe_delivered) for r in rows] == \
        [("m0", True), ("m1", True), ("m2", False), ("m3", False)]
    worker.close()
    master.close()


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)  # left by an older version
    box = SqliteOutbox(path)
    try:
        box.put(rets(1))
        for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm"):
            if (tmp_path / name).exists():
                assert (tmp_path / name).stat().st_mode & 0o077 == 0, name
    finally:
        box.close()


# -- unwritable places ---------------------------------------------------------------------------
OPEN_AND_PUT = textwrap.dedent("""
    import resource, signal, sys
    from saline.master.outbox import OutboxError, Record, SqliteOutbox
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if limit:  # a file size limit: the disk is "full" at that size
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    route = (("mysql", None, None),)
    try:
        box = SqliteOutbox(sys.argv[1])
        for i in range(10000):
            box.put([Record("ret", {"id": "m", "return": "x" * 4000}, route, f"j{i}", "m")])
    except OutboxError as exc:
        print("OutboxError:", exc)
    else:
        print("no error")
    if limit:  # space is back: the same outbox takes writes again
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        box.put([Record("ret", {"id": "after", "return": "x"}, route, "after", "m")])
        box.close()
""")


def _drop_dac_override() -> None:
    """In the child before exec: drop root's power to write where the mode bits say no (Linux
    capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave the bounding set, so the exec'd
    Python runs without them), as ``setpriv --bounding-set=-dac_override`` does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(97)


def test_read_only_cache_folder_is_one_line_outbox_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(tmp_path, 0o755)
    cache.chmod(0o555)
    result = subprocess.run([sys.executable, "-c", OPEN_AND_PUT, str(cache / "outbox.db")], capture_output=True,
                            text=True, cwd=ROOT, timeout=60,
                            preexec_fn=_drop_dac_override if os.geteuid() == 0 else None)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("OutboxError: outbox "), result.stdout + result.stderr
    assert str(cache) in lines[0] and "not writable" in lines[0]
    assert "Traceback" not in result.stderr


def test_disk_full_while_running_is_one_line_outbox_error(tmp_path: Path) -> None:
    limit = 2 * 1024 * 1024
    result = subprocess.run([sys.executable, "-c", OPEN_AND_PUT, str(tmp_path / "outbox.db"), str(limit)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("OutboxError: outbox "), result.stdout + result.stderr
    # SQLite says "database or disk is full" or "disk I/O error (SQLITE_IOERR_WRITE)" by where it hit
    assert re.search(r"cannot write items: (database or disk is full|disk I/O error)", lines[0]), lines[0]
    assert result.returncode == 0, result.stderr
    # what was stored before the disk filled up is intact, and so is what came after
    box = SqliteOutbox(tmp_path / "outbox.db")
    try:
        stored = box.take("mysql", 100_000)
        assert len(stored) > 50 and all(r.payload["return"] == "x" * 4000 for r in stored[:-1])
        assert stored[-1].payload["id"] == "after"
    finally:
        box.close()
