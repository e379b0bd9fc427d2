"""The master's own bookkeeping, kept on disk so a restart forgets nothing.

``<cachedir>/master.db`` (SQLite, WAL) holds the jobs the master published (load, expected
minions, start time), which minion returns it has already accepted (so a return resent from a
minion's spool after a lost ack is acknowledged again but delivered once), and the minions it
knows (last grains, last seen). This is not the job cache: that is a returner
(``master_job_cache``) and may live in MySQL; this is what the master needs to do its job.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import msgpack

from saline import sqlitewal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (jid TEXT PRIMARY KEY, load BLOB NOT NULL, minions BLOB NOT NULL,
                                 started REAL NOT NULL, timeout REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS job_returns (jid TEXT NOT NULL, id TEXT NOT NULL, retcode INT,
                                        received REAL NOT NULL, PRIMARY KEY (jid, id));
CREATE TABLE IF NOT EXISTS minions (id TEXT PRIMARY KEY, grains BLOB, last_seen REAL);
"""


#: jobs whose expected/returned sets and load stay in memory (the rest are read from disk)
MEMORY_JOBS = 10_000


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=str)


def _unpack(blob: bytes | None) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False) if blob else None


class MasterState:
    """Jobs, accepted returns and known minions. Used from the master's event-loop thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        sqlitewal.tune(self.db)
        self.db.executescript(_SCHEMA)
        sqlitewal.private(path)
        self.lock = threading.Lock()
        self.grains: dict[str, dict | None] = {}
        self.last_seen: dict[str, float] = {}
        for mid, grains, seen in self.db.execute("SELECT id, grains, last_seen FROM minions"):
            self.grains[mid] = _unpack(grains)
            self.last_seen[mid] = seen or 0.0
        # jids of jobs still in memory: jid -> (expected set, returned set), and their loads, so the
        # return path reads neither from disk
        self._jobs: dict[str, tuple[set[str], set[str]]] = {}
        self._loads: dict[str, dict[str, Any]] = {}
        #: which minions' returns of a job the store holds (the outbox, when it keeps every return
        #: as long as the job is known): then they are not written here as well
        self.returned_from: Callable[[str], set[str]] | None = None

    # -- jobs ------------------------------------------------------------------------------------
    def add_job(self, jid: str, load: dict[str, Any], minions: list[str], timeout: float) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                            (jid, _pack(load), _pack(minions), time.time(), timeout))
        self._jobs[jid] = (set(minions), set())
        self._loads[jid] = load
        while len(self._jobs) > MEMORY_JOBS:  # the oldest go back to disk only
            self.drop_from_memory(next(iter(self._jobs)))

    def job(self, jid: str) -> tuple[set[str], set[str]] | None:
        """(expected, returned) for a job, loading it from disk after a restart."""
        known = self._jobs.get(jid)
        if known is not None:
            return known
        with self.lock:
            row = self.db.execute("SELECT minions FROM jobs WHERE jid = ?", (jid,)).fetchone()
            if row is None:
                return None
            returned = {r[0] for r in self.db.execute("SELECT id FROM job_returns WHERE jid = ?", (jid,))}
        if self.returned_from is not None:
            returned |= self.returned_from(jid)
        known = (set(_unpack(row[0]) or []), returned)
        self._jobs[jid] = known
        return known

    def job_load(self, jid: str) -> dict[str, Any] | None:
        load = self._loads.get(jid)
        if load is not None:
            return load
        with self.lock:
            row = self.db.execute("SELECT load FROM jobs WHERE jid = ?", (jid,)).fetchone()
        if row is None:
            return None
        load = self._loads[jid] = _unpack(row[0])
        return load

    def record_returns(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Returns now stored: a copy resent later is acknowledged, not stored again. Written to
        ``job_returns`` only when the store cannot say itself which returns it holds
        (``returned_from``): a return is then written once, where it is stored."""
        rows = list(rows)
        if self.returned_from is None:
            now = time.time()
            with self.lock:
                self.db.execute("BEGIN")
                self.db.executemany("INSERT OR IGNORE INTO job_returns VALUES (?, ?, ?, ?)",
                                    [(jid, mid, rc, now) for jid, mid, rc in rows])
                self.db.execute("COMMIT")
        for jid, mid, _rc in rows:
            job = self._jobs.get(jid)
            if job is not None:
                job[1].add(mid)
                if job[0] <= job[1]:  # complete: a late duplicate reads it back from disk
                    self.drop_from_memory(jid)

    def note_returned(self, jid: str, mid: str) -> None:
        """A return stored by another master of the cluster (in memory only: it is not ours to keep)."""
        job = self._jobs.get(jid)
        if job is not None:
            job[1].add(mid)

    def recent_jobs(self, since: float) -> list[tuple[str, dict[str, Any], list[str], set[str]]]:
        with self.lock:
            rows = self.db.execute("SELECT jid, load, minions FROM jobs WHERE started >= ? ORDER BY jid",
                                   (since,)).fetchall()
        out = []
        for jid, load, minions in rows:
            job = self.job(jid)
            out.append((jid, _unpack(load), _unpack(minions), job[1] if job else set()))
        return out

    def forget_before(self, cutoff: float) -> int:
        with self.lock:
            old = [r[0] for r in self.db.execute("SELECT jid FROM jobs WHERE started < ?", (cutoff,))]
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM job_returns WHERE jid = ?", [(j,) for j in old])
            self.db.executemany("DELETE FROM jobs WHERE jid = ?", [(j,) for j in old])
            self.db.execute("COMMIT")
        for jid in old:
            self.drop_from_memory(jid)
        return len(old)

    def drop_from_memory(self, jid: str) -> None:
        self._jobs.pop(jid, None)
        self._loads.pop(jid, None)

    # -- minions ---------------------------------------------------------------------------------
    def saw_minion(self, minion_id: str, grains: dict | None) -> None:
        now = time.time()
        self.last_seen[minion_id] = now
        if grains is not None:
            self.grains[minion_id] = grains
            with self.lock:
                self.db.execute("INSERT OR REPLACE INTO minions VALUES (?, ?, ?)", (minion_id, _pack(grains), now))

    def forget_minion(self, minion_id: str) -> None:
        self.grains.pop(minion_id, None)
        self.last_seen.pop(minion_id, None)
        with self.lock:
            self.db.execute("DELETE FROM minions WHERE id = ?", (minion_id,))

    def close(self) -> None:
        self.db.close()
