"""saline's default job cache (``master_job_cache: saline_cache``): one embedded SQLite file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Mapping

from saline.jid import jid_to_datetime
from saline.returners import _json
from saline.returners._sql import FIND_JOB_LIKE, SqliteDB, cutoff_jid, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import Option, Returner

SCHEMA = """
CREATE TABLE IF NOT EXISTS jids (
  jid TEXT PRIMARY KEY, load TEXT, minions TEXT, started REAL, endtime TEXT);
CREATE INDEX IF NOT EXISTS jids_started ON jids (started);
CREATE TABLE IF NOT EXISTS returns (
  jid TEXT NOT NULL, id TEXT NOT NULL, fun TEXT, full_ret TEXT, success INT, retcode INT,
  alter_time REAL, PRIMARY KEY (jid, id));
CREATE INDEX IF NOT EXISTS returns_fun ON returns (fun, id, jid);
CREATE INDEX IF NOT EXISTS returns_id ON returns (id);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, tag TEXT, data TEXT, alter_time REAL, master_id TEXT);
CREATE INDEX IF NOT EXISTS events_tag ON events (tag);
"""

_INSERT_RETURN = ("INSERT OR REPLACE INTO returns (jid, id, fun, full_ret, success, retcode, alter_time) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)")
# the first load of a jid wins; a row made earlier by save_minions/update_endtime gets it filled in
_INSERT_LOAD = ("INSERT INTO jids (jid, load, minions, started) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (jid) DO UPDATE SET load = COALESCE(jids.load, excluded.load), "
                "minions = COALESCE(jids.minions, excluded.minions)")
_INSERT_EVENT = "INSERT INTO events (tag, data, alter_time, master_id) VALUES (?, ?, ?, ?)"


def _started(jid: str) -> float:
    when = jid_to_datetime(jid)
    return when.timestamp() if when else time.time()


class SalineCacheReturner(Returner):
    """saline's default job cache: every job, load and return in one SQLite file on the master.

    It needs no server and no setup: the file (``<cachedir>/jobs.db`` unless ``saline_cache.database``
    says otherwise) and its tables are made on first use, in WAL mode with ``synchronous=NORMAL``.
    A batch of returns is one transaction (``executemany``), so it keeps up with tens of thousands
    of returns a second.

    Tables::

        jids(jid TEXT PRIMARY KEY, load TEXT, minions TEXT, started REAL, endtime TEXT)
        returns(jid, id, fun, full_ret TEXT, success INT, retcode INT, alter_time REAL,
                PRIMARY KEY (jid, id))
        events(id INTEGER PRIMARY KEY, tag, data, alter_time, master_id)

    ``jids.load`` is the JSON of the publish load (the first one saved for a jid wins),
    ``jids.minions`` the JSON list of the minions the job expected, ``started`` the job's start
    (from the jid, as a Unix time), ``endtime`` what ``update_endtime`` recorded.
    ``returns.full_ret`` is the JSON of the whole return load (``return``, ``retcode``,
    ``success``, ``out``, ``fun_args``, ``_stamp`` …), so ``get_jid`` gives back everything the
    minion sent. A return delivered twice replaces itself (primary key ``(jid, id)``): retries
    never duplicate. ``clean_old_jobs`` drops jobs that started more than ``keep_jobs_seconds``
    ago (``0`` keeps everything) and events older than that.

    Example query (the command-line ``sqlite3`` tool)::

        sqlite3 /var/cache/saline/master/jobs.db \\
          "SELECT id, json_extract(full_ret, '$.return') FROM returns
           WHERE jid = '20240105123456123456' AND success = 0"
    """

    name = "saline_cache"
    summary = "saline's default job cache: an embedded SQLite file on the master (no server needed)"
    options = (
        Option("database", str, None, doc="path of the SQLite file; default `<cachedir>/jobs.db`"),
        Option("timeout", float, 5.0, doc="seconds to wait for a lock held by another process"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        path = self.opts.get("database") or str(Path(self.master_opts.get("cachedir") or ".") / "jobs.db")
        self.database = path
        self._db = SqliteDB(self.name, path, float(self.opts.get("timeout") or 5.0),
                            synchronous="NORMAL", setup=lambda conn: conn.executescript(SCHEMA))

    # -- write side -----------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        now = time.time()
        rows = []
        for ret in rets:
            retcode = ret.get("retcode")
            rows.append((
                _json.text(ret.get("jid")), _json.text(ret.get("id")), _json.text(ret.get("fun")), _json.dumps(ret),
                1 if ret.get("success") else 0, retcode if isinstance(retcode, int) else None, now,
            ))
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_RETURN, rows))

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        rows = []
        for jid, load, minions in loads:
            if minions is None and isinstance(load.get("minions"), list):
                minions = load["minions"]
            rows.append((_json.text(jid), _json.dumps(load), _json.dumps(sorted(set(minions))) if minions is not None else None,
                         _started(str(jid))))
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_LOAD, rows))

    def save_minions(self, jid: str, minions: list[str], syndic_id: str | None = None) -> None:
        """Add to the minions a job expects (a syndic's list joins the master's)."""

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT minions FROM jids WHERE jid = ?", (jid,)).fetchone()
            known = set(_json.loads(row[0], []) or []) if row else set()
            merged = _json.dumps(sorted(known | set(minions)))
            conn.execute("INSERT INTO jids (jid, minions, started) VALUES (?, ?, ?) "
                         "ON CONFLICT (jid) DO UPDATE SET minions = excluded.minions", (jid, merged, _started(jid)))

        self._db.write(work)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        now, master = time.time(), self.master_id
        rows = [(_json.text(e.get("tag")), _json.dumps(e.get("data")), now, master) for e in events]
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_EVENT, rows))

    def update_endtime(self, jid: str, time_: str) -> None:
        """Record when a job ended (``job_cache_store_endtime``), as ``2024, Jan 05 12:34:56.123456``."""
        self._db.write(lambda conn: conn.execute(
            "INSERT INTO jids (jid, started, endtime) VALUES (?, ?, ?) "
            "ON CONFLICT (jid) DO UPDATE SET endtime = excluded.endtime", (jid, _started(jid), time_)))

    def get_endtime(self, jid: str) -> str | bool:
        row = self._db.read(lambda conn: conn.execute("SELECT endtime FROM jids WHERE jid = ?", (jid,)).fetchone())
        return row[0] if row and row[0] else False

    # -- read side ------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        row = self._db.read(lambda conn: conn.execute("SELECT load, minions FROM jids WHERE jid = ?", (jid,)).fetchone())
        if not row or (row[0] is None and row[1] is None):
            return {}
        load = _json.loads(row[0], {})
        load = dict(load) if isinstance(load, dict) else {}
        if row[1] is not None:
            load["Minions"] = sorted(_json.loads(row[1], []) or [])
        return load

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._db.read(lambda conn: conn.execute("SELECT id, full_ret FROM returns WHERE jid = ?", (jid,)).fetchall())
        return {minion: _json.loads(full) for minion, full in rows}

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, the return of its newest job that ran ``fun``."""
        sql = ("SELECT r.id, r.full_ret FROM returns r JOIN "
               "(SELECT id, MAX(jid) AS jid FROM returns WHERE fun = ? GROUP BY id) latest "
               "ON r.id = latest.id AND r.jid = latest.jid")
        rows = self._db.read(lambda conn: conn.execute(sql, (fun,)).fetchall())
        return {minion: _json.loads(full) for minion, full in rows}

    def get_jids(self) -> dict[str, Any]:
        rows = self._db.read(lambda conn: conn.execute("SELECT jid, load FROM jids WHERE load IS NOT NULL").fetchall())
        return jids_listing(rows)

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        where = "load IS NOT NULL" + (" AND load NOT LIKE ?" if filter_find_job else "")
        args: tuple[Any, ...] = (FIND_JOB_LIKE, int(count)) if filter_find_job else (int(count),)
        sql = f"SELECT jid, load FROM jids WHERE {where} ORDER BY jid DESC LIMIT ?"
        return jids_filter_listing(self._db.read(lambda conn: conn.execute(sql, args).fetchall()))

    def get_minions(self) -> list[str]:
        rows = self._db.read(lambda conn: conn.execute("SELECT DISTINCT id FROM returns").fetchall())
        return sorted(r[0] for r in rows)

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        cutoff = time.time() - keep
        old_jid = cutoff_jid(keep)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM returns WHERE jid < ? OR jid IN (SELECT jid FROM jids WHERE started < ?)",
                         (old_jid, cutoff))
            conn.execute("DELETE FROM jids WHERE started < ?", (cutoff,))
            conn.execute("DELETE FROM events WHERE alter_time < ?", (cutoff,))

        self._db.write(work)

    def init_schema(self) -> None:
        self._db.read(lambda conn: conn.executescript(SCHEMA))

    def check(self) -> None:
        self._db.read(lambda conn: conn.execute("SELECT 1 FROM jids, returns, events LIMIT 0").fetchall())

    def close(self) -> None:
        self._db.close()
