"""What every benchmark shares: clusters of real processes, fresh databases, memory figures, versions.

Nothing here is faked: a benchmark runs the real ``saline-master`` (``saline.localcluster``), real
``saline-minion`` / ``saline-swarm`` processes over CURVE, and the real database servers of this
machine (MariaDB, PostgreSQL, Redis: see ``tests/conftest.py`` for the same fixtures).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from saline.localcluster import LocalCluster  # noqa: E402

MYSQL = {"host": "127.0.0.1", "port": int(os.environ.get("SALINE_TEST_MYSQL_PORT", 3306)), "user": "root", "pass": ""}
PG = {"host": "127.0.0.1", "port": int(os.environ.get("SALINE_TEST_PG_PORT", 5432)), "user": "postgres"}
REDIS = {"host": "127.0.0.1", "port": int(os.environ.get("SALINE_TEST_REDIS_PORT", 6379))}


# -- figures ---------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return float(ordered[k])


def figure(name: str, value: float, unit: str, *, goal: str = "", met: bool | None = None,
           floor: float | None = None, floor_what: str = "", runs: list[float] | None = None,
           note: str = "", **extra: Any) -> dict[str, Any]:
    """One row of the results table; prints it at once, with its floor. ``extra`` fields travel
    with the row (``cpu``: the CPU shares of each run; ``transport``: this row is the transport
    floor), for ``bench/compare.py`` to pool rounds."""
    row = {"name": name, "value": value, "unit": unit, "goal": goal, "met": met, "floor": floor,
           "floor_what": floor_what, "runs": runs or [value], "note": note, **extra}
    shown = f"  {name}: {fmt(value, unit)}"
    if goal:
        shown += f"   (goal {goal}: {'met' if met else 'MISSED' if met is not None else '-'})"
    if floor is not None:
        shown += f"   floor {fmt(floor, unit)} [{floor_what}]"
    if runs and len(runs) > 1:
        shown += f"   runs {', '.join(fmt(r, unit) for r in runs)}"
    print(shown, flush=True)
    return row


def fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "-"
    if unit == "s":
        return f"{value:.4f} s" if value < 0.01 else f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.3g} {unit}"


# -- the machine -----------------------------------------------------------------------------------
def _mem_total_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _try(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except Exception as exc:  # a server that is down: say so in the table, not a traceback
        return f"unavailable ({type(exc).__name__})"


def machine_info() -> dict[str, Any]:
    import msgpack
    import sqlite3

    import zmq

    def mariadb() -> str:
        import pymysql

        conn = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"])
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def postgres() -> str:
        import psycopg

        with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres") as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def redis_server() -> str:
        import redis

        client = redis.Redis(host=REDIS["host"], port=REDIS["port"])
        try:
            return client.info("server")["redis_version"]
        finally:
            client.close()

    def dist(name: str) -> str:
        from importlib.metadata import version

        return version(name)

    return {
        "cores": os.cpu_count(), "cpu": _cpu_model(), "memory_mb": round(_mem_total_mb()),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(), "msgpack": ".".join(map(str, msgpack.version)),
        "sqlite": sqlite3.sqlite_version, "mariadb": _try(mariadb), "postgresql": _try(postgres),
        "redis": _try(redis_server), "PyMySQL": _try(lambda: dist("PyMySQL")),
        "psycopg": _try(lambda: dist("psycopg")), "redis-py": _try(lambda: dist("redis")),
        "saline": _try(lambda: dist("saline")),
        "git": _try(lambda: subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=True).stdout.strip()),
    }


# -- memory of processes ---------------------------------------------------------------------------
def stop_processes(procs: list[subprocess.Popen], sig: int = signal.SIGTERM, wait: float = 30.0) -> None:
    """Send ``sig`` to every process still running, then wait for each: one that has not ended
    within ``wait`` seconds is killed."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out.extend(int(t) for t in text)
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def tree_memory(pid: int) -> dict[str, float]:
    """RSS and PSS (MB) of a process and all its descendants, and how many processes."""
    pids = process_tree(pid)
    return {"rss": sum(rss_mb(p) for p in pids), "pss": sum(pss_mb(p) for p in pids), "processes": len(pids)}


# -- CPU per process ------------------------------------------------------------------------------------
SERVERS = ("mariadbd", "mysqld", "postgres", "redis-server")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _label(pid: int, roots: Mapping[int, str], family: set[int]) -> str | None:
    """Which part of the run a process is: one of ``roots`` (pid -> label: the master, the load
    generator, and in a cluster its other masters and load generators, its ``nats-server`` nodes
    and ``saline-deliver`` workers), a delivery process of one of the run's masters (``family``:
    their descendants; other masters' on the machine are not this run's), the database server;
    None for anything else on the machine (the machine's own nats-server included)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    if pid in roots:
        return roots[pid]
    if b"saline.master.returner_process" in argv and pid in family:
        return f"delivery {argv[argv.index(b'saline.master.returner_process') + 2].decode()}"
    if comm in SERVERS or b"secantus" in argv[:4]:  # SecantusDB runs as python3 -m secantus
        return "server"
    return None


#: the CPU the whole machine used beside the run's parts: other work (the machine is shared), and
#: the kernel's own threads (part of the run's loopback traffic is theirs)
REST = "the rest of the machine"
#: the labels of a cluster's other parts (``cpu_snapshot(..., others)``)
NATS = "nats-server"
DELIVER = "saline-deliver"


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``; guest time is in user)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(master: int, load: int, others: Mapping[int, str] | None = None) -> dict[int, tuple[str, float]]:
    """pid -> (label, CPU seconds so far) of every process of the run (see ``_label``), and
    under pid 0 the whole machine's busy CPU seconds (``REST``). ``others``: more processes of
    the run, pid -> label (``NATS``, ``DELIVER``, another "master" or "load generator"); the same
    label on several processes adds up."""
    roots = {master: "master", load: "load generator", **(others or {})}
    family = {p for root, label in roots.items() if label == "master" for p in process_tree(root)}
    out = {0: (REST, _machine_busy_seconds())}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            label = _label(int(entry.name), roots, family)
            if label is not None:
                out[int(entry.name)] = (label, _cpu_seconds(int(entry.name)))
    return out


def cpu_shares(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
               seconds: float) -> dict[str, float]:
    """Per label, the percent of one core used between two snapshots (a process that started
    meanwhile counts from zero); ``REST`` is what the machine used beyond the labelled parts."""
    shares: dict[str, float] = {}
    for pid, (label, used) in after.items():
        if pid == 0:
            continue
        spent = used - before.get(pid, (label, 0.0))[1]
        shares[label] = shares.get(label, 0.0) + 100.0 * spent / seconds
    ordered = dict(sorted(shares.items(), key=lambda kv: -kv[1]))
    if 0 in before and 0 in after:
        busy = 100.0 * (after[0][1] - before[0][1]) / seconds
        ordered[REST] = max(0.0, busy - sum(shares.values()))
    return ordered


# -- clusters ----------------------------------------------------------------------------------------
QUIET = {"log_level": "warning"}

#: the saline its processes run (``bench/codetree.py``): set by ``bench/run.py --baseline`` for
#: each side in turn; None is the installed one, this tree
CODE: dict[str, Any] = {"tree": None}


class Cluster(LocalCluster):
    """A LocalCluster with a swarm and a load generator on the side, all torn down on exit. Its
    processes (master, minions, swarms, CLI) run the saline of ``CODE["tree"]``; the load
    generator and the floors are always this tree's."""

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if CODE["tree"] is not None:
            env.update(CODE["tree"].env())
        return env

    def __init__(self, root: Path, master_opts: dict[str, Any] | None = None) -> None:
        super().__init__(root, master_opts={**QUIET, "timeout": 60, **(master_opts or {})},
                         minion_opts={**QUIET})
        self.client = None

    def local_client(self) -> Any:
        from saline.client import LocalClient

        return LocalClient(str(self.master_dir / "sock"))

    #: minions per swarm process: each costs about 6 file descriptors (two TCP sockets, their
    #: mailboxes, a monitor pair) and this machine's hard open-files limit is 20,000
    SWARM_CHUNK = 2000

    def start_swarm(self, count: int, prefix: str = "swarm-") -> list[subprocess.Popen]:
        """``count`` minions in ``saline-swarm`` processes of at most SWARM_CHUNK minions each."""
        procs = []
        for k, start in enumerate(range(0, count, self.SWARM_CHUNK)):
            n = min(self.SWARM_CHUNK, count - start)
            sub = f"{prefix}{chr(ord('a') + k)}"
            # production-like timers (Salt's defaults are 10 s), not the e2e tests' fast ones
            d = self.write_minion_config(f"{sub}swarm", acceptance_wait_time=5, spool_resend_seconds=5,
                                         ping_interval=10)
            (d / "pki").mkdir(parents=True, exist_ok=True)
            (d / "pki" / "minion_master.pub").write_text((self.master_dir / "pki" / "master.pub").read_text())
            proc = subprocess.Popen([sys.executable, "-m", "saline.cli.swarm", str(n), "-c", str(d), "--prefix", sub,
                                     "--accept-into", str(self.master_dir / "pki")], env=self._env(),
                                    stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))
            self.procs[f"swarm:{sub}"] = proc
            procs.append(proc)
        return procs

    def wait_all_answer(self, tgt: str, count: int, deadline_s: float = 300.0) -> float:
        """Run ``test.ping`` on ``tgt`` until all ``count`` minions answer; seconds it took."""
        begin = time.monotonic()
        client = self.local_client()
        while time.monotonic() - begin < deadline_s:
            for name, proc in self.procs.items():  # a swarm that died will not answer: say why now
                if name.startswith("swarm:") and proc.poll() is not None:
                    log = self.minion_dir(f"{name[6:]}swarm") / "stderr.log"
                    tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
                    raise RuntimeError(f"saline-swarm {name[6:]} exited {proc.returncode}: {' '.join(tail)}")
            try:
                expected = client.expected(tgt)
            except Exception:
                time.sleep(0.5)
                continue
            if len(expected) < count:
                time.sleep(0.5)
                continue
            got = client.cmd(tgt, "test.ping", timeout=min(30.0, 5 + count / 200))
            if len(got) >= count:
                return time.monotonic() - begin
            time.sleep(0.5)
        raise TimeoutError(f"only some of {count} minions answered within {deadline_s:.0f} s")

    def master_pid(self) -> int:
        return self.procs["master"].pid


@contextmanager
def cluster(folder: Path, master_opts: dict[str, Any] | None = None) -> Iterator[Cluster]:
    c = Cluster(folder, master_opts)
    try:
        c.start_master()
        yield c
    finally:
        for name in [n for n in c.procs if n != "master"]:
            c.stop(name, signal.SIGTERM, timeout=30)
        c.stop_all()


# -- fresh databases -----------------------------------------------------------------------------------
def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextmanager
def mysql_database() -> Iterator[dict[str, Any]]:
    """A fresh MariaDB database with Salt's tables, reached as its own user with a password
    (an empty ``mysql.pass`` means "unset" in Salt's option rules)."""
    import pymysql

    name = unique("saline_bench")
    user = name[-16:]
    root = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"],
                           autocommit=True)
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY 'benchpass'")
            cur.execute(f"GRANT ALL ON `{name}`.* TO '{user}'@'{host}'")
    db = {"host": MYSQL["host"], "port": MYSQL["port"], "user": user, "pass": "benchpass", "db": name}
    try:
        opts = mysql_opts(db)
        _init_schema("mysql", opts)
        yield db
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            for host in ("127.0.0.1", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        root.close()


def mysql_opts(db: dict[str, Any]) -> dict[str, Any]:
    return {"mysql.host": db["host"], "mysql.port": db["port"], "mysql.user": db["user"],
            "mysql.pass": db["pass"], "mysql.db": db["db"]}


def mysql_count(db: dict[str, Any], table: str) -> int:
    import pymysql

    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@contextmanager
def pg_database() -> Iterator[dict[str, Any]]:
    import psycopg

    name = unique("saline_bench")
    with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = {"host": PG["host"], "port": PG["port"], "user": PG["user"], "passwd": "", "db": name}
    try:
        _init_schema("postgres", pg_opts(db))
        yield db
    finally:
        with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_opts(db: dict[str, Any]) -> dict[str, Any]:
    return {"returner.postgres.host": db["host"], "returner.postgres.port": db["port"],
            "returner.postgres.user": db["user"], "returner.postgres.passwd": db["passwd"],
            "returner.postgres.db": db["db"]}


def pg_count(db: dict[str, Any], table: str) -> int:
    import psycopg

    with psycopg.connect(host=db["host"], port=db["port"], user=db["user"], dbname=db["db"]) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@contextmanager
def redis_database(number: int = 14) -> Iterator[dict[str, Any]]:
    import redis

    client = redis.Redis(host=REDIS["host"], port=REDIS["port"], db=number)
    client.flushdb()
    try:
        yield {**REDIS, "db": number}
    finally:
        client.flushdb()
        client.close()


def redis_opts(db: dict[str, Any]) -> dict[str, Any]:
    return {"redis.host": db["host"], "redis.port": db["port"], "redis.db": db["db"]}


def redis_count(db: dict[str, Any]) -> int:
    """Returns stored by the redis returner: the fields of every ``ret:<jid>`` hash."""
    import redis

    client = redis.Redis(host=db["host"], port=db["port"], db=db["db"])
    try:
        total = 0
        pipe = client.pipeline(transaction=False)
        keys = list(client.scan_iter(match="ret:*", count=10000))
        for key in keys:
            pipe.hlen(key)
        for n in pipe.execute() if keys else []:
            total += int(n)
        return total
    finally:
        client.close()


def sqlite_count(path: Path, table: str) -> int:
    import sqlite3

    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@contextmanager
def secantus_server(folder: Path) -> Iterator[dict[str, Any]]:
    """A SecantusDB server (MongoDB wire protocol, ``pip install secantusdb``) of the benchmark's
    own, on a free port, its data in ``folder``; ``{"host", "port", "db"}``."""
    import socket

    import pymongo

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "secantus.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                                 "--storage-path", str(folder / "data"), "--standalone", "--log-level", "WARNING"],
                                stdout=log, stderr=log)
    try:
        client = pymongo.MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=60_000)
        client.admin.command("ping")
        client.close()
        yield {"host": "127.0.0.1", "port": port, "db": unique("saline_bench")}
    finally:
        stop_processes([proc], wait=60)


def mongo_opts(db: dict[str, Any]) -> dict[str, Any]:
    return {"mongo.host": db["host"], "mongo.port": db["port"], "mongo.db": db["db"]}


def mongo_count_before(db: dict[str, Any], when: float, collection: str = "saltReturns") -> int:
    """Documents inserted before the wall-clock second ``when`` (whole seconds): the returners
    give each document its ``_id`` (an ObjectId, which starts with its second) as they send it,
    so this counts what was delivered by then, read after the run, not while it runs."""
    import bson
    import pymongo

    client = pymongo.MongoClient(db["host"], db["port"], serverSelectionTimeoutMS=10_000)
    try:
        since = bson.ObjectId.from_datetime(datetime.datetime.fromtimestamp(when, datetime.timezone.utc))
        return int(client[db["db"]][collection].count_documents({"_id": {"$lt": since}}))
    finally:
        client.close()


def _init_schema(name: str, opts: dict[str, Any]) -> None:
    from saline.config import MASTER_OPTIONS, _finish
    from saline.returners import registry

    master = {k: v[1] for k, v in MASTER_OPTIONS.items()}
    master.update(id="bench", cachedir="/tmp", pki_dir="/tmp", sock_dir="/tmp", config_dir="/tmp", **opts)
    _finish("master", master)
    inst = registry.create(name, master)
    try:
        inst.init_schema()
    finally:
        inst.close()


def dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
