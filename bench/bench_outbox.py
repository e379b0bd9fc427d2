"""Benchmark of the outbox and the delivery workers; prints the figures.

    python bench/bench_outbox.py [--items 20000] [--no-mysql]

1. ``put`` throughput (items/s) by batch size: one item per transaction up to 1,000;
2. ``take`` + ``done`` throughput (items/s) in batches of 1,000;
3. ``put`` while two threads drain, for the outbox's design (one connection behind a lock) and,
   for comparison, a connection per thread (the choice the outbox docstring reports);
4. end to end: returns submitted as the master does (groups of 100), until they are rows in the
   real backend, through the ``sqlite3`` returner and the ``mysql`` returner (MariaDB at
   127.0.0.1:3306, or ``SALINE_TEST_MYSQL_PORT``; a throw-away database and user).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saline.config import MASTER_OPTIONS, _finish  # noqa: E402
from saline.master.delivery import Delivery  # noqa: E402
from saline.master.outbox import _SCHEMA, Item, Outbox  # noqa: E402

RET = {"fun_args": [], "jid": "20240105123456123456", "return": True, "retcode": 0, "success": True,
       "fun": "test.ping", "id": "minion-001", "_stamp": "2024-01-05T12:34:56.123456", "cmd": "_return"}


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} items/s"


def bench_put(folder: Path, total: int) -> None:
    print("put (one transaction per call)")
    for size in (1, 10, 100, 1000):
        box = Outbox(folder / f"put{size}.db")
        n = min(total, 20000) if size == 1 else total
        batch = [Item("mysql", "ret", {**RET, "id": f"m{i}"}) for i in range(size)]
        begin = time.perf_counter()
        for _ in range(n // size):
            box.put(batch)
        print(f"  {size:>5} per put: {rate(n, time.perf_counter() - begin)}")
        box.close()


def bench_take_done(folder: Path, total: int) -> None:
    box = Outbox(folder / "drain.db")
    batch = [Item("mysql", "ret", {**RET, "id": f"m{i}"}) for i in range(1000)]
    for _ in range(total // 1000):
        box.put(batch)
    begin = time.perf_counter()
    n = 0
    while rows := box.take("mysql", 1000):
        box.done("mysql", [r.seq for r in rows])
        n += len(rows)
    print(f"take+done, 1000 per batch: {rate(n, time.perf_counter() - begin)}")
    box.close()


class PerThreadOutbox(Outbox):
    """For comparison only: a connection per thread, no Python lock, SQLite's busy handler."""

    class _NoLock:
        def acquire(self) -> None: ...
        def release(self) -> None: ...
        def __enter__(self) -> None: ...
        def __exit__(self, *exc: Any) -> None: ...

    def __init__(self, path: Path) -> None:  # the outbox's tables, in shared (not exclusive) locking mode
        self.path = Path(path)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._local = threading.local()
        self._lock = self._NoLock()  # type: ignore[assignment]

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn


def bench_concurrent(folder: Path, total: int) -> None:
    print("put while two threads take+done (p99 = put latency)")
    for label, make in (("one connection + lock (built)", Outbox), ("connection per thread", PerThreadOutbox)):
        for size in (1, 100):
            box = make(folder / f"conc-{make.__name__}-{size}.db")
            n = min(total, 20000)
            stop = threading.Event()
            drained = [0]

            def drain(name: str, box: Outbox = box, stop: threading.Event = stop, drained: list[int] = drained) -> None:
                while True:
                    rows = box.take(name, 500)
                    if rows:
                        box.done(name, [r.seq for r in rows])
                        drained[0] += len(rows)
                    elif stop.is_set():
                        return
                    else:
                        time.sleep(0.001)

            threads = [threading.Thread(target=drain, args=(f"r{k}",)) for k in range(2)]
            for t in threads:
                t.start()
            lat = []
            begin = time.perf_counter()
            for i in range(n // size):
                batch = [Item(f"r{(i + j) % 2}", "ret", {**RET, "id": f"m{j}"}) for j in range(size)]
                t0 = time.perf_counter()
                box.put(batch)
                lat.append(time.perf_counter() - t0)
            put_s = time.perf_counter() - begin
            stop.set()
            for t in threads:
                t.join()
            lat.sort()
            p99 = lat[int(len(lat) * 0.99)] * 1000
            print(f"  {label:<30} {size:>4} per put: {rate(n, put_s)}, p99 {p99:5.2f} ms, drained {drained[0]}")
            box.close()


def master_opts(root: Path, **extra: Any) -> dict[str, Any]:
    opts = {k: v[1] for k, v in MASTER_OPTIONS.items()}
    opts.update(id="bench", cachedir=str(root / "cache"), **extra)
    _finish("master", opts)
    return opts


def end_to_end(label: str, opts: dict[str, Any], total: int, count_rows: Callable[[], int]) -> None:
    box = Outbox(Path(opts["cachedir"]) / "outbox.db")
    d = Delivery(opts, box)
    d.start()
    name = label.split()[0]
    try:
        begin = time.perf_counter()
        for chunk in range(total // 100):
            items: list[Item] = []
            for i in range(100):
                items += d.items_for_return([name], {**RET, "jid": f"2024010512{chunk:04d}000000", "id": f"m{i}"})
            d.submit(items)
        submitted = time.perf_counter() - begin
        if not d.flush(600):
            raise SystemExit(f"{label}: not all delivered: {d.status()[name]}")
        elapsed = time.perf_counter() - begin
    finally:
        d.stop()
        box.close()
    rows = count_rows()
    assert rows == total, (rows, total)
    print(f"  {label:<24} {rate(total, elapsed)} end to end ({total} rows; submit alone {rate(total, submitted)})")


def bench_sqlite3(folder: Path, total: int) -> None:
    path = folder / "returns.db"
    opts = master_opts(folder / "sq", **{"sqlite3.database": str(path)})

    def count() -> int:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT COUNT(*) FROM salt_returns").fetchone()[0]
        finally:
            conn.close()

    end_to_end("sqlite3 returner", opts, total, count)


def bench_mysql(folder: Path, total: int) -> None:
    import pymysql

    from saline.returners import registry

    port = int(os.environ.get("SALINE_TEST_MYSQL_PORT", 3306))
    db, user, password = f"saline_b_{uuid.uuid4().hex[:8]}", f"saline_b_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
    cur = admin.cursor()
    cur.execute(f"CREATE DATABASE `{db}` DEFAULT CHARACTER SET utf8mb4")
    cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO %s@'%%'", (user,))
    try:
        for size in (100, 1000):
            cur.execute(f"DROP TABLE IF EXISTS `{db}`.`salt_returns`")
            opts = master_opts(folder / f"my{size}", returner_batch_size=size, **{
                "mysql.host": "127.0.0.1", "mysql.port": port, "mysql.user": user, "mysql.pass": password,
                "mysql.db": db})
            r = registry.create("mysql", opts)
            r.init_schema()
            r.close()

            def count() -> int:
                cur.execute(f"SELECT COUNT(*) FROM `{db}`.`salt_returns`")
                return cur.fetchone()[0]

            end_to_end(f"mysql returner, batch {size}", opts, total, count)
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--no-mysql", action="store_true")
    args = parser.parse_args()
    print(f"saline outbox benchmark: {args.items} items, Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_put(folder, args.items)
        bench_take_done(folder, args.items)
        bench_concurrent(folder, args.items)
        print("end to end (submit in groups of 100 -> rows in the backend)")
        bench_sqlite3(folder, args.items)
        if not args.no_mysql:
            bench_mysql(folder, args.items)


if __name__ == "__main__":
    main()
