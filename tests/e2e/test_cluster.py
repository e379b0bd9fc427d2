"""End to end: real saline-master, saline-minion, saline-key, saline and saline-run processes."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Iterator

import msgpack
import pytest
import zmq

from saline.localcluster import LocalCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path) as c:
        c.start_master()
        yield c


def _logs(cluster: LocalCluster) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in cluster.root.rglob("*.log"))


def test_pending_key_then_accepted_then_ping_and_cmd_run(cluster: LocalCluster) -> None:
    cluster.start_minion("m1")
    cluster.wait_for(lambda: (cluster.master_dir / "pki" / "minions_pre" / "m1").exists(), 20, "pending key")
    listing = cluster.cli("saline-key", "-L").stdout
    assert listing.index("Unaccepted Keys:") < listing.index("m1")
    refused = cluster.cli("saline", "m1", "test.ping", "-t", "2")
    assert refused.returncode == 2 and "No minions matched" in refused.stderr
    cluster.accept("m1")
    ping = cluster.cli("saline", "m1", "test.ping")
    assert ping.returncode == 0, _logs(cluster)
    assert ping.stdout == "m1:\n    True\n"
    run = cluster.cli("saline", "m1", "cmd.run", "echo saline-$((6*7))")
    assert run.stdout == "m1:\n    saline-42\n"
    failing = cluster.cli("saline", "m1", "cmd.run", "exit 3")
    assert failing.returncode == 1 and "non-zero" in failing.stderr
    as_json = cluster.cli("saline", "m1", "test.echo", "hi", "--out", "json")
    assert json.loads(as_json.stdout) == {"m1": "hi"}


def test_grain_and_compound_targeting(cluster: LocalCluster) -> None:
    cluster.start_minion("web1", grains={"role": "web"})
    cluster.start_minion("db1", grains={"role": "db"})
    cluster.accept("web1")
    cluster.accept("db1")
    web = cluster.cli("saline", "-G", "role:web", "test.ping")
    assert web.returncode == 0 and web.stdout == "web1:\n    True\n"
    both = cluster.cli("saline", "-C", "G@role:db or web*", "test.ping", "--static", "--out", "json")
    assert json.loads(both.stdout) == {"web1": True, "db1": True}
    not_web = cluster.cli("saline", "-C", "* and not G@role:web", "test.ping")
    assert not_web.stdout == "db1:\n    True\n"
    listed = cluster.cli("saline", "-L", "web1,db1", "grains.item", "role", "--out", "json", "--static")
    assert json.loads(listed.stdout) == {"web1": {"role": "web"}, "db1": {"role": "db"}}


def test_timeout_names_the_silent_minion(cluster: LocalCluster) -> None:
    cluster.start_minion("alive")
    cluster.start_minion("silent")
    cluster.accept("alive")
    cluster.accept("silent")
    cluster.procs["silent"].send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = cluster.cli("saline", "*", "test.ping", "-t", "1")
        took = time.monotonic() - started
    finally:
        cluster.procs["silent"].send_signal(signal.SIGCONT)
    assert result.returncode == 1
    assert "alive:\n    True" in result.stdout
    assert "silent:\n    Minion did not return. [No response]" in result.stdout
    assert took < 10


def test_master_restart_in_the_middle_and_the_return_still_arrives(cluster: LocalCluster) -> None:
    cluster.start_minion("m1")
    cluster.accept("m1")
    published = cluster.cli("saline", "m1", "test.sleep", "2", "--async")
    jid = re.search(r"(\d{20})", published.stdout).group(1)
    cluster.stop("master")
    time.sleep(3)  # the job ends while the master is down: the return waits in the minion's spool
    cluster.start_master()
    cluster.wait_for(lambda: "True" in cluster.cli("saline-run", "jobs.lookup_jid", jid).stdout, 30,
                     "the spooled return to arrive")
    assert cluster.cli("saline-run", "jobs.lookup_jid", jid).stdout == "m1:\n    True\n"
    assert cluster.cli("saline", "m1", "test.ping").returncode == 0


def test_a_forged_id_is_refused(cluster: LocalCluster) -> None:
    cluster.start_minion("honest")
    cluster.start_minion("victim")
    cluster.accept("honest")
    cluster.accept("victim")
    jid = re.search(r"(\d{20})", cluster.cli("saline", "*", "test.sleep", "1", "--async").stdout).group(1)
    pki = cluster.minion_dir("honest") / "pki"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_publickey = (pki / "minion.pub").read_bytes().strip()
    sock.curve_secretkey = (pki / "minion.key").read_bytes().strip()
    sock.curve_serverkey = (cluster.master_dir / "pki" / "master.pub").read_bytes().strip()
    sock.connect(f"tcp://127.0.0.1:{cluster.ret_port}")
    forged = {"cmd": "_return", "load": {"id": "victim", "jid": jid, "fun": "test.sleep", "return": "owned",
                                         "retcode": 0, "success": True}}
    sock.send(msgpack.packb(forged))
    assert sock.poll(5000), "the master did not answer the forged return"
    answer = msgpack.unpackb(sock.recv())
    sock.close(0)
    ctx.term()
    assert answer["cmd"] == "refused" and "does not match" in answer["reason"]
    time.sleep(2)
    result = json.loads(cluster.cli("saline-run", "jobs.lookup_jid", jid, "--out", "json").stdout)
    assert result.get("victim") is True and "owned" not in json.dumps(result)
    stats = json.loads(cluster.cli("saline-run", "master.stats", "--out", "json").stdout)
    assert stats["forged"] >= 1


def test_bad_input_gets_one_line(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.start_minion("m1")
    cluster.accept("m1")
    unknown = cluster.cli("saline", "m1", "nope.nothing")
    assert unknown.returncode == 1 and "'nope.nothing' is not available." in unknown.stdout
    bad_target = cluster.cli("saline", "-C", "G@role:web and (", "test.ping")
    assert bad_target.returncode == 2 and bad_target.stderr.startswith("ERROR: bad target") and "Traceback" not in bad_target.stderr
    bad_returner = cluster.cli("saline", "m1", "test.ping", "--return", "nosuchreturner")
    assert bad_returner.returncode == 2 and "unknown returner 'nosuchreturner'" in bad_returner.stderr
    cluster.stop("master")
    down = cluster.cli("saline", "m1", "test.ping")
    assert down.returncode == 2 and down.stderr.count("\n") == 1 and "master is not running" in down.stderr


def test_job_cache_false_keeps_loads_not_returns(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, master_opts={"job_cache": False}) as cluster:
        cluster.start_master()
        cluster.start_minion("m1")
        cluster.accept("m1")
        run = cluster.cli("saline", "m1", "test.ping", "-v")
        assert run.stdout.endswith("m1:\n    True\n")
        jid = re.search(r"jid (\d{20})", run.stdout).group(1)
        job = json.loads(cluster.cli("saline-run", "jobs.list_job", jid, "--out", "json").stdout)
        assert job["Function"] == "test.ping" and job["Result"] == {}
