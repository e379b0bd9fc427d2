"""Secret returner options never show: not in logs (even at debug level), events, returners.status,
returners.dead, the CLI's output or its error messages, with a wrong password on a real MariaDB."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Callable

import pytest

from tests.faults.conftest import Cluster, figure, wait_for
from tests.faults.test_backend_outage import salt_user

pytestmark = pytest.mark.e2e

CONFIG_SECRET = "Wr0ng-C0nfig-S3cret"
KWARGS_SECRET = "Kw-S3cret-Pa55-77"


def test_secrets_never_show(make_cluster: Callable[..., Cluster], mysql_db: dict) -> None:
    db = salt_user(mysql_db)
    cluster = make_cluster({
        "return": "mysql", "event_return": "mysql", "log_level": "debug", "log_level_logfile": "debug",
        "mysql.host": db["host"], "mysql.port": db["port"], "mysql.user": "salt", "mysql.pass": CONFIG_SECRET,
        "mysql.db": db["db"], "returner_retry_max_seconds": 0.3, "returner_dead_after_seconds": 1,
    })
    cluster.start_master()
    events: list[dict] = []
    stop = threading.Event()

    def listen() -> None:
        for event in cluster.client.events(""):
            events.append(event)
            if stop.is_set():
                return

    threading.Thread(target=listen, daemon=True).start()
    cluster.start_minions("m1")
    outputs = [
        cluster.cli("saline", "m1", "test.ping", "-v"),
        cluster.cli("saline", "m1", "test.ping", "--return", "mysql", "--return_kwargs", json.dumps({"pass": KWARGS_SECRET}),
                    "-v"),
        cluster.cli("saline", "m1", "test.ping", "--return", "mysql", "--return_kwargs",
                    json.dumps({"pass": KWARGS_SECRET, "port": "not a port"})),
    ]
    wait_for(lambda: cluster.runner("returners.status")["mysql"]["dead"] >= 3, 30, "dead letters for mysql")
    status = cluster.runner("returners.status")["mysql"]
    # the last error is whichever batch failed last: the wrong password or the wrong port
    assert status["last_error"] and any(w in status["last_error"].lower() for w in ("access denied", "port"))
    errors = [letter["last_error"].lower() for letter in cluster.runner("returners.dead", "mysql")]
    assert any("access denied" in e for e in errors), errors
    outputs += [
        cluster.cli("saline-run", "returners.status"),
        cluster.cli("saline-run", "returners.status", "--out", "json"),
        cluster.cli("saline-run", "returners.dead", "mysql"),
        cluster.cli("saline-run", "returners.dead", "mysql", "--out", "json"),
        cluster.cli("saline-run", "returners.init", "mysql"),
        cluster.cli("saline-run", "jobs.list_jobs", "--out", "json"),
        cluster.cli("saline-run", "returners.replay", "mysql"),
    ]
    time.sleep(1.0)
    stop.set()
    cluster.cli("saline", "m1", "test.ping")  # one more event to end the listener
    texts = {f"output {i} ({' '.join(o.args[4:7])})": o.stdout + o.stderr for i, o in enumerate(outputs)}
    texts.update({str(p): p.read_text(errors="replace") for p in cluster.root.rglob("*.log")})
    texts["events"] = json.dumps(events, default=str)
    # the job cache (saline_cache) keeps the job's load: with the secret masked too
    cluster.runner("jobs.list_jobs")
    from saline.recordlog import unpack

    conn = sqlite3.connect(str(cluster.master_dir / "cache" / "outbox.db"), timeout=10)
    texts["job cache loads"] = "\n".join(json.dumps(unpack(r[0]), default=str) for r in
                                         conn.execute("SELECT load FROM jobs WHERE load IS NOT NULL"))
    texts["outbox records"] = "\n".join(json.dumps(unpack(r[0]), default=str) for r in
                                        conn.execute("SELECT body FROM records WHERE kind IN (1, 2)"))
    conn.close()
    assert "********" in texts["job cache loads"]
    assert len(events) > 5
    leaks = {name: secret for name, text in texts.items() for secret in (CONFIG_SECRET, KWARGS_SECRET)
             if secret in text}
    assert not leaks, leaks
    assert "access denied" in cluster.master_log().lower()  # the error itself is shown, the password is not
    figure("secrets", places_checked=len(texts), events=len(events), dead_letters=status["dead"], leaks=len(leaks))
