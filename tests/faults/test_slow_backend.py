"""A backend that stops answering (a private Redis paused with SIGSTOP): only its outbox grows.

The master keeps publishing and receiving (test.ping round trips stay fast), the job cache keeps
getting every return, and ``saline-run returners.status`` shows the paused returner pending.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.faults.conftest import Cluster, figure, logs, private_redis, wait_for
from tests.faults.test_backend_outage import redis_count, redis_opts

pytestmark = pytest.mark.e2e


def test_a_stalled_backend_does_not_slow_the_master(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis") as server:
        opts = {**redis_opts(server.port, 0), "redis.socket_timeout": 60, "returner_retry_max_seconds": 1}
        cluster = make_cluster(opts)
        cluster.start_master()
        cluster.start_minions("m1", "m2")
        warm = cluster.publish_many("*", "test.ping", 10)
        wait_for(lambda: redis_count(server.port, 0, warm)[0] == 20, 30, "the first returns in redis", 0.2)

        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            client = cluster.client
            stalled = cluster.publish_many("*", "test.ping", 100)
            rtts = []
            for _ in range(20):
                started = time.monotonic()
                assert client.cmd("*", "test.ping", timeout=5) == {"m1": True, "m2": True}
                rtts.append(time.monotonic() - started)
            sent = 2 * len(stalled)
            wait_for(lambda: cluster.returned(stalled) == sent, 30, "the job cache to get every return")
            status = wait_for(lambda: (s := cluster.runner("returners.status"))["redis"]["pending"] >= sent and s,
                              30, "redis to show its returns pending")
            wait_for(lambda: cluster.runner("returners.status")["saline_cache"]["pending"] == 0, 30,
                     "the job cache's outbox to stay empty")
            shown = cluster.cli("saline-run", "returners.status")
            assert shown.returncode == 0 and "redis" in shown.stdout and "pending" in shown.stdout
            pending_peak = status["redis"]["pending"]
        finally:
            server.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(lambda: redis_count(server.port, 0, stalled)[0] == sent, 90, f"{sent} returns in redis", 0.25)
        drained_in = time.monotonic() - resumed
        wait_for(lambda: cluster.runner("returners.status")["redis"]["pending"] == 0, 60, "redis's outbox to drain")
        assert max(rtts) < 2.0, (rtts, logs(cluster))
        figure("slow_backend", sent=sent, arrived=redis_count(server.port, 0, stalled)[0],
               ping_rtt_p50_ms=round(statistics.median(rtts) * 1000), ping_rtt_max_ms=round(max(rtts) * 1000),
               redis_pending_peak=pending_peak, job_cache_pending=0, drained_s=round(drained_in, 1))
