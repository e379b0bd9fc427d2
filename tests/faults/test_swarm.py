"""100 minions (one saline-swarm process) returning as fast as they can for 30 s: the master's
memory stays bounded and the outbox drains afterwards."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from tests.faults.conftest import Cluster, figure, logs, rss_kib, wait_for

pytestmark = pytest.mark.e2e

MINIONS = 100
LOAD_SECONDS = 30


def test_swarm_of_100_for_30_seconds(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster({"log_level": "warning"})
    master = cluster.start_master()
    swarm_dir = cluster.write_minion_config("swarm", log_level="warning")
    (swarm_dir / "pki").mkdir(parents=True, exist_ok=True)
    (swarm_dir / "pki" / "minion_master.pub").write_text((cluster.master_dir / "pki" / "master.pub").read_text())
    swarm = subprocess.Popen([sys.executable, "-m", "saline.cli.swarm", str(MINIONS), "-c", str(swarm_dir),
                              "--accept-into", str(cluster.master_dir / "pki"), "--root", str(swarm_dir / "swarm")],
                             env=cluster._env(), stdout=subprocess.DEVNULL, stderr=open(swarm_dir / "stderr.log", "ab"))
    try:
        client = cluster.client
        wait_for(lambda: len(client.cmd("*", "test.ping", timeout=3)) == MINIONS, 60, f"{MINIONS} minions to answer",
                 0.5)
        jids: list[str] = []
        answered = [0]
        stop = threading.Event()

        def load() -> None:
            c = cluster.client
            while not stop.is_set():
                for message in c.cmd_iter("*", "test.ping", timeout=10):
                    if message["cmd"] == "published":
                        jids.append(message["jid"])
                    elif message["cmd"] == "return":
                        answered[0] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        samples = []
        while time.monotonic() - started < LOAD_SECONDS:
            samples.append(rss_kib(master.pid))
            time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        took = time.monotonic() - started
        sent = MINIONS * len(jids)
        wait_for(lambda: cluster.returned(jids) == sent, 120, f"{sent} returns in the job cache", 0.5)
        drain_started = time.monotonic()
        wait_for(lambda: all(s["pending"] == 0 for s in cluster.runner("returners.status").values()), 120,
                 "the outbox to drain")
        drained_in = time.monotonic() - drain_started
        assert answered[0] == sent, (answered[0], sent)
        assert master.poll() is None and swarm.poll() is None, logs(cluster)
        half = len(samples) // 2
        first, second = max(samples[:half]), max(samples[half:])
        assert second < first * 1.5 + 20_000, samples  # no growth with the number of returns
        assert max(samples) < 400_000, samples
        figure("swarm_100", minions=MINIONS, seconds=round(took), jobs=len(jids), returns=sent,
               returns_per_s=round(sent / took), rss_first_half_mib=round(first / 1024, 1),
               rss_second_half_mib=round(second / 1024, 1), outbox_drained_s=round(drained_in, 1))
    finally:
        swarm.terminate()
        try:
            swarm.wait(20)
        except subprocess.TimeoutExpired:
            swarm.kill()
