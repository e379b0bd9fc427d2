"""Every benchmark of the suite; each returns rows for the results table (see ``bench/run.py``).

Each takes ``smoke`` (small N, a few seconds: only proves the benchmark works) and a scratch folder.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common import (REST, Cluster, _init_schema, cluster, cpu_shares, cpu_snapshot, figure, median,
                    mongo_count_before, mongo_opts, mysql_count, mysql_database, mysql_opts, percentile, pg_count,
                    pg_database, pg_opts, redis_count, redis_database, redis_opts, secantus_server, sqlite_count,
                    tree_memory)

BENCH = Path(__file__).resolve().parent
#: seconds of sustained load per run in full mode (``bench/run.py --seconds``), and runs per
#: sustained benchmark (0: its own count; ``bench/run.py --baseline`` makes it 1 and alternates
#: whole benchmarks instead)
SUSTAIN = {"seconds": 60.0, "runs": 0}
Rows = list[dict[str, Any]]


def sustained_runs(smoke: bool) -> int:
    return int(SUSTAIN["runs"]) or (1 if smoke else 3)


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    begin = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - begin
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-3:])} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return took


# -- 1. the CLI round trip, idle memory ----------------------------------------------------------------
def bench_cli_and_idle(smoke: bool, folder: Path) -> Rows:
    runs = 3 if smoke else 15
    rows: Rows = []
    with cluster(folder) as c:
        c.start_minion("web1")
        c.accept("web1")
        script = shutil.which("saline")
        cmd = [script] if script else [sys.executable, "-m", "saline.cli.saline"]
        cmd += ["-c", str(c.master_dir), "web1", "test.ping"]
        env = c._env()
        _wall(cmd, env)  # warm the page cache
        times = [_wall(cmd, env) for _ in range(runs)]
        floor = median([_wall([sys.executable, "-c", "pass"]) for _ in range(runs)])
        value = median(times)
        rows.append(figure("saline '<id>' test.ping, 1 minion (CLI start to exit)", value, "s", goal="< 0.2 s",
                           met=value < 0.2, floor=floor, floor_what="python -c pass", runs=times))
        time.sleep(1.0 if smoke else 5.0)  # idle
        minion = tree_memory(c.procs["web1"].pid)
        master = tree_memory(c.master_pid())
        rows.append(figure("idle minion resident memory", minion["rss"], "MB", goal="< 30 MB", met=minion["rss"] < 30,
                           note=f"PSS {minion['pss']:.1f} MB, {minion['processes']} process(es)"))
        rows.append(figure("idle master resident memory, all processes", master["rss"], "MB", goal="< 120 MB",
                           met=master["rss"] < 120,
                           note=f"PSS {master['pss']:.1f} MB, {master['processes']} process(es)"))
    return rows


# -- 2. fan-out to swarms ------------------------------------------------------------------------------
def zmq_floor(n: int, runs: int) -> list[float]:
    out = subprocess.run([sys.executable, str(BENCH / "zmq_floor.py"), str(n), str(runs)], capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"zmq_floor {n}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fanout_once(c: Cluster, tgt: str, timeout: float) -> tuple[float, int, list[str]]:
    """(seconds from the publish request to the last return, returns, missing minions)."""
    client = c.local_client()
    begin = time.perf_counter()
    got, missing = 0, []
    for message in client.cmd_iter(tgt, "test.ping", timeout=timeout):
        if message["cmd"] == "return":
            got += 1
            last = time.perf_counter()
        elif message["cmd"] in ("done", "timeout"):
            missing = list(message.get("missing") or [])
    took = (last if got else time.perf_counter()) - begin
    return took, got, missing


def bench_fanout(smoke: bool, folder: Path) -> Rows:
    sizes = (10, 50) if smoke else (10, 100, 1000, 5000)
    rows: Rows = []
    for n in sizes:
        runs = 3 if (smoke or n >= 5000) else 5
        with cluster(folder / f"fanout{n}") as c:
            swarms = c.start_swarm(n)
            ready = c.wait_all_answer("swarm-*", n, deadline_s=600)
            results = [fanout_once(c, "swarm-*", timeout=60) for _ in range(runs)]
            times = [r[0] for r in results]
            lost = sorted({m for r in results for m in r[2]})
            time.sleep(1.0)
            master = tree_memory(c.master_pid())
            swarm_rss = sum(tree_memory(p.pid)["rss"] for p in swarms)
        floor_runs = zmq_floor(n, runs)
        value = median(times)
        goal, met = "", None
        if n == 1000:
            goal, met = "< 2 s", value < 2
        elif n == 5000:
            goal, met = "< 8 s, no minion lost", value < 8 and not lost
        note = (f"{len(lost)} minion(s) lost" if lost else "no minion lost") + \
               f"; swarm ready in {ready:.1f} s; master {master['rss']:.0f} MB RSS ({master['pss']:.0f} PSS), " \
               f"swarm {swarm_rss / n:.2f} MB/minion in {len(swarms)} process(es)"
        rows.append(figure(f"fan-out test.ping to {n} swarm minions, until all returned", value, "s", goal=goal,
                           met=met, floor=median(floor_runs), floor_what="bare pyzmq PUB/SUB + DEALER/ROUTER, CURVE",
                           runs=times, note=note))
        if n == 1000 or (smoke and n == sizes[-1]):
            rows.append(figure(f"master resident memory with {n} minions connected", master["rss"], "MB",
                               goal="< 300 MB" if n == 1000 else "", met=master["rss"] < 300 if n == 1000 else None,
                               note=f"PSS {master['pss']:.1f} MB"))
        rows.append({"name": f"scale: N={n} minions", "scale": True, "n": n, "fanout_s": value,
                     "floor_s": median(floor_runs), "master_rss_mb": master["rss"],
                     "swarm_mb_per_minion": swarm_rss / n, "lost": len(lost), "ready_s": ready})
    return rows


# -- 3. returns delivered per second, through the master and the outbox ------------------------------------
class Load:
    """``bench/loadgen.py`` in a child process; its JSON lines collected in a thread."""

    def __init__(self, c: Cluster, minions: int, seconds: float, prefix: str, window: int = 4000) -> None:
        self.lines: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "loadgen.py"), "--master-dir", str(c.master_dir), "--ret-port",
             str(c.ret_port), "--minions", str(minions), "--seconds", str(seconds), "--prefix", prefix,
             "--window", str(window)], stdout=subprocess.PIPE, stderr=open(c.root / f"{prefix}loadgen.log", "ab"),
            text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            d = json.loads(line)
            if d.get("ready"):
                self.ready.set()
            self.lines.append(d)

    def wait(self, timeout: float) -> dict[str, Any]:
        self.proc.wait(timeout)
        self.thread.join(5)
        if self.proc.returncode not in (0, None):
            raise RuntimeError(f"loadgen exited {self.proc.returncode}")
        return self.lines[-1] if self.lines else {}


#: CPU per part of the last sustained run (percent of one core), for the row's note
LAST_CPU: dict[str, float] = {}


def sustained_rate(c: Cluster, count: Callable[[], int], seconds: float, warmup: float, minions: int,
                   prefix: str) -> tuple[float, float]:
    """(rows per second delivered into the backend while the load ran, returns acked per second).
    The CPU each part of the run used meanwhile is left in ``LAST_CPU``."""
    load = Load(c, minions, seconds + warmup, prefix)
    if not load.ready.wait(180):
        load.proc.kill()
        raise RuntimeError("the load generator's minions were not welcomed")
    time.sleep(warmup)
    n0, t0 = count(), time.monotonic()
    a0 = load.lines[-1].get("acked", 0)
    cpu0 = cpu_snapshot(c.master_pid(), load.proc.pid)
    time.sleep(seconds)
    cpu1 = cpu_snapshot(c.master_pid(), load.proc.pid)
    n1, t1 = count(), time.monotonic()
    a1 = load.lines[-1].get("acked", 0)
    load.wait(120)
    LAST_CPU.clear()
    LAST_CPU.update(cpu_shares(cpu0, cpu1, t1 - t0))
    return (n1 - n0) / (t1 - t0), (a1 - a0) / (t1 - t0)


def cpu_note(shares: list[dict[str, float]]) -> str:
    """The median CPU of each part over the runs, as a note: where the two cores went, and what
    the rest of the machine took meanwhile (other work on a shared machine shows there)."""
    labels = [k for k in dict.fromkeys(k for s in shares for k in s) if k != REST]
    medians = sorted(((median([s.get(k, 0.0) for s in shares]), k) for k in labels), key=lambda mk: -mk[0])
    parts = [f"{k} {m:.0f} %" for m, k in medians]
    total = median([sum(v for k, v in s.items() if k != REST) for s in shares])
    rest = [s[REST] for s in shares if REST in s]
    return f"CPU (% of one core, {total:.0f} % in all): " + ", ".join(parts) + \
        (f"; {REST} {median(rest):.0f} %" if rest else "")


RET_ROW = {"fun_args": [], "return": True, "retcode": 0, "success": True, "fun": "test.ping"}


def _floor_rows(n: int) -> list[dict[str, Any]]:
    return [{**RET_ROW, "id": f"floor-{i % 1000:05d}", "jid": f"2024010512345612{i // 1000:04d}"} for i in range(n)]


def floor_mysql(db: dict[str, Any], n: int, table: str = "salt_returns") -> float:
    import pymysql

    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"],
                           autocommit=False, charset="utf8mb4")
    if table == "salt_returns":
        sql = ("INSERT INTO `salt_returns` (`fun`, `jid`, `return`, `id`, `success`, `full_ret`)"
               " VALUES (%s, %s, %s, %s, %s, %s)")
        rows = [(r["fun"], r["jid"], "true", r["id"], "1", json.dumps(r)) for r in _floor_rows(n)]
    else:
        sql = "INSERT INTO `salt_events` (`tag`, `data`, `master_id`) VALUES (%s, %s, %s)"
        rows = [(f"salt/job/{r['jid']}/ret/{r['id']}", json.dumps(r), "bench") for r in _floor_rows(n)]
    begin = time.perf_counter()
    with conn.cursor() as cur:
        for i in range(0, n, 1000):
            cur.executemany(sql, rows[i:i + 1000])
            conn.commit()
    took = time.perf_counter() - begin
    conn.close()
    return n / took


def floor_pg(db: dict[str, Any], n: int) -> float:
    import psycopg

    rows = [(r["fun"], r["jid"], "true", json.dumps(r), r["id"], "1") for r in _floor_rows(n)]
    with psycopg.connect(host=db["host"], port=db["port"], user=db["user"], dbname=db["db"]) as conn:
        begin = time.perf_counter()
        for i in range(0, n, 1000):
            with conn.cursor().copy("COPY salt_returns (fun, jid, return, full_ret, id, success) FROM STDIN") as cp:
                for row in rows[i:i + 1000]:
                    cp.write_row(row)
            conn.commit()
        return n / (time.perf_counter() - begin)


def floor_sqlite(path: Path, n: int) -> float:
    import sqlite3

    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE IF NOT EXISTS salt_returns (fun TEXT, jid TEXT, id TEXT, fun_args TEXT, date TEXT,"
                 " full_ret TEXT, success TEXT)")
    rows = [(r["fun"], r["jid"], r["id"], "[]", "2024-01-05 12:34:56", json.dumps(r), "1") for r in _floor_rows(n)]
    begin = time.perf_counter()
    for i in range(0, n, 1000):
        with conn:
            conn.executemany("INSERT INTO salt_returns VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i:i + 1000])
    took = time.perf_counter() - begin
    conn.close()
    return n / took


def floor_redis(db: dict[str, Any], n: int) -> float:
    import redis

    client = redis.Redis(host=db["host"], port=db["port"], db=db["db"])
    rets = _floor_rows(n)
    begin = time.perf_counter()
    for i in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for r in rets[i:i + 1000]:
            pipe.hset(f"floor:{r['jid']}", r["id"], json.dumps(r))
        pipe.execute()
    took = time.perf_counter() - begin
    client.close()
    return n / took


def _returns_config(backend: str, db: Any, folder: Path) -> tuple[dict[str, Any], Callable[[], int]]:
    if backend == "mysql":
        return {"return": "mysql", **mysql_opts(db)}, lambda: mysql_count(db, "salt_returns")
    if backend == "postgres":
        return {"return": "postgres", **pg_opts(db)}, lambda: pg_count(db, "salt_returns")
    if backend == "redis":
        return {"return": "redis", **redis_opts(db)}, lambda: redis_count(db)
    path = folder / "returns.db"
    return {"return": "sqlite3", "sqlite3.database": str(path)}, lambda: sqlite_count(path, "salt_returns")


GOALS = {"mysql": 30_000, "postgres": 30_000, "sqlite3": 50_000, "redis": 50_000}


def _one_backend(backend: str, smoke: bool, folder: Path, db: Any, extra: dict[str, Any] | None = None,
                 label: str = "") -> Rows:
    seconds, warmup, minions = (3.0, 1.0, 100) if smoke else (SUSTAIN["seconds"], 5.0, 1000)
    runs = sustained_runs(smoke)
    opts, count = _returns_config(backend, db, folder)
    opts.update(extra or {})
    rates, acked, cpu = [], [], []
    with cluster(folder / f"ret-{backend}", opts) as c:
        for k in range(runs):
            rate, ack = sustained_rate(c, count, seconds, warmup, minions, prefix=f"load{k}-")
            rates.append(rate)
            acked.append(ack)
            cpu.append(dict(LAST_CPU))
    n = 5000 if smoke else 100_000
    if backend == "mysql":
        floor = floor_mysql(db, n)
    elif backend == "postgres":
        floor = floor_pg(db, n)
    elif backend == "redis":
        floor = floor_redis(db, n)
    else:
        floor = floor_sqlite(folder / "floor.db", n)
    value = median(rates)
    goal = GOALS[backend]
    return [figure(f"returns delivered per second to {backend} (through master and outbox){label}", value, "/s",
                   goal=f"> {goal:,}/s", met=value > goal, floor=floor,
                   floor_what={"mysql": "PyMySQL executemany, batches of 1,000",
                               "postgres": "psycopg COPY, batches of 1,000",
                               "sqlite3": "sqlite3 executemany, batches of 1,000",
                               "redis": "redis-py pipeline HSET, batches of 1,000"}[backend],
                   runs=rates, note=f"acked by the master {median(acked):,.0f}/s; {minions} load minions, "
                                    f"{seconds:.0f} s per run; {cpu_note(cpu)}", cpu=cpu)]


def transport_floor(smoke: bool) -> Rows:
    """Bare pyzmq carrying the same returns and acks as the load generator (``zmq_return_floor.py``)."""
    minions, seconds = (100, 2.0) if smoke else (1000, 10.0)
    runs = sustained_runs(smoke)
    rates = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, str(BENCH / "zmq_return_floor.py"), str(minions), str(seconds)],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"zmq_return_floor: {out.stderr.strip()[-300:]}")
        rates.append(float(out.stdout.strip().splitlines()[-1]))
    return [figure(f"returns acked per second by a bare pyzmq ROUTER ({minions} CURVE DEALERs, no saline)",
                   median(rates), "/s", runs=rates,
                   note="the transport floor of the rows below: the same messages and acks, nothing stored",
                   transport=True)]


def bench_returns(smoke: bool, folder: Path, backends: tuple[str, ...] = ("mysql", "postgres", "sqlite3", "redis")) -> Rows:
    rows: Rows = transport_floor(smoke)
    for backend in backends:
        sub = folder / backend
        sub.mkdir(parents=True, exist_ok=True)
        if backend == "mysql":
            with mysql_database() as db:
                rows += _one_backend(backend, smoke, sub, db)
        elif backend == "postgres":
            with pg_database() as db:
                rows += _one_backend(backend, smoke, sub, db)
        elif backend == "redis":
            with redis_database() as db:
                rows += _one_backend(backend, smoke, sub, db)
        else:
            rows += _one_backend(backend, smoke, sub, None)
    return rows


def floor_mongo(db: dict[str, Any], n: int) -> float:
    """pymongo's own ``insert_many`` of Salt's ``saltReturns`` documents, batches of 1,000, into a
    collection with the same unique (jid, minion) index."""
    import pymongo

    client = pymongo.MongoClient(db["host"], db["port"])
    collection = client[db["db"]]["floor"]
    collection.create_index([("jid", 1), ("minion", 1)], unique=True)
    docs = [{"minion": r["id"], "jid": r["jid"], "return": r["return"], "fun": r["fun"], "full_ret": r}
            for r in _floor_rows(n)]
    begin = time.perf_counter()
    for i in range(0, n, 1000):
        collection.insert_many(docs[i:i + 1000], ordered=False)
    took = time.perf_counter() - begin
    client.close()
    return n / took


def mongo_sustained_rate(c: Cluster, db: dict[str, Any], seconds: int, warmup: float, minions: int,
                         prefix: str) -> tuple[float, float]:
    """``sustained_rate`` for mongo: the window runs from one whole second to another, and the
    documents delivered in it are counted by their ObjectId's second after the load has stopped
    (counting while it runs scans the collection on the same two cores)."""
    load = Load(c, minions, seconds + warmup + 2, prefix)
    if not load.ready.wait(180):
        load.proc.kill()
        raise RuntimeError("the load generator's minions were not welcomed")
    time.sleep(warmup)
    t0 = float(int(time.time()) + 1)
    time.sleep(max(0.0, t0 - time.time()))
    a0 = load.lines[-1].get("acked", 0)
    cpu0 = cpu_snapshot(c.master_pid(), load.proc.pid)
    t1 = t0 + seconds
    time.sleep(max(0.0, t1 - time.time()))
    cpu1 = cpu_snapshot(c.master_pid(), load.proc.pid)
    a1 = load.lines[-1].get("acked", 0)
    load.wait(120)
    time.sleep(2.0)  # what was sent before t1 has landed
    LAST_CPU.clear()
    LAST_CPU.update(cpu_shares(cpu0, cpu1, seconds))
    delivered = mongo_count_before(db, t1) - mongo_count_before(db, t0)
    return delivered / seconds, (a1 - a0) / seconds


def bench_returns_mongo(smoke: bool, folder: Path) -> Rows:
    """Returns to ``mongo`` through the master and the outbox, on a SecantusDB of its own (a
    MongoDB wire-protocol server in Python, sharing the two cores), beside pymongo's own floor."""
    from importlib.metadata import version

    seconds, warmup, minions = (3, 1.0, 100) if smoke else (int(SUSTAIN["seconds"]), 5.0, 1000)
    runs = sustained_runs(smoke)
    rates, acked, cpu = [], [], []
    with secantus_server(folder / "secantus") as db:
        _init_schema("mongo", mongo_opts(db))  # its indexes, as returners.init would make them
        with cluster(folder / "ret-mongo", {"return": "mongo", **mongo_opts(db)}) as c:
            for k in range(runs):
                rate, ack = mongo_sustained_rate(c, db, seconds, warmup, minions, prefix=f"load{k}-")
                rates.append(rate)
                acked.append(ack)
                cpu.append(dict(LAST_CPU))
        floor = floor_mongo(db, 5000 if smoke else 100_000)
    value = median(rates)
    return [figure("returns delivered per second to mongo (through master and outbox)", value, "/s",
                   floor=floor, floor_what="pymongo insert_many on the same SecantusDB, batches of 1,000",
                   runs=rates, note=f"{value / floor:.0%} of the floor; acked by the master {median(acked):,.0f}/s; "
                                    f"{minions} load minions, {seconds} s per run; SecantusDB "
                                    f"{version('secantusdb')}, pymongo {version('pymongo')}; {cpu_note(cpu)}", cpu=cpu)]


def bench_returns_jobcache(smoke: bool, folder: Path) -> Rows:
    """The same as the mysql figure, with mysql as ``master_job_cache`` too: one delivery per return
    instead of two (mysql and the default SQLite job cache)."""
    with mysql_database() as db:
        return _one_backend("mysql", smoke, folder, db, {"master_job_cache": "mysql"},
                            label=", mysql also the job cache")


def bench_events(smoke: bool, folder: Path) -> Rows:
    seconds, warmup, minions = (3.0, 1.0, 100) if smoke else (SUSTAIN["seconds"], 5.0, 1000)
    runs = sustained_runs(smoke)
    with mysql_database() as db:
        opts = {"event_return": "mysql", **mysql_opts(db)}
        rates, cpu = [], []
        with cluster(folder / "events", opts) as c:
            for k in range(runs):
                rate, _ack = sustained_rate(c, lambda: mysql_count(db, "salt_events"), seconds, warmup, minions,
                                            prefix=f"ev{k}-")
                rates.append(rate)
                cpu.append(dict(LAST_CPU))
        floor = floor_mysql(db, 5000 if smoke else 100_000, table="salt_events")
    value = median(rates)
    return [figure("event returns per second to mysql (event_return, through master and outbox)", value, "/s",
                   goal="> 30,000/s", met=value > 30_000, floor=floor,
                   floor_what="PyMySQL executemany into salt_events, batches of 1,000", runs=rates,
                   note=f"one salt/job/<jid>/ret/<id> event per return; {cpu_note(cpu)}", cpu=cpu)]


# -- 4. latency from a return to its row, and bursts of N returns --------------------------------------------
def bench_latency(smoke: bool, folder: Path) -> Rows:
    import pymysql

    sys.path.insert(0, str(BENCH))
    from loadgen import LoadGen

    samples = 20 if smoke else 300
    bursts = (10, 100) if smoke else (10, 100, 1000, 5000)
    rows: Rows = []
    with mysql_database() as db, cluster(folder / "latency", {"return": "mysql", **mysql_opts(db)}) as c:
        conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"],
                               database=db["db"], autocommit=True)
        cur = conn.cursor()

        def visible(jid: str, n: int, timeout: float = 120) -> float:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                cur.execute("SELECT COUNT(*) FROM `salt_returns` WHERE `jid` = %s", (jid,))
                if cur.fetchone()[0] >= n:
                    return time.perf_counter()
                time.sleep(0.001)
            raise TimeoutError(f"{n} rows of {jid} not visible after {timeout:.0f} s")

        gen = LoadGen(c.master_dir, c.ret_port, 1, prefix="lat-")
        try:
            gen.hello()
            client = gen.client()
            lat = []
            for _ in range(samples):
                jid = client.publish("lat-*", "test.ping")["jid"]
                time.sleep(0.01)
                begin = time.perf_counter()
                gen.socks[0].send(gen.ret(jid, gen.ids[0]))
                lat.append((visible(jid, 1) - begin) * 1000)
                gen._drain(1000)
        finally:
            gen.close()
        p99 = percentile(lat, 99)
        rows.append(figure("time from a minion's return to its row in mysql, low load, p99", p99, "ms",
                           goal="p99 < 100 ms", met=p99 < 100, runs=None,
                           note=f"p50 {percentile(lat, 50):.1f} ms, max {max(lat):.1f} ms, {samples} samples "
                                f"(returner_batch_wait_ms 20)"))
        gen = LoadGen(c.master_dir, c.ret_port, max(bursts), prefix="burst-")
        try:
            gen.hello(timeout=300)
            client = gen.client()
            for n in bursts:
                jid = client.publish("burst-*", "test.ping")["jid"]
                time.sleep(0.05)
                begin = time.perf_counter()
                for sock, mid in list(zip(gen.socks, gen.ids))[:n]:
                    sock.send(gen.ret(jid, mid))
                    gen.sent += 1
                took = visible(jid, n) - begin
                while gen.acked < gen.sent:
                    gen._drain(100)
                rows.append({"name": f"scale: burst of {n} returns to mysql", "scale": True, "n": n,
                             "burst_s": took, "burst_rate": n / took})
                print(f"  burst of {n} returns -> rows in mysql: {took:.3f} s ({n / took:,.0f}/s)", flush=True)
        finally:
            gen.close()
        conn.close()
    return rows


# -- 5. saline-api against Salt 3006's salt-api ------------------------------------------------------------
def bench_api(smoke: bool, folder: Path) -> Rows:
    from api_bench import bench_api as against_salt  # its own module: it installs Salt's virtualenv

    return against_salt(smoke, folder)


ALL: dict[str, Callable[[bool, Path], Rows]] = {
    "cli": bench_cli_and_idle,
    "fanout": bench_fanout,
    "returns": bench_returns,
    "returns_jobcache": bench_returns_jobcache,
    "returns_mongo": bench_returns_mongo,
    "events": bench_events,
    "latency": bench_latency,
    "api": bench_api,
}

__all__ = ["ALL", "statistics"]
