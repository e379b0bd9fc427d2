"""The scale-out benchmarks (issue 11): several masters sharing one real three-node NATS JetStream
cluster (``tests/helpers/natscluster.py``: TLS, a user allowed exactly what a saline cluster needs,
R3 streams), beside the single master with its SQLite outbox.

- **returns**: sustained returns/s into MariaDB (``return: mysql``, rows counted in
  ``salt_returns``) through one and through two masters, with one and with two ``saline-deliver``
  workers (the masters run with ``master_delivers: False``); the single master with its SQLite
  outbox (``bench_returns``' mysql set-up) in the same rounds. After each run everything acked is
  waited for in MariaDB, so a run starts with an empty backlog and the CPU each component spent
  over the whole run (load, then drain) divided by the returns it handled is its cost per return.
- **fan-out**: 10,000 ``saline-swarm`` minions, 5,000 on each of two masters (their keys accepted
  on their own master, shared by KeySync), ``test.ping`` to all from one master until the last
  return, none lost.
- **failover**: minions with ``master: [A, B]``, ``master_type: failover``,
  ``master_alive_interval: 2``; the master they are on is SIGKILLed; the time until a job
  published on the other master is answered by every one of them (then the killed master is
  started again, and the next run kills the other one).

Each takes ``smoke`` (a few seconds: only proves it works) and a scratch folder, like the
benchmarks of ``bench/benchmarks.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from benchmarks import Load, floor_mysql
from common import (DELIVER, NATS, QUIET, REST, CODE, cluster, cpu_shares, cpu_snapshot, figure, median,
                    mysql_database, mysql_opts, stop_processes, tree_memory)

Rows = list[dict[str, Any]]
Snapshot = dict[int, tuple[str, float]]

#: the components of a run whose CPU per return is reported, from the labels of ``cpu_snapshot``
COMPONENTS = ("master", "NATS (3 nodes)", "delivery", "mysqld", "load generator", REST)
#: the cluster's second master while the load goes through the first only (not a component of that set-up)
IDLE = "idle second master"
#: the parts of a deployment (the load generator stands for the minions, which run elsewhere)
DEPLOYED = ("master", "NATS (3 nodes)", "delivery", "mysqld")


def component(label: str) -> str:
    if label == NATS:
        return "NATS (3 nodes)"
    if label == DELIVER or label.startswith("delivery "):
        return "delivery"
    if label == "server":
        return "mysqld"
    return label


def _cpu_seconds(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per component between two snapshots (``REST``: the machine beyond them)."""
    shares = cpu_shares(before, after, 100.0)  # percent of one core over 100 s: CPU seconds
    out: dict[str, float] = {}
    for label, value in shares.items():
        out[component(label)] = out.get(component(label), 0.0) + value
    return out


@contextmanager
def _nats_masters(folder: Path, masters: int, opts: dict[str, Any]) -> Iterator[Any]:
    """A three-node NATS cluster and ``masters`` masters on it (``tests/helpers/multimaster.py``)."""
    from tests.helpers.multimaster import MultiMaster

    if CODE["tree"] is not None:
        raise RuntimeError("scale_out measures the working tree's saline only (no --baseline)")
    mm = MultiMaster(folder, masters=masters, master_opts={**QUIET, "timeout": 60, **opts})
    try:
        mm.start()
        yield mm
    finally:
        mm.stop()


# -- 1. sustained returns into MySQL ---------------------------------------------------------------
class Setup:
    """One way to run the load: which masters take it, which processes deliver."""

    def __init__(self, name: str, masters: list[Any], count: Callable[[], int], workers: int = 0,
                 deliver_cmd: list[str] | None = None, others: dict[int, str] | None = None) -> None:
        self.name = name
        self.masters = masters          # LocalCluster-like: master_dir, ret_port, root, procs["master"]
        self.count = count              # rows in salt_returns now
        self.workers = workers          # saline-deliver processes started for each run
        self.deliver_cmd = deliver_cmd or []
        self.others = others or {}      # pid -> label: the processes that are always there (nats-server)
        self.expected = 0               # returns acked over every run so far: the rows there must be
        self.rates: list[float] = []
        self.acked: list[float] = []
        self.shares: list[dict[str, float]] = []
        self.per_1000: list[dict[str, float]] = []
        self.drains: list[float] = []
        self.idle: list[float] = []     # CPU of the idle second master, % of one core


def _wait_rows(setup: Setup, timeout: float) -> float:
    """Until every acked return is a row in MariaDB; seconds it took. A return acked by a master
    but never stored would stop the run here, naming how many."""
    begin = time.monotonic()
    while True:
        n = setup.count()
        if n >= setup.expected:
            return time.monotonic() - begin
        if time.monotonic() - begin > timeout:
            raise RuntimeError(f"{setup.name}: {setup.expected - n} of {setup.expected} acked returns not in "
                               f"salt_returns {timeout:.0f} s after the load stopped")
        time.sleep(0.2)


def _run_once(setup: Setup, minions: int, seconds: float, warmup: float, k: int, slack: float) -> None:
    """One run: workers started, load on every master of the setup (``minions`` split between
    them), ``seconds`` measured after ``warmup``, then everything acked waited for in MariaDB.
    Each load generator sends for ``slack`` seconds more than that (they are not ready at the
    same instant)."""
    workers = [subprocess.Popen(setup.deliver_cmd, stdout=subprocess.DEVNULL,
                                stderr=open(setup.masters[0].root / f"deliver-{k}-{i}.log", "ab"))
               for i in range(setup.workers)]
    each = minions // len(setup.masters)
    loads: list[Load] = []
    try:
        # the window is the same for every load generator; each runs a little longer than it
        for i, m in enumerate(setup.masters):
            loads.append(Load(m, each, warmup + seconds + slack, prefix=f"l{chr(ord('a') + i)}-",
                              window=4000 // len(setup.masters)))
        for load in loads:
            if not load.ready.wait(180):
                raise RuntimeError(f"{setup.name}: the load generator's minions were not welcomed")
        for w in workers:
            if w.poll() is not None:
                raise RuntimeError(f"{setup.name}: saline-deliver exited {w.returncode}")
        time.sleep(warmup)
        masters = [m.procs["master"].pid for m in setup.masters]
        others = {**setup.others, **{p: "master" for p in masters[1:]},
                  **{ld.proc.pid: "load generator" for ld in loads[1:]}, **{w.pid: DELIVER for w in workers}}

        def snap() -> Snapshot:
            return cpu_snapshot(masters[0], loads[0].proc.pid, others)

        def acked() -> int:
            return sum(ld.lines[-1].get("acked", 0) for ld in loads)

        cpu0, n0, a0, t0 = snap(), setup.count(), acked(), time.monotonic()
        time.sleep(seconds)
        cpu1, n1, a1, t1 = snap(), setup.count(), acked(), time.monotonic()
        for ld in loads:  # until each has said its last line and closed its output (it exits then) ...
            ld.thread.join(120)
        ends = [ld.lines[-1] if ld.lines else {} for ld in loads]
        if not all(e.get("end") for e in ends):
            raise RuntimeError(f"{setup.name}: a load generator stopped early (see its loadgen.log)")
        for e in ends:
            setup.expected += int(e["acked"])
        drained = _wait_rows(setup, 180)
        cpu2, n2 = snap(), setup.count()  # ... not reaped yet: a zombie's /proc/<pid>/stat keeps its CPU times
        for ld in loads:
            ld.wait(30)
    finally:
        for ld in loads:
            if ld.proc.poll() is None:
                ld.proc.kill()
                ld.proc.wait(10)
        stop_processes(workers)
    setup.rates.append((n1 - n0) / (t1 - t0))
    setup.acked.append((a1 - a0) / (t1 - t0))
    setup.shares.append(cpu_shares(cpu0, cpu1, t1 - t0))
    setup.drains.append(drained)
    setup.idle.append(setup.shares[-1].get(IDLE, 0.0))
    # per 1,000 returns, over the whole run from t0 (the load, then the drain): the ingest side
    # (masters, load generators) per return acked, the delivery side per row stored; NATS does
    # both, counted per row stored (the two differ by the backlog at t0, a few seconds' worth)
    ingest = sum(int(e["acked"]) for e in ends) - a0
    stored = n2 - n0
    spent = _cpu_seconds(cpu0, cpu2)
    setup.per_1000.append({c: 1e6 * spent.get(c, 0.0) / (ingest if c in ("master", "load generator") else stored)
                           for c in COMPONENTS})
    print(f"  {setup.name}, run {k + 1}: {setup.rates[-1]:,.0f} rows/s, acked {setup.acked[-1]:,.0f}/s, "
          f"drained in {drained:.1f} s; CPU-ms per 1,000 returns: "
          + ", ".join(f"{c} {v:.0f}" for c, v in setup.per_1000[-1].items()), flush=True)


def _per_1000_note(per: list[dict[str, float]]) -> tuple[dict[str, float], str]:
    med = {c: median([p.get(c, 0.0) for p in per]) for c in COMPONENTS}
    deployed = sum(med[c] for c in DEPLOYED)
    return med, ("CPU-ms per 1,000 returns: " + ", ".join(f"{c} {med[c]:.0f}" for c in COMPONENTS) +
                 f"; master+NATS+delivery+mysqld {deployed:.0f}")


def _cpu_line(shares: list[dict[str, float]]) -> str:
    """The median share of one core of each component over the runs' windows."""
    merged = []
    for s in shares:
        m: dict[str, float] = {}
        for label, v in s.items():
            m[component(label)] = m.get(component(label), 0.0) + v
        merged.append(m)
    parts = [f"{c} {median([m.get(c, 0.0) for m in merged]):.0f} %" for c in COMPONENTS]
    return "CPU (% of one core) while measured: " + ", ".join(parts)


def bench_returns_cluster(smoke: bool, folder: Path) -> Rows:
    seconds, warmup, minions, runs = (2.0, 1.0, 100, 1) if smoke else (10.0, 2.0, 1000, 3)
    rows: Rows = []
    began = time.monotonic()
    with ExitStack() as stack:
        single_db = stack.enter_context(mysql_database())
        cluster_db = stack.enter_context(mysql_database())
        single = stack.enter_context(cluster(folder / "single", {"return": "mysql", **mysql_opts(single_db)}))
        mm = stack.enter_context(_nats_masters(folder / "mm", 2, {"return": "mysql", **mysql_opts(cluster_db),
                                                                  "master_delivers": False}))
        a, b = mm.masters
        nats = {p.pid: NATS for p in mm.nats.procs if p is not None}
        deliver = [sys.executable, "-m", "saline.cli.deliver", "-c", str(a.master_dir), "mysql"]
        print(f"  (two masters on a three-node NATS cluster and a single master up in {time.monotonic() - began:.0f} s)",
              flush=True)

        def counter(db: dict[str, Any]) -> Callable[[], int]:
            from common import mysql_count

            return lambda: mysql_count(db, "salt_returns")

        setups = [Setup("single master, SQLite outbox", [single], counter(single_db))]
        for masters in ([a], [a, b]):
            for workers in (1, 2):
                if smoke and (len(masters), workers) != (2, 2):
                    continue  # (smoke: the same code paths, fewer runs)
                # with one master taking the load the other stays up, idle: its CPU is shown apart
                idle = {} if len(masters) > 1 else {b.procs["master"].pid: IDLE}
                setups.append(Setup(f"{len(masters)} master{'s' if len(masters) > 1 else ''}, {workers} "
                                    f"saline-deliver worker{'s' if workers > 1 else ''}", masters,
                                    counter(cluster_db), workers, deliver, {**nats, **idle}))
        # rounds: every setup once per round, so drift of the shared machine weighs on all alike
        for k in range(runs):
            for s in setups:
                s.expected = s.count()  # (the cluster's setups share one table; each run drains it)
                _run_once(s, minions, seconds, warmup, k, slack=1.0 if smoke else 2.0)
        for s in setups:
            dup = _duplicates(single_db if s is setups[0] else cluster_db)
            if dup:
                raise RuntimeError(f"{s.name}: {dup} return(s) stored twice in salt_returns")
        floor = floor_mysql(single_db, 5000 if smoke else 20_000)
    for s in setups:
        med, note = _per_1000_note(s.per_1000)
        value = median(s.rates)
        # either way the job cache is the outbox's own store (saline_cache in the SQLite file, nats in
        # the stream), kept in place: one delivery per return, to mysql
        where = ("(through master and outbox)" if s is setups[0]
                 else "(3-node NATS JetStream cluster, R3 stream)")
        rows.append(figure(f"scale-out: returns delivered per second to mysql, {s.name} {where}", value, "/s",
                           floor=floor, floor_what="PyMySQL executemany, batches of 1,000", runs=s.rates,
                           note=f"acked {median(s.acked):,.0f}/s; every acked return stored once, "
                                f"backlog drained in {median(s.drains):.1f} s after the load; {minions} load minions"
                                f"{' split over the masters' if len(s.masters) > 1 else ''}, {seconds:.0f} s "
                                f"per run; {note}; {_cpu_line(s.shares)}" +
                                (f"; the idle second master {median(s.idle):.0f} %" if IDLE in s.shares[0] else ""),
                           cpu=s.shares))
        rows.append({"name": f"scale: CPU per 1,000 returns, {s.name}", "scale": True, "setup": s.name,
                     "rate": value, "acked_rate": median(s.acked), "cpu_ms_per_1000": med,
                     "cpu_ms_runs": s.per_1000})
    return rows


def _duplicates(db: dict[str, Any]) -> int:
    import pymysql

    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) - COUNT(DISTINCT `jid`, `id`) FROM `salt_returns`")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


# -- 2. fan-out to 10,000 swarm minions across two masters, and failover -------------------------------
SWARM_CHUNK = 2000  # minions per saline-swarm process (the hard open-files limit is 20,000 per process)


def _entry(m: Any) -> dict[str, Any]:
    return {"master": "127.0.0.1", "master_port": m.ret_port, "publish_port": m.publish_port,
            "master_pub_port": m.master_pub_port}


def start_swarm(m: Any, count: int, prefix: str, masters: list[Any] | None = None, chunk: int = SWARM_CHUNK,
                **extra: Any) -> list[subprocess.Popen]:
    """``count`` minions on master ``m`` (or on the list ``masters``) in processes of at most
    ``chunk``, their keys accepted into ``m``'s folder only (KeySync shares them)."""
    procs = []
    for k, start in enumerate(range(0, count, chunk)):
        n = min(chunk, count - start)
        sub = f"{prefix}{chr(ord('a') + k)}"
        # production-like timers (Salt's defaults are 10 s), as bench_fanout's
        opts: dict[str, Any] = {"log_level": "warning", "acceptance_wait_time": 5, "spool_resend_seconds": 5,
                                "ping_interval": 10, **extra}
        if masters:
            opts["master"] = [_entry(x) for x in masters]
        d = m.write_minion_config(f"{sub}swarm", **opts)
        (d / "pki").mkdir(parents=True, exist_ok=True)
        (d / "pki" / "minion_master.pub").write_text((m.master_dir / "pki" / "master.pub").read_text())
        proc = subprocess.Popen([sys.executable, "-m", "saline.cli.swarm", str(n), "-c", str(d), "--prefix", sub,
                                 "--accept-into", str(m.master_dir / "pki"), "--root", str(d / "swarm")],
                                env=m._env(), stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))
        m.procs[f"swarm:{sub}"] = proc
        procs.append(proc)
    return procs


def _client(m: Any) -> Any:
    from saline.client import LocalClient

    return LocalClient(str(m.master_dir / "sock"))


def _check_swarms(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"a saline-swarm exited {p.returncode} (see its stderr.log)")


def wait_all_answer(m: Any, tgt: str, count: int, swarms: list[subprocess.Popen], deadline_s: float) -> float:
    """test.ping on ``tgt`` from master ``m`` until all ``count`` answer; seconds it took."""
    begin = time.monotonic()
    client = _client(m)
    while time.monotonic() - begin < deadline_s:
        _check_swarms(swarms)
        try:
            if len(client.expected(tgt)) < count:
                time.sleep(0.5)
                continue
            got = client.cmd(tgt, "test.ping", timeout=min(30.0, 5 + count / 200))
        except Exception:  # the master is still starting, or busy
            time.sleep(0.5)
            continue
        if len(got) >= count:
            return time.monotonic() - begin
        time.sleep(0.5)
    raise TimeoutError(f"only some of {count} minions answered on {m.master_dir} within {deadline_s:.0f} s")


def fanout_once(m: Any, tgt: str, timeout: float) -> tuple[float, int, list[str]]:
    """(seconds from the publish request to the last return, returns, missing minions)."""
    begin = time.perf_counter()
    got, missing, last = 0, [], begin
    for message in _client(m).cmd_iter(tgt, "test.ping", timeout=timeout):
        if message["cmd"] == "return":
            got += 1
            last = time.perf_counter()
        elif message["cmd"] in ("done", "timeout"):
            missing = list(message.get("missing") or [])
    return last - begin, got, missing


def bench_fanout_two_masters(smoke: bool, mm: Any) -> Rows:
    per_master, runs = (10, 2) if smoke else (5000, 5)
    a, b = mm.masters
    total = 2 * per_master
    swarms = start_swarm(a, per_master, "fan-a") + start_swarm(b, per_master, "fan-b")
    try:
        ready = wait_all_answer(a, "fan-*", total, swarms, deadline_s=900)  # (the warm-up round)
        results = [fanout_once(a, "fan-*", timeout=60) for _ in range(runs)]
        _check_swarms(swarms)
        rss = [tree_memory(m.procs["master"].pid)["rss"] for m in (a, b)]
        swarm_rss = sum(tree_memory(p.pid)["rss"] for p in swarms)
    finally:
        for name in [n for m in (a, b) for n in m.procs if n.startswith("swarm:")]:
            for m in (a, b):
                if name in m.procs:
                    m.stop(name, signal.SIGTERM, timeout=60)
    times = [r[0] for r in results]
    lost = sorted({mid for r in results for mid in r[2]})
    short = [r[1] for r in results if r[1] < total]
    value = median(times)
    return [figure(f"scale-out: fan-out test.ping to {total:,} swarm minions across two masters ({per_master:,} on "
                   f"each), from one master, until all returned", value, "s", goal="no minion lost",
                   met=not lost and not short, runs=times,
                   note=(f"{len(lost)} minion(s) lost" if lost or short else "no minion lost") +
                        f" in {runs} runs after a warm-up round; keys accepted on each minion's own master, shared "
                        f"by KeySync; swarm ready in {ready:.0f} s; masters {rss[0]:.0f} and {rss[1]:.0f} MB RSS, "
                        f"swarm {swarm_rss / total:.2f} MB/minion in {len(swarms)} process(es)")]


def established(port: int) -> int:
    """TCP connections established to ``port`` on this machine (``/proc/net/tcp``, IPv4)."""
    want = f":{port:04X}"
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split(None, 4)
            if fields[1].endswith(want) and fields[3] == "01":
                n += 1
    return n


class Move:
    """What the other master saw after a kill: when the minions that moved had all answered one
    job there, when they were all connected, and how many never came."""

    def __init__(self, killed: float, answered: float, connected: float | None, before: float, moved: int,
                 count: int) -> None:
        self.seconds = answered - killed  # until a job was answered by every minion that moved
        self.connected = None if connected is None else connected - killed  # every TCP connection there
        self.before = before - killed     # when the last job that did not reach them all was published
        self.moved = moved
        self.stuck = count - moved        # minions that did not answer on the other master at all


def watch_move(m: Any, tgt: str, count: int, killed: float, settle: float) -> Move:
    """After a kill: jobs on master ``m``, one after another (each waiting 0.5 s for its returns,
    then a find_job round), until one is answered by all ``count``; or, ``settle`` seconds after the
    kill, until two in a row are answered by the same minions (those that moved). Meanwhile a thread
    notes when ``count`` connections are established to ``m``'s return and publish ports
    (``/proc/net/tcp``). One job at a time on purpose: a swarm process runs hundreds of minions on
    one event loop, and jobs faster than it can run them make its minions miss their master's
    pings and move again."""
    client = _client(m)
    connected: list[float] = []
    done = threading.Event()

    def connections() -> None:
        while not done.is_set():
            if established(m.ret_port) >= count and established(m.publish_port) >= count:
                connected.append(time.monotonic())
                return
            done.wait(0.05)

    watcher = threading.Thread(target=connections, daemon=True)
    watcher.start()
    jobs: list[tuple[float, frozenset[str], float]] = []
    try:
        while True:
            published, got, last = time.monotonic(), set(), 0.0
            try:
                for message in client.cmd_iter(tgt, "test.ping", timeout=0.5):
                    if message["cmd"] == "return":
                        got.add(message["id"])
                        last = time.monotonic()
            except Exception:  # the master refused the job (busy, or the cluster not ready): the next one
                time.sleep(0.2)
            jobs.append((published, frozenset(got), last))
            if len(got) >= count:
                break
            if time.monotonic() > killed + settle and len(jobs) >= 2 and got and got == jobs[-2][1]:
                break
            if time.monotonic() > killed + settle + 60:
                raise TimeoutError(f"the minions answering on the other master did not settle in {settle + 60:.0f} s")
    finally:
        done.set()
        watcher.join(5)
    moved = jobs[-1][1]
    k = next(i for i, (_p, got, _l) in enumerate(jobs) if got >= moved)
    return Move(killed, jobs[k][2], connected[0] if connected else None, jobs[k - 1][0] if k else killed,
                len(moved), count)


def bench_failover(smoke: bool, mm: Any, interval: float = 2.0) -> Rows:
    """Each run: a fresh swarm on [A, B] (failover), on A; A SIGKILLed; jobs on B until every
    minion that moved answered; the swarm stopped and A started again."""
    count, runs = (10, 1) if smoke else (500, 4)
    a, b = mm.masters
    moves: list[Move] = []
    placed: list[int] = []  # minions on A when it was killed (some go to B at start-up: see the note)
    for k in range(runs):
        swarms = start_swarm(a, count, "fo-", masters=[a, b], chunk=250, master_type="failover",
                             master_alive_interval=interval)
        try:
            wait_all_answer(a, "fo-*", count, swarms, deadline_s=300)
            wait_all_answer(b, "fo-*", count, swarms, deadline_s=60)  # (relayed: B knows them)
            on_a = _client(a).runner("manage.masters").get(a.master_extra["id"], {}).get("minions", 0)
            a.stop("master", signal.SIGKILL)
            killed = time.monotonic()
            moves.append(watch_move(b, "fo-*", count, killed, settle=max(15.0, 6 * interval)))
            placed.append(on_a)
            _check_swarms(swarms)
        finally:
            for name in [n for n in a.procs if n.startswith("swarm:")]:
                a.stop(name, signal.SIGTERM, timeout=30)
        m = moves[-1]
        print(f"  failover, run {k + 1}: {placed[-1]} of {count} minions on the killed master; {m.moved} answered on "
              f"the other one {m.seconds:.2f} s after the kill (all connected there at "
              + (f"{m.connected:.2f} s" if m.connected is not None else "-") +
              f"; the job before, published at {m.before:.2f} s, was not answered by all)"
              + (f"; {m.stuck} never moved" if m.stuck else ""), flush=True)
        if "master" not in a.procs:
            a.start_master()
            _wait_masters(a, 2, 60)
    times = [m.seconds for m in moves]
    stuck = [m.stuck for m in moves]
    value = median(times)
    return [figure(f"scale-out: failover, a master SIGKILLed until a job on the other master is answered by every "
                   f"minion that moved ({count} failover minions, master_alive_interval {interval:.0f} s)", value, "s",
                   goal=f"< {interval + 3:.0f} s, every minion moves", met=value < interval + 3 and not any(stuck),
                   runs=times,
                   note=f"max {max(times):.2f} s over {runs} runs; minions on the killed master: "
                        + ", ".join(str(n) for n in placed) + f" of {count}"
                        + (" (the others had gone to B at start-up: A had not answered them within "
                           "master_alive_interval)" if min(placed) < count else "") + "; "
                        f"minions that never moved (not connected to B {max(15.0, 6 * interval):.0f} s after the "
                        f"kill): " + ", ".join(str(n) for n in stuck) + "; every connection established on B "
                        + ", ".join(f"{m.connected:.2f} s" if m.connected is not None else "-" for m in moves) +
                        " after the kill; the job before the first one answered by all was published at "
                        + ", ".join(f"{m.before:.2f} s" for m in moves) + "; each run a fresh swarm (processes of "
                        "250) with master: [A, B], master_type failover, started on A, which is killed, then "
                        "started again; jobs on B one after another from the kill, each waiting 0.5 s "
                        "(gather_job_timeout 0.3)")]


def _wait_masters(m: Any, count: int, timeout: float) -> None:
    """Until master ``m`` answers and sees ``count`` live masters in the cluster."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if len(_client(m).runner("manage.masters")) >= count:
                return
        except Exception:  # still starting
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{m.master_dir}: the cluster's {count} masters not seen in {timeout:.0f} s")


def bench_minions(smoke: bool, folder: Path) -> Rows:
    """Fan-out and failover on one pair of masters (no returner: the job cache is the stream)."""
    began = time.monotonic()
    with _nats_masters(folder / "fan", 2, {"gather_job_timeout": 0.3}) as mm:
        print(f"  (two masters on a three-node NATS cluster up in {time.monotonic() - began:.0f} s)", flush=True)
        rows = bench_fanout_two_masters(smoke, mm)
        rows += bench_failover(smoke, mm)
    return rows


def bench_scale_out(smoke: bool, folder: Path) -> Rows:
    begin = time.monotonic()
    rows = bench_returns_cluster(smoke, folder / "returns")
    print(f"  (returns: {time.monotonic() - begin:.0f} s)", flush=True)
    begin = time.monotonic()
    rows += bench_minions(smoke, folder / "minions")
    print(f"  (fan-out and failover: {time.monotonic() - begin:.0f} s)", flush=True)
    return rows
