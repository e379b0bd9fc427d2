"""What the SQL-backed returners (and the file job caches) share.

* the job listings of the jobs runner built from ``(jid, load)`` pairs;
* Salt's handling of the special jid ``req`` (a job a minion started itself);
* :class:`SqliteDB`, the one lazily opened, reused SQLite connection of ``sqlite3`` and
  ``saline_cache``, with write transactions, WAL and one-line errors.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from saline import sqlitewal
from saline.jid import format_jid_instance, format_jid_instance_ext
from saline.returners import _json
from saline.returners.base import BackendUnavailable, Returner, ReturnerError

T = TypeVar("T")

#: Salt's filter for ``get_jids_filter(count, filter_find_job=True)`` on a JSON load column; it
#: relies on the default JSON spacing.
FIND_JOB_LIKE = '%"fun": "saltutil.find_job"%'


def one_line(text: object) -> str:
    """A driver message folded to one line."""
    return " ".join(str(text).split())


def cutoff_jid(keep_seconds: float, now: float | None = None) -> str:
    """The jid a job started ``keep_seconds`` ago would have: older jids sort before it."""
    when = dt.datetime.fromtimestamp((now or time.time()) - keep_seconds, dt.timezone.utc)
    return when.strftime("%Y%m%d%H%M%S%f")


def jids_listing(rows: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """``get_jids``: ``{jid: format_jid_instance}`` from ``(jid, load JSON or dict)`` rows."""
    out: dict[str, dict[str, Any]] = {}
    for jid, load in rows:
        load = _json.loads(load, {}) if not isinstance(load, dict) else load
        out[jid] = format_jid_instance(jid, load if isinstance(load, dict) else {})
    return out


def jids_filter_listing(rows_newest_first: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """``get_jids_filter``: the rows (already the ``count`` newest) as a list, oldest first."""
    out = []
    for jid, load in rows_newest_first:
        load = _json.loads(load, {}) if not isinstance(load, dict) else load
        out.append(format_jid_instance_ext(jid, load if isinstance(load, dict) else {}))
    out.sort(key=lambda item: item["JID"])
    return out


def newest_jobs(rows: Iterable[tuple[str, Any]], count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
    """``get_jids_filter`` for backends that list every job: the ``count`` newest of ``(jid, load
    JSON or dict)`` rows, without ``saltutil.find_job`` probes when asked, oldest first."""
    kept = []
    for jid, load in rows:
        load = _json.loads(load, {}) if not isinstance(load, dict) else load
        if filter_find_job and isinstance(load, dict) and load.get("fun") == "saltutil.find_job":
            continue
        kept.append((jid, load))
    kept.sort(key=lambda row: row[0], reverse=True)
    return jids_filter_listing(kept[:max(int(count), 0)])


def prepare_returns(returner: Returner, rets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Salt's ``req`` rule: a return whose jid is ``req`` (``salt-call``, a schedule) gets a new jid
    and is itself stored as that job's load, here, before the returns. Returns the returns to store."""
    if not any(r.get("jid") == "req" for r in rets):
        return rets
    out, loads = [], []
    for ret in rets:
        if ret.get("jid") == "req":
            ret = dict(ret)
            ret["jid"] = returner.prep_jid(nocache=bool(ret.get("nocache")))
            loads.append((ret["jid"], ret, None))
        out.append(ret)
    returner.save_loads(loads)
    return out


class SqliteDB:
    """One SQLite connection per returner instance, opened on first use and kept.

    Writes run in ``BEGIN IMMEDIATE`` … ``COMMIT`` (one transaction per batch); reads run in
    autocommit. The connection is reopened in a forked child. Errors become one line naming the
    returner: a locked, full, missing or unreadable file is ``BackendUnavailable`` (it may come
    back: the framework retries), anything else ``ReturnerError``.
    """

    def __init__(self, returner: str, path: str, timeout: float, *, synchronous: str | None = None,
                 setup: Callable[[sqlite3.Connection], None] | None = None, make_dirs: bool = True) -> None:
        self.returner = returner
        self.path = path
        self.timeout = timeout
        self.synchronous = synchronous
        self.setup = setup
        self.make_dirs = make_dirs
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()

    # -- connection -----------------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited through fork() is the parent's: leave it be
        try:
            if self.make_dirs and self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self.error(exc) from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if self.synchronous:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if str(mode).lower() == "wal":
                sqlitewal.tune(conn)
            if self.setup is not None:
                self.setup(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self.error(exc) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                try:
                    self._conn.close()
                except sqlite3.Error:
                    pass
            self._conn = None

    # -- work -----------------------------------------------------------------------------------
    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction."""
        with self._lock:
            conn = self.connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self.error(exc) from None
            return result

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self.connection()
            try:
                return work(conn)
            except sqlite3.Error as exc:
                raise self.error(exc) from None

    # -- errors ---------------------------------------------------------------------------------
    def error(self, exc: BaseException) -> ReturnerError:
        text = one_line(exc) or type(exc).__name__
        low = text.lower()
        where = f"returner {self.returner}"
        if low.startswith("no such table"):
            table = text.split(":", 1)[-1].strip()
            return ReturnerError(f"{where}: table {table} does not exist in {self.path} "
                                 f"(run: saline-run returners.init {self.returner})")
        if "not a database" in low:
            return ReturnerError(f"{where}: {self.path} is not an SQLite database")
        transient = ("locked", "busy", "unable to open", "disk i/o", "full", "readonly", "read-only",
                     "no such file", "not a directory", "permission denied")
        if isinstance(exc, OSError):
            reason = "a file is in the way of its folder" if isinstance(exc, FileExistsError) else exc.strerror or text
            return BackendUnavailable(f"{where}: cannot use {self.path}: {reason}")
        if any(word in low for word in transient):
            return BackendUnavailable(f"{where}: cannot use {self.path}: {text}")
        return ReturnerError(f"{where}: {text} (database {self.path})")
