"""The write-ahead-log settings of the SQLite files saline writes in bulk (the outbox, master.db
and the SQLite returners' files).

In WAL mode with ``synchronous=NORMAL`` a commit is not synced to disk; a checkpoint is (the log
and the database file). At SQLite's default of a checkpoint every 1,000 pages, those syncs halved
the rows per second of batched inserts on this machine; every 10,000 pages (up to 40 MB of log)
doubles them. ``journal_size_limit`` trims the log back to 64 MB after a checkpoint.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

CHECKPOINT_PAGES = 10_000
LOG_LIMIT_BYTES = 64 * 1024 * 1024


def tune(conn: sqlite3.Connection) -> None:
    """Apply the settings to a connection already in WAL mode."""
    conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit={LOG_LIMIT_BYTES}")


def private(path: str | Path) -> None:
    """Make a database file and its log files readable by their owner only (0600): returns and
    job loads may hold secrets. New files get that from the daemons' umask; this fixes files
    left by an older version or created under another umask."""
    base = Path(path)
    for candidate in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
        try:
            if candidate.exists() and candidate.stat().st_mode & 0o077:
                os.chmod(candidate, 0o600)
        except OSError:
            pass  # not ours to change: the folder (0700) still keeps others out
