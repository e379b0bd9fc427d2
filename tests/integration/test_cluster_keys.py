"""Two masters' key folders kept in sync through the cluster's KV bucket (saline.cluster.keys).

Each "master" is a pki folder with a KeySync on its own NatsBridge (its own NATS connection), on a
real three-node NATS cluster (TLS, one user per cluster id whose permissions are exactly what
saline's names need). Changes are made the way they are made on a real master: the real
``saline-key`` command on a config pointing at that folder, or the KeyStore writes the master's
hello handler makes. Latencies are printed (``pytest -s``); the waits only bound them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq

from saline.cluster.bridge import NatsBridge
from saline.cluster.config import ClusterConfig
from saline.cluster.keys import KeySync, decode, encode, kv_key, minion_of
from saline.localcluster import LocalCluster
from saline.transport.keys import ACCEPTED, PENDING, REJECTED, STATES, KeyStore
from tests.helpers.natscluster import NatsCluster, NatsUser, saline_permissions

#: one cluster id (so one bucket and one NATS user) per test: no test sees another's keys
CLUSTER_IDS = ("ka", "kb", "kc", "kd", "ke", "kf", "kg", "kh", "ki")


def _user(cluster_id: str) -> NatsUser:
    names = ClusterConfig(cluster_id=cluster_id, servers=())
    pub, sub, inbox = saline_permissions(cluster_id, names.streams(), names.buckets())
    return NatsUser(cluster_id, password=secrets.token_hex(12), publish=pub, subscribe=sub, inbox_prefix=inbox)


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[NatsCluster]:
    t0 = time.monotonic()
    with NatsCluster(users=[_user(c) for c in CLUSTER_IDS]) as cluster:
        print(f"\n[nats] 3-node TLS cluster healthy in {time.monotonic() - t0:.2f} s")
        yield cluster


def new_key() -> str:
    return zmq.curve_keypair()[0].decode()


class Master:
    """A master's key side: its pki folder (written as saline-key and the hello handler write it)
    and its KeySync on a bridge of its own."""

    def __init__(self, nats: NatsCluster, cluster_id: str, name: str, root: Path, pki: Path | None = None) -> None:
        self.name = name
        self.pki = pki or root / name / "pki"
        self.store = KeyStore(self.pki)
        user = nats.users[cluster_id]
        self.config = ClusterConfig(
            cluster_id=cluster_id, servers=tuple(nats.urls), user=user.name, password=user.password,
            tls_ca=str(nats.certs["ca"]), tls_cert=str(nats.certs["client_cert"]),
            tls_key=str(nats.certs["client_key"]), replicas=3, connect_timeout=2, name=f"test {name}")
        self.conf_dir = root / name / "conf"
        self.conf_dir.mkdir(parents=True)
        (self.conf_dir / "master").write_text(f"id: {name}\npki_dir: {self.pki}\ncachedir: {root / name / 'cache'}\n")
        self.bridge: NatsBridge | None = None
        self.sync: KeySync | None = None

    def start(self, **options: Any) -> "Master":
        if self.bridge is None:
            self.bridge = NatsBridge(self.config).connect()
        self.sync = KeySync(self.bridge, self.config, self.pki, self.name, **options)
        assert self.sync.start(timeout=15), f"{self.name}: no first sync with the cluster"
        return self

    def stop_sync(self) -> None:
        if self.sync is not None:
            self.sync.stop()
            self.sync = None

    def close(self) -> None:
        self.stop_sync()
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None

    def states(self, mid: str) -> dict[str, str]:
        """The id's files, as the master's KeyStore reads them."""
        self.store.refresh()
        return {s: k for s in STATES if (k := self.store.key_of(s, mid)) is not None}

    def saline_key(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "saline.cli.key", "-c", str(self.conf_dir), "-y", *args],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    # -- the bucket, read directly -------------------------------------------------------------
    def entry(self, mid: str) -> dict[str, Any] | None:
        from nats.js.errors import KeyNotFoundError

        async def get() -> dict[str, Any] | None:
            kv = await self.bridge.js.key_value(self.config.bucket("keys"))
            try:
                return json.loads((await kv.get(kv_key(mid))).value)
            except KeyNotFoundError:
                return None

        return self.bridge.call(get(), timeout=15)

    def last_revision(self) -> int:
        return self.bridge.call(self.bridge.js.stream_info(f"KV_{self.config.bucket('keys')}"), timeout=15).state.last_seq


@pytest.fixture
def masters(nats_cluster: NatsCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Master]]:
    made: list[Master] = []
    cluster_id = request.param

    def make(name: str, start: bool = True, pki: Path | None = None, **options: Any) -> Master:
        m = Master(nats_cluster, cluster_id, name, tmp_path, pki)
        made.append(m)
        return m.start(**options) if start else m

    yield make
    for m in made:
        m.close()


#: how long a change may take to reach the other master before the test fails: far above what it
#: takes (the figures are printed), so a busy machine (the whole suite at once) does not fail it
SYNC_WITHIN = 20.0


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"not within {timeout:g} s: {what}"
        time.sleep(0.01)
    return time.monotonic() - t0


def latency(m: Master, state: str, seen: Callable[[], bool], what: str) -> float:
    """Seconds from the last change of ``m``'s ``state`` folder (its mtime: when saline-key or the
    master wrote there) until ``seen()`` holds."""
    wait(seen, SYNC_WITHIN, what)
    return time.time() - os.stat(m.pki / state).st_mtime


def assert_quiet(m: Master, seconds: float = 1.0) -> None:
    """No master writes anything more: nothing is pushed back and forth."""
    before = m.last_revision()
    time.sleep(seconds)
    assert m.last_revision() == before, "the masters keep writing to the bucket (ping-pong)"


def test_entries_name_any_minion_id_and_refuse_what_is_not_a_key_state() -> None:
    for mid in ("web1.example.com", "db@1", "a..b", ".x", "x.", "host:8", "A_b-9"):
        key = kv_key(mid)
        assert minion_of(key) == mid and all(c.isalnum() or c in "_-=." for c in key)
        assert not key.startswith(".") and not key.endswith(".") and ".." not in key
    assert kv_key("web1.example.com") == "web1.example.com" and kv_key("db@1") == "db=401"
    # not what kv_key makes (a bad escape, an escaped dot that needs none), or not a minion id
    assert minion_of("db=4") is None and minion_of("web1=2Eexample") is None and minion_of("a=2F") is None
    k, k2 = new_key(), new_key()
    assert decode(encode({PENDING: k}, "A")) == {PENDING: k}
    assert decode(encode({ACCEPTED: k, "minions_denied": k2}, "A")) == {ACCEPTED: k, "minions_denied": k2}
    assert decode(encode({}, "A")) == {}
    for bad in (b"not json", b"[]", b'{"state": "minions"}', b'{"state": "minions", "key": "short"}',
                b'{"state": "nowhere", "key": "x"}', json.dumps({"state": ACCEPTED, "key": k, "also": {"x": k}}).encode()):
        with pytest.raises(ValueError):
            decode(bad)


@pytest.mark.parametrize("masters", ["ka"], indirect=True)
def test_accept_reject_delete_reach_the_other_master(masters: Callable[..., Master],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    a, b = masters("A"), masters("B")
    key = new_key()
    # B's hello handler files a new minion's key as pending
    b.store.add(PENDING, "web1.example.com", key)
    took = latency(b, PENDING, lambda: a.states("web1.example.com") == {PENDING: key}, "pending key filed on B reaches A")
    print(f"\n[keys] from the change on one master to the files of the other: pending filed on B -> A "
          f"{took * 1000:.0f} ms", end="")

    a.saline_key("-a", "web1.example.com")  # the real command, on A's folder
    took = latency(a, ACCEPTED, lambda: b.states("web1.example.com") == {ACCEPTED: key}, "accepted on A reaches B")
    print(f"; saline-key -a on A -> B {took * 1000:.0f} ms", end="")
    entry = a.entry("web1.example.com")
    assert entry is not None and entry["state"] == ACCEPTED and entry["key"] == key and entry["by"] == "A"

    a.saline_key("-r", "web1.example.com", "--include-accepted")
    took = latency(a, REJECTED, lambda: b.states("web1.example.com") == {REJECTED: key}, "rejected on A reaches B")
    print(f"; -r on A -> B {took * 1000:.0f} ms", end="")

    b.saline_key("-d", "web1.example.com")
    took = latency(b, REJECTED, lambda: a.states("web1.example.com") == {}, "deleted on B reaches A")
    print(f"; -d on B -> A {took * 1000:.0f} ms")
    entry = a.entry("web1.example.com")
    assert entry is not None and entry["state"] == "deleted" and entry["by"] == "B"  # a deletion is kept

    # an id that is not a plain subject token, and a known id that came back with another key (denied)
    other = new_key()
    a.store.add(ACCEPTED, "db@1", key)
    wait(lambda: b.states("db@1") == {ACCEPTED: key}, SYNC_WITHIN, "db@1 reaches B")
    b.store.add("minions_denied", "db@1", other)
    wait(lambda: a.states("db@1") == {ACCEPTED: key, "minions_denied": other}, SYNC_WITHIN, "the denied key reaches A")
    entry = a.entry("db@1")
    assert (entry["state"], entry["key"], entry["also"]) == (ACCEPTED, key, {"minions_denied": other})
    assert_quiet(a)
    assert a.sync.counts["conflicts"] == b.sync.counts["conflicts"] == 0

    # entries nobody should have written (by hand, or an older saline) are ignored with a warning
    async def junk() -> None:
        kv = await a.bridge.js.key_value(a.config.bucket("keys"))
        await kv.put("junk1", b"not json")
        await kv.put("bad=2F", encode({PENDING: key}, "X"))

    a.bridge.call(junk(), timeout=15)
    b.store.add(PENDING, "after-junk", other)
    wait(lambda: a.states("after-junk") == {PENDING: other}, SYNC_WITHIN, "a change after the junk entries still syncs")
    assert a.states("junk1") == {} and not any("/" in p.name for p in a.pki.rglob("*"))
    assert any("junk1" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)


@pytest.mark.e2e
@pytest.mark.parametrize(("masters", "moment"), [("kg", "after"), ("kh", "before")], indirect=["masters"])
def test_a_key_filed_while_the_cluster_entry_is_written_is_kept_and_pushed(masters: Callable[..., Master],
                                                                          moment: str) -> None:
    """B writes the accepted key A pushed for an id new on B; in that moment B's hello handler files
    a denied key for the same id (the race a whole-suite run hit).

    * ``after``: just after the write, before the sync looks at the folders again. B has applied A's
      entry, so the denied key is B's own change on top of it: kept, pushed, and on A too.
    * ``before``: after the sync planned the write from its view of the folders, before it writes.
      Neither master had seen the other's change: a concurrent change, and the cluster's entry
      stands on both (no mix of the two is left anywhere)."""
    a, b = masters("A"), masters("B")
    key, other = new_key(), new_key()
    assert b.sync is not None
    write = b.sync._apply

    def file_denied() -> None:
        if b.store.key_of("minions_denied", "db2") is None:
            b.store.add("minions_denied", "db2", other)  # in that moment, on B's folder

    def racing_write(applies: dict[str, dict[str, str]], local: dict[str, dict[str, str]]) -> tuple[set, set]:
        if "db2" in applies and moment == "before":
            file_denied()
        result = write(applies, local)
        if "db2" in applies and moment == "after":
            file_denied()
        return result

    b.sync._apply = racing_write  # type: ignore[method-assign]
    a.store.add(ACCEPTED, "db2", key)
    if moment == "after":
        both = {ACCEPTED: key, "minions_denied": other}
        wait(lambda: a.states("db2") == both, SYNC_WITHIN, "the denied key filed on B just after the write reaches A")
        entry = a.entry("db2")
        assert b.states("db2") == both and entry is not None and entry["also"] == {"minions_denied": other}
        assert entry["by"] == "B"
    else:
        wait(lambda: b.store.key_of("minions_denied", "db2") is not None, SYNC_WITHIN, "the denied key is filed on B")
        wait(lambda: b.states("db2") == {ACCEPTED: key}, SYNC_WITHIN, "the cluster's entry stands on B")
        time.sleep(1.0)  # five polls: nothing else moves
        entry = a.entry("db2")
        assert a.states("db2") == b.states("db2") == {ACCEPTED: key}
        assert entry is not None and entry["by"] == "A" and "also" not in entry
    assert a.sync.counts["conflicts"] == b.sync.counts["conflicts"] == 0


@pytest.mark.parametrize("masters", ["ki"], indirect=True)
def test_a_read_of_the_folders_that_a_move_crossed_is_not_pushed(masters: Callable[..., Master]) -> None:
    """saline-key -a moves db3 on A while A's sync reads the folders: that read shows the key in
    both folders. What A pushes is what its files hold (accepted), never that mix, so B never
    holds a key in two folders."""
    a, b = masters("A"), masters("B")
    key = new_key()
    a.store.add(PENDING, "db3", key)
    wait(lambda: b.states("db3") == {PENDING: key}, SYNC_WITHIN, "db3 reaches B")
    assert a.sync is not None
    read, refresh = a.sync._folders, a.sync._refresh
    crossed: list[str] = []  # "read" once the sync was shown the crossed view, "over" once it read again

    def read_crossed_by_the_move() -> dict[str, dict[str, str]]:
        view = read()
        if crossed != ["read", "over"] and view.get("db3") == {ACCEPTED: key}:
            crossed[:] = ["read"]
            return {**view, "db3": {ACCEPTED: key, PENDING: key}}  # pending read before the move, minions after
        return view

    async def read_again(force: bool = False) -> bool:
        if force and crossed == ["read"]:
            crossed.append("over")  # the folders read again on purpose: the view is whole from now on
        return await refresh(force)

    a.sync._folders = read_crossed_by_the_move  # type: ignore[method-assign]
    a.sync._refresh = read_again  # type: ignore[method-assign]
    a.saline_key("-a", "db3")
    wait(lambda: b.states("db3") == {ACCEPTED: key}, SYNC_WITHIN, "the accepted key reaches B")
    assert crossed == ["read", "over"], "the sync never read the crossed view"

    async def history() -> list[dict[str, Any]]:
        kv = await a.bridge.js.key_value(a.config.bucket("keys"))
        return [json.loads(e.value) for e in await kv.history(kv_key("db3")) if e.value]

    states = [(e["state"], e.get("also")) for e in a.bridge.call(history(), timeout=15)]
    assert states == [(PENDING, None), (ACCEPTED, None)], states


@pytest.mark.e2e
@pytest.mark.parametrize("masters", ["kf"], indirect=True)
def test_a_running_master_honours_keys_accepted_and_deleted_on_another(masters: Callable[..., Master],
                                                                      tmp_path: Path) -> None:
    """A real saline-master with a real minion, its pki folder synced by a KeySync as the master will
    run it in cluster mode: the minion's key is accepted, then deleted, on another master."""
    with LocalCluster(tmp_path / "real") as real:
        real.start_master()
        masters("M", pki=real.master_dir / "pki")
        a = masters("A")
        real.start_minion("m1")
        wait(lambda: PENDING in a.states("m1"), 20, "m1's key, filed by the running master, reaches A")
        key = a.states("m1")[PENDING]

        a.saline_key("-a", "m1")
        wait(lambda: real.cli("saline", "m1", "test.ping", "-t", "3").returncode == 0, 20, "m1 answers the master")
        answered = time.time() - os.stat(a.pki / ACCEPTED).st_mtime  # since saline-key moved the file on A

        log = real.master_dir / "master.log"
        rebinds = log.read_text().count("publish socket re-bound")
        a.saline_key("-d", "m1")
        wait(lambda: log.read_text().count("publish socket re-bound") > rebinds, 10, "the master revokes m1")
        revoked = time.time() - os.stat(a.pki / ACCEPTED).st_mtime
        assert real.cli("saline", "m1", "test.ping", "-t", "2").returncode == 2  # no accepted minion m1 any more
        # m1 says hello again: pending on the running master, and so on A
        wait(lambda: a.states("m1") == {PENDING: key}, 20, "m1 pending again, on A too")
        print(f"\n[keys] a running master: saline-key -a on another master -> m1 has answered a test.ping "
              f"{answered * 1000:.0f} ms later; saline-key -d there -> publish socket re-bound within "
              f"{revoked * 1000:.0f} ms")


@pytest.mark.parametrize("masters", ["kb"], indirect=True)
def test_start_reconciles_and_a_master_away_learns_what_changed(masters: Callable[..., Master]) -> None:
    k1, k2, k3 = new_key(), new_key(), new_key()
    a = masters("A", start=False)
    a.store.add(ACCEPTED, "x1", k1)
    a.store.add(PENDING, "x2", k2)
    a.start()  # first master: its keys are pushed
    assert a.entry("x1")["state"] == ACCEPTED and a.entry("x2")["state"] == PENDING

    # B never synced, and its folder disagrees: the cluster wins for ids it has, B's own are pushed
    b = masters("B", start=False)
    b.store.add(ACCEPTED, "x1", k1)
    b.store.add(REJECTED, "x2", k2)
    b.store.add(ACCEPTED, "x3", k3)
    b.start()
    assert b.states("x2") == {PENDING: k2}
    wait(lambda: a.states("x3") == {ACCEPTED: k3}, SYNC_WITHIN, "B's own key reaches A")

    # B stops; meanwhile x1 is deleted on A, and on B (its daemon down) x3 deleted and x2 accepted
    b.stop_sync()
    a.saline_key("-d", "x1")
    b.saline_key("-d", "x3")
    b.saline_key("-a", "x2")
    b.start()  # the base it kept tells which side changed each id
    assert b.states("x1") == {}, "a deletion made while B was away is applied"
    wait(lambda: a.states("x3") == {} and a.states("x2") == {ACCEPTED: k2}, SYNC_WITHIN, "B's offline changes reach A")

    # a new master from a stale copy of the pki folder: a key deleted in the cluster does not come back
    c = masters("C", start=False)
    c.store.add(ACCEPTED, "x1", k1)
    c.start()
    assert c.states("x1") == {} and a.states("x1") == {} and a.entry("x1")["state"] == "deleted"
    assert_quiet(a)


@pytest.mark.parametrize("masters", ["kc"], indirect=True)
def test_concurrent_changes_converge_on_the_last_revision(masters: Callable[..., Master]) -> None:
    # both look at their folders often, so that both push before either hears of the other's change
    a, b = masters("A", poll_seconds=0.005), masters("B", poll_seconds=0.005)
    for round_ in range(4):  # until a write was refused at least once (the compare-and-set path)
        ids = [f"race{round_}-{i}" for i in range(30)]
        keys = {mid: new_key() for mid in ids}
        for mid in ids:
            a.store.add(PENDING, mid, keys[mid], refresh=False)
        a.store.refresh(force=True)
        wait(lambda: all(b.states(m) == {PENDING: keys[m]} for m in ids), 10, "pending keys reach B")

        # an operator accepts everything on A while another rejects everything on B, at the same time
        go = threading.Barrier(2)

        def move(m: Master, dst: str) -> None:
            go.wait()
            for mid in ids:
                m.store.move(mid, PENDING, dst)

        threads = [threading.Thread(target=move, args=(a, ACCEPTED)), threading.Thread(target=move, args=(b, REJECTED))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def converged() -> bool:
            return all(a.states(m) == b.states(m) and len(a.states(m)) == 1 for m in ids)

        took = wait(converged, 10, "both masters agree on every id")
        finals = {mid: a.states(mid) for mid in ids}
        for mid in ids:
            (state, key), = finals[mid].items()
            assert state in (ACCEPTED, REJECTED) and key == keys[mid]
            entry = a.entry(mid)
            assert (entry["state"], entry["key"]) == (state, key), f"{mid}: the bucket and the folders differ"
        accepted = sum(1 for f in finals.values() if ACCEPTED in f)
        print(f"\n[keys] 30 ids accepted on A and rejected on B at once: converged {took * 1000:.0f} ms after the "
              f"last change; {accepted} accepted, {30 - accepted} rejected; so far conflicts seen: A "
              f"{a.sync.counts['conflicts']}, B {b.sync.counts['conflicts']}; writes refused: A "
              f"{a.sync.counts['refused']}, B {b.sync.counts['refused']}", end="")
        if a.sync.counts["refused"] + b.sync.counts["refused"]:
            break
    print()
    assert a.sync.counts["refused"] + b.sync.counts["refused"] > 0, "no write was ever refused: the race never happened"
    assert_quiet(a)


@pytest.mark.parametrize("masters", ["kd"], indirect=True)
def test_a_nats_node_killed_loses_nothing(masters: Callable[..., Master], nats_cluster: NatsCluster) -> None:
    a, b = masters("A"), masters("B")
    info = a.bridge.call(a.bridge.js.stream_info(f"KV_{a.config.bucket('keys')}"), timeout=15)
    leader = int(info.cluster.leader.lstrip("n"))  # the bucket's stream leader: the worst node to lose
    ids = [f"n{i:02d}" for i in range(40)]
    keys = {mid: new_key() for mid in ids}

    def file_keys() -> None:  # new minions keep saying hello to A
        for mid in ids:
            a.store.add(PENDING, mid, keys[mid])
            time.sleep(0.1)

    writer = threading.Thread(target=file_keys)
    writer.start()
    time.sleep(1.0)
    nats_cluster.kill(leader)
    time.sleep(1.5)
    nats_cluster.restart(leader)
    writer.join()
    last_write = time.monotonic()
    wait(lambda: all(b.states(m) == {PENDING: keys[m]} for m in ids), 30, "every key filed on A reaches B")
    print(f"\n[keys] node n{leader} (the bucket's leader) killed and restarted while 40 keys were filed: all on B "
          f"{time.monotonic() - last_write:.1f} s after the last one")
    assert all((a.entry(m) or {}).get("key") == keys[m] for m in ids)


@pytest.mark.parametrize("masters", ["ke"], indirect=True)
def test_whole_cluster_down_local_keys_work_and_sync_when_back(masters: Callable[..., Master],
                                                              nats_cluster: NatsCluster,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="saline.cluster.keys")
    a, b = masters("A"), masters("B")
    k1, k2 = new_key(), new_key()
    b.store.add(PENDING, "w1", k1)
    wait(lambda: a.states("w1") == {PENDING: k1}, SYNC_WITHIN, "w1 reaches A")

    for node in range(nats_cluster.size):
        nats_cluster.kill(node)
    a.saline_key("-a", "w1")  # works: the folders are the master's truth
    assert a.states("w1") == {ACCEPTED: k1}
    b.store.add(PENDING, "w2", k2)
    assert b.states("w2") == {PENDING: k2}

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "saline.cluster.keys" and r.levelno == logging.WARNING and "cannot sync" in r.getMessage()]

    wait(lambda: len(warned()) == 2, 10, "each master says once that it cannot sync")
    print(f"\n[keys] cluster down: {warned()[0]}")

    # B's master restarts during the outage: its sync starts without NATS and keeps its base on disk
    b.stop_sync()
    b.store.delete("w1")  # saline-key -d on B while it is down: this deletion must win when NATS is back
    b.sync = KeySync(b.bridge, b.config, b.pki, "B")
    assert b.sync.start(timeout=0.5) is False
    assert b.states("w1") == {} and b.states("w2") == {PENDING: k2}  # nothing local was touched
    time.sleep(0.5)

    t0 = time.monotonic()
    for node in range(nats_cluster.size):
        nats_cluster._spawn(node)  # all at once: no single node is healthy without the others
    nats_cluster.wait_healthy(30)
    healthy = time.monotonic() - t0
    # w1: accepted on A and deleted on B, both during the outage: whichever reached the bucket first stands
    took = wait(lambda: a.states("w2") == {PENDING: k2} and a.states("w1") == b.states("w1")
                and b.sync.synced.is_set() and a.sync.synced.is_set(), 30,
                "what changed during the outage reaches the other master")
    print(f"[keys] cluster back (healthy in {healthy:.1f} s): both masters in sync {took:.1f} s later; w1 "
          f"(accepted on A, deleted on B meanwhile) is {a.entry('w1')['state']} on both")
    assert len(warned()) == 3, "one warning per master and outage (B's restarted sync says it once more)"
    assert a.entry("w2")["state"] == PENDING
    assert a.entry("w1")["state"] in (ACCEPTED, "deleted") and a.states("w1") in ({ACCEPTED: k1}, {})
    assert any("in sync with the cluster again" in r.getMessage() for r in caplog.records)
