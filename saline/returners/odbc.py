"""The ``odbc`` returner: Salt's ODBC tables through any unixODBC driver (MariaDB, SQLite, …)."""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

import pyodbc

from saline.returners import _json
from saline.returners._sql import FIND_JOB_LIKE, cutoff_jid, jids_filter_listing, jids_listing, prepare_returns
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError
from saline.returners.options import scrub

T = TypeVar("T")
_FORK_ORPHANS: list[Any] = []  # connections inherited by a forked child
TABLES = ("jids", "salt_returns", "salt_events")
_CHUNK = 500  # parameters per IN (...) list
_FAST_BUFFER = 64 * 1024 * 1024  # bytes pyodbc may allocate for one fast_executemany call


@dataclass(frozen=True)
class Dialect:
    """What differs between the databases behind the driver."""

    name: str
    ddl: tuple[str, ...]
    quote: str  # identifier quote
    insert_ignore: str  # an INSERT that skips a duplicate key
    #: predicate "column is older than ? seconds", and how the seconds are bound
    older: Callable[[str], str]
    seconds: Callable[[int], Any]
    archive_like: str  # CREATE TABLE {a} ... from {t}
    #: whether the driver's parameter arrays (pyodbc fast_executemany) are safe and faster
    fast: bool
    limit: bool  # understands LIMIT n
    #: move text as UTF-8 bytes (bound as binary, read through CAST(... AS BINARY)): the MariaDB
    #: driver (Connector/ODBC 3.1) drops the last character of some texts holding characters
    #: outside the BMP, both ways, when it converts them itself
    binary: bool = False


_MARIADB = Dialect(
    name="MariaDB/MySQL",
    ddl=(
        "CREATE TABLE IF NOT EXISTS jids (jid varchar(255) NOT NULL PRIMARY KEY, `load` mediumtext NOT NULL)"
        " DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE IF NOT EXISTS salt_returns (added datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " fun varchar(100) NOT NULL, jid varchar(255) NOT NULL, retval mediumtext NOT NULL,"
        " id varchar(255) NOT NULL, success boolean NOT NULL, full_ret mediumtext NOT NULL,"
        " KEY salt_returns_added (added), KEY salt_returns_id (id), KEY salt_returns_jid (jid),"
        " KEY salt_returns_fun (fun)) DEFAULT CHARSET=utf8mb4",
        "CREATE TABLE IF NOT EXISTS salt_events (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " tag varchar(255) NOT NULL, data mediumtext NOT NULL,"
        " alter_time datetime NOT NULL DEFAULT CURRENT_TIMESTAMP, master_id varchar(255) NOT NULL,"
        " KEY salt_events_tag (tag)) DEFAULT CHARSET=utf8mb4",
    ),
    quote="`",
    insert_ignore="INSERT IGNORE INTO",
    older=lambda column: f"{column} < NOW() - INTERVAL ? SECOND",
    seconds=lambda n: n,
    archive_like="CREATE TABLE IF NOT EXISTS {a} LIKE {t}",
    fast=True,
    limit=True,
    binary=True,
)

_SQLITE = Dialect(
    name="SQLite",
    ddl=(
        'CREATE TABLE IF NOT EXISTS jids (jid varchar(255) NOT NULL PRIMARY KEY, "load" text NOT NULL)',
        "CREATE TABLE IF NOT EXISTS salt_returns (added datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " fun varchar(100) NOT NULL, jid varchar(255) NOT NULL, retval text NOT NULL, id varchar(255) NOT NULL,"
        " success boolean NOT NULL, full_ret text NOT NULL)",
        "CREATE INDEX IF NOT EXISTS salt_returns_added ON salt_returns (added)",
        "CREATE INDEX IF NOT EXISTS salt_returns_id ON salt_returns (id)",
        "CREATE INDEX IF NOT EXISTS salt_returns_jid ON salt_returns (jid)",
        "CREATE INDEX IF NOT EXISTS salt_returns_fun ON salt_returns (fun)",
        "CREATE TABLE IF NOT EXISTS salt_events (id INTEGER PRIMARY KEY AUTOINCREMENT, tag varchar(255) NOT NULL,"
        " data text NOT NULL, alter_time datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " master_id varchar(255) NOT NULL)",
        "CREATE INDEX IF NOT EXISTS salt_events_tag ON salt_events (tag)",
    ),
    quote='"',
    insert_ignore="INSERT OR IGNORE INTO",
    older=lambda column: f"{column} < datetime('now', ?)",
    seconds=lambda n: f"-{n} seconds",
    archive_like="CREATE TABLE IF NOT EXISTS {a} AS SELECT * FROM {t} WHERE 0",
    # sqliteodbc's parameter arrays crash or truncate; plain executemany in one transaction is fast
    fast=False,
    limit=True,
)

# Any other database: standard SQL only, tables made by hand (Salt's SQL Server script is in the docs).
_GENERIC = Dialect(
    name="generic", ddl=(), quote='"', insert_ignore="INSERT INTO",
    older=lambda column: f"{column} < ?",
    seconds=lambda n: (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=n)).replace(tzinfo=None),
    archive_like="", fast=False, limit=False,
)


def dialect_for(dbms: str) -> Dialect:
    low = dbms.lower()
    if "mariadb" in low or "mysql" in low:
        return _MARIADB
    if "sqlite" in low:
        return _SQLITE
    return _GENERIC


class OdbcReturner(Returner):
    """Salt's ``odbc`` returner: job returns, loads and events in any database with an ODBC driver.

    ``returner.odbc.dsn`` is a DSN name from ``odbc.ini`` (Salt's form, connected as
    ``DSN=..;UID=..;PWD=..`` with ``user`` and ``passwd``) or a whole connection string, which
    needs no ``odbc.ini`` at all::

        returner.odbc.dsn: DRIVER=/usr/lib/x86_64-linux-gnu/odbc/libmaodbc.so;SERVER=db1;DATABASE=salt
        returner.odbc.user: salt
        returner.odbc.passwd: secret

    Tables (Salt's layout; the column is ``retval``, not ``return``). ``init_schema`` (or
    ``create_schema: true``) picks the form by the driver's ``SQL_DBMS_NAME``: MariaDB/MySQL
    (``mediumtext``, ``boolean``, ``utf8mb4``) or SQLite (``text``, ``boolean``)::

        jids(jid varchar(255) PRIMARY KEY, load mediumtext|text NOT NULL)
        salt_returns(added datetime DEFAULT CURRENT_TIMESTAMP, fun varchar(100),
                     jid varchar(255), retval mediumtext|text, id varchar(255),
                     success boolean, full_ret mediumtext|text)
          -- indexes salt_returns_added, salt_returns_id, salt_returns_jid, salt_returns_fun
        salt_events(id bigint AUTO_INCREMENT | INTEGER PRIMARY KEY AUTOINCREMENT,
                    tag varchar(255), data mediumtext|text,
                    alter_time datetime DEFAULT CURRENT_TIMESTAMP, master_id varchar(255))

    Any other database (SQL Server, for which Salt wrote its script) works with tables made by
    hand, through standard SQL only; Salt's SQL Server script::

        CREATE TABLE jids (jid varchar(255) NOT NULL PRIMARY KEY, load varchar(MAX) NOT NULL);
        CREATE TABLE salt_returns (added datetime NOT NULL DEFAULT (getdate()),
          fun varchar(100) NOT NULL, jid varchar(255) NOT NULL, retval varchar(MAX) NOT NULL,
          id varchar(255) NOT NULL, success bit NOT NULL, full_ret varchar(MAX) NOT NULL);

    Values, as Salt writes them: ``retval`` is the JSON of the return value, ``full_ret`` the
    JSON of the whole return, ``success`` 1/0, ``added`` the database's time of storage;
    ``jids.load`` the JSON of the load; ``salt_events`` (a saline addition, Salt's odbc
    returner had no ``event_return``) ``tag``, ``data`` (JSON of the event data),
    ``master_id`` the master's id, ``alter_time`` the time of storage. A ``fun``, ``id`` or
    ``tag`` longer than its column (as the driver reports it) is cut to fit rather than failing
    the batch; ``full_ret`` keeps it whole.

    Differences from Salt: one connection per returner, reused, opened again when the server
    dropped it (Salt connected per call); the first load of a jid is kept and later ones are
    ignored (Salt's failed on the primary key); a return without ``success`` is stored as
    false (Salt's raised KeyError); ``get_load`` returns the load (Salt's parsed a row object);
    a return delivered twice (same ``jid`` and ``id``) is stored once; ``get_jids_filter``,
    ``event_return`` and ``clean_old_jobs`` (``keep_jobs_seconds``, ``archive_jobs`` into
    ``*_archive`` tables; a job goes only when none of its returns is newer) are additions.

    Drivers: with MariaDB Connector/ODBC a batch is sent as parameter arrays
    (``fast_executemany``), in chunks under the server's ``max_allowed_packet``; a single
    return larger than that is refused with one line saying so. Text travels as UTF-8 bytes
    there, because that driver (3.1) drops the last character of some texts holding
    characters outside the BMP (emoji) when it converts them itself. The SQLite ODBC driver's
    parameter arrays crash or truncate, so there a batch is a plain ``executemany`` in one
    transaction.

    Example query, the failed returns of the last day (MariaDB)::

        SELECT id, jid, fun, retval FROM salt_returns
         WHERE success = 0 AND added > NOW() - INTERVAL 1 DAY ORDER BY added;
    """

    name = "odbc"
    prefix = "returner.odbc"
    extra = "odbc"
    summary = "Any ODBC database (MariaDB, SQLite, …): Salt's jids / salt_returns tables, plus salt_events"
    options = (
        Option("dsn", required=True, doc="a DSN name from odbc.ini, or a full connection string (DRIVER=...;...)"),
        Option("user", doc="user name (UID)"),
        Option("passwd", secret=True, doc="password (PWD)"),
        Option("connect_timeout", int, default=10, doc="seconds to wait for a connection (login timeout)"),
        Option("create_schema", bool, default=False,
               doc="create the tables and indexes (IF NOT EXISTS) on first connect (saline)"),
    )

    def __init__(self, options: dict[str, Any], master_opts: dict[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self._conn: pyodbc.Connection | None = None
        self._dialect: Dialect = _GENERIC
        self._packet = 16 * 1024 * 1024
        self._widths: dict[str, dict[str, int]] = {}
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._secrets = [str(self.opts["passwd"])] if self.opts.get("passwd") else []
        self._secrets += re.findall(r"(?i)\bPWD\s*=\s*([^;]+)", str(self.opts.get("dsn") or ""))

    # -- connection ------------------------------------------------------------------------------------
    @property
    def conn_str(self) -> str:
        dsn = str(self.opts["dsn"]).strip().rstrip(";")
        parts = [dsn if "=" in dsn else f"DSN={dsn}"]
        if self.opts.get("user") and not re.search(r"(?i)\bUID\s*=", dsn):
            parts.append(f"UID={self.opts['user']}")
        if self.opts.get("passwd") and not re.search(r"(?i)\bPWD\s*=", dsn):
            parts.append("PWD={" + str(self.opts["passwd"]).replace("}", "}}") + "}")
        return ";".join(parts)

    @property
    def where(self) -> str:
        shown = re.sub(r"(?i)\b(PWD)\s*=\s*[^;]*", r"\1=********", str(self.opts.get("dsn") or ""))
        return f"ODBC data source '{shown}'"

    def _line(self, text: str) -> str:
        return scrub(f"returner {self.name}: {' '.join(text.split())}", self._secrets)

    def _v(self, value: Any) -> Any:
        """A text parameter as this database's driver takes it safely."""
        return value.encode("utf-8", "replace") if self._dialect.binary and isinstance(value, str) else value

    def _c(self, column: str) -> str:
        """A text column as selected (raw UTF-8 bytes where the driver's conversion is unsafe)."""
        return f"CAST({column} AS BINARY)" if self._dialect.binary else column

    def _width(self, conn: pyodbc.Connection, table: str) -> dict[str, int]:
        """Declared lengths of ``table``'s text columns, from the driver's catalog (once per connection)."""
        if table not in self._widths:
            found: dict[str, int] = {}
            try:
                for col in conn.cursor().columns(table=table):
                    size = getattr(col, "column_size", None)
                    if isinstance(size, int) and 0 < size < 65536 and "char" in str(col.type_name).lower():
                        found[str(col.column_name).lower()] = size
            except pyodbc.Error:
                found = {}
            self._widths[table] = found
        return self._widths[table]

    def _open(self) -> pyodbc.Connection:
        self._widths = {}
        try:
            conn = pyodbc.connect(self.conn_str, autocommit=False, timeout=int(self.opts.get("connect_timeout") or 0))
        except pyodbc.Error as exc:
            raise self._error(exc, connecting=True) from None
        try:
            self._dialect = dialect_for(str(conn.getinfo(pyodbc.SQL_DBMS_NAME) or ""))
            if self._dialect is _MARIADB:  # one parameter array travels as one packet
                self._packet = int(conn.cursor().execute("SELECT @@max_allowed_packet").fetchone()[0])
                conn.commit()
            if self.opts.get("create_schema"):
                self._create(conn)
        except pyodbc.Error as exc:
            conn.close()
            raise self._error(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, work: Callable[[pyodbc.Connection], T]) -> T:
        with self._lock:
            if self._conn is not None and self._pid != os.getpid():
                # inherited through fork(): the parent's. Freeing it would disconnect the
                # parent's session (the driver says goodbye to the server), so it is kept alive
                # for the rest of this process, even through interpreter shutdown.
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._conn))
                _FORK_ORPHANS.append(self._conn)
                self._conn = None
            for attempt in (0, 1):
                fresh = self._conn is None
                if fresh:
                    self._conn = self._open()
                    self._pid = os.getpid()
                conn = self._conn
                assert conn is not None
                try:
                    result = work(conn)
                    conn.commit()
                    return result
                except pyodbc.Error as exc:
                    lost = _lost(exc)
                    try:
                        conn.rollback()
                    except pyodbc.Error:
                        lost = True
                    if lost:
                        self.close()
                        if not fresh and attempt == 0:
                            continue  # a connection kept from before a server restart: once more
                    raise self._error(exc, lost=lost) from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except pyodbc.Error:
                    pass

    def _error(self, exc: pyodbc.Error, connecting: bool = False, lost: bool = False) -> ReturnerError:
        state = str(exc.args[0]) if exc.args else ""
        text = _message(exc)
        low = text.lower()
        if connecting:
            if state == "28000" or "access denied" in low:
                return ReturnerError(self._line(f"access denied by {self.where} for user {self.opts.get('user') or ''} "
                                                f"(wrong password or unknown user): {text}"))
            m = re.search(r"unknown database '([^']*)'", text, re.I)
            if m:
                return ReturnerError(self._line(f"database {m.group(1)} does not exist ({self.where})"))
            if state == "IM002" or "data source name not found" in low:
                return ReturnerError(self._line(f"no ODBC data source named '{self.opts.get('dsn')}' in odbc.ini "
                                                "(or give a full connection string: DRIVER=...;...)"))
            if "can't open lib" in low or state in ("IM003", "IM004"):
                return ReturnerError(self._line(f"the ODBC driver of {self.where} cannot be loaded: {text}"))
            return BackendUnavailable(self._line(f"cannot connect to {self.where}: {text}"))
        if lost:
            return BackendUnavailable(self._line(f"lost the connection to {self.where}: {text}"))
        m = re.search(r"table '(?:[^'.]*\.)?([^']*)' doesn't exist|no such table: (\S+)", text, re.I)
        if state == "42S02" or m:
            table = (m.group(1) or m.group(2)) if m else "?"
            return ReturnerError(self._line(f"table {table} does not exist ({self.where}); create it with: "
                                            f"saline-run returners.init {self.name} (or set create_schema: true)"))
        if state == "42S22" or "unknown column" in low or "no such column" in low:
            return ReturnerError(self._line(f"{text}: the table does not have Salt's layout "
                                            f"(see docs/returners/{self.name}.md)"))
        if state in ("40001", "HYT00", "HYT01") or any(w in low for w in ("deadlock", "lock wait timeout",
                                                                           "database is locked", "busy")):
            return BackendUnavailable(self._line(f"{self.where} cannot serve now: {text}"))
        return ReturnerError(self._line(f"{state + ' ' if state else ''}{text}"))

    # -- schema ----------------------------------------------------------------------------------------
    def _create(self, conn: pyodbc.Connection) -> None:
        if not self._dialect.ddl:
            raise ReturnerError(self._line(
                f"no table definitions for {conn.getinfo(pyodbc.SQL_DBMS_NAME)}: create jids, salt_returns "
                f"and salt_events by hand (docs/returners/{self.name}.md)"))
        cur = conn.cursor()
        for sql in self._dialect.ddl:
            cur.execute(sql)
        conn.commit()

    def init_schema(self) -> None:
        self._run(self._create)

    def check(self) -> None:
        def missing(conn: pyodbc.Connection) -> list[str]:
            cur = conn.cursor()
            gone = []
            for table in TABLES:
                try:
                    cur.execute(f"SELECT 1 FROM {table} WHERE 1 = 0").fetchall()
                except pyodbc.Error as exc:
                    if _lost(exc):
                        raise
                    conn.rollback()
                    gone.append(table)
            return gone

        gone = self._run(missing)
        if gone:
            raise ReturnerError(self._line(f"table {', '.join(gone)} does not exist ({self.where}); create it with: "
                                           f"saline-run returners.init {self.name} (or set create_schema: true)"))

    # -- write side ----------------------------------------------------------------------------------------
    def _insert(self, conn: pyodbc.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        cur = conn.cursor()
        if not self._dialect.fast:
            cur.executemany(sql, rows)
            return
        # Parameter arrays: one round trip per chunk. Text is bound as wide strings of the
        # longest value's size (pyodbc allocates rows x size), so chunks stay under a budget and a
        # 5 MB return travels alone.
        cur.fast_executemany = True
        limit = self._packet
        for row in rows:
            size = sum(_units(v) if isinstance(v, (str, bytes)) else 8 for v in row)
            if size > limit:
                raise ReturnerError(self._line(
                    f"a row of {size / 1048576:.1f} MiB (minion {row[3] if len(row) > 3 else row[0]}) is larger than "
                    f"the server accepts in one packet (max_allowed_packet {limit / 1048576:.0f} MiB): raise it"))
        for chunk in _chunks_by_size(rows, limit // 2):
            sizes = []
            for col in range(len(chunk[0])):
                values = [row[col] for row in chunk]
                widest = max(1, max(_units(v) for v in values))
                if all(isinstance(v, bool) for v in values):
                    sizes.append((pyodbc.SQL_BIT, 0, 0))
                elif all(isinstance(v, bytes) for v in values):
                    sizes.append((pyodbc.SQL_VARBINARY, widest, 0))
                else:
                    sizes.append((pyodbc.SQL_WVARCHAR, widest, 0))
            cur.setinputsizes(sizes)
            cur.executemany(sql, chunk)

    def _existing(self, conn: pyodbc.Connection, sql: str, keys: list[str]) -> set[tuple[Any, ...]]:
        found: set[tuple[Any, ...]] = set()
        cur = conn.cursor()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = cur.execute(sql.format(marks=marks), [self._v(k) for k in chunk]).fetchall()
            found.update(tuple(_out(v) for v in row) for row in rows)
        return found

    def returns(self, rets: list[dict[str, Any]]) -> None:
        rets = prepare_returns(self, rets)
        if not rets:
            return
        rows = []
        for ret in rets:
            for key in ("id", "jid"):
                if not ret.get(key):
                    raise ReturnerError(self._line(f"a return without '{key}' cannot be stored"))
            full, value = _json.dumps_ret(ret)
            rows.append((_text(ret.get("fun")), _text(ret["jid"]), value, _text(ret["id"]), bool(ret.get("success")),
                         full))

        def write(conn: pyodbc.Connection) -> None:
            # fun and id are cut to their columns (varchar(100)/(255)) rather than failing the
            # batch; full_ret keeps them whole.
            width = self._width(conn, "salt_returns")
            cut = [(_fit(r[0], width.get("fun")), r[1], r[2], _fit(r[3], width.get("id")), r[4], r[5]) for r in rows]
            # A redelivered return (same jid and minion) is stored once.
            seen = self._existing(conn, f"SELECT {self._c('jid')}, {self._c('id')} FROM salt_returns "
                                        "WHERE jid IN ({marks})", sorted({row[1] for row in cut}))
            fresh = []
            for row in cut:
                if (row[1], row[3]) not in seen:
                    seen.add((row[1], row[3]))
                    fresh.append(tuple(self._v(v) for v in row))
            self._insert(conn, "INSERT INTO salt_returns (fun, jid, retval, id, success, full_ret) "
                               "VALUES (?, ?, ?, ?, ?, ?)", fresh)

        self._run(write)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        first: dict[str, str] = {}
        for jid, load, _minions in loads:
            first.setdefault(_text(jid), _json.dumps(load))
        if not first:
            return

        def write(conn: pyodbc.Connection) -> None:
            # the first load of a jid stays (the publish load); later ones are ignored
            have = {row[0] for row in self._existing(conn, f"SELECT {self._c('jid')} FROM jids WHERE jid IN ({{marks}})",
                                                     list(first))}
            q = self._dialect.quote
            self._insert(conn, f"{self._dialect.insert_ignore} jids (jid, {q}load{q}) VALUES (?, ?)",
                         [(self._v(jid), self._v(load)) for jid, load in first.items() if jid not in have])

        self._run(write)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        master_id = _text(self.master_id)

        def write(conn: pyodbc.Connection) -> None:
            width = self._width(conn, "salt_events")
            rows = [(self._v(_fit(_text(ev.get("tag")), width.get("tag"))), self._v(_json.dumps(ev.get("data"))),
                     self._v(_fit(master_id, width.get("master_id")))) for ev in events]
            self._insert(conn, "INSERT INTO salt_events (tag, data, master_id) VALUES (?, ?, ?)", rows)

        self._run(write)

    # -- read side ---------------------------------------------------------------------------------------
    def _fetch(self, sql: Callable[[], str], *params: Any) -> list[tuple[Any, ...]]:
        """Run a query built for the connected database; text comes back as str."""
        def read(conn: pyodbc.Connection) -> list[tuple[Any, ...]]:
            rows = conn.cursor().execute(sql(), *[self._v(p) for p in params]).fetchall()
            return [tuple(_out(v) for v in row) for row in rows]

        return self._run(read)

    def _load_col(self) -> str:
        q = self._dialect.quote
        return self._c(f"{q}load{q}")

    def get_load(self, jid: str) -> dict[str, Any]:
        rows = self._fetch(lambda: f"SELECT {self._load_col()} FROM jids WHERE jid = ?", jid)
        load = _json.loads(rows[0][0], {}) if rows else {}
        return load if isinstance(load, dict) else {}

    def get_jid(self, jid: str) -> dict[str, Any]:
        rows = self._fetch(lambda: f"SELECT {self._c('id')}, {self._c('full_ret')} FROM salt_returns "
                                   "WHERE jid = ? ORDER BY added", jid)
        return {minion: _json.loads(full) for minion, full in rows}

    def get_fun(self, fun: str) -> dict[str, Any]:
        rows = self._fetch(lambda: f"SELECT {self._c('s.id')}, {self._c('s.full_ret')} FROM salt_returns s JOIN "
                                   "(SELECT id, MAX(jid) AS jid FROM salt_returns WHERE fun = ? GROUP BY id) m "
                                   "ON s.id = m.id AND s.jid = m.jid WHERE s.fun = ? ORDER BY s.id", fun, fun)
        return {minion: _json.loads(full) for minion, full in rows}

    def get_jids(self) -> dict[str, Any]:
        return jids_listing(self._fetch(lambda: f"SELECT {self._c('jid')}, {self._load_col()} FROM jids ORDER BY jid"))

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        count = max(int(count), 0)
        q = self._dialect.quote

        def sql() -> str:
            where = f" WHERE {q}load{q} NOT LIKE ?" if filter_find_job else ""
            limit = f" LIMIT {count}" if self._dialect.limit else ""
            return f"SELECT {self._c('jid')}, {self._load_col()} FROM jids{where} ORDER BY jid DESC{limit}"

        rows = self._fetch(sql, *([FIND_JOB_LIKE] if filter_find_job else []))
        return jids_filter_listing(rows[:count])

    def get_minions(self) -> list[str]:
        return sorted({row[0] for row in self._fetch(lambda: f"SELECT DISTINCT {self._c('id')} FROM salt_returns")})

    # -- housekeeping -----------------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Delete (or with ``archive_jobs`` first copy to ``*_archive``) what is older than
        ``keep_jobs_seconds``; a job goes only when none of its returns is newer."""
        keep = self.keep_jobs_seconds
        if keep <= 0:
            return
        archive = bool(self.master_opts.get("archive_jobs"))
        jid_cut = cutoff_jid(keep)

        def clean(conn: pyodbc.Connection) -> None:
            d = self._dialect
            seconds = d.seconds(keep)
            doomed = {
                "jids": (f"jid < ? AND NOT EXISTS (SELECT 1 FROM salt_returns r WHERE r.jid = jids.jid "
                         f"AND NOT ({d.older('r.added')}))", (self._v(jid_cut), seconds)),
                "salt_returns": (d.older("added"), (seconds,)),
                "salt_events": (d.older("alter_time"), (seconds,)),
            }
            cur = conn.cursor()
            for table, (where, params) in doomed.items():
                if archive:
                    if not d.archive_like:
                        raise ReturnerError(self._line(f"archive_jobs: create {table}_archive by hand on {d.name}"))
                    cur.execute(d.archive_like.format(a=f"{table}_archive", t=table))
                    cur.execute(f"INSERT INTO {table}_archive SELECT * FROM {table} WHERE {where}", *params)
                cur.execute(f"DELETE FROM {table} WHERE {where}", *params)

        self._run(clean)


def _out(value: Any) -> Any:
    """A fetched value: raw UTF-8 bytes (from CAST(... AS BINARY)) become text."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def _lost(exc: pyodbc.Error) -> bool:
    """The connection is gone (server restarted, killed or timed out)."""
    state = str(exc.args[0]) if exc.args else ""
    text = _message(exc).lower()
    return state.startswith("08") or any(w in text for w in ("gone away", "lost connection", "(2006)", "(2013)",
                                                             "connection was killed", "server closed"))


def _message(exc: pyodbc.Error) -> str:
    """The driver's text without its bracketed prefixes and trailing call names."""
    raw = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    text = re.sub(r"^(\s*\[[^\]]*\])+\s*", "", raw)
    text = re.sub(r"\s*\((?:SQL\w+|\d+)\)(\s*\((?:SQL\w+|\d+)\))*\s*$", "", text)
    return " ".join(text.split()) or type(exc).__name__


def _text(value: Any) -> str:
    """A plain text column (``fun``, ``id``, ``tag``): ``_json.text`` without U+0000, which the
    drivers pass as C strings."""
    out = _json.text(value)
    return out.replace("\x00", "") if "\x00" in out else out


def _fit(value: str, width: int | None) -> str:
    return value[:width] if width and len(value) > width else value


def _units(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value)
    return _text_units(value)


def _text_units(value: Any) -> int:
    """The size to bind a text parameter with: its UTF-8 length. Sized by UTF-16 code units the
    MariaDB driver cut the end off texts with many multi-byte characters; the UTF-8 length is
    never smaller than either count."""
    if not isinstance(value, str):
        return len(str(value)) if value is not None else 1
    return len(value) if value.isascii() else len(value.encode("utf-8", "replace"))


def _chunks_by_size(rows: list[tuple[Any, ...]], packet: int) -> Iterable[list[tuple[Any, ...]]]:
    """Consecutive rows whose bound buffers (rows x widest value, UTF-16) stay under
    ``_FAST_BUFFER`` and whose data stays under ``packet`` bytes (one array goes as one packet)."""
    chunk: list[tuple[Any, ...]] = []
    widest: list[int] = []
    data = 0
    for row in rows:
        sizes = [_units(v) for v in row]
        merged = [max(a, b) for a, b in zip(widest, sizes)] if widest else sizes
        size = sum(sizes) * 2
        if chunk and ((len(chunk) + 1) * sum(2 * s + 2 for s in merged) > _FAST_BUFFER or data + size > packet):
            yield chunk
            chunk, merged, data = [], sizes, 0
        chunk.append(row)
        widest = merged
        data += size
    if chunk:
        yield chunk
