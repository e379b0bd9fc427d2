"""The outbox: the durable queue between the master and every returner.

A return is acknowledged to its minion only after :meth:`Outbox.put` has returned, so the outbox
must not lose what it accepted. It is one SQLite file, ``<cachedir>/outbox.db``, in WAL mode with
``synchronous=NORMAL``: a committed ``put`` sits in the write-ahead log, written to the operating
system before ``put`` returns, so it survives a SIGKILL (or any crash) of the master process; only
a crash of the whole machine or a power cut can lose the last transactions (``synchronous=FULL``
would cost an fsync per ``put``).

Tables:

- ``pending``: items still to deliver, one row per (returner, item), delivered in ``seq`` order.
- ``dead``: the same columns plus ``died``: items that kept failing for longer than
  ``returner_dead_after_seconds``. ``replay`` moves them back to the end of ``pending``.
- ``stats``: per-returner counters (delivered, buried, last error and its time, last success),
  kept here so ``returners.status`` survives a restart.

Concurrency, as measured by ``bench/bench_outbox.py`` on this machine (2 CPUs, SQLite 3.40):

- One connection behind a ``threading.Lock``, shared by every thread (the event loop puts, one
  worker per returner takes and acks). With two threads draining, it put 19-23k one-item and
  70-78k items/s in 100-item transactions, against 20-22k and 71-108k for a connection per thread:
  within the noise of each other, but with a lower p99 put latency (0.4-0.5 ms against 0.6-1.1 ms;
  5.2-5.8 ms against 7-14 ms), since SQLite's busy handler sleeps whole milliseconds where the lock
  hands over in microseconds. Simpler too: one connection to close, no busy errors.
- ``locking_mode=EXCLUSIVE`` (the minion's outbox, and a master with ``returner_processes:
  False``): the WAL index lives in the process's memory (+28% commits/s, measured on one-row
  transactions) and a second master started on the same cachedir gets a clear error instead of
  sharing the queue. A master whose returners run in their own processes
  (:mod:`saline.master.returner_process`) opens it ``shared``: plain WAL, so those processes take,
  acknowledge and retry their items in the same file, while the master alone puts; an exclusive
  ``flock`` on ``outbox.db.lock`` then keeps a second master away. Its transactions are large
  (a group of returns, a batch of deliveries), so the busy waits between processes stay rare.
- No AUTOINCREMENT (it cost a third of the commit rate): a seq may be handed out again after the
  row that had it is gone, which is harmless since only the worker that took a row acks it.

A one-item ``put`` is one transaction (38-42k/s alone, bound by SQLite's commit); the master
puts everything one loop turn received in one call (100-item puts: ~200k items/s).

Every SQLite failure (disk full, read-only folder, corrupt file) becomes :class:`OutboxError`
with a one-line message; the master then does not acknowledge the minion, which keeps the return
in its spool and sends it again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import msgpack

from saline import sqlitewal

KINDS = ("ret", "load", "event", "minions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    returner TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    ret_config TEXT,
    ret_kwargs BLOB,
    enqueued REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    first_failure REAL,
    last_error TEXT
);
-- One covering index serves take (a returner's rows in seq order, the due filter read from the
-- index) and the earliest next_try of a returner; a second index would slow down every put.
CREATE INDEX IF NOT EXISTS pending_by_returner ON pending (returner, seq, next_try);
-- Dead letters keep the seq they had, for reference; their own rowid keys them, since a pending
-- seq may be handed out again once the row that had it is gone.
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER NOT NULL,
    returner TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    ret_config TEXT,
    ret_kwargs BLOB,
    enqueued REAL NOT NULL,
    attempts INTEGER NOT NULL,
    next_try REAL NOT NULL,
    first_failure REAL,
    last_error TEXT,
    died REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_returner ON dead (returner);
CREATE TABLE IF NOT EXISTS stats (
    returner TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL DEFAULT 0,
    buried INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_time REAL,
    last_success_time REAL
);
"""

_COLUMNS = ("seq, returner, kind, payload, ret_config, ret_kwargs, enqueued, attempts, next_try, "
            "first_failure, last_error")


class OutboxError(Exception):
    """The outbox cannot be opened or written; the message is one line."""


class Item(NamedTuple):
    """One thing to deliver to one returner.

    ``payload`` by kind: ``ret`` a return dict; ``load`` ``{"jid", "load", "minions"}``;
    ``event`` ``{"tag", "data"}``; ``minions`` ``{"jid", "minions"}`` (optionally ``syndic_id``).
    """

    returner: str
    kind: str
    payload: Any
    ret_config: str | None = None
    ret_kwargs: dict | None = None


class Row(NamedTuple):
    """An item as stored, with its delivery state. (Tuples: the master makes one Item per return and
    returner, a worker one Row per item taken; a frozen dataclass costs several times as much.)"""

    seq: int
    returner: str
    kind: str
    payload: Any
    ret_config: str | None
    ret_kwargs: dict | None
    enqueued: float
    attempts: int
    next_try: float
    first_failure: float | None
    last_error: str | None


def _default(value: Any) -> Any:
    """msgpack fallback: sets become lists, anything else its text (returns are JSON-shaped)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, default=_default)


def _unpack(blob: bytes | None) -> Any:
    if blob is None:
        return None
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def kwargs_key(kwargs: dict | None) -> str:
    """A canonical text for ``ret_kwargs``: equal dicts in any key order give the same text."""
    return json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""


def _pack_kwargs(kwargs: dict | None) -> bytes | None:
    return _pack(kwargs) if kwargs else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Outbox:
    """The durable queue; see the module docstring. Safe to use from any number of threads."""

    def __init__(self, path: Path | str, shared: bool = False, guard: bool = True) -> None:
        """``shared``: other processes use the file too (no exclusive locking mode); ``guard``
        (with ``shared``): hold the lock file that keeps a second master away."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._guard: Any = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot create folder {self.path.parent}: "
                              f"{exc.strerror or _one_line(exc)}") from None
        if shared and guard:
            self._guard = self._take_guard()
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                   timeout=10.0 if shared else 2.0)
        except sqlite3.Error as exc:
            self._drop_guard()
            raise OutboxError(self._why("open", exc)) from None
        try:
            if not shared:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            sqlitewal.tune(conn)
            conn.executescript(_SCHEMA)
            sqlitewal.private(self.path)
        except sqlite3.Error as exc:
            conn.close()
            self._drop_guard()
            raise OutboxError(self._why("open", exc)) from None
        except OutboxError:
            conn.close()
            self._drop_guard()
            raise
        self._conn = conn

    def _take_guard(self) -> Any:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = try_lock(lock_path)
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot open {lock_path}: {exc.strerror or _one_line(exc)}") from None
        if handle is None:
            raise OutboxError(f"outbox {self.path}: cannot open: database is locked "
                              "(another saline-master is using this cachedir)")
        return handle

    def _drop_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()  # closing the file releases the flock
            self._guard = None

    # -- plumbing -------------------------------------------------------------------------------
    def _why(self, doing: str, exc: BaseException) -> str:
        text = _one_line(exc)
        code = getattr(exc, "sqlite_errorname", "")
        if code and code not in ("SQLITE_ERROR", "SQLITE_FULL", "SQLITE_BUSY", "SQLITE_CANTOPEN"):
            text += f" ({code})"
        folder = self.path.parent
        if "locked" in text:
            text += " (another saline-master is using this cachedir)"
        if "readonly" in text.replace(" ", "") or "unable to open" in text:
            if not os.access(folder, os.W_OK):
                text += f" (folder {folder} is not writable)"
        return f"outbox {self.path}: cannot {doing}: {text}"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"outbox {self.path}: closed")
        return self._conn

    def _write(self, doing: str) -> "_Txn":
        return _Txn(self, doing)

    # -- the queue ------------------------------------------------------------------------------
    def put(self, items: Sequence[Item]) -> None:
        """Store ``items`` in one transaction; when this returns they survive a crash of the master."""
        if not items:
            return
        now = time.time()
        packed: dict[int, bytes] = {}  # one payload often goes to several returners: pack it once

        def pack(payload: Any) -> bytes:
            blob = packed.get(id(payload))
            if blob is None:
                blob = packed[id(payload)] = _pack(payload)
            return blob

        try:
            rows = [(it.returner, it.kind, pack(it.payload), it.ret_config, _pack_kwargs(it.ret_kwargs), now, now)
                    for it in items]
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise OutboxError(f"outbox {self.path}: cannot encode an item: {_one_line(exc)}") from None
        with self._write("write items") as db:
            db.executemany(
                "INSERT INTO pending (returner, kind, payload, ret_config, ret_kwargs, enqueued, next_try)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def take(self, returner: str, limit: int, now: float | None = None, after: int | None = None) -> list[Row]:
        """Up to ``limit`` items of ``returner`` that are due, oldest first (only those past seq
        ``after``, when given); they stay stored until ``done``/``retry``/``bury`` (one consumer per
        returner)."""
        now = time.time() if now is None else now
        with self._lock:
            try:
                found = self._db().execute(
                    f"SELECT {_COLUMNS} FROM pending WHERE returner = ? AND seq > ? AND next_try <= ? ORDER BY seq LIMIT ?",
                    (returner, -1 if after is None else after, now, int(limit))).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(self._why("read", exc)) from None
        return [Row(r[0], r[1], r[2], _unpack(r[3]), r[4], _unpack(r[5]), r[6], r[7], r[8], r[9], r[10])
                for r in found]

    def next_due(self, returner: str) -> float | None:
        """When the earliest pending item of ``returner`` is due (None when it has none)."""
        with self._lock:
            try:
                row = self._db().execute("SELECT min(next_try) FROM pending WHERE returner = ?",
                                         (returner,)).fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(self._why("read", exc)) from None
        return row[0]

    def done(self, returner: str, seqs: Sequence[int]) -> None:
        """Delivered: forget the items and count them."""
        if not seqs:
            return
        with self._write("acknowledge items") as db:
            n = 0
            for chunk in _chunks(seqs):
                n += db.execute(f"DELETE FROM pending WHERE returner = ? AND seq IN ({_marks(chunk)})",
                                (returner, *chunk)).rowcount
            _bump(db, returner, "delivered = delivered + ?, last_success_time = ?", (n, time.time()))

    def retry(self, returner: str, seqs: Sequence[int], error: str, delay: float) -> None:
        """Failed this time: try again in ``delay`` seconds, remembering the error."""
        if not seqs:
            return
        now = time.time()
        with self._write("record a retry") as db:
            for chunk in _chunks(seqs):
                db.execute(
                    "UPDATE pending SET attempts = attempts + 1, next_try = ?, last_error = ?,"
                    f" first_failure = coalesce(first_failure, ?) WHERE returner = ? AND seq IN ({_marks(chunk)})",
                    (now + max(0.0, delay), error, now, returner, *chunk))
            _bump(db, returner, "last_error = ?, last_error_time = ?", (error, now))

    def bury(self, returner: str, seqs: Sequence[int], error: str) -> None:
        """Give up on the items: move them to the dead letters (``replay`` brings them back)."""
        if not seqs:
            return
        now = time.time()
        with self._write("move items to dead letters") as db:
            n = 0
            for chunk in _chunks(seqs):
                where = f"returner = ? AND seq IN ({_marks(chunk)})"
                db.execute(f"INSERT INTO dead ({_COLUMNS}, died) SELECT seq, returner, kind, payload,"
                           " ret_config, ret_kwargs, enqueued, attempts + 1, next_try,"
                           f" coalesce(first_failure, ?), ?, ? FROM pending WHERE {where}",
                           (now, error, now, returner, *chunk))
                n += db.execute(f"DELETE FROM pending WHERE {where}", (returner, *chunk)).rowcount
            _bump(db, returner, "buried = buried + ?, last_error = ?, last_error_time = ?", (n, error, now))

    def replay(self, returner: str) -> int:
        """Move every dead letter of ``returner`` back to pending, due now; how many moved."""
        now = time.time()
        with self._write("replay dead letters") as db:
            n = db.execute(
                "INSERT INTO pending (returner, kind, payload, ret_config, ret_kwargs, enqueued, attempts, next_try,"
                " first_failure, last_error) SELECT returner, kind, payload, ret_config, ret_kwargs, enqueued, 0, ?,"
                " NULL, last_error FROM dead WHERE returner = ? ORDER BY rowid", (now, returner)).rowcount
            db.execute("DELETE FROM dead WHERE returner = ?", (returner,))
        return n

    def dead_letters(self, returner: str, limit: int = 100) -> list[dict]:
        """The oldest ``limit`` dead letters of ``returner``, decoded."""
        with self._lock:
            try:
                found = self._db().execute(
                    f"SELECT {_COLUMNS}, died FROM dead WHERE returner = ? ORDER BY rowid LIMIT ?",
                    (returner, int(limit))).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(self._why("read", exc)) from None
        names = [c.strip() for c in _COLUMNS.split(",")] + ["died"]
        out = []
        for r in found:
            d = dict(zip(names, r))
            d["payload"] = _unpack(d["payload"])
            d["ret_kwargs"] = _unpack(d["ret_kwargs"])
            out.append(d)
        return out

    def has_pending(self, returner: str | None = None) -> bool:
        """Whether any item (of ``returner``, when given) is still to deliver."""
        sql, args = ("SELECT 1 FROM pending LIMIT 1", ()) if returner is None else \
            ("SELECT 1 FROM pending WHERE returner = ? LIMIT 1", (returner,))
        with self._lock:
            try:
                return self._db().execute(sql, args).fetchone() is not None
            except sqlite3.Error as exc:
                raise OutboxError(self._why("read", exc)) from None

    def counts(self) -> dict[str, dict]:
        """Per returner: ``pending`` (every undelivered item, retrying ones included), ``retrying``
        (failed at least once), ``dead`` (dead letters now), ``delivered`` and ``buried`` (ever),
        ``last_error``, ``last_error_time``, ``last_success_time``, ``oldest_enqueued``."""
        with self._lock:
            try:
                db = self._db()
                queue = db.execute("SELECT returner, count(*), sum(attempts > 0), min(enqueued) FROM pending"
                                   " GROUP BY returner").fetchall()
                dead = db.execute("SELECT returner, count(*) FROM dead GROUP BY returner").fetchall()
                stats = db.execute("SELECT returner, delivered, buried, last_error, last_error_time,"
                                   " last_success_time FROM stats").fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(self._why("read", exc)) from None
        out: dict[str, dict] = {}

        def entry(name: str) -> dict:
            return out.setdefault(name, {
                "pending": 0, "retrying": 0, "dead": 0, "delivered": 0, "buried": 0, "last_error": None,
                "last_error_time": None, "last_success_time": None, "oldest_enqueued": None})

        for name, n, retrying, oldest in queue:
            entry(name).update(pending=n, retrying=int(retrying or 0), oldest_enqueued=oldest)
        for name, n in dead:
            entry(name)["dead"] = n
        for name, delivered, buried, err, err_t, ok_t in stats:
            entry(name).update(delivered=delivered, buried=buried, last_error=err, last_error_time=err_t,
                               last_success_time=ok_t)
        return out

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
            self._drop_guard()


def try_lock(path: Path | str) -> Any:
    """The open lock file ``path`` with an exclusive ``flock`` held (closing it releases the lock),
    or None when another process holds it. OSError when the file cannot be opened."""
    import fcntl

    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


class _Txn:
    """``with outbox._write(doing) as db``: one write transaction under the lock; SQLite errors
    become one-line OutboxErrors and the transaction is rolled back."""

    def __init__(self, outbox: Outbox, doing: str) -> None:
        self.outbox = outbox
        self.doing = doing
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.outbox._lock.acquire()
        try:
            db = self.db = self.outbox._db()
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.outbox._lock.release()
            raise OutboxError(self.outbox._why(self.doing, exc)) from None
        except BaseException:
            self.outbox._lock.release()
            raise
        return db

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        db = self.db
        try:
            if exc_type is None and db is not None:
                try:
                    db.execute("COMMIT")
                    return False
                except sqlite3.Error as err:
                    exc_type, exc = type(err), err
            if db is not None and db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the first error is the one to report
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(self.outbox._why(self.doing, exc)) from None
            return False
        finally:
            self.outbox._lock.release()


def _chunks(seqs: Sequence[int], size: int = 500) -> Iterator[list[int]]:
    seqs = list(seqs)
    for i in range(0, len(seqs), size):
        yield seqs[i:i + size]


def _marks(chunk: list[int]) -> str:
    return ",".join("?" * len(chunk))


def _bump(db: sqlite3.Connection, returner: str, assignments: str, values: tuple) -> None:
    db.execute("INSERT OR IGNORE INTO stats (returner) VALUES (?)", (returner,))
    db.execute(f"UPDATE stats SET {assignments} WHERE returner = ?", (*values, returner))
