"""The minion's spool: every return stays on disk until the master acknowledges it.

SQLite in WAL mode under the minion's ``cachedir``. Keyed by (minion id, jid) so that one file can
serve a whole swarm of minions in one process.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

from saline import sqlitewal


class Spool:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS spool (mid TEXT NOT NULL, jid TEXT NOT NULL, payload BLOB NOT NULL,"
                        " created REAL NOT NULL, sent REAL NOT NULL DEFAULT 0, PRIMARY KEY (mid, jid))")
        sqlitewal.private(path)
        self.lock = threading.Lock()

    def put(self, mid: str, jid: str, ret: dict[str, Any]) -> None:
        blob = msgpack.packb(ret, use_bin_type=True, default=str)
        now = time.time()
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO spool VALUES (?, ?, ?, ?, ?)", (mid, jid, blob, now, now))

    def ack(self, mid: str, jid: str) -> None:
        with self.lock:
            self.db.execute("DELETE FROM spool WHERE mid = ? AND jid = ?", (mid, jid))

    def due(self, mid: str, older_than: float) -> list[tuple[str, dict[str, Any]]]:
        """Returns not acknowledged and last sent more than ``older_than`` seconds ago."""
        cutoff = time.time() - older_than
        with self.lock:
            rows = self.db.execute("SELECT jid, payload FROM spool WHERE mid = ? AND sent <= ? ORDER BY jid",
                                   (mid, cutoff)).fetchall()
            if rows:
                self.db.execute("UPDATE spool SET sent = ? WHERE mid = ? AND sent <= ?", (time.time(), mid, cutoff))
        return [(jid, msgpack.unpackb(blob, raw=False, strict_map_key=False)) for jid, blob in rows]

    def count(self, mid: str) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM spool WHERE mid = ?", (mid,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()
