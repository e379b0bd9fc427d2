"""The MySQL path alone: Salt-shaped returns written through the mysql returner's ``returns()``
with each driver (mysqlclient, PyMySQL), and through the same file at another commit (the
"before"), into a fresh database on the local MariaDB; every variant in the same run.

    python bench/bench_mysql_driver.py [--baseline COMMIT] [--runs 3] [--pings 20000]
                                       [--big 5000] [--batch 1000] [--json PATH]
                                       [--statement-kb 64,256,4096]

For each shape (``test.ping`` returns; returns carrying a 4 KB string) and each variant, a run
empties the tables, makes a new returner, connects it (not timed), then times each ``returns()``
call of ``--batch`` returns: rows/s is rows over the summed wall time of those calls, and CPU
per row is ``time.process_time()`` over the same calls (this process only: JSON encoding, the
duplicate check, building and escaping the statements, the driver; the server's CPU is not in
it). Variants alternate within a run so that the noise of a shared machine falls on all of them.
What went on the wire comes from the returner's own session: ``Com_insert`` (INSERT statements)
and ``Bytes_received`` (by the server) per batch. The rows are counted afterwards (all stored,
none twice). Medians of the runs are printed as a markdown table (and written to ``--json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import MYSQL, ROOT, mysql_database, mysql_opts  # noqa: E402

from saline.returners import mysql  # noqa: E402
from saline.returners.mysql import MysqlReturner  # noqa: E402
from saline.returners.options import resolve  # noqa: E402

DEFAULT_SIZE = mysql._STATEMENT_SIZE

MASTER = {"id": "bench-master", "keep_jobs_seconds": 0}
Make = Callable[[dict[str, Any]], Any]


def baseline_class(commit: str, folder: Path) -> type:
    """``MysqlReturner`` as ``saline/returners/mysql.py`` was at ``commit`` (the rest of saline as
    it is now: the file's imports must still resolve)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:saline/returners/mysql.py"],
                            check=True, capture_output=True, text=True).stdout
    path = folder / f"mysql_at_{commit[:10]}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"saline_bench_mysql_{commit[:10]}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MysqlReturner


def maker(cls: type, driver: str | None, statement_size: int | None = None) -> Make:
    def make(db: dict[str, Any]) -> Any:
        config = {**MASTER, **mysql_opts(db), **({"mysql.driver": driver} if driver else {})}
        if statement_size:
            mysql._STATEMENT_SIZE = statement_size
        elif cls is mysql.MysqlReturner:
            mysql._STATEMENT_SIZE = DEFAULT_SIZE
        return cls(resolve(cls, config), config)

    return make


def returns(shape: str, n: int, run: int) -> list[dict[str, Any]]:
    """``n`` returns of one job per 1,000 minions, as the master hands them to returners."""
    value: Any = True if shape == "ping" else {"pid": 4242, "retcode": 0, "stderr": "",
                                               "stdout": ("lorem ipsum dolor sit amet " * 160)[:4096]}
    fun = "test.ping" if shape == "ping" else "cmd.run_all"
    out = []
    for i in range(n):
        jid = f"2026{run:02d}{i // 1000:06d}000000000"[:20]
        out.append({"cmd": "_return", "id": f"minion{i % 1000:04d}.example.org", "jid": jid, "fun": fun,
                    "fun_args": [] if shape == "ping" else ["cat /var/log/app.log"], "return": value,
                    "retcode": 0, "success": True, "_stamp": f"2026-01-05T12:34:{i % 60:02d}.{i:06d}"})
    return out


def session(returner: Any) -> dict[str, int]:
    with returner._conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Com_insert', 'Bytes_received')")
        return {str(k): int(v) for k, v in cur.fetchall()}


def root_exec(db: dict[str, Any], *sql: str) -> list[Any]:
    import pymysql

    conn = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"],
                           database=db["db"], autocommit=True)
    try:
        with conn.cursor() as cur:
            out = []
            for statement in sql:
                cur.execute(statement)
                out += list(cur.fetchall())
            return out
    finally:
        conn.close()


def measure(make: Make, db: dict[str, Any], rets: list[dict[str, Any]], batch: int) -> dict[str, float]:
    root_exec(db, "TRUNCATE TABLE salt_returns")
    returner = make(db)
    try:
        returner.check()  # connect outside the timed calls
        before = session(returner)
        wall = cpu = 0.0
        for start in range(0, len(rets), batch):
            chunk = rets[start:start + batch]
            w0, c0 = time.perf_counter(), time.process_time()
            returner.returns(chunk)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
        after = session(returner)
    finally:
        returner.close()
    stored = root_exec(db, "SELECT COUNT(*), COUNT(DISTINCT jid, id) FROM salt_returns")[0]
    assert stored == (len(rets), len(rets)), f"stored {stored}, expected {len(rets)} distinct rows"
    batches = -(-len(rets) // batch)
    return {"rows_s": len(rets) / wall, "cpu_us_row": cpu / len(rets) * 1e6,
            "inserts_batch": (after["Com_insert"] - before["Com_insert"]) / batches,
            "kb_batch": (after["Bytes_received"] - before["Bytes_received"]) / batches / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a commit whose saline/returners/mysql.py is the 'before' (PyMySQL)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pings", type=int, default=20_000, help="test.ping returns per run")
    parser.add_argument("--big", type=int, default=5_000, help="returns of 4 KB per run")
    parser.add_argument("--batch", type=int, default=1_000, help="returns per returns() call")
    parser.add_argument("--json", type=Path, help="write the medians here too")
    parser.add_argument("--statement-kb", default="", help="also run mysqlclient with statements cut at these "
                        "sizes (KB, comma-separated) instead of the returner's own")
    args = parser.parse_args()

    variants: dict[str, Make] = {}
    with tempfile.TemporaryDirectory(prefix="saline-bench-mysql-") as tmp:
        if args.baseline:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
                                    check=True, capture_output=True, text=True).stdout.strip()
            variants[f"before ({commit}), PyMySQL"] = maker(baseline_class(args.baseline, Path(tmp)), None)
        variants["now, PyMySQL"] = maker(MysqlReturner, "pymysql")
        variants["now, mysqlclient"] = maker(MysqlReturner, "mysqlclient")
        for kb in filter(None, args.statement_kb.split(",")):
            variants[f"now, mysqlclient, {kb} KB statements"] = maker(MysqlReturner, "mysqlclient", int(kb) * 1024)
        shapes = {"test.ping": ("ping", args.pings), "4 KB return": ("big", args.big)}
        got: dict[tuple[str, str], list[dict[str, float]]] = {}
        with mysql_database() as db:
            for run in range(args.runs):
                for label, (shape, n) in shapes.items():
                    rets = returns(shape, n, run)
                    for name, make in variants.items():
                        figures = measure(make, db, rets, args.batch)
                        got.setdefault((label, name), []).append(figures)
                        print(f"run {run + 1} {label:12s} {name:40s} {figures['rows_s']:9,.0f} rows/s "
                              f"{figures['cpu_us_row']:6.1f} µs CPU/row", flush=True)

    from importlib.metadata import version

    print(f"\nbatches of {args.batch:,}; {args.runs} runs, medians; mysqlclient {version('mysqlclient')}, "
          f"PyMySQL {version('PyMySQL')}\n")
    print("| returns | variant | rows/s | CPU µs/row | INSERTs/batch | KB sent/batch | runs (rows/s) |")
    print("|---|---|---|---|---|---|---|")
    table = []
    for (label, name), runs in got.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        table.append({"returns": label, "variant": name, **med, "runs": [r["rows_s"] for r in runs]})
        print(f"| {label} | {name} | {med['rows_s']:,.0f} | {med['cpu_us_row']:.1f} | {med['inserts_batch']:.1f} "
              f"| {med['kb_batch']:,.0f} | {', '.join(f'{r:,.0f}' for r in table[-1]['runs'])} |")
    for label in shapes:
        rows = {t["variant"]: t for t in table if t["returns"] == label}
        base = next((t for v, t in rows.items() if v.startswith("before")), rows["now, PyMySQL"])
        for name, t in rows.items():
            if t is not base:
                print(f"{label}: {name} / {base['variant']}: rows/s x{t['rows_s'] / base['rows_s']:.2f}, "
                      f"CPU per row x{t['cpu_us_row'] / base['cpu_us_row']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"batch": args.batch, "runs": args.runs, "rows": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
