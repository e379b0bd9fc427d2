"""redis returner on real Redis servers: Salt's keys and TTLs, SCAN, events, auth, cluster.

The shared server (db 13) serves most tests. A private server started here (password, Unix
socket, its own command statistics) covers authentication and the SCAN-never-KEYS rule, and a
private three-node Redis Cluster covers ``cluster_mode``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from saline.jid import gen_jid
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.registry import create

PRIVATE_PASSWORD = "Redis-Priv-8080"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_ports(count: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free and valid too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port > 55000 or port in ports or port + 10000 in ports:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def start_redis(folder: Path, port: int, *extra: str) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; run scripts/services.sh", pytrace=False)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"a private redis-server did not start on port {port}", pytrace=False)


@pytest.fixture(scope="module")
def redis_private() -> Iterator[dict[str, Any]]:
    """A private Redis that asks for a password and also listens on a Unix socket."""
    folder = Path(tempfile.mkdtemp(prefix="saline-redis-"))
    port = free_port()
    sock = folder / "redis.sock"
    try:
        proc = start_redis(folder, port, "--requirepass", PRIVATE_PASSWORD, "--unixsocket", str(sock),
                           "--unixsocketperm", "700")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield {"host": "127.0.0.1", "port": port, "password": PRIVATE_PASSWORD, "socket": str(sock)}
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[list[int]]:
    """A private three-node Redis Cluster (no replicas)."""
    folder = Path(tempfile.mkdtemp(prefix="saline-rcluster-"))
    ports = cluster_ports(3)
    procs: list[subprocess.Popen] = []
    try:
        for port in ports:
            procs.append(start_redis(folder, port, "--cluster-enabled", "yes",
                                     "--cluster-config-file", str(folder / f"n{port}.conf")))
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for _ in range(200):  # every node must see the whole cluster before it takes writes
            states = [redis.Redis(port=p, decode_responses=True).execute_command("CLUSTER INFO") for p in ports]
            if all(state.get("cluster_state") == "ok" for state in states):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the private Redis Cluster did not reach cluster_state:ok", pytrace=False)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def opts_for(db: dict[str, Any], master_opts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    opts = {**master_opts, "redis.host": db["host"], "redis.port": db["port"], "redis.db": db.get("db", 0)}
    opts.update({f"redis.{k}": v for k, v in extra.items()})
    return opts


def ret_for(jid: str, minion: str, value: Any = True, fun: str = "test.ping") -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value, "retcode": 0,
            "success": True, "_stamp": "2024-01-05T12:34:56.123456"}


def publish_load(jid: str, fun: str = "test.ping") -> dict[str, Any]:
    return {"cmd": "publish", "jid": jid, "fun": fun, "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root",
            "ret": "", "minions": ["m1"]}


@pytest.fixture
def client(redis_db: dict[str, Any]) -> Iterator[redis.Redis]:
    conn = redis.Redis(host=redis_db["host"], port=redis_db["port"], db=redis_db["db"], decode_responses=True)
    yield conn
    conn.close()


@pytest.fixture
def rr(redis_db, master_opts):
    returner = create("redis", opts_for(redis_db, {**master_opts, "keep_jobs_seconds": 3600}))
    yield returner
    returner.close()


def test_salts_key_layout_and_ttls(rr, client) -> None:
    jid = gen_jid()
    load = publish_load(jid)
    rr.save_load(jid, load)
    r1, r2 = ret_for(jid, "m1", {"é": [1, None]}), ret_for(jid, "m2", "x", "cmd.run")
    rr.returns([r1, r2])
    assert client.type(f"ret:{jid}") == "hash"
    assert client.hgetall(f"ret:{jid}") == {"m1": json.dumps(r1, ensure_ascii=False), "m2": json.dumps(r2, ensure_ascii=False)}
    assert client.get("m1:test.ping") == jid and client.get("m2:cmd.run") == jid
    assert client.smembers("minions") == {"m1", "m2"}
    assert client.get(f"load:{jid}") == json.dumps(load, ensure_ascii=False)
    for key in (f"ret:{jid}", f"load:{jid}", "m1:test.ping", "m2:cmd.run"):
        assert 3590 <= client.ttl(key) <= 3600, key
    assert client.ttl("minions") == -1
    assert sorted(client.keys("*")) == sorted([f"ret:{jid}", f"load:{jid}", "m1:test.ping", "m2:cmd.run", "minions"])


def test_keep_jobs_seconds_zero_means_no_expiry(redis_db, master_opts, client) -> None:
    returner = create("redis", opts_for(redis_db, {**master_opts, "keep_jobs_seconds": 0}))
    jid = gen_jid()
    returner.save_load(jid, publish_load(jid))
    returner.returns([ret_for(jid, "m1")])
    for key in (f"ret:{jid}", f"load:{jid}", "m1:test.ping"):
        assert client.ttl(key) == -1, key  # Salt's EXPIRE 0 deleted them at once
    assert returner.get_jid(jid) == {"m1": ret_for(jid, "m1")}
    returner.close()


def test_first_load_kept_and_duplicates_harmless(rr, client) -> None:
    jid = gen_jid()
    rr.save_load(jid, publish_load(jid))
    rr.save_loads([(jid, ret_for(jid, "m1"), None)])
    assert rr.get_load(jid) == publish_load(jid)
    rr.returns([ret_for(jid, "m1"), ret_for(jid, "m1")])
    rr.returns([ret_for(jid, "m1")])
    assert client.hlen(f"ret:{jid}") == 1 and rr.get_jid(jid) == {"m1": ret_for(jid, "m1")}


def test_get_fun_works_and_never_moves_back(rr, client) -> None:
    old, new = gen_jid(), gen_jid()
    rr.returns([ret_for(new, "m1", "new", "cmd.run"), ret_for(old, "m2", "only", "cmd.run")])
    rr.returns([ret_for(old, "m1", "old, delivered late", "cmd.run")])
    assert client.get("m1:cmd.run") == new
    assert {m: r["return"] for m, r in rr.get_fun("cmd.run").items()} == {"m1": "new", "m2": "only"}
    assert rr.get_fun("nothing.here") == {}


def test_listing_uses_scan_never_keys(redis_private, master_opts) -> None:
    admin = redis.Redis(port=redis_private["port"], password=PRIVATE_PASSWORD, decode_responses=True)
    admin.flushall()
    returner = create("redis", opts_for(redis_private, {**master_opts, "keep_jobs_seconds": 3600},
                                        password=PRIVATE_PASSWORD))
    jids = [gen_jid() for _ in range(2500)]
    returner.save_loads([(j, publish_load(j, "saltutil.find_job" if i == 5 else "test.ping"), None)
                         for i, j in enumerate(jids)])
    returner.returns([ret_for(j, "m1") for j in jids[:10]])
    admin.config_resetstat()
    listing = returner.get_jids()
    assert sorted(listing) == jids and listing[jids[0]]["Target"] == "*"
    assert [j["JID"] for j in returner.get_jids_filter(3)] == jids[-3:]
    assert jids[5] not in [j["JID"] for j in returner.get_jids_filter(3000)]
    assert len(returner.get_jids_filter(3000, filter_find_job=False)) == 2500
    returner.clean_old_jobs()
    stats = admin.info("commandstats")
    assert "cmdstat_keys" not in stats and stats["cmdstat_scan"]["calls"] >= 3
    returner.close()
    admin.close()


def test_clean_old_jobs(rr, client) -> None:
    long_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)).strftime("%Y%m%d%H%M%S%f")
    old_with_load = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).strftime("%Y%m%d%H%M%S%f")
    running = gen_jid()
    rr.save_load(old_with_load, publish_load(old_with_load))
    rr.returns([ret_for(long_ago, "m1"), ret_for(old_with_load, "m1"), ret_for(running, "m1")])
    client.set("ret:not-a-jid", "kept")  # someone else's key: not touched
    rr.clean_old_jobs()
    assert not client.exists(f"ret:{long_ago}")  # its load expired (never saved here): gone
    assert client.exists(f"ret:{old_with_load}") and client.exists(f"ret:{running}")
    assert client.get("ret:not-a-jid") == "kept"


def test_events_capped_list(redis_db, master_opts, client) -> None:
    returner = create("redis", opts_for(redis_db, master_opts, events_max=10))
    returner.event_returns([{"tag": f"salt/job/{i}/new", "data": {"i": i, "_stamp": f"2024-01-05T00:00:{i:02d}"}}
                            for i in range(25)])
    items = [json.loads(x) for x in client.lrange("salt_events", 0, -1)]
    assert [x["data"]["i"] for x in items] == list(range(24, 14, -1))  # newest first, 10 kept
    assert items[0] == {"tag": "salt/job/24/new", "data": {"i": 24, "_stamp": "2024-01-05T00:00:24"},
                        "master_id": "testmaster", "alter_time": "2024-01-05T00:00:24"}
    returner.close()


def test_password_unix_socket_and_errors(redis_private, master_opts) -> None:
    wrong = create("redis", opts_for(redis_private, master_opts, password="Not-It-123"))
    with pytest.raises(ReturnerError) as err:
        wrong.returns([ret_for(gen_jid(), "m1")])
    msg = str(err.value)
    assert msg.startswith(f"returner redis: wrong password for Redis at 127.0.0.1:{redis_private['port']}")
    assert "Not-It-123" not in msg and "\n" not in msg and not isinstance(err.value, BackendUnavailable)
    none = create("redis", opts_for(redis_private, master_opts))
    with pytest.raises(ReturnerError, match=r"^returner redis: Redis at 127\.0\.0\.1:\d+ asks for a password and none is set"):
        none.get_minions()
    via_socket = create("redis", {**master_opts, "redis.unix_socket_path": redis_private["socket"],
                                  "redis.password": PRIVATE_PASSWORD, "redis.db": 3})
    jid = gen_jid()
    via_socket.returns([ret_for(jid, "sock-minion")])
    assert via_socket.get_jid(jid)["sock-minion"]["jid"] == jid
    admin = redis.Redis(unix_socket_path=redis_private["socket"], password=PRIVATE_PASSWORD, db=3)
    assert admin.hexists(f"ret:{jid}", "sock-minion")
    admin.close()
    via_socket.close()
    bad_db = create("redis", opts_for({**redis_private, "db": 99}, master_opts, password=PRIVATE_PASSWORD))
    with pytest.raises(ReturnerError, match=r"^returner redis: database 99 does not exist"):
        bad_db.get_minions()


def test_unreachable_is_backend_unavailable(master_opts) -> None:
    returner = create("redis", {**master_opts, "redis.host": "127.0.0.1", "redis.port": free_port(),
                                "redis.password": "Pw-Hidden-77"})
    with pytest.raises(BackendUnavailable) as err:
        returner.returns([ret_for(gen_jid(), "m1")])
    msg = str(err.value)
    assert msg.startswith("returner redis: cannot connect to Redis at 127.0.0.1:") and "Pw-Hidden-77" not in msg


def test_cluster_mode_without_a_cluster(redis_db, master_opts) -> None:
    returner = create("redis", opts_for(redis_db, master_opts, cluster_mode=True))
    with pytest.raises(ReturnerError) as err:
        returner.returns([ret_for(gen_jid(), "m1")])
    assert str(err.value) == (f"returner redis: cluster_mode is set but Redis at 127.0.0.1:{redis_db['port']} "
                              "is not a Redis Cluster (cluster support disabled)")
    assert not isinstance(err.value, BackendUnavailable)


def test_cluster_mode_on_a_real_cluster(redis_cluster, master_opts) -> None:
    returner = create("redis", {**master_opts, "keep_jobs_seconds": 3600, "redis.cluster_mode": True,
                                "redis.cluster.startup_nodes": [{"host": "127.0.0.1", "port": redis_cluster[1]}]})
    jids = [gen_jid() for _ in range(20)]
    returner.save_loads([(j, publish_load(j), None) for j in jids])
    returner.returns([ret_for(j, f"m{i}", i) for i, j in enumerate(jids)])
    returner.event_returns([{"tag": "t", "data": {}}])
    assert sorted(returner.get_jids()) == jids
    assert returner.get_jid(jids[7]) == {"m7": ret_for(jids[7], "m7", 7)}
    assert len(returner.get_fun("test.ping")) == 20 and len(returner.get_minions()) == 20
    returner.clean_old_jobs()
    returner.close()


def test_one_connection_reused_and_reopened(rr, client) -> None:
    jid = gen_jid()
    first = rr._run(lambda c: c.client_id())
    for i in range(20):
        rr.returns([ret_for(jid, f"m{i}")])
        rr.get_jid(jid)
        rr.get_fun("test.ping")
    assert rr._run(lambda c: c.client_id()) == first
    client.client_kill_filter(_id=first)  # what a server restart does to a kept connection
    rr.returns([ret_for(jid, "after-kill")])
    assert "after-kill" in rr.get_jid(jid)
    assert rr._run(lambda c: c.client_id()) != first


def test_a_forked_child_opens_its_own_connection(rr, client) -> None:
    jid = gen_jid()
    rr.returns([ret_for(jid, "parent")])
    first = rr._run(lambda c: c.client_id())
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            rr.returns([ret_for(jid, "child")])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    rr.returns([ret_for(jid, "parent-again")])
    assert rr._run(lambda c: c.client_id()) == first
    assert set(rr.get_jid(jid)) == {"parent", "child", "parent-again"}


def test_batch_of_1000(rr, client) -> None:
    jid = gen_jid()
    rets = [ret_for(jid, f"minion-{i:04d}", {"i": i, "text": "x" * 200}) for i in range(1000)]
    started = time.perf_counter()
    rr.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"\nredis: 1000 returns in {elapsed * 1000:.1f} ms = {1000 / elapsed:,.0f} rows/s")
    assert client.hlen(f"ret:{jid}") == 1000 and client.scard("minions") == 1000
    assert len(rr.get_jid(jid)) == 1000
