"""Salt's ``sqlite3`` returner: Salt's tables and values in a local SQLite file."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from typing import Any, Mapping

from saline.returners import _json
from saline.returners._sql import FIND_JOB_LIKE, SqliteDB, cutoff_jid, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import Option, Returner

# Salt's DDL (``fun TEXT KEY`` is Salt's spelling: SQLite reads the type as "TEXT KEY", TEXT
# affinity, no index), then what saline adds: indexes, and a table for events.
SCHEMA = """
CREATE TABLE IF NOT EXISTS jids (jid TEXT PRIMARY KEY, load TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS salt_returns (fun TEXT KEY, jid TEXT KEY, id TEXT KEY, fun_args TEXT,
  date TEXT NOT NULL, full_ret TEXT NOT NULL, success TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS salt_returns_jid_id ON salt_returns (jid, id);
CREATE INDEX IF NOT EXISTS salt_returns_fun_id ON salt_returns (fun, id, jid);
CREATE TABLE IF NOT EXISTS salt_events (id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT, data TEXT,
  alter_time TEXT, master_id TEXT);
CREATE INDEX IF NOT EXISTS salt_events_tag ON salt_events (tag);
"""

# A return delivered again (same jid, minion and function) is not stored twice.
_INSERT_RETURN = ("INSERT INTO salt_returns (fun, jid, id, fun_args, date, full_ret, success) "
                  "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS "
                  "(SELECT 1 FROM salt_returns WHERE jid = ?2 AND id = ?3 AND fun IS ?1)")
_INSERT_LOAD = "INSERT OR IGNORE INTO jids (jid, load) VALUES (?, ?)"
_INSERT_EVENT = "INSERT INTO salt_events (tag, data, alter_time, master_id) VALUES (?, ?, ?, ?)"


def _success(ret: dict[str, Any]) -> str:
    # Salt binds the bool, which a TEXT column keeps as '1'/'0'; a missing key is ''.
    if "success" not in ret:
        return ""
    return "1" if ret["success"] else "0"


class Sqlite3Returner(Returner):
    """Salt's ``sqlite3`` returner: returns and job loads in a local SQLite file, Salt's tables.

    Salt's layout, unchanged::

        jids(jid TEXT PRIMARY KEY, load TEXT NOT NULL)
        salt_returns(fun TEXT KEY, jid TEXT KEY, id TEXT KEY, fun_args TEXT,
                     date TEXT NOT NULL, full_ret TEXT NOT NULL, success TEXT NOT NULL)

    and its quirks: ``full_ret`` holds the JSON of the return **value** only (not the whole
    return), ``fun_args`` the Python text form of the argument list (``['x', {'k': 1}]``) or
    NULL when there are none, ``date`` the master's local time of storage
    (``2024-01-05 13:34:56.123456``), ``success`` the text ``1`` or ``0``. ``jids.load`` is the
    JSON of the job's load; the first one saved for a jid wins.

    What saline adds (created by ``returners.init sqlite3`` and, with ``create_schema`` on, the
    default, on first use): indexes on ``salt_returns(jid, id)`` and ``(fun, id, jid)``, and a
    table for ``event_return``::

        salt_events(id INTEGER PRIMARY KEY AUTOINCREMENT, tag TEXT, data TEXT,
                    alter_time TEXT, master_id TEXT)

    (``data`` the JSON of the event data, ``alter_time`` the local time like ``date``).
    Unlike Salt, ``get_jid`` returns every minion of the job (``{id: {"return": …}}``),
    ``get_fun`` works (each minion's newest return of that function), a return delivered twice
    (same jid, minion and function) is stored once, and ``clean_old_jobs`` removes jobs that
    started more than ``keep_jobs_seconds`` ago. The file is opened once, in WAL mode, and each
    batch is one transaction.

    Example query::

        sqlite3 /var/lib/salt/returns.db \\
          "SELECT id, full_ret FROM salt_returns WHERE fun = 'test.ping' AND success = '0'"
    """

    name = "sqlite3"
    summary = "Salt's sqlite3 returner: Salt's jids/salt_returns tables in a local SQLite file"
    options = (
        Option("database", str, None, required=True, doc="path of the SQLite file"),
        Option("timeout", float, 5.0, doc="seconds to wait for a lock held by another process"),
        Option("create_schema", bool, True, doc="create the tables on first use (the file is local)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.database = str(self.opts["database"])
        setup = (lambda conn: conn.executescript(SCHEMA)) if self.opts.get("create_schema", True) else None
        self._db = SqliteDB(self.name, self.database, float(self.opts.get("timeout") or 5.0),
                            setup=setup, make_dirs=bool(self.opts.get("create_schema", True)))

    # -- write side -----------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        date = str(dt.datetime.now())
        rows = []
        for ret in rets:
            fun, fun_args = ret.get("fun"), ret.get("fun_args")
            rows.append((
                _json.text(fun), _json.text(ret.get("jid")), _json.text(ret.get("id")),
                _json.text(str(fun_args)) if fun_args else None,
                date, _json.dumps(ret.get("return")), _success(ret),
            ))
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_RETURN, rows))

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        rows = [(_json.text(jid), _json.dumps(load)) for jid, load, _ in loads]
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_LOAD, rows))

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        now, master = str(dt.datetime.now()), self.master_id
        rows = [(_json.text(e.get("tag")), _json.dumps(e.get("data")), now, master) for e in events]
        if rows:
            self._db.write(lambda conn: conn.executemany(_INSERT_EVENT, rows))

    # -- read side ------------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        row = self._db.read(lambda conn: conn.execute("SELECT load FROM jids WHERE jid = ?", (jid,)).fetchone())
        load = _json.loads(row[0], {}) if row else {}
        return load if isinstance(load, dict) else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._db.read(lambda conn: conn.execute(
            "SELECT id, full_ret FROM salt_returns WHERE jid = ?", (jid,)).fetchall())
        return {minion: {"return": _json.loads(full)} for minion, full in rows}

    def get_fun(self, fun: str) -> dict[str, Any]:
        """For each minion, the return value of its newest job that ran ``fun``."""
        sql = ("SELECT s.id, s.full_ret FROM salt_returns s JOIN "
               "(SELECT id, MAX(jid) AS jid FROM salt_returns WHERE fun = ? GROUP BY id) latest "
               "ON s.id = latest.id AND s.jid = latest.jid WHERE s.fun = ?")
        rows = self._db.read(lambda conn: conn.execute(sql, (fun, fun)).fetchall())
        return {minion: _json.loads(full) for minion, full in rows}

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._db.read(lambda conn: conn.execute("SELECT jid, load FROM jids").fetchall()))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        where = " WHERE load NOT LIKE ?" if filter_find_job else ""
        args: tuple[Any, ...] = (FIND_JOB_LIKE, int(count)) if filter_find_job else (int(count),)
        sql = f"SELECT jid, load FROM jids{where} ORDER BY jid DESC LIMIT ?"
        return jids_filter_listing(self._db.read(lambda conn: conn.execute(sql, args).fetchall()))

    def get_minions(self) -> list[str]:
        rows = self._db.read(lambda conn: conn.execute("SELECT DISTINCT id FROM salt_returns").fetchall())
        return sorted(r[0] for r in rows if r[0] is not None)

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Remove jobs that started more than ``keep_jobs_seconds`` ago, and older events."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        old_jid = cutoff_jid(keep)
        old_date = str(dt.datetime.fromtimestamp(time.time() - keep))

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM salt_returns WHERE jid < ?", (old_jid,))
            conn.execute("DELETE FROM jids WHERE jid < ?", (old_jid,))
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'salt_events'").fetchone():
                conn.execute("DELETE FROM salt_events WHERE alter_time < ?", (old_date,))

        self._db.write(work)

    def init_schema(self) -> None:
        self._db.read(lambda conn: conn.executescript(SCHEMA))

    def check(self) -> None:
        self._db.read(lambda conn: conn.execute("SELECT 1 FROM jids, salt_returns LIMIT 0").fetchall())

    def close(self) -> None:
        self._db.close()
