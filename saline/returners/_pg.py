"""What the three PostgreSQL returners share: one lazy connection, one-line errors, retention.

``postgres``, ``pgjsonb`` and ``postgres_local_cache`` each own their SQL; this module owns the
connection (opened on first use, reused, reopened after the server went away), the translation of
psycopg's errors into :class:`ReturnerError` / :class:`BackendUnavailable` lines that name the
cause and never a secret, and the purge/archive of old jobs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import threading
from typing import Any, Callable, Iterable, TypeVar

import psycopg
from psycopg import errors as pgerr

from saline.returners import _json
from saline.returners.base import BackendUnavailable, Returner, ReturnerError
from saline.returners.options import scrub

T = TypeVar("T")

# SQLSTATE classes that mean "the server cannot serve us right now": retry later.
_TRANSIENT_CLASSES = ("08", "53", "57P", "58")
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "25006", "57014"}


# lone surrogates (a surrogateescape decode) are no UTF-8: jsonb takes no \\udxxxx escape of one either
_SURROGATE = re.compile("[\ud800-\udfff]")


# -- JSON ------------------------------------------------------------------------------------------------
# Text columns hold Salt's JSON (``_json.dumps``). jsonb cannot hold U+0000 nor NaN/Infinity:
# there U+0000 becomes U+FFFD and non-finite floats their names ("nan", "inf", "-inf").
dumps = _json.dumps


def loads(value: Any, default: Any = None) -> Any:
    """A stored JSON column back to Python; jsonb columns arrive parsed already."""
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        return _json.loads(value, default)
    return value


def dumps_jsonb(value: Any) -> str:
    """JSON text that PostgreSQL's jsonb accepts; the same text as ``dumps`` for plain data."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        if "\\u0000" not in text and (text.isascii() or not _SURROGATE.search(text)):
            return text
    except (TypeError, ValueError, RecursionError):
        pass
    return json.dumps(_jsonb_safe(_json.decode(value)), ensure_ascii=False, allow_nan=False)


def _jsonb_key(key: Any) -> Any:
    if isinstance(key, str) or (isinstance(key, float) and not math.isfinite(key)):
        return _jsonb_safe(str(key))
    return key


def _jsonb_safe(value: Any) -> Any:
    if isinstance(value, str):
        value = value.replace("\x00", "\ufffd")
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_jsonb_key(k): _jsonb_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonb_safe(v) for v in value]
    return value


def text(value: Any) -> str:
    """A plain text column (``fun``, ``id``, ``tag``): ``_json.text`` (lists joined with commas,
    lone surrogates replaced) without U+0000, which PostgreSQL text cannot hold."""
    out = _json.text(value)
    return out.replace("\x00", "") if "\x00" in out else out


def fit(value: str, width: int | None) -> str:
    """``value`` cut to a column's declared length (``fun`` is varchar(50) in Salt's tables: a
    long multi-function ``fun`` is cut rather than failing the batch; ``full_ret`` keeps it)."""
    return value[:width] if width and len(value) > width else value


def stamp_time(data: Any) -> dt.datetime:
    """When a return or event happened: its ``_stamp`` (naive UTC in Salt), else now."""
    stamp = data.get("_stamp") if isinstance(data, dict) else None
    if isinstance(stamp, str):
        try:
            when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None:
            return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc)


def required(ret: dict[str, Any], name: str) -> None:
    """A return must say whose and which job it is, or it cannot be filed anywhere."""
    for key in ("id", "jid"):
        if not ret.get(key):
            raise ReturnerError(f"returner {name}: a return without '{key}' cannot be stored "
                                f"(keys present: {', '.join(sorted(map(str, ret))) or 'none'})")


def cutoff_jid(cutoff: dt.datetime) -> str:
    """The jid a job started at ``cutoff`` would have: older 20-digit jids sort below it."""
    return cutoff.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")


# -- the connection -----------------------------------------------------------------------------------
class PgLink:
    """One connection, opened on first use and reused; reopened once when the server went away.

    ``run(work)`` hands ``work`` the open connection (autocommit: ``work`` opens its own
    transaction for writes) and turns every psycopg error into one line naming the returner.
    """

    def __init__(self, name: str, params: dict[str, Any], secrets: list[str],
                 setup: Callable[[psycopg.Connection], None] | None = None) -> None:
        self.name = name
        self.params = {k: v for k, v in params.items() if v is not None and v != ""}
        self.secrets = secrets
        self.setup = setup
        self._conn: psycopg.Connection | None = None
        self._lock = threading.RLock()
        self._widths: dict[str, dict[str, int | None]] = {}
        self._pid = os.getpid()

    @property
    def where(self) -> str:
        host = self.params.get("host") or "localhost"
        return f"PostgreSQL at {host}:{self.params.get('port') or 5432}"

    @property
    def dbname(self) -> str:
        return str(self.params.get("dbname") or "")

    def line(self, text: str) -> str:
        """One line, starting with the returner's name, with every secret removed."""
        flat = " ".join(text.split())
        return scrub(f"returner {self.name}: {flat}", self.secrets)

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        with self._lock:
            if self._conn is not None and self._pid != os.getpid():
                # inherited through fork(): the parent's. Let go of it without closing it
                # (psycopg never shuts a connection down from a process that did not open it).
                self._conn = None
            for attempt in (0, 1):
                fresh = self._conn is None or self._conn.closed
                if fresh:
                    self._conn = self._open()
                    self._pid = os.getpid()
                conn = self._conn
                assert conn is not None
                try:
                    return work(conn)
                except psycopg.Error as exc:
                    if conn.closed or conn.broken:
                        self.close()
                        if not fresh and attempt == 0:
                            continue  # a connection kept from before a server restart: once more
                        raise BackendUnavailable(self.line(f"lost the connection to {self.where}: {_first(exc)}")) from None
                    raise self.query_error(exc) from None
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not conn.closed and self._pid == os.getpid():
                try:
                    conn.close()
                except psycopg.Error:
                    pass

    def widths(self, conn: psycopg.Connection, table: str) -> dict[str, int | None]:
        """The declared lengths of ``table``'s varchar columns (read once per connection)."""
        if table not in self._widths:
            rows = conn.execute("SELECT column_name, character_maximum_length FROM information_schema.columns "
                                "WHERE table_schema = current_schema() AND table_name = %s", (table,)).fetchall()
            self._widths[table] = {name: width for name, width in rows}
        return self._widths[table]

    def _open(self) -> psycopg.Connection:
        self._widths = {}  # the tables may have changed while we were away
        try:
            conn = psycopg.connect(autocommit=True, **self.params)
        except psycopg.Error as exc:
            raise self.connect_error(exc) from None
        if self.setup is not None:
            try:
                self.setup(conn)
            except psycopg.Error as exc:
                conn.close()
                raise self.query_error(exc) from None
            except BaseException:
                conn.close()
                raise
        return conn

    # -- error lines --------------------------------------------------------------------------------
    def connect_error(self, exc: psycopg.Error) -> ReturnerError:
        msg = _libpq_message(str(exc))
        low = msg.lower()
        user = self.params.get("user", "")
        if "password authentication failed" in low:
            return ReturnerError(self.line(f"wrong password for user {user} on {self.where} (password authentication failed)"))
        if "no password supplied" in low:
            return ReturnerError(self.line(f"{self.where} asks a password for user {user} and none is set"))
        m = re.search(r'role "([^"]*)" does not exist', msg)
        if m:
            return ReturnerError(self.line(f"role {m.group(1)} does not exist on {self.where}"))
        m = re.search(r'database "([^"]*)" does not exist', msg)
        if m:
            return ReturnerError(self.line(f"database {m.group(1)} does not exist on {self.where} "
                                           f"(create it: createdb {m.group(1)})"))
        if "no pg_hba.conf entry" in low:
            return ReturnerError(self.line(f"{self.where} does not let user {user} in (no pg_hba.conf entry): {msg}"))
        if "server does not support ssl" in low:
            return ReturnerError(self.line(f"sslmode={self.params.get('sslmode')} but {self.where} has SSL turned off"))
        if "ssl" in low or "certificate" in low or "invalid sslmode" in low or "invalid connection option" in low:
            return ReturnerError(self.line(f"cannot connect to {self.where}: {msg}"))
        return BackendUnavailable(self.line(f"cannot connect to {self.where}: {msg}"))

    def query_error(self, exc: psycopg.Error) -> ReturnerError:
        diag = getattr(exc, "diag", None)
        primary = (diag.message_primary if diag else None) or _first(exc)
        state = getattr(exc, "sqlstate", None) or ""
        init = f"create it with: saline-run returners.init {self.name} (or set create_schema: true)"
        if isinstance(exc, pgerr.UndefinedTable):
            m = re.search(r'relation "([^"]*)" does not exist', primary)
            table = m.group(1) if m else primary
            return ReturnerError(self.line(f"table {table} does not exist in database {self.dbname}; {init}"))
        if isinstance(exc, pgerr.UndefinedColumn):
            return ReturnerError(self.line(f"{primary} in database {self.dbname}; the table does not have "
                                           f"Salt's layout (see docs/returners/{self.name}.md)"))
        if isinstance(exc, pgerr.StringDataRightTruncation):
            hint = (" (Salt's jid column is varchar(20); jids made with unique_jid need varchar(255): "
                    f"see docs/returners/{self.name}.md)") if "(20)" in primary else ""
            return ReturnerError(self.line(f"a value is longer than its column allows: {primary}{hint}"))
        if isinstance(exc, pgerr.InsufficientPrivilege):
            return ReturnerError(self.line(f"user {self.params.get('user', '')} may not do this in database "
                                           f"{self.dbname}: {primary}"))
        if state in _TRANSIENT_STATES or state.startswith(_TRANSIENT_CLASSES):
            return BackendUnavailable(self.line(f"{self.where} cannot serve now: {primary}"))
        return ReturnerError(self.line(f"{state + ' ' if state else ''}{primary}"))


def _libpq_message(raw: str) -> str:
    """libpq's text without its prefixes, each distinct line once (it repeats per attempt)."""
    seen: list[str] = []
    for part in raw.splitlines():
        part = part.strip()
        part = re.sub(r"^connection failed:\s*", "", part)
        part = re.sub(r'^connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed:\s*', "", part)
        part = re.sub(r"^FATAL:\s*", "", part)
        if part and part not in seen:
            seen.append(part)
    return "; ".join(seen) or raw.strip()


def _first(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


# -- schema and retention -------------------------------------------------------------------------
def run_ddl(conn: psycopg.Connection, statements: Iterable[str]) -> None:
    """Create what is missing, in one transaction (every statement says IF NOT EXISTS)."""
    with conn.transaction():
        for sql in statements:
            conn.execute(sql)


def missing_tables(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    names = list(tables)
    row = conn.execute("SELECT array_agg(t) FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL",
                       (names,)).fetchone()
    return list(row[0] or []) if row else []


def purge_jobs(conn: psycopg.Connection, cutoff: dt.datetime, archive: bool, *,
               jids_older: str, returns_time: str) -> dict[str, int]:
    """Delete (or move to ``*_archive``) jobs, returns and events older than ``cutoff``.

    A job goes only when it started before the cutoff (``jids_older``, an SQL predicate on
    ``jids j`` using ``%(cutoff)s`` / ``%(cutoff_jid)s``) and none of its returns is newer:
    Salt's purge removed jobs whose returns were still arriving (salt#69060).
    """
    params = {"cutoff": cutoff, "cutoff_jid": cutoff_jid(cutoff)}
    doomed = {
        "jids": f"jids j WHERE {jids_older} AND NOT EXISTS "
                f"(SELECT 1 FROM salt_returns r WHERE r.jid = j.jid AND r.{returns_time} >= %(cutoff)s)",
        "salt_returns": f"salt_returns WHERE {returns_time} < %(cutoff)s",
        "salt_events": "salt_events WHERE alter_time < %(cutoff)s",
    }
    counts: dict[str, int] = {}
    with conn.transaction():
        for table, where in doomed.items():
            if archive:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table}_archive (LIKE {table})")
                cur = conn.execute(f"WITH gone AS (DELETE FROM {where} RETURNING *) "
                                   f"INSERT INTO {table}_archive SELECT * FROM gone", params)
            else:
                cur = conn.execute(f"DELETE FROM {where}", params)
            counts[table] = cur.rowcount
    return counts


def secrets_of(cls: type[Returner], opts: dict[str, Any]) -> list[str]:
    """The secret option values to keep out of messages. A default (Salt's ``salt``) is public and
    would otherwise blank out every ``salt_returns`` in an error line."""
    return [str(opts[o.name]) for o in cls.options
            if o.secret and opts.get(o.name) and str(opts[o.name]) != str(o.default)]


def conn_params(opts: dict[str, Any], password_key: str, extra: Iterable[str] = ()) -> dict[str, Any]:
    """libpq keywords from a returner's options."""
    params = {"host": opts.get("host"), "port": opts.get("port"), "user": opts.get("user"),
              "password": opts.get(password_key), "dbname": opts.get("db"),
              "connect_timeout": opts.get("connect_timeout"), "application_name": "saline"}
    for key in extra:
        params[key] = opts.get(key)
    return params


class Schema:
    """``init_schema``, ``check`` and ``close`` of a PostgreSQL returner that keeps one ``Link``
    (``self.link``) and declares its ``ddl`` and ``tables``."""

    ddl: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    name: str = ""
    link: Any

    def _create(self, conn: psycopg.Connection) -> None:
        run_ddl(conn, self.ddl)

    def init_schema(self) -> None:
        self.link.run(self._create)

    def check(self) -> None:
        missing = self.link.run(lambda conn: missing_tables(conn, self.tables))
        if missing:
            raise ReturnerError(self.link.line(
                f"table {', '.join(missing)} does not exist in database {self.link.dbname}; create it with: "
                f"saline-run returners.init {self.name} (or set create_schema: true)"))

    def close(self) -> None:
        self.link.close()
