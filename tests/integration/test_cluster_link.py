"""What a master hears from the others (saline.cluster.link) while its NATS connection is down.

Two masters' links on a real three-node NATS cluster of the test's own (a node is killed): master
B is connected through one node only; while that node is down, master A announces a job and
stores a return. Plain NATS subscribers never get what was published while they were away; after
B reconnects it reads both from the streams that stored them, and hands each over once.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from typing import Any, Iterator

import pytest

from saline import recordlog
from saline.cluster.bridge import NatsBridge
from saline.cluster.config import ClusterConfig
from saline.cluster.link import ClusterLink
from tests.helpers.natscluster import NatsCluster, NatsUser, saline_permissions

CLUSTER_ID = "lk"


class MasterSide:
    """A master's end of the link: its own loop (as the master's), what reached it."""

    def __init__(self, nats: NatsCluster, name: str, servers: tuple[str, ...]) -> None:
        user = nats.users[CLUSTER_ID]
        self.config = ClusterConfig(cluster_id=CLUSTER_ID, servers=servers, user=user.name, password=user.password,
                                    tls_ca=str(nats.certs["ca"]), tls_cert=str(nats.certs["client_cert"]),
                                    tls_key=str(nats.certs["client_key"]), replicas=3, connect_timeout=3,
                                    name=f"test {name}")
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.jobs: list[str] = []
        self.records: list[tuple[str, str]] = []
        self.bridge = NatsBridge(self.config).connect()
        self.link = ClusterLink(self.bridge, self.config, name, self.loop,
                                on_job=lambda job: self.jobs.append(job["jid"]),
                                on_record=lambda kind, subject, headers, payload: self.records.append((kind, subject)),
                                connected=set, keep_seconds=3600)
        self.link.start()

    def close(self) -> None:
        self.link.stop()
        self.bridge.close()
        self.loop.call_soon_threadsafe(self.loop.stop)


def wait(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds} s")
        time.sleep(0.05)


def retry(call: Any, seconds: float = 30) -> Any:
    """``call()`` until it works (a killed node may have led the stream: an election follows)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="module")
def nats() -> Iterator[NatsCluster]:
    names = ClusterConfig(cluster_id=CLUSTER_ID, servers=())
    pub, sub, inbox = saline_permissions(CLUSTER_ID, names.streams(), names.buckets())
    user = NatsUser(CLUSTER_ID, password=secrets.token_hex(12), publish=pub, subscribe=sub, inbox_prefix=inbox)
    with NatsCluster(users=[user], no_advertise=True) as cluster:  # B stays on its one node
        yield cluster


def test_what_was_announced_while_a_master_was_disconnected_reaches_it_once(nats: NatsCluster) -> None:
    a = MasterSide(nats, "A", tuple(nats.urls[1:]))
    b = MasterSide(nats, "B", (nats.urls[0],))  # through node 0 only
    try:
        # the records stream is the outbox's: made here as a master makes it
        retry(lambda: a.bridge.call(a.bridge.js.add_stream(**a.config.records_stream(3600)), timeout=15))
        # B's subscription reaches the nodes A publishes to through the routes a moment after B
        # made it: announced again until B hears it (a jid is handed over once however often)
        deadline = time.monotonic() + 10
        while not b.jobs and time.monotonic() < deadline:
            a.link.announce_job("20261207000000000001", {"fun": "test.ping"}, {"fun": "test.ping"}, ["m1"], 5,
                                b"wire1")
            time.sleep(0.5)
        wait(lambda: b.jobs == ["20261207000000000001"], 1, "live announcement on B")

        nats.kill(0)
        wait(lambda: not b.bridge.connected.is_set(), 10, "B to notice its node is gone")
        retry(lambda: a.link.announce_job("20261207000000000002", {"fun": "test.ping"}, {"fun": "test.ping"},
                                          ["m2"], 5, b"wire2"))
        ret = recordlog.pack({"jid": "20261207000000000002", "id": "m2", "return": True})
        subject = f"saline.{CLUSTER_ID}.rec.ret.20261207000000000002.m2"
        retry(lambda: a.bridge.call(a.bridge.js.publish(subject, ret, headers={"Saline-Origin": "A"}), timeout=10))
        time.sleep(0.5)
        assert b.jobs == ["20261207000000000001"] and b.records == []  # B heard nothing meanwhile

        nats.restart(0)
        wait(lambda: "20261207000000000002" in b.jobs, 60, "the missed job on B after its reconnect")
        wait(lambda: b.records == [("ret", subject)], 30, "the missed return on B after its reconnect")
        time.sleep(1.0)
        # each once: the live announcement of job 1 (read again from a moment before the outage) is not
        # handed over a second time, nor anything A published for itself
        assert b.jobs == ["20261207000000000001", "20261207000000000002"]
        assert b.records == [("ret", subject)] and a.jobs == [] and a.records == []
    finally:
        b.close()
        a.close()


def test_a_master_starting_while_the_cluster_forms_waits_for_it(nats: NatsCluster) -> None:
    """JetStream answers nobody until a meta leader is elected (two of three nodes): a master
    started meanwhile keeps asking until ``nats_setup_timeout``, then names the cause in one line."""
    import dataclasses

    from saline.master.outbox import OutboxError
    from saline.master.outbox.jetstream import JetStreamOutbox

    user = nats.users[CLUSTER_ID]
    config = ClusterConfig(cluster_id=CLUSTER_ID, servers=(nats.urls[0],), user=user.name,
                           password=user.password, tls_ca=str(nats.certs["ca"]),
                           tls_cert=str(nats.certs["client_cert"]), tls_key=str(nats.certs["client_key"]),
                           replicas=3, connect_timeout=3)  # through node 0, the one left running
    nats.kill(1)
    nats.kill(2)
    bridge = NatsBridge(config).connect()
    restarting: threading.Timer | None = None
    try:
        began = time.monotonic()
        with pytest.raises(OutboxError) as refused:
            JetStreamOutbox(dataclasses.replace(config, setup_timeout=3), bridge, origin="early")
        assert "cannot set up the streams for cluster lk:" in str(refused.value)
        assert "\n" not in str(refused.value) and time.monotonic() - began < 20

        restarting = threading.Timer(3.0, lambda: [nats.restart(1), nats.restart(2)])
        restarting.start()
        began = time.monotonic()
        box = JetStreamOutbox(config, bridge, origin="patient")
        waited = time.monotonic() - began
        try:
            assert waited >= 2.5, waited  # it did wait for the cluster, not fail and succeed by chance
            assert box.counts() is not None
        finally:
            box.close()
    finally:
        bridge.close()
        if restarting is not None:
            restarting.join(60)  # the outbox is up once node 1 is: node 2 may still be starting
        for node in (1, 2):
            if nats.procs[node] is None:
                nats.restart(node)
