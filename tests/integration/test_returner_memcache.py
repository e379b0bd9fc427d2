"""memcache returner on the real memcached: Salt's keys and lists, expiry, odd ids, restarts.

The shared server (127.0.0.1:11211, emptied per test) serves most tests; a private memcached
started here (default 1 MiB item size) covers the too-large error and a server restart.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from typing import Any, Iterator

import pytest
from pymemcache.client.base import Client

from saline.jid import gen_jid
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.registry import create
from tests.contract.cases.memcache import HOST, PORT, client, config


@pytest.fixture
def mc(tmp_path: Any) -> Iterator[Client]:
    config({}, tmp_path)  # empties the shared server
    c = client()
    yield c
    c.close()


def opts(master_opts: dict, **extra: Any) -> dict:
    return {**master_opts, "memcache.host": HOST, "memcache.port": PORT, **extra}


def ret(jid: str, minion: str, value: Any, fun: str = "test.ping") -> dict:
    return {"id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value, "retcode": 0, "success": True}


def start_private(port: int) -> subprocess.Popen:
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail("memcached is not installed; run scripts/services.sh", pytrace=False)
    proc = subprocess.Popen([binary, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-m", "16"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"private memcached did not start on {port}", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_salt_key_layout(mc: Client, master_opts: dict) -> None:
    r = create("memcache", opts(master_opts))
    jid = gen_jid()
    load = {"jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    r.save_load(jid, load)
    r.returns([ret(jid, "web1", True), ret(jid, "web2", {"a": 1})])
    # exactly Salt's keys and values (JSON with Salt's spacing)
    assert json.loads(mc.get(f"{jid}:web1")) == ret(jid, "web1", True)
    assert mc.get(f"{jid}:web1").decode() == json.dumps(ret(jid, "web1", True), ensure_ascii=False)
    assert json.loads(mc.get("test.ping:web2"))["return"] == {"a": 1}
    assert json.loads(mc.get(jid)) == load
    assert mc.get("minions") == b"web1,web2,"
    assert mc.get("jids") == f"{jid},".encode()
    # a second job appends, never repeats an id
    jid2 = gen_jid()
    r.returns([ret(jid2, "web2", False), ret(jid2, "web3", False)])
    assert mc.get("minions") == b"web1,web2,web3,"
    assert mc.get("jids") == f"{jid},{jid2},".encode()
    assert r.get_jid(jid) == {"web1": ret(jid, "web1", True), "web2": ret(jid, "web2", {"a": 1})}
    assert r.get_fun("test.ping")["web2"]["jid"] == jid2
    assert r.get_minions() == ["web1", "web2", "web3"]
    assert r.get_load(jid) == load
    assert set(r.get_jids()) == {jid}  # jid2 has no load: nothing to list (as Salt)
    r.close()


def test_first_load_kept_and_fun_key_never_moves_back(mc: Client, master_opts: dict) -> None:
    r = create("memcache", opts(master_opts))
    old, new = gen_jid(), gen_jid()
    r.save_loads([(new, {"fun": "test.ping", "jid": new}, None)])
    r.save_loads([(new, {"fun": "a return payload", "jid": new}, None)])
    assert r.get_load(new)["fun"] == "test.ping"
    r.returns([ret(new, "web1", "new")])
    r.returns([ret(old, "web1", "late")])  # an older job delivered late
    assert json.loads(mc.get("test.ping:web1"))["return"] == "new"
    r.returns([ret(old, "web1", "x"), ret(new, "web1", "y")])  # both in one batch: the newer wins
    assert json.loads(mc.get("test.ping:web1"))["return"] == "y"
    r.close()


def test_expiry_is_keep_jobs_seconds(mc: Client, master_opts: dict) -> None:
    r = create("memcache", opts({**master_opts, "keep_jobs_seconds": 1}))
    jid = gen_jid()
    r.save_load(jid, {"fun": "test.ping"})
    r.returns([ret(jid, "web1", True)])
    assert mc.get(f"{jid}:web1") and mc.get(jid)
    time.sleep(2.1)
    assert mc.get(f"{jid}:web1") is None and mc.get(jid) is None
    assert r.get_jid(jid) == {} and r.get_load(jid) == {}
    forever = create("memcache", opts({**master_opts, "keep_jobs_seconds": 0}))
    jid = gen_jid()
    forever.returns([ret(jid, "web1", True)])
    time.sleep(1.1)
    assert forever.get_jid(jid)
    r.close()
    forever.close()


def test_ids_memcached_cannot_hold_in_a_key(mc: Client, master_opts: dict) -> None:
    r = create("memcache", opts(master_opts))
    jid = gen_jid()
    odd = ["with space", "tab\there", "comma,id", "per%cent", "x" * 300, "ünïcødé-漢字"]
    r.returns([ret(jid, m, m) for m in odd])
    assert {m: v["return"] for m, v in r.get_jid(jid).items()} == {m: m for m in odd}
    assert set(odd) <= set(r.get_minions())
    assert mc.get(f"{jid}:ünïcødé-漢字") is not None  # a plain id stays Salt's key
    assert mc.get(f"{jid}:with%20space") is not None
    assert b"comma%2Cid," in mc.get("minions")


def test_too_large_item_and_server_restart(master_opts: dict) -> None:
    port = free_port()
    proc = start_private(port)
    try:
        r = create("memcache", {**master_opts, "memcache.host": "127.0.0.1", "memcache.port": port})
        jid = gen_jid()
        with pytest.raises(ReturnerError, match="too large.*-I") as info:
            r.returns([ret(jid, "big", "x" * (2 * 1024 * 1024))])
        assert not isinstance(info.value, BackendUnavailable)
        r.returns([ret(jid, "small", 1)])  # the connection is usable afterwards
        proc.kill()
        proc.wait()
        with pytest.raises(BackendUnavailable, match=f"^returner memcache: cannot reach memcached at 127.0.0.1:{port}"):
            r.returns([ret(jid, "down", 1)])
        proc = start_private(port)
        r.returns([ret(jid, "back", 1)])  # reconnects by itself
        assert set(r.get_jid(jid)) == {"back"}
        r.close()
    finally:
        proc.kill()
        proc.wait()


def test_batch_of_1000_is_fast(mc: Client, master_opts: dict) -> None:
    r = create("memcache", opts(master_opts))
    jid = gen_jid()
    rets = [ret(jid, f"minion{i:04d}", {"i": i}, "test.echo") for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"memcache: 1,000 returns in {elapsed:.3f}s ({1000 / elapsed:,.0f}/s)")
    assert len(r.get_jid(jid)) == 1000
    assert elapsed < 5
    r.close()
