"""No one gets in: unauthenticated peers, pending, rejected and revoked keys, on both ports.

The peers here are hand-made ZeroMQ sockets (a real minion never misbehaves on purpose); the
master is a real process. For each kind of intruder the test publishes real jobs and checks that
nothing reached it, that what it sent was refused and stored nowhere, and that the master still
serves its accepted minions.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import zmq

from tests.faults.conftest import (Cluster, RawPeer, figure, install_key, key_pair, logs, master_key,
                                   wait_for)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("auth"), master_opts={"log_level": "info"}) as c:
        c.start_master()
        c.start_minions("m1")
        yield c


def _stats(cluster: Cluster) -> dict:
    return cluster.runner("master.stats")


def _job_for_all(cluster: Cluster) -> str:
    return cluster.publish_many("*", "test.ping", 1)[0]


def _forged_return(jid: str, mid: str) -> dict:
    return {"cmd": "_return", "load": {"id": mid, "jid": jid, "fun": "test.ping", "return": "intruder",
                                       "retcode": 0, "success": True}}


def _assert_not_stored(cluster: Cluster, jid: str) -> None:
    result = cluster.runner("jobs.lookup_jid", jid)
    assert "intruder" not in str(result), result


def test_unauthenticated_peers_get_nothing_and_send_nothing(cluster: Cluster) -> None:
    server = master_key(cluster)
    before = _stats(cluster)
    peers = {
        "sub without CURVE": RawPeer(zmq.SUB, cluster.publish_port, None),
        "sub with a wrong server key": RawPeer(zmq.SUB, cluster.publish_port, key_pair()[0]),
        "sub with a random key": RawPeer(zmq.SUB, cluster.publish_port, server),
    }
    dealers = {
        "dealer without CURVE": RawPeer(zmq.DEALER, cluster.ret_port, None),
        "dealer with a wrong server key": RawPeer(zmq.DEALER, cluster.ret_port, key_pair()[0]),
    }
    try:
        time.sleep(0.5)
        jid = _job_for_all(cluster)
        for name, peer in dealers.items():
            peer.send(_forged_return(jid, "m1"))
            peer.send({"cmd": "hello", "id": f"intruder-{len(name)}"})
            peer.send({"cmd": "publish", "jid": jid, "fun": "cmd.run", "arg": ["id"], "tgt": "*"})
        for name, peer in {**peers, **dealers}.items():
            assert peer.drain(1.5) == [], f"{name} received something"
        assert cluster.cli("saline", "m1", "test.ping").returncode == 0
        _assert_not_stored(cluster, jid)
        assert cluster.runner("jobs.lookup_jid", jid) == {"m1": True}
    finally:
        for peer in {**peers, **dealers}.values():
            peer.close()
    after = _stats(cluster)
    pending = (cluster.master_dir / "pki" / "minions_pre")
    assert not any(p.name.startswith("intruder") for p in pending.iterdir())  # no CURVE, no registration
    assert after["refused"] > before["refused"]  # the random key on the publish port, refused by ZAP
    figure("auth_unauthenticated", peers=len(peers) + len(dealers), received=0,
           refused_connections=after["refused"] - before["refused"])


def test_an_unknown_key_can_only_register_as_pending(cluster: Cluster) -> None:
    server = master_key(cluster)
    keys = key_pair()
    dealer = RawPeer(zmq.DEALER, cluster.ret_port, server, keys)
    try:
        jid = _job_for_all(cluster)
        assert dealer.request(_forged_return(jid, "m1")) == {"cmd": "not_accepted"}
        assert dealer.request({"cmd": "ping"}) == {"cmd": "not_accepted"}
        assert dealer.request({"cmd": "publish", "fun": "cmd.run", "arg": ["id"], "tgt": "*", "jid": jid}) == \
            {"cmd": "not_accepted"}
        assert dealer.request({"cmd": "hello", "id": "newcomer"}) == {"cmd": "pending"}
        assert (cluster.master_dir / "pki" / "minions_pre" / "newcomer").read_text().strip() == keys[0].decode()
        # registering as an accepted minion's id: that id is taken by another key, so "denied"
        assert dealer.request({"cmd": "hello", "id": "m1"}) == {"cmd": "rejected"}
        assert (cluster.master_dir / "pki" / "minions" / "m1").exists()
        # pending now: still nothing allowed
        assert dealer.request(_forged_return(jid, "newcomer")) == {"cmd": "not_accepted"}
        _assert_not_stored(cluster, jid)
    finally:
        dealer.close()
        cluster.cli("saline-key", "-y", "-d", "newcomer")
        denied = cluster.master_dir / "pki" / "minions_denied" / "m1"
        if denied.exists():
            denied.unlink()


@pytest.mark.parametrize("state", ["minions_pre", "minions_rejected"])
def test_pending_and_rejected_keys_get_nothing(cluster: Cluster, state: str) -> None:
    server = master_key(cluster)
    keys = key_pair()
    mid = f"held-{state[-3:]}"
    install_key(cluster, state, mid, keys[0])
    sub = RawPeer(zmq.SUB, cluster.publish_port, server, keys)
    dealer = RawPeer(zmq.DEALER, cluster.ret_port, server, keys)
    try:
        time.sleep(0.5)
        jid = _job_for_all(cluster)
        assert sub.drain(1.0) == []
        answer = dealer.request(_forged_return(jid, mid), timeout=1.5)
        if state == "minions_rejected":
            assert answer is None  # ZAP refuses a rejected key on the return port too
        else:
            assert answer == {"cmd": "not_accepted"}
        _assert_not_stored(cluster, jid)
        assert cluster.runner("jobs.lookup_jid", jid) == {"m1": True}
    finally:
        sub.close()
        dealer.close()
        cluster.cli("saline-key", "-y", "-d", mid)


def test_a_revoked_key_is_dropped_from_the_publish_port_and_no_job_is_lost(cluster: Cluster) -> None:
    """saline-key -d while the peer is connected: the master re-binds its publish socket, the
    revoked subscriber cannot come back, the accepted minion does, and the jobs published during
    the switch still reach it (they are held until it is back)."""
    server = master_key(cluster)
    keys = key_pair()
    install_key(cluster, "minions", "spy", keys[0])
    time.sleep(0.6)  # the master notices the new key
    sub = RawPeer(zmq.SUB, cluster.publish_port, server, keys)
    dealer = RawPeer(zmq.DEALER, cluster.ret_port, server, keys)
    try:
        assert dealer.request({"cmd": "hello", "id": "spy"})["cmd"] == "welcome"
        wait_for(lambda: (_job_for_all(cluster), sub.recv(0.5))[1], 10, "the spy to receive a publish")
        sub.drain(0.5)
        before = _stats(cluster)

        # publish to m1 without pause while the key goes away
        jids: list[str] = []
        stop = threading.Event()

        def publish() -> None:
            while not stop.is_set():
                jids.extend(cluster.publish_many("m1", "test.ping", 1))
                time.sleep(0.02)

        thread = threading.Thread(target=publish)
        thread.start()
        time.sleep(0.5)
        assert cluster.cli("saline-key", "-y", "-d", "spy").returncode == 0
        deleted_at = time.monotonic()
        wait_for(lambda: _stats(cluster)["pub_rebinds"] > before["pub_rebinds"], 10, "the publish socket re-bind",
                 0.02)
        noticed_in = time.monotonic() - deleted_at
        time.sleep(1.5)
        stop.set()
        thread.join()
        rebind = _stats(cluster)

        # the spy got nothing published after the re-bind, and cannot return
        spy_saw = {m.get("jid") for m in sub.drain(1.0)}
        late = set(jids[len(jids) // 2:])
        assert not spy_saw & late, "the revoked key still receives publishes"
        probe = _job_for_all(cluster)
        assert sub.recv(1.5) is None
        answer = dealer.request(_forged_return(probe, "spy"))
        assert answer is not None and answer["cmd"] in ("not_accepted", "refused")

        # every job published meanwhile reached m1 and came back
        sent = len(jids)
        wait_for(lambda: cluster.returned(jids) == sent, 30, f"m1's {sent} returns", 0.25)
        assert cluster.cli("saline", "m1", "test.ping").returncode == 0
    finally:
        sub.close()
        dealer.close()
        cluster.cli("saline-key", "-y", "-d", "spy")
    returned = cluster.returned(jids)
    figure("auth_revoked_pub", published_during=sent, returned=returned, missed=sent - returned,
           rebind_ms=rebind["pub_rebind_ms"], held=rebind["pub_held"] - before["pub_held"],
           noticed_s=round(noticed_in, 2))
    assert "publish socket re-bound" in cluster.master_log(), logs(cluster)


def test_a_real_minion_revoked_then_accepted_again_gets_jobs(cluster: Cluster) -> None:
    cluster.start_minion("m2")
    cluster.accept("m2")
    assert cluster.cli("saline-key", "-y", "-d", "m2").returncode == 0
    # the revoked minion comes back as pending on its own (a new hello), and gets nothing
    wait_for(lambda: (cluster.master_dir / "pki" / "minions_pre" / "m2").exists(), 15, "m2 pending again")
    refused = cluster.cli("saline", "m2", "test.ping", "-t", "2")
    assert refused.returncode == 2
    cluster.accept("m2")
    assert cluster.cli("saline", "*", "test.ping", "--out", "json", "--static").returncode == 0
    cluster.stop("m2")


def test_returns_for_untargeted_jobs_or_under_another_id_are_refused(cluster: Cluster) -> None:
    """An accepted minion's key sends a return for a job that targeted only m1, and one under m1's
    id for a job that targeted both: each is refused, logged and counted; m1's real returns stand."""
    server = master_key(cluster)
    keys = key_pair()
    install_key(cluster, "minions", "rogue", keys[0])
    time.sleep(0.4)
    dealer = RawPeer(zmq.DEALER, cluster.ret_port, server, keys)
    try:
        assert dealer.request({"cmd": "hello", "id": "rogue"})["cmd"] == "welcome"
        before = _stats(cluster)
        only_m1 = cluster.publish_many("m1", "test.ping", 1)[0]
        both = cluster.publish_many("m1,rogue", "test.ping", 1, tgt_type="list")[0]
        answers = [
            dealer.request({"cmd": "_return", "load": {"jid": only_m1, "fun": "test.ping", "return": "intruder",
                                                       "retcode": 0, "success": True}}),
            dealer.request(_forged_return(both, "m1")),
            dealer.request({"cmd": "_return", "load": {"jid": "1" * 20, "fun": "test.ping", "return": "intruder"}}),
        ]
        assert answers[0] == {"cmd": "refused", "jid": only_m1, "reason": "not targeted"}
        assert answers[1] == {"cmd": "refused", "jid": both, "reason": "id does not match the key"}
        assert answers[2] == {"cmd": "refused", "jid": "1" * 20, "reason": "not targeted"}
        # its own return for the job that did target it is accepted
        own = dealer.request({"cmd": "_return", "load": {"jid": both, "fun": "test.ping", "return": True,
                                                         "retcode": 0, "success": True}})
        assert own == {"cmd": "ack", "jid": both}
        after = _stats(cluster)
        assert after["untargeted"] - before["untargeted"] == 2
        assert after["forged"] - before["forged"] == 1
        wait_for(lambda: cluster.runner("jobs.lookup_jid", both) == {"m1": True, "rogue": True}, 10,
                 "both returns of the job that targeted both")
        assert cluster.runner("jobs.lookup_jid", only_m1) == {"m1": True}
        log = cluster.master_log()
        assert f"minion rogue returned for job {only_m1} it was not targeted by; refused" in log
        assert "minion rogue sent a return claiming to be 'm1'; refused" in log
    finally:
        dealer.close()
        cluster.cli("saline-key", "-y", "-d", "rogue")
    figure("auth_untargeted_forged", untargeted_refused=after["untargeted"] - before["untargeted"],
           forged_refused=after["forged"] - before["forged"], own_return="acked")
