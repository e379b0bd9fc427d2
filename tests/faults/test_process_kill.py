"""Processes killed with SIGKILL: the master while returns come in, a minion in the middle of a job."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.faults.conftest import Cluster, figure, logs, wait_for

pytestmark = pytest.mark.e2e


def _sqlite_rows(path: Path, jids: list[str]) -> tuple[int, int]:
    if not path.exists():
        return (0, 0)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("CREATE TEMP TABLE wanted (jid TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO wanted VALUES (?)", [(j,) for j in jids])
        return tuple(conn.execute(  # type: ignore[return-value]
            "SELECT COUNT(*), COUNT(DISTINCT jid || '/' || id) FROM salt_returns WHERE jid IN (SELECT jid FROM wanted)"
        ).fetchone())
    except sqlite3.OperationalError:  # no table yet
        return (0, 0)
    finally:
        conn.close()


def test_master_killed_while_minions_return(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    """SIGKILL the master twice while 2 minions send back 400 returns; every return ends up once
    in the job cache and once in the sqlite3 returner: the spools resend what was not acked and
    the outbox keeps what was."""
    db = tmp_path / "returns.db"
    cluster = make_cluster({"return": "sqlite3", "sqlite3.database": str(db)}, {"spool_resend_seconds": 1})
    cluster.start_master()
    cluster.start_minions("m1", "m2")
    # returns that come back at once, and returns that come back while the master is down
    quick = cluster.publish_many("*", "test.sleep", 100, ["0.3"])
    slow = cluster.publish_many("*", "test.sleep", 100, ["1.5"])
    # A publish leaves the master's socket in libzmq's I/O thread after the CLI has its jid: a
    # SIGKILL in that millisecond can keep it from a minion (the job then shows "did not return").
    # What this test counts is returns, so the last publishes get that millisecond.
    time.sleep(0.05)
    cluster.stop("master", signal.SIGKILL)
    kills = 1
    time.sleep(2.0)  # the sleepers finish meanwhile: their returns wait in the spools
    cluster.start_master()
    # jobs published before the minions are back on the publish port are held in the master's
    # memory (see the next test) and would die with it: wait for both, then kill in mid-flight
    wait_for(lambda: cluster.cli("saline", "*", "test.ping", "-t", "2").returncode == 0, 30, "the minions back")
    more = cluster.publish_many("*", "test.sleep", 100, ["0.5"])
    time.sleep(0.25)
    cluster.stop("master", signal.SIGKILL)
    kills += 1
    time.sleep(1.0)
    cluster.start_master()
    jids = quick + slow + more
    sent = 2 * len(jids)
    started = time.monotonic()
    wait_for(lambda: cluster.returned(jids) == sent, 60, f"{sent} returns in the job cache", 0.25)
    wait_for(lambda: _sqlite_rows(db, jids)[0] >= sent, 60, f"{sent} returns in the sqlite3 returner", 0.25)
    recovered_in = time.monotonic() - started
    time.sleep(1.0)
    rows, distinct = _sqlite_rows(db, jids)
    assert (rows, distinct) == (sent, sent), logs(cluster)
    assert cluster.returned(jids) == sent
    stats = cluster.runner("master.stats")
    for mid in ("m1", "m2"):
        spool = cluster.minion_dir(mid) / "cache" / "spool.db"
        conn = sqlite3.connect(str(spool), timeout=10)
        left = conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
        conn.close()
        assert left == 0, f"{mid} still holds {left} returns in its spool"
    figure("master_sigkill", kills=kills, sent=sent, job_cache=cluster.returned(jids), sqlite3_rows=rows,
           distinct=distinct, recovered_s=round(recovered_in, 1), duplicates_acked=stats["duplicates"])


def test_minion_killed_in_the_middle_of_a_long_job(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster({"gather_job_timeout": 2})
    cluster.start_master()
    cluster.start_minions("m1")
    cmd = [sys.executable, "-m", "saline.cli.saline", "-c", str(cluster.master_dir), "m1", "test.sleep", "30",
           "-t", "3"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=cluster._env())
    time.sleep(1.0)
    cluster.stop("m1", signal.SIGKILL)
    cluster.start_minion("m1")
    started = time.monotonic()
    out, err = job.communicate(timeout=60)
    took = time.monotonic() - started
    # as Salt 3006: the silent minion is listed, and the exit status is 1
    assert job.returncode == 1 and err == "ERROR: Minions returned with non-zero exit code\n", (out, err)
    assert out == "m1:\n    Minion did not return. [No response]\n", (out, err, logs(cluster))
    # later jobs run on the restarted minion
    wait_for(lambda: cluster.cli("saline", "m1", "test.ping", "-t", "3").returncode == 0, 30, "m1 to answer again")
    later = cluster.cli("saline", "m1", "test.echo", "after the kill")
    assert later.returncode == 0 and later.stdout == "m1:\n    after the kill\n"
    figure("minion_sigkill_mid_job", reported="Minion did not return", cli_s=round(took, 1), later_jobs="ran")


def test_jobs_published_right_after_a_master_restart_reach_the_minions(make_cluster: Callable[..., Cluster]) -> None:
    """The master is killed and stays down long enough for the minions' reconnect interval to back
    off; jobs published the moment it is back are held until the minions have subscribed again,
    so every one of them runs and returns."""
    cluster = make_cluster()
    cluster.start_master()
    cluster.start_minions("m1", "m2")
    cluster.stop("master", signal.SIGKILL)
    time.sleep(3.0)
    cluster.start_master()
    started = time.monotonic()
    jids = cluster.publish_many("*", "test.ping", 20)
    sent = 2 * len(jids)
    wait_for(lambda: cluster.returned(jids) == sent, 30, f"{sent} returns of jobs published at once")
    took = time.monotonic() - started
    assert cluster.returned(jids) == sent
    held = [line for line in cluster.master_log().splitlines() if "subscribed" in line and "after the start" in line]
    assert held, logs(cluster)
    figure("publish_after_restart", sent=sent, arrived=cluster.returned(jids), all_back_s=round(took, 1),
           master_line=held[-1].split("] ", 2)[-1])
