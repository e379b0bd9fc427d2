"""A minion with several masters, as real processes: ``master_type: failover`` (the next master
when the current one goes silent for ``master_alive_interval``, spooled returns resent there,
failback), Salt's hot multi-master (a job that reaches the minion through both masters runs once;
returns follow the master that is alive) and ``saline-swarm`` on a list of masters.

No NATS here: two ordinary masters that share one key pair and the minions' accepted keys (Salt's
multi-master rule). They do not share jobs, so a job "relayed" between them is simulated by
publishing the same jid on both: the second master runs in this process (a thread with its own
event loop), where the test can hand it a jid, which the local socket does not take."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from saline.client import LocalClient
from saline.config import load_config
from saline.localcluster import LocalCluster, free_port
from saline.transport.keys import ensure_keypair

pytestmark = pytest.mark.e2e


def _two_masters(root: Path, same_ports: bool) -> tuple[LocalCluster, LocalCluster]:
    """Two masters with one key pair. ``same_ports``: the second one on 127.0.0.2 with the first
    one's ports (Salt's shape: one publish_port for every master); else on ports of its own."""
    m1 = LocalCluster(root / "m1", master_opts={"id": "m1"})
    extra: dict[str, Any] = {"id": "m2"}
    if same_ports:
        extra.update(interface="127.0.0.2", publish_port=m1.publish_port, ret_port=m1.ret_port,
                     master_pub_port=m1.master_pub_port)
    m2 = LocalCluster(root / "m2", master_opts=extra)
    ensure_keypair(m1.master_dir / "pki", "master")
    (m2.master_dir / "pki").mkdir(parents=True, exist_ok=True)
    for name in ("master.pub", "master.key"):
        shutil.copy(m1.master_dir / "pki" / name, m2.master_dir / "pki" / name)
    return m1, m2


class ThreadMaster:
    """The master of ``cluster``'s config, run in a thread of this process; ``publish`` takes a jid."""

    def __init__(self, cluster: LocalCluster) -> None:
        from saline.master.daemon import Master

        opts = load_config("master", cluster.master_dir, {"returner_processes": False})
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.master: Master | None = None

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.master = Master(opts)
            self.master.ready = started.set
            self.loop.run_until_complete(self.master.run())

        self.thread = threading.Thread(target=main, name="master2", daemon=True)
        self.thread.start()
        assert started.wait(20), "the second master did not start"

    def publish(self, **request: Any) -> dict[str, Any]:
        async def publish() -> dict[str, Any]:
            assert self.master is not None
            return self.master.publish(request)

        return asyncio.run_coroutine_threadsafe(publish(), self.loop).result(10)

    def stop(self) -> None:
        if self.master is not None:
            self.loop.call_soon_threadsafe(self.master.request_stop)
        self.thread.join(20)


def _entry(c: LocalCluster) -> dict[str, Any]:
    return {"master": "127.0.0.1", "master_port": c.ret_port, "publish_port": c.publish_port,
            "master_pub_port": c.master_pub_port}


def _share_key(src: LocalCluster, dst: LocalCluster, mid: str) -> None:
    """Accept on ``dst`` the key ``src`` accepted (Salt: keys are accepted on every master)."""
    key = (src.master_dir / "pki" / "minions" / mid).read_text()
    (dst.master_dir / "pki" / "minions").mkdir(parents=True, exist_ok=True)
    (dst.master_dir / "pki" / "minions" / mid).write_text(key)


def _log(c: LocalCluster, mid: str) -> str:
    path = c.minion_dir(mid) / "minion.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _answers(c: LocalCluster, mid: str, command: str, expected: str, timeout: float = 15) -> None:
    """``saline mid cmd.run command`` on master ``c`` prints ``expected`` (retried: the minion may
    still be on its way to that master)."""
    last: list[subprocess.CompletedProcess] = []

    def ok() -> bool:
        last[:] = [c.cli("saline", mid, "cmd.run", command, "-t", "3")]
        return last[0].returncode == 0 and last[0].stdout == f"{mid}:\n    {expected}\n"

    try:
        c.wait_for(ok, timeout, f"{mid} to answer on {c.master_dir}")
    except TimeoutError:
        raise AssertionError(f"{last[0] if last else None}\n{_log(c, mid)[-3000:]}") from None


def _stored_return(c: LocalCluster, jid: str) -> str:
    return c.cli("saline-run", "jobs.lookup_jid", jid, "--out", "json").stdout


def test_failover_moves_to_the_next_master_resends_the_spool_and_fails_back(tmp_path: Path) -> None:
    m1, m2 = _two_masters(tmp_path, same_ports=True)
    mid = "fo1"
    with m1, m2:
        m1.start_master()
        second = ThreadMaster(m2)
        try:
            m1.start_minion(mid, master=["127.0.0.1", "127.0.0.2"], master_type="failover", master_alive_interval=2,
                            master_failback=True, master_failback_interval=1)
            m1.accept(mid)
            _share_key(m1, m2, mid)
            _answers(m1, mid, "echo one", "one")
            assert not (m2.master_dir / "pki" / "minions_pre" / mid).exists()  # it never said hello to m2

            # a job still running when its master dies; m2 knows it (the relay between masters, simulated)
            started = tmp_path / "started"
            command = f"touch {started}; sleep 3; echo late"
            jid = LocalClient(str(m1.master_dir / "sock")).publish(mid, "cmd.run", [command])["jid"]
            assert second.publish(tgt=mid, fun="cmd.run", arg=[command], jid=jid)["minions"] == [mid]
            m1.wait_for(started.exists, 10, "the job to start")
            m1.stop("master", signal.SIGKILL)
            killed = time.monotonic()
            m1.wait_for(lambda: "switching to 127.0.0.2" in _log(m1, mid), 15, "the minion to switch to m2")
            switched = time.monotonic() - killed
            _answers(m2, mid, "echo two", "two")
            answered = time.monotonic() - killed
            print(f"failover: switched {switched:.1f} s after SIGKILL, a job on the next master answered after "
                  f"{answered:.1f} s (master_alive_interval 2 s)")
            assert switched < 2 + 5, switched
            m2.wait_for(lambda: "late" in _stored_return(m2, jid), 15, "the spooled return on m2")
            assert json.loads(_stored_return(m2, jid)) == {mid: "late"}
            log = _log(m1, mid)
            said = re.findall(r"master 127\.0\.0\.1:\d+ did not answer for (\d+) s; switching to 127\.0\.0\.2:\d+", log)
            assert len(said) == 1 and 2 <= int(said[0]) <= 4, log[-3000:]

            # failback: m1 answers again, the minion goes back to it
            m1.start_master()
            m1.wait_for(lambda: "answers again; failing back to it from 127.0.0.2" in _log(m1, mid), 15, "failback")
            _answers(m1, mid, "echo three", "three")
            log = _log(m1, mid)
            assert log.count("switching to") == 1 and log.count("failing back") == 1, log[-3000:]
            assert m1.procs[mid].poll() is None
        finally:
            second.stop()


def test_hot_masters_run_a_relayed_job_once_and_returns_follow_the_live_master(tmp_path: Path) -> None:
    m1, m2 = _two_masters(tmp_path, same_ports=False)
    mid = "hot1"
    with m1, m2:
        m1.start_master()
        second = ThreadMaster(m2)
        try:
            # no key given: taken on first use from the first master (both have the same)
            m1.start_minion(mid, copy_master_key=False, master=[_entry(m1), _entry(m2)], master_alive_interval=2,
                            log_level="debug")
            m1.accept(mid)
            m2.accept(mid)  # it said hello to both: pending on both, accepted on each (Salt's way)
            _answers(m1, mid, "echo one", "one")
            _answers(m2, mid, "echo two", "two")

            # one job through both masters: it runs once, and returns to the master it came from first
            marks = tmp_path / "marks"
            command = f"echo x >> {marks}; echo done"
            jid = LocalClient(str(m1.master_dir / "sock")).publish(mid, "cmd.run", [command])["jid"]
            assert second.publish(tgt=mid, fun="cmd.run", arg=[command], jid=jid)["not_connected"] == []
            m1.wait_for(lambda: "done" in _stored_return(m1, jid), 10, "the return on m1")
            dropped = f"job {jid} from the master at 127.0.0.1:{m2.ret_port} already started"
            m1.wait_for(lambda: dropped in _log(m1, mid) or marks.read_text().count("x") > 1, 10, "the second copy")
            time.sleep(0.5)  # time enough for a second run, if there were one
            assert marks.read_text() == "x\n"
            assert dropped in _log(m1, mid)
            assert "done" not in _stored_return(m2, jid)  # one master got the return, not both

            # a job running when the master it came from dies: its return goes to the other one
            started = tmp_path / "started"
            command = f"touch {started}; sleep 2; echo late"
            jid = LocalClient(str(m1.master_dir / "sock")).publish(mid, "cmd.run", [command])["jid"]
            second.publish(tgt=mid, fun="cmd.run", arg=[command], jid=jid)
            m1.wait_for(started.exists, 10, "the job to start")
            m1.stop("master", signal.SIGKILL)
            m2.wait_for(lambda: "late" in _stored_return(m2, jid), 15, "the return on m2")
            _answers(m2, mid, "echo three", "three")
            assert m1.procs[mid].poll() is None
        finally:
            second.stop()


def test_swarm_on_two_hot_masters(tmp_path: Path) -> None:
    m1, m2 = _two_masters(tmp_path, same_ports=False)
    count = 30
    with m1, m2:
        m1.start_master()
        m2.start_master()
        d = m1.write_minion_config("swarm", master=[_entry(m1), _entry(m2)], log_level="warning")
        m1.procs["swarm"] = subprocess.Popen(
            [sys.executable, "-m", "saline.cli.swarm", str(count), "-c", str(d), "--root", str(d / "swarm"),
             "--accept-into", str(m1.master_dir / "pki"), "--accept-into", str(m2.master_dir / "pki")],
            env=m1._env(), stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))
        for c in (m1, m2):
            got: dict[str, Any] = {}

            def all_answer() -> bool:
                run = c.cli("saline", "*", "test.ping", "--out", "json", "--static", "-t", "5")
                got.update(json.loads(run.stdout or "{}"))
                return sum(1 for v in got.values() if v is True) == count

            c.wait_for(all_answer, 30, f"{count} swarm minions to answer on {c.master_dir}")
        assert m1.procs["swarm"].poll() is None, (d / "stderr.log").read_text()
        assert "trusting the master's public key on first use" in (d / "stderr.log").read_text()


def test_a_list_of_masters_that_cannot_be_used_is_said_in_one_line(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)
    with c:
        d = c.write_minion_config("twice", master=["127.0.0.1", f"127.0.0.1:{c.ret_port}"])
        run = subprocess.run([sys.executable, "-m", "saline.cli.minion", "-c", str(d)], capture_output=True,
                             text=True, timeout=30)
        assert run.returncode != 0 and run.stderr == f"ERROR: option 'master': 127.0.0.1:{c.ret_port} is listed twice\n"
        # failover over a name that does not resolve and a port that does not answer: one line per
        # switch, the unresolvable name skipped at once, and the minion keeps trying
        closed = free_port()
        c.start_minion("lost", copy_master_key=False, master_pub="x" * 40, master_port=closed,
                       master=["no-such-master.invalid", "127.0.0.1"], master_type="failover", master_alive_interval=1)
        c.wait_for(lambda: "switching to no-such-master.invalid" in _log(c, "lost"), 15, "a whole round of switches")
        log = _log(c, "lost")
        assert f"master no-such-master.invalid:{closed} does not resolve (" in log, log
        assert f"switching to 127.0.0.1:{closed}" in log
        assert re.search(rf"master 127\.0\.0\.1:{closed} did not answer for 1 s; switching to no-such-master", log), log
        assert "Master hostname" not in log  # said once per switch, not again by the connection
        assert c.procs["lost"].poll() is None


def test_a_master_with_another_key_is_refused_and_the_others_used(tmp_path: Path) -> None:
    good = LocalCluster(tmp_path / "good")
    other = LocalCluster(tmp_path / "other")  # a key pair of its own: not one of this minion's masters
    with good, other:
        good.start_master()
        other.start_master()
        good.start_minion("both", master=[_entry(other), _entry(good)])
        good.accept("both")
        good.wait_for(lambda: "refusing it" in _log(good, "both"), 20, "the other master to be refused")
        log = _log(good, "both")
        assert f"the master at 127.0.0.1:{other.ret_port} presents a key with fingerprint" in log, log
        assert "; this master is not used (the others are)" in log
        _answers(good, "both", "echo still", "still")
        assert good.procs["both"].poll() is None
