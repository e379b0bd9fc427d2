"""saline's default job cache (``master_job_cache: saline_cache``): the master's own record log."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Mapping

from saline import recordlog
from saline.returners import _json
from saline.returners._sql import SqliteDB, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import Option, Returner

_UPSERT_RETURN = ("INSERT INTO records (kind, route, cached, jid, mid, fun, stamp, body) VALUES (0, 0, 1, ?, ?, ?, ?, ?) "
                  "ON CONFLICT (jid, mid) WHERE kind = 0 AND cached = 1 DO UPDATE SET body = excluded.body, stamp = excluded.stamp, "
                  "fun = excluded.fun")
_INSERT_EVENT = "INSERT INTO records (kind, route, cached, mid, stamp, body) VALUES (2, 0, 1, ?, ?, ?)"


class SalineCacheReturner(Returner):
    """saline's default job cache: every job, load and return in one SQLite file on the master.

    It needs no server and no setup. By default its file is the master's outbox
    (``<cachedir>/outbox.db``, :mod:`saline.recordlog`'s layout): the master writes each return
    there once, in the transaction that makes it durable, and this returner reads it in place, so
    with the default job cache nothing is copied and nothing waits to be delivered
    (``returners.status`` shows it ``stored_in_place``). With ``saline_cache.database`` set to
    another file (or when another process writes to it), it is an ordinary returner writing the
    same layout there.

    Tables (see :mod:`saline.recordlog`)::

        records(seq, kind, route, cached, jid, mid, fun, stamp, body)   kind 0: returns, 2: events
        jobs(jid TEXT PRIMARY KEY, load, minions, started REAL, endtime TEXT)

    ``body`` and ``jobs.load``/``minions`` are MessagePack: a return's body is the whole return
    load (``return``, ``retcode``, ``success``, ``out``, ``fun_args``, ``_stamp`` …), so
    ``get_jid`` gives back everything the minion sent; ``started`` is the job's start (from the
    jid, as a Unix time), ``endtime`` what ``update_endtime`` recorded. A return delivered twice
    replaces itself (one per job and minion): retries never duplicate. ``clean_old_jobs`` drops
    jobs that started more than ``keep_jobs_seconds`` ago (``0`` keeps everything) and events
    older than that, never what a returner has yet to deliver.

    Example query (the command-line ``sqlite3`` tool; ``saline-run jobs.lookup_jid`` decodes the
    bodies)::

        sqlite3 /var/cache/saline/master/outbox.db \\
          "SELECT mid, fun, datetime(stamp, 'unixepoch') FROM records WHERE kind = 0 AND jid = '20240105123456123456'"
    """

    name = "saline_cache"
    summary = "saline's default job cache: the master's own SQLite record log (no server needed)"
    options = (
        Option("database", str, None, doc="path of the SQLite file; default `<cachedir>/outbox.db`, the master's "
                                           "outbox, read in place"),
        Option("timeout", float, 5.0, doc="seconds to wait for a lock held by another process"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        path = self.opts.get("database") or str(Path(self.master_opts.get("cachedir") or ".") / "outbox.db")
        self.database = path
        self._db = SqliteDB(self.name, path, float(self.opts.get("timeout") or 5.0),
                            synchronous="NORMAL", setup=lambda conn: conn.executescript(recordlog.SCHEMA))

    # -- write side -----------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        now = time.time()
        rows = [(str(r.get("jid")), str(r.get("id")), r.get("fun") if isinstance(r.get("fun"), str) else None, now,
                 recordlog.pack(r)) for r in rets]
        if rows:
            self._db.write(lambda conn: conn.executemany(_UPSERT_RETURN, rows))

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        rows = [recordlog.load_row(str(jid), load, minions) for jid, load, minions in loads]
        if rows:
            self._db.write(lambda conn: conn.executemany(recordlog.INSERT_LOAD, rows))

    def save_minions(self, jid: str, minions: list[str], syndic_id: str | None = None) -> None:
        """Add to the minions a job expects (a syndic's list joins the master's)."""
        self._db.write(lambda conn: recordlog.save_minions(conn, jid, minions))

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        now = time.time()
        rows = [(str(e.get("tag")), now, recordlog.pack(e)) for e in events]
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_EVENT, rows))

    def update_endtime(self, jid: str, time_: str) -> None:
        """Record when a job ended (``job_cache_store_endtime``), as ``2024, Jan 05 12:34:56.123456``."""
        self._db.write(lambda conn: recordlog.update_endtime(conn, jid, time_))

    def get_endtime(self, jid: str) -> str | bool:
        return self._db.read(lambda conn: recordlog.get_endtime(conn, jid))

    # -- read side ------------------------------------------------------------------------------
    # what a minion returned as bytes reads back as text, as from Salt's job caches
    def get_load(self, jid: str) -> dict[str, Any]:
        return _json.decode(self._db.read(lambda conn: recordlog.get_load(conn, jid)))

    def get_jid(self, jid: str) -> dict[str, Any]:
        return _json.decode(self._db.read(lambda conn: recordlog.get_jid(conn, jid)))

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, the return of its newest job that ran ``fun``."""
        return _json.decode(self._db.read(lambda conn: recordlog.get_fun(conn, fun)))

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._db.read(lambda conn: list(recordlog.job_loads(conn))))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        def newest(conn: sqlite3.Connection) -> list[tuple[str, Any]]:
            found: list[tuple[str, Any]] = []
            batch = max(int(count), 1)
            for jid, load in recordlog.job_loads(conn):
                if filter_find_job and isinstance(load, dict) and load.get("fun") == "saltutil.find_job":
                    continue
                found.append((jid, load))
                if len(found) >= batch:
                    break
            return found

        return jids_filter_listing(self._db.read(newest)) if count > 0 else []

    def get_minions(self) -> list[str]:
        return self._db.read(recordlog.get_minions)

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        self._db.write(lambda conn: recordlog.prune(conn, keep))

    def init_schema(self) -> None:
        self._db.read(lambda conn: conn.executescript(recordlog.SCHEMA))

    def check(self) -> None:
        self._db.read(lambda conn: conn.execute("SELECT 1 FROM records, jobs LIMIT 0").fetchall())

    def close(self) -> None:
        self._db.close()
