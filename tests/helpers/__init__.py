"""Helpers shared by the outbox and delivery tests.

``ProbeReturner`` is a small custom returner, loaded the way a user's own returner is (a ``.py``
file in a ``returner_dirs`` folder, see :func:`probe_dir`). It stores into a real SQLite file and
records the size of every batch it stored, which the real returners do not tell; a return with
``"poison": True`` fails its whole batch (one transaction), and a wrong ``token`` is refused with
an error that echoes the token, as some real APIs do, to prove the master scrubs secrets.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

PROBE_SCHEMA = """
CREATE TABLE IF NOT EXISTS rets (jid TEXT, id TEXT, fun TEXT, ret TEXT);
CREATE TABLE IF NOT EXISTS loads (jid TEXT PRIMARY KEY, load TEXT);
CREATE TABLE IF NOT EXISTS events (tag TEXT, data TEXT);
CREATE TABLE IF NOT EXISTS minions (jid TEXT, minions TEXT);
-- first: 1 for returns handed over as never sent before (returns_first), 0 for returns, NULL for the rest
CREATE TABLE IF NOT EXISTS batches (kind TEXT, size INTEGER, t REAL, first INTEGER);
"""


class ProbeReturner(Returner):
    name = "probe"
    summary = "test returner: a SQLite file that also records batch sizes"
    options = (
        Option("path", str, None, required=True, doc="SQLite file"),
        Option("token", str, None, secret=True, doc="must equal expect_token when that is set"),
        Option("expect_token", str, None, doc="the token the 'service' accepts"),
        Option("down", bool, False, doc="behave as an unreachable backend"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self.opts.get("down"):
            raise BackendUnavailable(f"returner probe: cannot reach {self.opts['path']}")
        expected = self.opts.get("expect_token")
        if expected and self.opts.get("token") != expected:
            raise ReturnerError(f"returner probe: service refused token {self.opts.get('token')}")
        if self._conn is None:
            self._conn = sqlite3.connect(self.opts["path"], timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(PROBE_SCHEMA)
        return self._conn

    def _batch(self, kind: str, n: int, write: Callable[[sqlite3.Connection], None], first: int | None = None) -> None:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                write(db)
                db.execute("INSERT INTO batches VALUES (?, ?, ?, ?)", (kind, n, time.time(), first))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def returns(self, rets: list[dict[str, Any]]) -> None:
        self._returns(rets, 0)

    def returns_first(self, rets: list[dict[str, Any]]) -> None:
        self._returns(rets, 1)

    def _returns(self, rets: list[dict[str, Any]], first: int) -> None:
        def write(db: sqlite3.Connection) -> None:
            for ret in rets:
                if ret.get("poison"):
                    raise ReturnerError(f"returner probe: cannot store the return of {ret.get('id')}: poisoned")
                db.execute("INSERT INTO rets VALUES (?, ?, ?, ?)",
                           (ret.get("jid"), ret.get("id"), ret.get("fun"), repr(ret.get("return"))))
        self._batch("ret", len(rets), write, first)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.executemany("INSERT OR IGNORE INTO loads VALUES (?, ?)", [(j, repr(load)) for j, load, _ in loads])
        self._batch("load", len(loads), write)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO events VALUES (?, ?)", [(e["tag"], repr(e["data"])) for e in events])
        self._batch("event", len(events), write)

    def save_minions(self, jid: str, minions: list[str], syndic_id: str | None = None) -> None:
        self._batch("minions", 1, lambda db: db.execute("INSERT INTO minions VALUES (?, ?)", (jid, ",".join(minions))))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def probe_dir(folder: Path) -> str:
    """A ``returner_dirs`` folder whose one file makes ``probe`` available, as a user's file would."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.py").write_text("from tests.helpers import ProbeReturner  # noqa: F401\n")
    return str(folder)


def probe_query(path: Path | str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true; that value, or the last one at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def make_ret(jid: str, minion: str, fun: str = "test.ping", value: Any = True, **extra: Any) -> dict[str, Any]:
    """A minion's return as the master hands it to returners (Salt's fields)."""
    return {"fun_args": [], "jid": jid, "return": value, "retcode": 0, "success": True, "fun": fun,
            "id": minion, **extra}
