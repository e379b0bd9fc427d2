"""The record log: one SQLite layout that is both the master's outbox and its default job cache.

Every return, job load and event is one row of ``records``, written once. The SQLite outbox
(:mod:`saline.master.outbox.sqlite`) delivers rows to returners through a cursor per returner;
the ``saline_cache`` job cache reads the same rows (``jobs.lookup_jid`` and friends), so with the
default job cache a return is stored once and read in place, never copied.

Tables::

    records(seq INTEGER PRIMARY KEY AUTOINCREMENT, kind, route, cached, jid, mid, fun, stamp, body)
        kind 0 a return (jid, mid = minion id, fun), 1 a job load (jid), 2 an event (mid = tag);
        route: the routes row it is delivered to (0: none); cached 1: part of the job cache, kept
        keep_jobs; body: the payload, MessagePack. The job cache holds a minion's return once per
        job (unique jid + mid among its returns).
    jobs(jid PRIMARY KEY, load, minions, started, endtime)   the job cache's loads (MessagePack)
    routes(id, key UNIQUE, spec)      the returner lists records go to, stored once each
    cursors(returner PRIMARY KEY, seq, routed, delivered, buried, last_error, last_error_time,
            last_success_time)        where each returner is, the last record routed to it, its figures
    retries(returner, seq, attempts, next_try, first_failure, last_error)   failed deliveries
    dead(returner, seq, kind, body, ret_config, ret_kwargs, enqueued, attempts, first_failure,
         last_error, died)            dead letters, with their payload (replay puts them back)

Sequence numbers only grow (``AUTOINCREMENT``): a cursor compares them, so one must never be
handed out twice. Example query of the job cache, with the ``sqlite3`` tool and
``saline-run jobs.lookup_jid`` for the decoded form::

    sqlite3 /var/cache/saline/master/outbox.db \\
      "SELECT jid, mid, fun, datetime(stamp, 'unixepoch') FROM records WHERE kind = 0 ORDER BY seq DESC LIMIT 10"
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from typing import Any, Iterable, Iterator

import msgspec

from saline.jid import jid_to_datetime

RET, LOAD, EVENT = 0, 1, 2
KIND_CODES = {"ret": RET, "load": LOAD, "event": EVENT}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    route INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    jid TEXT,
    mid TEXT,
    fun TEXT,
    stamp REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_return ON records (jid, mid) WHERE kind = 0 AND cached = 1;
CREATE TABLE IF NOT EXISTS jobs (
    jid TEXT PRIMARY KEY, load BLOB, minions BLOB, started REAL, endtime TEXT);
CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started);
CREATE TABLE IF NOT EXISTS routes (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, spec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    returner TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    routed INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    buried INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_time REAL,
    last_success_time REAL
);
CREATE TABLE IF NOT EXISTS retries (
    returner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_try REAL NOT NULL,
    first_failure REAL NOT NULL,
    last_error TEXT,
    PRIMARY KEY (returner, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead (
    returner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    body BLOB NOT NULL,
    ret_config TEXT,
    ret_kwargs BLOB,
    enqueued REAL NOT NULL,
    attempts INTEGER NOT NULL,
    first_failure REAL,
    last_error TEXT,
    died REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_returner ON dead (returner);
"""


def _fallback(value: Any) -> Any:
    """What MessagePack has no form for (returns are JSON-shaped; a custom module may return more)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


_SURROGATES = 1  # MessagePack extension type: a str with lone surrogates, as UTF-8 with surrogatepass


def _revive(code: int, data: memoryview) -> Any:
    if code == _SURROGATES:
        return bytes(data).decode("utf-8", "surrogatepass")
    return bytes(data)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_fallback)
_DECODER = msgspec.msgpack.Decoder(ext_hook=_revive)


def _keep_surrogates(value: Any) -> Any:
    """A copy of ``value`` whose strings with lone surrogates (which UTF-8 cannot hold) are
    extension values, so they come back exactly (the slow path, taken only when needed)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return msgspec.msgpack.Ext(_SURROGATES, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return {(_keep_surrogates(k) if isinstance(k, str) else k): _keep_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_keep_surrogates(v) for v in value]
    return value


def pack(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value)
    except (msgspec.EncodeError, UnicodeEncodeError):
        return _ENCODER.encode(_keep_surrogates(value))


def unpack(blob: bytes | None) -> Any:
    return None if blob is None else _DECODER.decode(blob)


def started(jid: str) -> float:
    when = jid_to_datetime(jid)
    return when.timestamp() if when else time.time()


# -- the job cache's side ------------------------------------------------------------------------
INSERT_LOAD = ("INSERT INTO jobs (jid, load, minions, started) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (jid) DO UPDATE SET load = COALESCE(jobs.load, excluded.load), "
               "minions = COALESCE(jobs.minions, excluded.minions)")
INSERT_RECORD = ("INSERT OR IGNORE INTO records (kind, route, cached, jid, mid, fun, stamp, body) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def load_row(jid: str, load: dict[str, Any], minions: list[str] | None) -> tuple:
    if minions is None and isinstance(load.get("minions"), list):
        minions = load["minions"]
    if minions is not None:
        # the master's lists are sorted already, without repeats: sorting them again is cheap
        minions = sorted(minions) if len(set(minions)) == len(minions) else sorted(set(minions))
    return (jid, pack(load), pack(minions) if minions is not None else None, started(jid))


def save_minions(conn: sqlite3.Connection, jid: str, minions: Iterable[str]) -> None:
    row = conn.execute("SELECT minions FROM jobs WHERE jid = ?", (jid,)).fetchone()
    known = set(unpack(row[0]) or []) if row and row[0] is not None else set()
    conn.execute("INSERT INTO jobs (jid, minions, started) VALUES (?, ?, ?) "
                 "ON CONFLICT (jid) DO UPDATE SET minions = excluded.minions",
                 (jid, pack(sorted(known | set(minions))), started(jid)))


def get_load(conn: sqlite3.Connection, jid: str) -> dict[str, Any]:
    row = conn.execute("SELECT load, minions FROM jobs WHERE jid = ?", (jid,)).fetchone()
    if not row or (row[0] is None and row[1] is None):
        return {}
    load = unpack(row[0]) if row[0] is not None else {}
    load = dict(load) if isinstance(load, dict) else {}
    if row[1] is not None:
        load["Minions"] = sorted(unpack(row[1]) or [])
    return load


def get_jid(conn: sqlite3.Connection, jid: str) -> dict[str, Any]:
    rows = conn.execute("SELECT mid, body FROM records WHERE kind = 0 AND cached = 1 AND jid = ?", (jid,)).fetchall()
    return {mid: unpack(body) for mid, body in rows}


def returned(conn: sqlite3.Connection, jid: str) -> set[str]:
    """The minions whose return of ``jid`` is stored."""
    return {r[0] for r in conn.execute("SELECT mid FROM records WHERE kind = 0 AND jid = ? AND mid IS NOT NULL", (jid,))}


def get_fun(conn: sqlite3.Connection, fun: str) -> dict[str, Any]:
    """For each minion, the return of its newest job that ran ``fun``."""
    sql = ("SELECT r.mid, r.body FROM records r JOIN "
           "(SELECT mid, MAX(jid) AS jid FROM records WHERE kind = 0 AND cached = 1 AND fun = ? GROUP BY mid) latest "
           "ON r.kind = 0 AND r.cached = 1 AND r.mid = latest.mid AND r.jid = latest.jid")
    return {mid: unpack(body) for mid, body in conn.execute(sql, (fun,)).fetchall()}


def job_loads(conn: sqlite3.Connection) -> Iterator[tuple[str, dict[str, Any]]]:
    """(jid, load) of the jobs with a load, newest first, read as they are consumed."""
    for jid, load in conn.execute("SELECT jid, load FROM jobs WHERE load IS NOT NULL ORDER BY jid DESC"):
        yield jid, unpack(load)


def get_minions(conn: sqlite3.Connection) -> list[str]:
    return sorted(r[0] for r in conn.execute("SELECT DISTINCT mid FROM records WHERE kind = 0 AND cached = 1"))


def update_endtime(conn: sqlite3.Connection, jid: str, when: str) -> None:
    conn.execute("INSERT INTO jobs (jid, started, endtime) VALUES (?, ?, ?) "
                 "ON CONFLICT (jid) DO UPDATE SET endtime = excluded.endtime", (jid, started(jid), when))


def get_endtime(conn: sqlite3.Connection, jid: str) -> str | bool:
    row = conn.execute("SELECT endtime FROM jobs WHERE jid = ?", (jid,)).fetchone()
    return row[0] if row and row[0] else False


def delivery_floor(conn: sqlite3.Connection) -> int:
    """The lowest sequence some returner still has to deliver (records from it on must stay)."""
    behind = conn.execute("SELECT min(seq) FROM cursors WHERE seq < routed").fetchone()[0]
    retrying = conn.execute("SELECT min(seq) FROM retries").fetchone()[0]
    candidates = [s + 1 for s in (behind,) if s is not None] + [s for s in (retrying,) if s is not None]
    if candidates:
        return min(candidates)
    head = conn.execute("SELECT max(seq) FROM records").fetchone()[0]
    return (head or 0) + 1


def prune_bounds(conn: sqlite3.Connection) -> tuple[int, int]:
    """(lowest sequence stored, the sequence below which records may go): everything every
    returner has delivered, and never the newest record (so sequence numbers never start again)."""
    low, head = conn.execute("SELECT min(seq), max(seq) FROM records").fetchone()
    return low or 0, min(delivery_floor(conn), head or 0)


def prune_range(conn: sqlite3.Connection, low: int, limit: int, keep_seconds: float, now: float | None = None) -> int:
    """Drop the records of ``[low, limit)`` nobody needs any more: those not part of the job
    cache, and job-cache records older than ``keep_seconds`` (0: kept), by when they were stored
    or, for returns, when their job started (the jid). How many went."""
    n = conn.execute("DELETE FROM records WHERE seq >= ? AND seq < ? AND cached = 0", (low, limit)).rowcount
    if keep_seconds > 0:
        cutoff = (time.time() if now is None else now) - keep_seconds
        old_jid = dt.datetime.fromtimestamp(cutoff, dt.timezone.utc).strftime("%Y%m%d%H%M%S%f")
        n += conn.execute("DELETE FROM records WHERE seq >= ? AND seq < ? AND cached = 1 AND (stamp < ? OR"
                          " (kind = 0 AND jid < ?))", (low, limit, cutoff, old_jid)).rowcount
    return n


def prune_jobs(conn: sqlite3.Connection, keep_seconds: float, now: float | None = None) -> None:
    if keep_seconds > 0:
        conn.execute("DELETE FROM jobs WHERE started < ?", ((time.time() if now is None else now) - keep_seconds,))


def prune(conn: sqlite3.Connection, keep_seconds: float) -> int:
    """Everything :func:`prune_range` drops, in one transaction (the job cache's own file)."""
    low, limit = prune_bounds(conn)
    n = prune_range(conn, low, limit, keep_seconds)
    prune_jobs(conn, keep_seconds)
    return n
