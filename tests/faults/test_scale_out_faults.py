"""Two masters on a real three-node NATS cluster under sustained returns into the real MariaDB
(``return: mysql``), while something fails: a NATS node SIGKILLed, a delivery worker SIGKILLed in
the middle of a batch, MariaDB cut off, the whole NATS cluster stopped. Afterwards every return of
every published job is in ``salt_returns``, once."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pymysql
import pytest

from saline.client import LocalClient
from saline.localcluster import LocalCluster
from tests.faults.conftest import figure, wait_for
from tests.faults.test_backend_outage import salt_user
from tests.helpers.multimaster import MultiMaster
from tests.helpers.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

PER_SWARM = 10  # minions on each master


def _entry(c: LocalCluster) -> dict[str, Any]:
    """One master of a minion's ``master:`` list (the test's masters share an address, not ports)."""
    return {"master": "127.0.0.1", "master_port": c.ret_port, "publish_port": c.publish_port,
            "master_pub_port": c.master_pub_port}


def _swarm(master: LocalCluster, name: str, masters: list[LocalCluster] | None = None,
           **extra: Any) -> subprocess.Popen:
    """PER_SWARM minions on ``master`` (or on the list ``masters``, with ``extra`` options)."""
    opts: dict[str, Any] = {"log_level": "warning", "spool_resend_seconds": 1, **extra}
    if masters:
        opts["master"] = [_entry(m) for m in masters]
    d = master.write_minion_config(name, **opts)
    (d / "pki").mkdir(parents=True, exist_ok=True)
    (d / "pki" / "minion_master.pub").write_text((master.master_dir / "pki" / "master.pub").read_text())
    accept = [arg for m in (masters or [master]) for arg in ("--accept-into", str(m.master_dir / "pki"))]
    return subprocess.Popen([sys.executable, "-m", "saline.cli.swarm", str(PER_SWARM), "-c", str(d), "--prefix",
                             f"{name}-", *accept, "--root", str(d / "swarm")],
                            env=master._env(), stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))


class Load:
    """Jobs to every minion, one after another, from each master in turn, in a thread; the jids
    of the jobs that were published (a publish refused while the cluster cannot store is not)."""

    def __init__(self, mm: MultiMaster) -> None:
        self.mm = mm
        self.jids: list[str] = []
        self.origin: dict[str, tuple[int, float]] = {}  # jid -> (which master published it, when)
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            which = turn % len(self.mm.masters)
            master = self.mm.masters[which]
            turn += 1
            try:
                for message in LocalClient(str(master.master_dir / "sock")).cmd_iter("*", "test.ping", timeout=2):
                    if message["cmd"] == "published":
                        self.jids.append(message["jid"])
                        self.origin[message["jid"]] = (which, time.monotonic())
            except Exception:  # refused (the cluster cannot store it now) or the master is gone
                self.refused += 1
                time.sleep(0.2)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


@pytest.fixture
def stack(tmp_path: Path, mysql_db: dict) -> Iterator[Callable[..., tuple[MultiMaster, tuple]]]:
    made: list[tuple[MultiMaster, list[subprocess.Popen], TcpProxy]] = []
    db = salt_user(mysql_db)

    def make(failover: bool = False, **master_opts: Any) -> tuple[MultiMaster, tuple]:
        """Two masters, a swarm on each (``failover``: the first swarm's minions list both
        masters, ``master_type: failover``, and are on the first), returning into MariaDB."""
        proxy = TcpProxy(db["host"], db["port"]).__enter__()
        opts = {"return": "mysql", "mysql.host": "127.0.0.1", "mysql.port": proxy.port, "mysql.user": db["user"],
                "mysql.pass": db["pass"], "mysql.db": db["db"], "mysql.create_schema": True, "mysql.connect_timeout": 2,
                "returner_retry_max_seconds": 1, "nats_ack_wait": 5, "log_level": "info", **master_opts}
        mm = MultiMaster(tmp_path / "mm", masters=2, master_opts=opts).start()
        a, b = mm.masters
        swarms = [_swarm(a, "s0", [a, b], master_type="failover", master_alive_interval=3) if failover
                  else _swarm(a, "s0"), _swarm(b, "s1")]
        made.append((mm, swarms, proxy))

        def share() -> None:  # (each swarm's keys were accepted on its own master)
            for m in mm.masters:
                for other in mm.masters:
                    for path in (other.master_dir / "pki" / "minions").iterdir():
                        target = m.master_dir / "pki" / "minions" / path.name
                        if path.suffix == ".tmp" or target.exists():
                            continue  # (a key still being written, renamed into place a moment later)
                        try:
                            target.write_text(path.read_text())
                        except FileNotFoundError:
                            continue  # renamed meanwhile: the next round copies it

        client = LocalClient(str(mm.masters[0].master_dir / "sock"))
        wait_for(lambda: share() or len(client.cmd("*", "test.ping", timeout=3)) == 2 * PER_SWARM, 60,
                 "every swarm minion to answer", 0.5)
        direct = (db["host"], db["port"], db["user"], db["pass"], db["db"])
        return mm, (proxy, direct)

    yield make
    for mm, swarms, proxy in made:
        for s in swarms:
            s.terminate()
            s.wait(20)
        mm.stop()
        proxy.__exit__(None, None, None)


def mysql_count(host: str, port: int, user: str, password: str, db: str, jids: list[str]) -> tuple[int, int]:
    """(rows, distinct (jid, id)) in salt_returns for exactly these jobs (a job whose publish the
    load thread did not hear about, its master killed, may have returns too: not counted)."""
    conn = pymysql.connect(host=host, port=port, user=user, password=password, database=db, connect_timeout=3)
    rows = distinct = 0
    try:
        with conn.cursor() as cur:
            for i in range(0, len(jids), 500):
                chunk = jids[i:i + 500]
                cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT jid, id) FROM salt_returns WHERE jid IN "
                            f"({','.join(['%s'] * len(chunk))})", chunk)
                r, d = cur.fetchone()
                rows, distinct = rows + r, distinct + d
    except pymysql.err.ProgrammingError:  # the table is not there yet
        return (0, 0)
    finally:
        conn.close()
    return rows, distinct


def _missing(direct: tuple, jids: list[str]) -> list[tuple[str, int]]:
    """(jid, how many returns of it are missing), for the jobs that are not complete."""
    host, port, user, password, db = direct
    conn = pymysql.connect(host=host, port=port, user=user, password=password, database=db, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            out = []
            for jid in jids:
                cur.execute("SELECT COUNT(DISTINCT id) FROM salt_returns WHERE jid = %s", (jid,))
                n = cur.fetchone()[0]
                if n < 2 * PER_SWARM:
                    out.append((jid, 2 * PER_SWARM - n))
            return out
    finally:
        conn.close()


def _all_arrive(mm: MultiMaster, direct: tuple, jids: list[str], test: str, **figures: Any) -> None:
    sent = 2 * PER_SWARM * len(jids)
    began = time.monotonic()
    deadline = began + 90
    while mysql_count(*direct, jids)[0] < sent and time.monotonic() < deadline:
        time.sleep(0.5)
    if mysql_count(*direct, jids)[0] < sent:
        pytest.fail(f"{mysql_count(*direct, jids)} of {sent} returns in MariaDB after 90 s; missing: "
                    f"{_missing(direct, jids)[:10]}; status: "
                    f"{mm.masters[-1].cli('saline-run', 'returners.status', '--out', 'json').stdout[:600]}")
    time.sleep(2.0)  # anything stored twice would show now
    rows, distinct = mysql_count(*direct, jids)
    assert (rows, distinct) == (sent, sent), (rows, distinct, sent)
    figure(test, jobs=len(jids), returns=sent, rows=rows, distinct=distinct,
           arrived_after_s=round(time.monotonic() - began, 1), **figures)


def test_a_nats_node_killed_under_load(stack: Callable[..., tuple[MultiMaster, tuple]]) -> None:
    mm, (_proxy, direct) = stack()
    with Load(mm) as load:
        time.sleep(3)
        mm.nats.kill(0)
        killed = time.monotonic()
        time.sleep(8)
        mm.nats.restart(0)
        time.sleep(2)
    _all_arrive(mm, direct, load.jids, "scale_out_nats_node_killed", refused_publishes=load.refused,
                node_down_s=round(time.monotonic() - killed, 1))


def test_a_delivery_worker_killed_mid_batch(stack: Callable[..., tuple[MultiMaster, tuple]]) -> None:
    mm, (_proxy, direct) = stack(master_delivers=False, returner_batch_size=200)
    cfg = mm.masters[0].master_dir
    workers = [subprocess.Popen([sys.executable, "-m", "saline.cli.deliver", "-c", str(cfg), "mysql"],
                                stdout=subprocess.DEVNULL, stderr=open(mm.root / f"deliver{i}.log", "ab"))
               for i in range(2)]
    try:
        with Load(mm) as load:
            time.sleep(4)
            workers[0].send_signal(signal.SIGKILL)
            time.sleep(6)
        _all_arrive(mm, direct, load.jids, "scale_out_worker_killed")
        assert workers[1].poll() is None
    finally:
        for w in workers:
            w.kill()
            w.wait(10)


def test_a_master_killed_its_minions_move_and_nothing_is_lost(stack: Callable[..., tuple[MultiMaster, tuple]]) -> None:
    mm, (_proxy, direct) = stack(failover=True)
    a, b = mm.masters
    with Load(mm) as load:
        time.sleep(3)
        a.stop("master", signal.SIGKILL)
        killed = time.monotonic()
        moved = wait_for(lambda: len(LocalClient(str(b.master_dir / "sock")).cmd("s0-*", "test.ping", timeout=2))
                         == PER_SWARM and time.monotonic(), 30, "the first swarm's minions to answer on master B", 0.2)
        time.sleep(3)
    # Between the kill and the switch, A's minions are connected to no live master: a job published
    # then (or by A in its last instant, before it left A's socket) never reaches them, as in Salt (a
    # minion does not catch up on jobs it missed). That is not a lost return: none was made. Every
    # other job's every return arrives, the spooled ones through B.
    window = [j for j, (_who, at) in load.origin.items() if killed - 1.0 <= at <= moved]
    complete = [j for j in load.jids if j not in window]
    _all_arrive(mm, direct, complete, "scale_out_master_killed", moved_after_s=round(moved - killed, 1),
                jobs_while_switching=len(window))
    for jid, missing in _missing(direct, window):
        assert missing == PER_SWARM, (jid, missing)  # at most the switching minions', never B's own
    assert "switching to" in "".join(p.read_text() for p in (a.root / "minion-s0").rglob("*.log"))


def test_mariadb_cut_off_while_returns_come_in(stack: Callable[..., tuple[MultiMaster, tuple]]) -> None:
    mm, (proxy, direct) = stack()
    with Load(mm) as load:
        time.sleep(2)
        proxy.cut()
        time.sleep(12)
        status = mm.masters[1].cli("saline-run", "returners.status", "--out", "json")
        proxy.restore()
        time.sleep(1)
    assert '"mysql"' in status.stdout
    _all_arrive(mm, direct, load.jids, "scale_out_mariadb_cut")


def test_the_whole_nats_cluster_stopped(stack: Callable[..., tuple[MultiMaster, tuple]]) -> None:
    mm, (_proxy, direct) = stack()
    with Load(mm) as load:
        time.sleep(2)
        mm.nats.kill_all()
        time.sleep(8)
        refused_meanwhile = load.refused
        mm.nats.restart_all()
        time.sleep(4)
    for m in mm.masters:
        log = (m.master_dir / "master.log").read_text()
        assert "not connected to NATS" in log or "NATS: disconnected" in log
    assert refused_meanwhile > 0  # jobs were refused, not lost, while nothing could be stored
    _all_arrive(mm, direct, load.jids, "scale_out_nats_stopped", refused_publishes=refused_meanwhile)
