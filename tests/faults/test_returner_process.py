"""Returner workers run in processes of their own (``returner_processes``, the default).

A delivery process killed with SIGKILL mid-stream is started again and nothing is lost; a master
killed with SIGKILL leaves no delivery process behind; ``returners.status`` shows the figures that
live in those processes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.faults.conftest import Cluster, figure, logs, wait_for

pytestmark = pytest.mark.e2e

MODULE = "saline.master.returner_process"


def delivery_processes(master_pid: int) -> dict[str, int]:
    """returner name -> pid of the master's delivery processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master_pid and MODULE.encode() in argv:
            found[argv[argv.index(MODULE.encode()) + 2].decode()] = int(entry.name)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def distinct_returns(path: Path, jids: list[str]) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT jid, id FROM salt_returns WHERE jid BETWEEN ? AND ?)",
                            (min(jids), max(jids))).fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        conn.close()


def test_a_killed_delivery_process_is_replaced_and_nothing_is_lost(make_cluster: Callable[..., Cluster],
                                                                   tmp_path: Path) -> None:
    target = tmp_path / "returns.db"
    cluster = make_cluster({"return": "sqlite3", "sqlite3.database": str(target), "returner_batch_size": 50})
    cluster.start_master()
    cluster.start_minions("m1", "m2")
    master_pid = cluster.procs["master"].pid
    jids = cluster.publish_many("*", "test.ping", 50)
    first = wait_for(lambda: delivery_processes(master_pid).get("sqlite3"), 20, "the sqlite3 delivery process")
    # the default job cache is the outbox's own file: nothing to deliver, so no process of its own
    assert "saline_cache" not in delivery_processes(master_pid)
    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    jids += cluster.publish_many("*", "test.ping", 150)
    expected = 2 * len(jids)
    wait_for(lambda: distinct_returns(target, jids) == expected, 60,
             f"all {expected} returns in the sqlite3 file\n{logs(cluster)}")
    took = time.monotonic() - killed_at
    second = delivery_processes(master_pid).get("sqlite3")
    assert second and second != first, "a new delivery process took over"
    assert "returner sqlite3: its delivery process ended (killed by signal 9); starting another" in cluster.master_log()
    wait_for(lambda: cluster.status("sqlite3")["pending"] == 0, 30, "the outbox to empty")
    status = cluster.status("sqlite3")
    assert status["dead"] == 0 and status["throughput"] > 0, status
    figure("killed delivery process", returns=expected, delivered_distinct=expected, recovered_s=round(took, 2))


def test_a_killed_idle_delivery_process_comes_back_by_itself(make_cluster: Callable[..., Cluster],
                                                             tmp_path: Path) -> None:
    cluster = make_cluster({"return": "sqlite3", "sqlite3.database": str(tmp_path / "returns.db")})
    cluster.start_master()
    cluster.start_minions("m1")
    master_pid = cluster.procs["master"].pid
    cluster.publish_many("m1", "test.ping", 1)
    first = wait_for(lambda: delivery_processes(master_pid).get("sqlite3"), 20, "the sqlite3 delivery process")
    os.kill(first, signal.SIGKILL)
    # nothing new comes in: the master's own tick notices and starts it again
    wait_for(lambda: delivery_processes(master_pid).get("sqlite3") not in (None, first), 10,
             f"a new sqlite3 delivery process\n{logs(cluster)}")


def test_delivery_processes_end_with_a_killed_master(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = make_cluster({"return": "sqlite3", "sqlite3.database": str(tmp_path / "returns.db")})
    cluster.start_master()
    cluster.start_minions("m1")
    master = cluster.procs["master"]
    cluster.publish_many("m1", "test.ping", 3)
    children = wait_for(lambda: delivery_processes(master.pid), 20, "a delivery process")
    master.send_signal(signal.SIGKILL)
    master.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in children.values()), 15,
             f"the delivery processes {children} to end after the master")


def test_threads_instead_of_processes(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    target = tmp_path / "returns.db"
    cluster = make_cluster({"return": "sqlite3", "sqlite3.database": str(target), "returner_processes": False})
    cluster.start_master()
    cluster.start_minions("m1")
    jids = cluster.publish_many("m1", "test.ping", 5)
    wait_for(lambda: distinct_returns(target, jids) == 5, 30, f"5 returns\n{logs(cluster)}")
    assert delivery_processes(cluster.procs["master"].pid) == {}
