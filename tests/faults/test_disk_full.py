"""The master's cache folder full while returns come in.

The cache folder is a tmpfs of a few MB mounted for the test (root is not stopped by file modes,
so a chmod would prove nothing, and a file system with files open for writing cannot be remounted
read-only: the kernel answers EBUSY). The test fills it. The master cannot write its outbox: it
logs one clear line, does not acknowledge, and the minions keep the returns in their spools; once
space returns, every return arrives.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.faults.conftest import Cluster, figure, logs, wait_for

pytestmark = pytest.mark.e2e

JOBS = 40


def _spooled(cluster: Cluster, mid: str) -> int:
    conn = sqlite3.connect(str(cluster.minion_dir(mid) / "cache" / "spool.db"), timeout=10)
    try:
        return conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
    finally:
        conn.close()


def _fill(folder: Path) -> int:
    """Write a file until the file system is full; its size."""
    written = 0
    chunk = b"\0" * 65536
    with open(folder / "filler", "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        for small in (4096, 512, 1):  # the last bytes too
            while True:
                try:
                    written += fh.write(b"\0" * small)
                except OSError:
                    break
    return written


def test_cache_folder_full(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(minion_opts={"spool_resend_seconds": 1})
    cache = cluster.master_dir / "cache"
    cache.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(cache)], check=True)
    try:
        cluster.start_master()
        cluster.start_minions("m1", "m2")
        jids = cluster.publish_many("*", "test.sleep", JOBS, ["1.5"])
        sent = 2 * len(jids)
        _fill(cache)
        broken_at = time.monotonic()
        # the returns come back, cannot be stored, stay in the spools
        wait_for(lambda: _spooled(cluster, "m1") + _spooled(cluster, "m2") == sent, 30,
                 f"{sent} returns held in the minions' spools")
        wait_for(lambda: "minions will resend" in cluster.master_log(), 30, "the master to say why")
        time.sleep(2.5)  # a few resends meanwhile: still refused, still spooled
        held = _spooled(cluster, "m1") + _spooled(cluster, "m2")
        assert held == sent
        errors = [line for line in cluster.master_log().splitlines() if "cannot store" in line]
        assert len(errors) == 1, errors[:5]  # one line, not one per resend
        line = errors[0]
        assert "[ERROR]" in line and "minions will resend" in line
        assert "database or disk is full" in line, line
        assert "Traceback" not in cluster.master_log() and "Traceback" not in (cluster.master_dir / "stderr.log").read_text()
        # the master still answers meanwhile; a new job cannot be stored, and says so in one line
        refused = cluster.cli("saline", "m1", "test.ping")
        assert refused.returncode == 2 and refused.stderr.startswith("ERROR: cannot store the job: outbox "), refused
        assert refused.stderr.count("\n") == 1
        assert cluster.runner("master.stats")["store_failures"] >= sent

        (cache / "filler").unlink()
        fixed_at = time.monotonic()
        wait_for(lambda: cluster.returned(jids) == sent, 60, f"all {sent} returns once space is back", 0.25)
        recovered_in = time.monotonic() - fixed_at
        wait_for(lambda: _spooled(cluster, "m1") + _spooled(cluster, "m2") == 0, 30, "the spools to empty")
        assert "returns are stored again" in cluster.master_log()
        assert cluster.cli("saline", "*", "test.ping").returncode == 0
        figure("cache_full", sent=sent, spooled_while_broken=held, arrived=cluster.returned(jids),
               error_line=line.split("] ", 2)[-1].replace(str(cache), "<cachedir>")[:200], recovered_s=round(recovered_in, 1),
               broken_s=round(fixed_at - broken_at, 1))
    finally:
        cluster.stop_all()
        subprocess.run(["umount", "-l", str(cache)], check=False)
