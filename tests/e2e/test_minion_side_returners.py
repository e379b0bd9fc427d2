"""Minion-side returners (Salt's behaviour for --return), through the minion's own outbox."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from saline.localcluster import LocalCluster

pytestmark = pytest.mark.e2e


def test_return_runs_on_the_minion_when_asked(tmp_path: Path) -> None:
    db = tmp_path / "minion-returns.db"
    lines = tmp_path / "minion-events.jsonl"
    with LocalCluster(tmp_path, master_opts={"returners_on_minion": True}) as cluster:
        cluster.start_master()
        cluster.start_minion("edge1", **{"sqlite3.database": str(db), "return": "rawfile_json",
                                         "rawfile_json.filename": str(lines)})
        cluster.accept("edge1")
        result = cluster.cli("saline", "edge1", "test.echo", "kept on the edge", "--return", "sqlite3", "-v")
        assert result.returncode == 0
        jid = re.search(r"jid (\d{20})", result.stdout).group(1)

        def stored() -> bool:
            if not db.exists():
                return False
            try:
                with sqlite3.connect(db) as conn:
                    return conn.execute("SELECT COUNT(*) FROM salt_returns WHERE jid = ?", (jid,)).fetchone()[0] == 1
            except sqlite3.OperationalError:  # the returner has not created its table yet
                return False
        cluster.wait_for(stored, 20, "the minion's sqlite3 row")
        with sqlite3.connect(db) as conn:
            fun, mid, full_ret, success = conn.execute(
                "SELECT fun, id, full_ret, success FROM salt_returns WHERE jid = ?", (jid,)).fetchone()
        assert (fun, mid, json.loads(full_ret), success) == ("test.echo", "edge1", "kept on the edge", "1")
        cluster.wait_for(lambda: lines.exists() and jid in lines.read_text(), 20, "the minion's rawfile_json line")
        record = json.loads(next(line for line in lines.read_text().splitlines() if jid in line))
        assert record["return"] == "kept on the edge" and record["id"] == "edge1"
        # The master's job cache still has the return too.
        assert cluster.cli("saline-run", "jobs.lookup_jid", jid).stdout == "edge1:\n    kept on the edge\n"
