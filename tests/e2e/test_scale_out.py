"""Two masters on one real three-node NATS JetStream cluster (TLS, a user allowed exactly what a
saline cluster needs), real minions and a saline-swarm split between them: every answer from
either master, one job cache and the same runner answers on both, keys shared, and no way in
for a NATS client without credentials or a master of another cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from saline.localcluster import LocalCluster
from tests.helpers.multimaster import MultiMaster

pytestmark = pytest.mark.e2e

SWARM = 20


def start_swarm(master: LocalCluster, name: str, count: int) -> subprocess.Popen:
    d = master.write_minion_config(name, log_level="warning")
    (d / "pki").mkdir(parents=True, exist_ok=True)
    (d / "pki" / "minion_master.pub").write_text((master.master_dir / "pki" / "master.pub").read_text())
    return subprocess.Popen([sys.executable, "-m", "saline.cli.swarm", str(count), "-c", str(d), "--prefix", f"{name}-",
                             "--accept-into", str(master.master_dir / "pki"), "--root", str(d / "swarm")],
                            env=master._env(), stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))


def answers(master: LocalCluster, *args: str) -> dict:
    run = master.cli("saline", "*", "test.ping", "--out", "json", "--static", "-t", "10", *args)
    return json.loads(run.stdout) if run.stdout.strip() else {}


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiMaster]:
    with MultiMaster(tmp_path_factory.mktemp("scale"), masters=2, master_opts={"log_level": "info"}) as mm:
        a, b = mm.masters
        a.start_minion("ma1")
        b.start_minion("mb1")
        a.accept("ma1")  # accepted on its own master: the masters share keys through the cluster
        b.accept("mb1")
        # each swarm's keys are accepted into its own master's folder, and reach the other from there
        swarms = [start_swarm(a, "sa", SWARM), start_swarm(b, "sb", SWARM)]
        try:
            LocalCluster.wait_for(lambda: sum(v is True for v in answers(a).values()) == 2 * SWARM + 2, 60,
                                  "every minion to answer")
            yield mm
        finally:
            for s in swarms:
                s.terminate()
                s.wait(20)


def test_every_answer_from_either_master(two: MultiMaster) -> None:
    expected = {"ma1", "mb1"} | {f"sa-{i:05d}" for i in range(SWARM)} | {f"sb-{i:05d}" for i in range(SWARM)}
    for master in two.masters:
        started = time.monotonic()
        got = answers(master)
        assert set(got) == expected and all(v is True for v in got.values()), (sorted(expected - set(got)), got)
        assert time.monotonic() - started < 8


def test_a_key_accepted_on_one_master_is_served_by_the_other(two: MultiMaster) -> None:
    a, b = two.masters
    b.start_minion("late1")  # it knows master B only
    LocalCluster.wait_for(lambda: (a.master_dir / "pki" / "minions_pre" / "late1").exists(), 20,
                          "the pending key to reach master A")
    assert "late1" in a.cli("saline-key", "-L").stdout.split("Unaccepted Keys:")[1]
    accepted = time.monotonic()
    assert a.cli("saline-key", "-y", "-a", "late1").returncode == 0  # accepted on A ...
    LocalCluster.wait_for(lambda: b.cli("saline", "late1", "test.ping", "-t", "2").returncode == 0, 10,
                          "master B to serve late1")  # ... served by B
    served_in = time.monotonic() - accepted
    assert served_in < 5, served_in
    assert a.cli("saline", "late1", "test.ping", "-t", "5").stdout == "late1:\n    True\n"  # and from A, relayed
    assert a.cli("saline-key", "-y", "-d", "late1").returncode == 0  # deleted on A: B drops it too
    LocalCluster.wait_for(lambda: not (b.master_dir / "pki" / "minions" / "late1").exists(), 10,
                          "the deletion to reach B")
    b.stop("late1")


def test_one_job_cache_and_the_same_runner_answers_on_every_master(two: MultiMaster) -> None:
    a, b = two.masters
    run = a.cli("saline", "ma1,mb1", "-L", "test.echo", "from A", "--show-jid")
    jid = run.stdout.split("jid ")[1].split()[0]
    assert run.returncode == 0
    looked = [json.loads(m.cli("saline-run", "jobs.lookup_jid", jid, "--out", "json").stdout) for m in (a, b)]
    assert looked[0] == looked[1] == {"ma1": "from A", "mb1": "from A"}
    listed = [json.loads(m.cli("saline-run", "jobs.list_jobs", "--out", "json").stdout) for m in (a, b)]
    assert jid in listed[0] and listed[0][jid] == listed[1][jid] and listed[0][jid]["Function"] == "test.echo"
    status = [json.loads(m.cli("saline-run", "manage.status", "--out", "json").stdout) for m in (a, b)]
    assert status[0] == status[1] and len(status[0]["up"]) == 2 * SWARM + 2 and status[0]["down"] == []
    printed = json.loads(b.cli("saline-run", "jobs.print_job", jid, "--out", "json").stdout)
    assert printed[jid]["Result"]["ma1"]["return"] == "from A"


def test_a_minion_that_is_not_connected_anywhere_is_named_at_once(two: MultiMaster) -> None:
    a, b = two.masters
    b.stop("mb1")
    LocalCluster.wait_for(lambda: "mb1:\n    Minion did not return. [Not connected]" in
                          a.cli("saline", "ma1,mb1", "-L", "test.ping", "-t", "3").stdout, 15,
                          "mb1 to be known as gone on master A")
    started = time.monotonic()
    run = a.cli("saline", "ma1,mb1", "-L", "test.ping", "-t", "10")
    assert run.returncode == 1 and "ma1:\n    True" in run.stdout and "[Not connected]" in run.stdout
    assert time.monotonic() - started < 6
    b.start_minion("mb1")
    LocalCluster.wait_for(lambda: "mb1:\n    True" in a.cli("saline", "mb1", "test.ping", "-t", "3").stdout, 30,
                          "mb1 back")


def test_a_return_too_large_for_nats_is_refused_and_the_minion_goes_on(two: MultiMaster) -> None:
    a, _b = two.masters
    # 9 MiB of output: the master's frames take it, the NATS servers' max_payload (8 MiB) does not
    run = a.cli("saline", "ma1", "cmd.run", "head -c 9437184 /dev/zero | tr '\\0' x", "-t", "8", "--out", "json")
    assert run.returncode == 1 and "x" * 100 not in run.stdout
    logs = lambda c, name: "".join(p.read_text(errors="replace") for p in c.root.rglob(name))  # noqa: E731
    LocalCluster.wait_for(lambda: "9.0 MiB, more than the 8.0 MiB one record may have (the NATS servers' "
                          "max_payload)" in logs(a, "master.log"), 10, "the master to say why")
    LocalCluster.wait_for(lambda: "dropped: too large: 9.0 MiB" in logs(a, "minion.log"), 10,
                          "the minion to drop the return, saying why")
    # nothing is stuck: the next job's return is stored, and its spool is empty again
    assert a.cli("saline", "ma1", "test.echo", "after", "-t", "8").stdout == "ma1:\n    after\n"


def test_no_credentials_read_nothing_and_another_cluster_does_not_join(two: MultiMaster, tmp_path: Path) -> None:
    import nats

    async def anonymous() -> str:
        try:
            nc = await nats.connect(servers=two.nats.urls, tls=two.nats.ssl_context(), max_reconnect_attempts=1,
                                    connect_timeout=2, allow_reconnect=False)
        except Exception as exc:
            return str(exc)
        await nc.close()
        return "connected"

    assert "Authorization Violation" in asyncio.run(anonymous())
    # a master configured for cluster "dev" with the credentials of cluster "prod": refused, one line
    other = LocalCluster(tmp_path / "dev", master_opts={**two.nats_opts(), "cluster_id": "dev", "id": "intruder"})
    run = subprocess.run([sys.executable, "-m", "saline.cli.master", "-c", str(other.master_dir)], capture_output=True,
                         text=True, timeout=90, env=other._env())
    assert run.returncode != 0 and run.stderr.strip().count("\n") == 0, run.stderr
    assert "cluster dev" in run.stderr and "Traceback" not in run.stderr
    assert "permissions violation" in run.stderr.lower(), run.stderr
