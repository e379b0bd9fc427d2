"""``/metrics`` (saline-api) and ``metrics_port`` (the master), parsed with prometheus_client's own
parser: the counters match ``returners.status`` after a run with the backend down and up again."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from saline.localcluster import LocalCluster, free_port
from tests.conftest import require_port
from tests.helpers.tcpproxy import TcpProxy

from .conftest import Api, api_master_opts

pytestmark = pytest.mark.e2e


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _status(cluster: LocalCluster) -> dict[str, Any]:
    done = cluster.cli("saline-run", "returners.status", "--out", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_metrics_match_returners_status_across_an_outage(tmp_path: Path, redis_db: dict) -> None:
    require_port("Redis", redis_db["host"], redis_db["port"])
    with TcpProxy(redis_db["host"], redis_db["port"]) as proxy:
        api_port, metrics_port = free_port(), free_port()
        opts = {**api_master_opts(tmp_path, api_port, "http://127.0.0.1:9/"), "return": "redis",
                "redis.host": "127.0.0.1", "redis.port": proxy.port, "redis.db": redis_db["db"],
                "returner_retry_max_seconds": 1, "metrics_port": metrics_port, "metrics_host": "127.0.0.1"}
        with LocalCluster(tmp_path, opts) as cluster:
            cluster.start_master()
            cluster.start_minion("m1")
            cluster.accept("m1")
            api = Api(cluster, api_port)
            try:
                token = api.login()
                proxy.cut()
                for _ in range(5):
                    assert api.post("/", {"client": "local", "tgt": "m1", "fun": "test.ping"}, token).status_code == 200
                cluster.wait_for(lambda: (_status(cluster)["redis"]["last_error"] or "") != "", 20, "a failed delivery")
                down = _samples(requests.get(api.url + "/metrics", timeout=10).text)
                status = _status(cluster)["redis"]
                assert status["pending"] > 0
                r = ("returner", "redis")
                assert down[("saline_returner_errors_total", (r,))] > 0
                assert down[("saline_returner_pending", (r,))] > 0
                assert down[("saline_returner_dead", (r,))] == status["dead"] == 0

                proxy.restore()
                cluster.wait_for(lambda: _status(cluster)["redis"]["pending"] == 0, 30, "redis to catch up")
                status = _status(cluster)["redis"]
                cache = _status(cluster)["saline_cache"]
                for text in (requests.get(api.url + "/metrics", timeout=10).text,
                             requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text):
                    up = _samples(text)
                    assert up[("saline_returner_delivered_total", (r,))] == status["delivered"] > 0
                    assert up[("saline_returner_delivered_total", (("returner", "saline_cache"),))] == cache["delivered"]
                    assert up[("saline_returner_pending", (r,))] == status["pending"] == 0
                    assert up[("saline_returner_retrying", (r,))] == status["retrying"] == 0
                    assert up[("saline_returner_dead", (r,))] == status["dead"] == 0
                    assert up[("saline_returner_errors_total", (r,))] >= down[("saline_returner_errors_total", (r,))]
                    success = status["last_success_time"]  # shown as ISO-8601 by the CLI
                    if isinstance(success, str):
                        success = datetime.datetime.fromisoformat(success).timestamp()
                    assert up[("saline_returner_last_success_timestamp_seconds", (r,))] == pytest.approx(success, abs=0.01)
                    assert 0 <= up[("saline_returner_last_success_age_seconds", (r,))] < 60
                    batches = up[("saline_returner_batch_size_count", (r,))]
                    assert batches >= 1 and up[("saline_returner_batch_size_sum", (r,))] >= status["delivered"]
                    assert up[("saline_returner_batch_size_bucket", (("le", "+Inf"), r))] == batches
                    assert up[("saline_returner_batch_seconds_count", (r,))] == batches
                    stats = json.loads(cluster.cli("saline-run", "master.stats", "--out", "json").stdout)
                    assert up[("saline_returns_received_total", ())] == stats["returns"] >= 6
                    assert up[("saline_jobs_published_total", ())] == stats["published"] >= 6
                    assert up[("saline_returns_duplicate_total", ())] == stats["duplicates"]
                    assert up[("saline_returns_refused_total", (("cause", "forged"),))] == stats["forged"]
                    assert up[("saline_minions_connected", ())] == 1
                    assert up[("saline_keys", (("state", "minions"),))] == 1
                assert up.get(("saline_api_logins_total", ())) is None  # the master's own listener: no API figures
                assert _samples(requests.get(api.url + "/metrics", timeout=10).text)[("saline_api_logins_total", ())] >= 1
            finally:
                api.stop()


def test_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with LocalCluster(tmp_path, {"metrics_port": port, "metrics_host": "127.0.0.1"}) as cluster:
            with pytest.raises(RuntimeError) as failed:
                cluster.start_master()
            time.sleep(0.1)
            err = (cluster.master_dir / "stderr.log").read_text()
            assert f"metrics_port: cannot listen on 127.0.0.1:{port}" in str(failed.value) and "Traceback" not in err
