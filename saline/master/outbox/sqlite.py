"""The embedded outbox: one SQLite file, ``<cachedir>/outbox.db``, in the record-log layout.

Each record is one row of :mod:`saline.recordlog`'s ``records``, written once whatever the number
of returners it goes to; each returner has a cursor (the last sequence it settled) and its own
retries. With the default job cache the same file is the job cache: records routed to
``saline_cache`` are simply kept (``cached``) for ``keep_jobs`` and read in place, so that
returner has nothing to deliver (``serves``).

Durability: WAL with ``synchronous=NORMAL``. A committed :meth:`put` is in the write-ahead log,
written to the operating system before ``put`` returns, so it survives a SIGKILL of the master;
only a crash of the whole machine can lose the last transactions. Every SQLite failure (disk full,
read-only folder, corrupt file) becomes :class:`OutboxError` with one line; the master then does
not acknowledge, and the minion keeps the return in its spool and sends it again.

Concurrency: one connection behind a lock per process. ``shared`` (a master whose delivery
workers run in their own processes, :mod:`saline.master.returner_process`): plain WAL, the master
puts, each delivery process takes and settles its own returner's rows; an exclusive ``flock`` on
``outbox.db.lock`` keeps a second master away. Not shared (a minion's outbox, or a master with
``returner_processes: False``): ``locking_mode=EXCLUSIVE`` (the WAL index in process memory).

Sequence numbers are handed out by the one process that puts (the master; under the lock file
in shared mode), in order, so the last record routed to each returner is known exactly and a
cursor can tell at once whether it is behind.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import msgspec

from saline import recordlog, sqlitewal
from saline.master.outbox.base import (Burial, Outbox, OutboxError, Record, Retry, Route, Row, one_line,
                                       route_key)
from saline.recordlog import KIND_CODES, KIND_NAMES, LOAD, pack, unpack

#: routes remembered by the identity of their tuple, at most
ROUTE_CACHE_MAX = 10_000

_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
#: rows per INSERT statement: 111 rows of 9 values stay within the 999 variables older SQLite
#: builds allow in one statement
ROWS_PER_INSERT = 999 // 9
# by "or ignore": the head of an INSERT into records, and a whole statement of ROWS_PER_INSERT rows
_INSERT = {ignore: f"INSERT{' OR IGNORE' if ignore else ''} INTO records "
                   "(seq, kind, route, cached, jid, mid, fun, stamp, body) VALUES " for ignore in (False, True)}
_INSERT_FULL = {ignore: head + ", ".join([_ROW] * ROWS_PER_INSERT) for ignore, head in _INSERT.items()}


def _insert_records(db: sqlite3.Connection, rows: list[tuple[Any, ...]], ignore: bool = False) -> None:
    """Write rows of ``records`` with multi-row INSERTs. SQLite runs a statement's set-up, and the
    AUTOINCREMENT bookkeeping of ``seq``, once per statement, which ``executemany`` does once per
    row. Full statements share one text (compiled once, then in the connection's statement cache);
    the rows left over go through ``executemany``, so no new text is compiled per call."""
    full = len(rows) - len(rows) % ROWS_PER_INSERT
    for start in range(0, full, ROWS_PER_INSERT):
        db.execute(_INSERT_FULL[ignore], [value for row in rows[start:start + ROWS_PER_INSERT] for value in row])
    if full < len(rows):
        db.executemany(_INSERT[ignore] + _ROW, rows[full:])


class SqliteOutbox(Outbox):
    """See the module docstring."""

    def __init__(self, path: Path | str, shared: bool = False, guard: bool = True,
                 serves: str | None = None) -> None:
        """``shared``: other processes use the file too; ``guard`` (with ``shared``): hold the lock
        file that keeps a second master away; ``serves``: the returner (``saline_cache``) whose
        store this file is, so records routed to it are kept instead of delivered."""
        self.path = Path(path)
        self.serves = serves
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._guard: Any = None
        self._routes: dict[int, Route] = {}
        self._route_ids: dict[str, int] = {}
        self._by_returner: dict[str, set[int]] = {}
        self._route_cache: dict[int, tuple[Route, int]] = {}  # id(route) -> (route, its id): the master reuses its tuples
        # id(route) -> (route, the route without the served returner, whether it had it)
        self._served_split: dict[int, tuple[Route, Route, bool]] = {}
        self._cursors: set[str] = set()
        self._scanned: dict[str, int] = {}     # returner -> how far its last takes looked
        self._taken_new: dict[str, set[int]] = {}
        # what this object cannot vouch for: a record stored before it was opened may have been
        # handed out by an earlier process (killed before it settled), and one it handed out
        # already may come back; only records above both go out for the first time
        self._opened_head = 0
        # returner -> the highest seq that may have been handed out (never below _opened_head)
        self._handed: dict[str, int] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot create folder {self.path.parent}: "
                              f"{exc.strerror or one_line(exc)}") from None
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
            conn.executescript(recordlog.SCHEMA)
            sqlitewal.private(self.path)
            self._next_seq = self._head(conn) + 1
            self._opened_head = self._next_seq - 1
        except sqlite3.Error as exc:
            conn.close()
            self._drop_guard()
            raise OutboxError(self._why("open", exc)) from None
        except OutboxError:
            conn.close()
            self._drop_guard()
            raise
        self._conn = conn
        with self._lock:
            self._refresh_routes(conn)
            self._cursors = {r[0] for r in conn.execute("SELECT returner FROM cursors")}

    # -- plumbing --------------------------------------------------------------------------------
    def _take_guard(self) -> Any:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = try_lock(lock_path)
        except OSError as exc:
            raise OutboxError(f"outbox {self.path}: cannot open {lock_path}: {exc.strerror or one_line(exc)}") from None
        if handle is None:
            raise OutboxError(f"outbox {self.path}: cannot open: database is locked "
                              "(another saline-master is using this cachedir)")
        return handle

    def _drop_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()  # closing the file releases the flock
            self._guard = None

    def _why(self, doing: str, exc: BaseException) -> str:
        text = one_line(exc)
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
        return _Txn(self, doing, "BEGIN IMMEDIATE")

    def _read(self, doing: str) -> "_Txn":
        return _Txn(self, doing, "BEGIN")

    @staticmethod
    def _head(conn: sqlite3.Connection) -> int:
        """The highest sequence ever handed out (AUTOINCREMENT's record of it, or the newest row)."""
        found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        newest = conn.execute("SELECT max(seq) FROM records").fetchone()[0]
        return max(found[0] if found else 0, newest or 0)

    # -- routes ----------------------------------------------------------------------------------
    def _refresh_routes(self, conn: sqlite3.Connection) -> None:
        """Learn the routes other processes (the master) added since."""
        known = max(self._routes, default=0)
        for rid, spec in conn.execute("SELECT id, spec FROM routes WHERE id > ? ORDER BY id", (known,)):
            self._learn(rid, tuple((n, rc, kw) for n, rc, kw in unpack(spec)))

    def _learn(self, rid: int, route: Route) -> None:
        self._routes[rid] = route
        self._route_ids[route_key(route)] = rid
        for name, _rc, _kw in route:
            self._by_returner.setdefault(name, set()).add(rid)

    def _route_id(self, conn: sqlite3.Connection, route: Route) -> int:
        """The id of ``route`` (0: no returner), stored the first time it is seen (in the
        caller's transaction), and a cursor for each returner that has none yet."""
        if not route:
            return 0
        hit = self._route_cache.get(id(route))
        if hit is not None and hit[0] is route:
            return hit[1]
        key = route_key(route)
        rid = self._route_ids.get(key)
        if rid is None:
            spec = pack([[n, rc, dict(kw) if kw else None] for n, rc, kw in route])
            conn.execute("INSERT OR IGNORE INTO routes (key, spec) VALUES (?, ?)", (key, spec))
            rid = conn.execute("SELECT id FROM routes WHERE key = ?", (key,)).fetchone()[0]
            self._learn(rid, route)
        for name, _rc, _kw in route:
            if name not in self._cursors:
                # a new returner starts where the log is now: everything from here on is for it
                conn.execute("INSERT OR IGNORE INTO cursors (returner, seq, routed) VALUES (?, ?, ?)",
                             (name, self._next_seq - 1, 0))
                self._cursors.add(name)
        if len(self._route_cache) > ROUTE_CACHE_MAX:  # many jobs with their own --return_kwargs
            self._route_cache.clear()
            self._served_split.clear()
        self._route_cache[id(route)] = (route, rid)  # holds the tuple: its id stays its own
        return rid

    # -- the queue -------------------------------------------------------------------------------
    def put(self, records: Sequence[Record]) -> None:
        if not records:
            return
        now = time.time()
        serves = self.serves
        try:
            seq = self._put(records, now, serves)
        except OutboxError:
            self._forget_routes()  # what was learnt in the failed transaction was not stored
            raise
        self._next_seq = seq

    def _forget_routes(self) -> None:
        with self._lock:
            self._routes.clear()
            self._route_ids.clear()
            self._by_returner.clear()
            self._route_cache.clear()
            self._cursors.clear()

    def _put(self, records: Sequence[Record], now: float, serves: str | None) -> int:
        with self._write("write items") as db:
            rows = []
            loads = []
            routed: dict[str, int] = {}
            # read in the transaction: a job cache in the same file may have added records meanwhile
            seq = self._next_seq = self._head(db) + 1
            try:
                for rec in records:
                    route = rec.route
                    cached = 0
                    if serves is not None:
                        split = self._served_split.get(id(route))
                        if split is None or split[0] is not route:
                            kept = tuple(e for e in route if e[0] != serves)
                            split = self._served_split[id(route)] = (route, kept, len(kept) != len(route))
                        route, cached = split[1], int(split[2])
                        if rec.kind == "load":
                            p = rec.payload
                            loads.append(recordlog.load_row(p["jid"], p["load"], p.get("minions")))
                    if not route and (rec.kind == "load" or not cached):
                        continue  # a load is in ``jobs``; a record nobody needs is not written
                    rid = self._route_id(db, route)
                    rows.append((seq, KIND_CODES[rec.kind], rid, cached, rec.jid, rec.mid, rec.fun, now, pack(rec.payload)))
                    for name, _rc, _kw in route:
                        routed[name] = seq
                    seq += 1
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
                raise OutboxError(f"outbox {self.path}: cannot encode an item: {one_line(exc)}") from None
            _insert_records(db, rows, ignore=True)
            if loads:
                db.executemany(recordlog.INSERT_LOAD, loads)
            for name, last in routed.items():
                db.execute("UPDATE cursors SET routed = ? WHERE returner = ?", (last, name))
        return seq

    def take(self, returner: str, limit: int, after: int | None = None) -> list[Row]:
        now = time.time()
        with self._read("read") as db:
            self._refresh_routes(db)
            ids = sorted(self._by_returner.get(returner, ()))
            found = db.execute("SELECT seq FROM cursors WHERE returner = ?", (returner,)).fetchone()
            if found is None:
                return []
            cursor = found[0]
            if after is None:  # a new batch starts at the cursor, whatever an unsettled one took
                self._taken_new[returner] = set()
                self._scanned[returner] = cursor
            start = max(cursor, after if after is not None else -1)
            retried = db.execute(
                "SELECT t.seq, t.attempts, t.next_try, t.first_failure, t.last_error, r.kind, r.route, r.stamp, r.body"
                " FROM retries t JOIN records r ON r.seq = t.seq WHERE t.returner = ? AND t.next_try <= ?"
                " AND t.seq > ? ORDER BY t.seq LIMIT ?",
                (returner, now, -1 if after is None else after, int(limit))).fetchall()
            fresh: list[tuple] = []
            room = int(limit) - len(retried)
            if room > 0 and ids:
                marks = ",".join("?" * len(ids))
                fresh = db.execute(f"SELECT seq, kind, route, stamp, body, mid FROM records WHERE seq > ? AND route IN ({marks})"
                                   " ORDER BY seq LIMIT ?", (start, *ids, room)).fetchall()
            # how far this take looked: past the records not routed here too, when it found less than
            # it could take; not at all when the retries filled the batch
            if room <= 0:
                scanned = start
            elif ids and len(fresh) >= room:
                scanned = fresh[-1][0]
            else:
                scanned = self._head(db)
        self._scanned[returner] = max(self._scanned.get(returner, cursor), scanned)
        if not retried and not fresh and after is None and scanned > cursor:
            # nothing here after all (a record its route named was a duplicate, not stored): the
            # cursor moves on, or the worker would be told again and again that it is behind
            with self._write("move a cursor") as db:
                db.execute("UPDATE cursors SET seq = max(seq, ?) WHERE returner = ?", (scanned, returner))
            return []
        taken = self._taken_new.setdefault(returner, set())
        rows = []
        for seq, attempts, next_try, first_failure, last_error, kind, rid, stamp, body in retried:
            rc, kw = self._options(rid, returner)
            rows.append(Row(seq, returner, KIND_NAMES[kind], unpack(body), rc, kw, stamp, attempts, next_try,
                            first_failure, last_error))
        handed = self._handed.get(returner, self._opened_head)
        for seq, kind, rid, stamp, body, mid in fresh:
            rc, kw = self._options(rid, returner)
            taken.add(seq)
            # a return without its minion is a replayed dead letter (see replay): it may be stored
            replayed = kind == recordlog.RET and mid is None
            rows.append(Row(seq, returner, KIND_NAMES[kind], unpack(body), rc, kw, stamp, 0, stamp, None, None,
                            seq <= handed or replayed))
        if fresh:  # (ordered by seq; a retried row was handed out before)
            self._handed[returner] = max(handed, fresh[-1][0])
        return rows

    def _options(self, rid: int, returner: str) -> tuple[str | None, dict | None]:
        for name, rc, kw in self._routes.get(rid, ()):
            if name == returner:
                return rc, (dict(kw) if kw else None)
        return None, None

    def settle(self, returner: str, taken: Sequence[Row], done: Sequence[int] = (),
               retries: Sequence[Retry] = (), burials: Sequence[Burial] = ()) -> None:
        now = time.time()
        new = self._taken_new.get(returner, set())
        settled = set(done) | {s for r in retries for s in r.seqs} | {s for b in burials for s in b.seqs}
        fresh_taken = {r.seq for r in taken if r.seq in new}
        untried = fresh_taken - settled
        scanned = self._scanned.get(returner, 0)
        # rows not tried (a stop in the middle of a batch) stay ahead of the cursor, and so does
        # everything after the first of them: they come back as they were
        upto = min(untried) - 1 if untried else scanned
        by_seq = {r.seq: r for r in taken}
        with self._write("settle deliveries") as db:
            old = [s for s in done if s not in new]
            for chunk in _chunks(old):
                db.execute(f"DELETE FROM retries WHERE returner = ? AND seq IN ({_marks(chunk)})", (returner, *chunk))
            n_done = sum(1 for s in done if s not in new or s <= upto)
            last_error: tuple[str, float] | None = None
            for retry in retries:
                delay_to = now + max(0.0, retry.delay)
                last_error = (retry.error, now)
                for seq in retry.seqs:
                    if seq in new:
                        if seq <= upto:
                            db.execute("INSERT OR REPLACE INTO retries (returner, seq, attempts, next_try, first_failure,"
                                       " last_error) VALUES (?, ?, 1, ?, ?, ?)", (returner, seq, delay_to, now, retry.error))
                    else:
                        db.execute("UPDATE retries SET attempts = attempts + 1, next_try = ?, last_error = ?"
                                   " WHERE returner = ? AND seq = ?", (delay_to, retry.error, returner, seq))
            n_buried = 0
            for burial in burials:
                last_error = (burial.error, now)
                for seq in burial.seqs:
                    row = by_seq.get(seq)
                    if row is None or (seq in new and seq > upto):
                        continue
                    db.execute("INSERT INTO dead (returner, seq, kind, body, ret_config, ret_kwargs, enqueued, attempts,"
                               " first_failure, last_error, died) SELECT ?, seq, kind, body, ?, ?, stamp, ?, ?, ?, ?"
                               " FROM records WHERE seq = ?",
                               (returner, row.ret_config, pack(row.ret_kwargs) if row.ret_kwargs else None,
                                row.attempts + 1, row.first_failure or now, burial.error, now, seq))
                    db.execute("DELETE FROM retries WHERE returner = ? AND seq = ?", (returner, seq))
                    n_buried += 1
            sets = ["seq = max(seq, ?)", "delivered = delivered + ?", "buried = buried + ?"]
            args: list[Any] = [upto, n_done, n_buried]
            if n_done:
                sets.append("last_success_time = ?")
                args.append(now)
            if last_error is not None:
                sets += ["last_error = ?", "last_error_time = ?"]
                args += list(last_error)
            db.execute(f"UPDATE cursors SET {', '.join(sets)} WHERE returner = ?", (*args, returner))
        for seq in fresh_taken:
            new.discard(seq)
        if untried:
            self._scanned[returner] = upto

    def next_due(self, returner: str) -> float | None:
        with self._read("read") as db:
            found = db.execute("SELECT seq, routed FROM cursors WHERE returner = ?", (returner,)).fetchone()
            if found is not None and found[1] > found[0]:
                return time.time()
            return db.execute("SELECT min(next_try) FROM retries WHERE returner = ?", (returner,)).fetchone()[0]

    def has_pending(self, returner: str | None = None) -> bool:
        with self._read("read") as db:
            if returner is None:
                behind = db.execute("SELECT 1 FROM cursors WHERE routed > seq LIMIT 1").fetchone()
                retrying = db.execute("SELECT 1 FROM retries LIMIT 1").fetchone()
            else:
                behind = db.execute("SELECT 1 FROM cursors WHERE returner = ? AND routed > seq", (returner,)).fetchone()
                retrying = db.execute("SELECT 1 FROM retries WHERE returner = ? LIMIT 1", (returner,)).fetchone()
        return behind is not None or retrying is not None

    def counts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self._read("read") as db:
            self._refresh_routes(db)
            cursors = db.execute("SELECT returner, seq, routed, delivered, buried, last_error, last_error_time,"
                                 " last_success_time FROM cursors").fetchall()
            retrying = dict(db.execute("SELECT returner, count(*) FROM retries GROUP BY returner").fetchall())
            oldest_retry = dict(db.execute("SELECT t.returner, min(r.stamp) FROM retries t JOIN records r"
                                           " ON r.seq = t.seq GROUP BY t.returner").fetchall())
            dead = dict(db.execute("SELECT returner, count(*) FROM dead GROUP BY returner").fetchall())
            for name, seq, routed, delivered, buried, err, err_t, ok_t in cursors:
                ahead, oldest = 0, None
                ids = sorted(self._by_returner.get(name, ()))
                if routed > seq and ids:
                    marks = ",".join("?" * len(ids))
                    ahead, oldest = db.execute(f"SELECT count(*), min(stamp) FROM records WHERE seq > ? AND route IN"
                                               f" ({marks})", (seq, *ids)).fetchone()
                n_retrying = int(retrying.get(name, 0))
                olds = [t for t in (oldest, oldest_retry.get(name)) if t is not None]
                out[name] = {"pending": int(ahead or 0) + n_retrying, "retrying": n_retrying,
                             "dead": int(dead.get(name, 0)), "delivered": delivered, "buried": buried,
                             "last_error": err, "last_error_time": err_t, "last_success_time": ok_t,
                             "oldest_enqueued": min(olds) if olds else None}
            for name, n in dead.items():
                if name not in out:
                    out[name] = {"pending": 0, "retrying": 0, "dead": int(n), "delivered": 0, "buried": 0,
                                 "last_error": None, "last_error_time": None, "last_success_time": None,
                                 "oldest_enqueued": None}
        return out

    def replay(self, returner: str) -> int:
        with self._write("replay dead letters") as db:
            letters = db.execute("SELECT rowid, kind, body, ret_config, ret_kwargs FROM dead WHERE returner = ?"
                                 " ORDER BY rowid", (returner,)).fetchall()
            now, seq = time.time(), self._next_seq
            rows = []
            for _rowid, kind, body, rc, kw in letters:
                route: Route = ((returner, rc, unpack(kw) if kw else None),)
                rid = self._route_id(db, route)
                payload = unpack(body)
                jid = payload.get("jid") if isinstance(payload, dict) else None
                mid = (payload.get("id") if kind == 0 else payload.get("tag")) if isinstance(payload, dict) else None
                # a replayed return is a copy, not the job cache's (whose returns are unique per job and
                # minion); stored without its minion, it is known to take() as one that may be stored
                rows.append((seq, kind, rid, 0, jid, None if kind == 0 else mid, None, now, body))
                seq += 1
            _insert_records(db, rows)
            if rows:
                db.execute("UPDATE cursors SET routed = ? WHERE returner = ?", (seq - 1, returner))
            db.execute("DELETE FROM dead WHERE returner = ?", (returner,))
        self._next_seq = seq
        return len(rows)

    def dead_letters(self, returner: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._read("read") as db:
            found = db.execute("SELECT seq, kind, body, ret_config, ret_kwargs, enqueued, attempts, first_failure,"
                               " last_error, died FROM dead WHERE returner = ? ORDER BY rowid LIMIT ?",
                               (returner, int(limit))).fetchall()
        return [{"seq": seq, "returner": returner, "kind": KIND_NAMES.get(kind, str(kind)), "payload": unpack(body),
                 "ret_config": rc, "ret_kwargs": unpack(kw) if kw else None, "enqueued": enq, "attempts": attempts,
                 "first_failure": ff, "last_error": err, "died": died}
                for seq, kind, body, rc, kw, enq, attempts, ff, err, died in found]

    @property
    def keeps_returns(self) -> bool:
        """When this file is the job cache, every return routed to it stays for keep_jobs."""
        return self.serves is not None

    def returned(self, jid: str) -> set[str]:
        """The minions whose return of ``jid`` is stored here."""
        with self._read("read") as db:
            return recordlog.returned(db, jid)

    def prune(self, keep_seconds: float, chunk: int = 20_000) -> int:
        """Drop delivered records and job-cache records older than ``keep_seconds``, a range of
        ``chunk`` sequences per transaction, so ``put`` never waits long. How many went."""
        with self._read("read") as db:
            low, limit = recordlog.prune_bounds(db)
        n = 0
        while low < limit:
            with self._write("prune") as db:
                n += recordlog.prune_range(db, low, min(low + chunk, limit), keep_seconds)
            low += chunk
        with self._write("prune") as db:
            recordlog.prune_jobs(db, keep_seconds)
        return n

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
    """``with outbox._write(doing) as db``: one transaction under the lock; SQLite errors become
    one-line OutboxErrors and the transaction is rolled back."""

    def __init__(self, outbox: SqliteOutbox, doing: str, begin: str) -> None:
        self.outbox = outbox
        self.doing = doing
        self.begin = begin
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.outbox._lock.acquire()
        try:
            db = self.db = self.outbox._db()
            db.execute(self.begin)
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


__all__ = ["SqliteOutbox", "try_lock", "LOAD"]
