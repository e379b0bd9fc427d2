"""etcd returner on real etcd servers (v2 API): Salt's keys, profiles, TTL, listings, restarts.

The shared server (127.0.0.1:2379) serves most tests, each under its own root; a private etcd
started here covers a server without the v2 API, an outage and the reconnection after it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from saline.jid import format_jid_instance, gen_jid
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.registry import create
from tests.contract.cases.etcd import HOST, PORT, config

URL = f"http://{HOST}:{PORT}/v2/keys"


def keys(root: str) -> dict[str, str]:
    """Every key under ``root`` with its value (hidden ``_`` keys are not listed by etcd)."""
    out: dict[str, str] = {}

    def walk(node: dict) -> None:
        for child in node.get("nodes") or []:
            if child.get("dir"):
                walk(child)
            else:
                out[child["key"][len(root):]] = child["value"]

    walk(httpx.get(f"{URL}{root}", params={"recursive": "true"}).json().get("node") or {})
    return out


def ret(jid: str, minion: str, value: Any, fun: str = "test.ping") -> dict:
    return {"id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": value, "retcode": 0, "success": True}


def test_salt_key_layout(tmp_path: Path, master_opts: dict) -> None:
    cfg = config({}, tmp_path)
    root = cfg["etcd.returner_root"]
    r = create("etcd", {**master_opts, **cfg})
    jid = gen_jid()
    load = {"jid": jid, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "user": "root"}
    r.save_load(jid, load)
    r.returns([ret(jid, "web1", True), {**ret(jid, "web2", {"a": [1]}), "_stamp": "2024-01-05T12:34:56"}])
    stored = keys(root)
    assert stored["/minions/web1"] == jid and stored["/minions/web2"] == jid
    assert json.loads(stored[f"/jobs/{jid}/.load.p"]) == load
    for field, value in ret(jid, "web1", True).items():
        assert stored[f"/jobs/{jid}/web1/{field}"] == json.dumps(value)  # JSON of every field, Salt's spacing
    assert stored[f"/jobs/{jid}/web2/return"] == '{"a": [1]}'
    hidden = httpx.get(f"{URL}{root}/jobs/{jid}/web2/_stamp").json()["node"]["value"]
    assert hidden == '"2024-01-05T12:34:56"'  # written (Salt's layout), though etcd hides it in listings
    assert stored["/funs/test.ping/web1"] == jid
    # the read side: whole returns, Salt's job listing as a dict (Salt's etcd gave a list)
    assert r.get_jid(jid) == {"web1": ret(jid, "web1", True), "web2": ret(jid, "web2", {"a": [1]})}
    assert r.get_jids() == {jid: format_jid_instance(jid, load)}
    assert r.get_minions() == ["web1", "web2"]
    assert r.get_load(jid) == load
    r.close()


def test_latest_jid_never_moves_back_and_get_fun(tmp_path: Path, master_opts: dict) -> None:
    cfg = config({}, tmp_path)
    r = create("etcd", {**master_opts, **cfg})
    old, new, other = gen_jid(), gen_jid(), gen_jid()
    r.returns([ret(new, "web1", "new", "test.arg")])
    r.returns([ret(old, "web1", "late", "test.arg")])  # an older job delivered late
    assert keys(cfg["etcd.returner_root"])["/minions/web1"] == new
    r.returns([ret(other, "web1", "pong", "test.ping")])  # a newer job of another function
    assert r.get_fun("test.arg") == {"web1": ret(new, "web1", "new", "test.arg")}  # Salt's gave {}
    assert r.get_fun("test.ping")["web1"]["return"] == "pong"
    r.close()


def test_profiles_and_ttl(tmp_path: Path, master_opts: dict) -> None:
    root = f"/saline_t/{uuid.uuid4().hex[:10]}"
    opts = {**master_opts, "etcd.returner_root": root, "etcd.port": 1,  # the plain keys point nowhere
            "etcd.returner": "my_etcd", "my_etcd": {"etcd.host": HOST, "etcd.port": PORT},
            "etcd.returner_write_profile": "etcd_write",
            "etcd_write": {"etcd.host": HOST, "etcd.port": str(PORT), "etcd.ttl": 1}}
    r = create("etcd", opts)
    jid = gen_jid()
    r.save_load(jid, {"fun": "test.ping"})
    r.returns([ret(jid, "web1", True)])
    node = httpx.get(f"{URL}{root}/jobs/{jid}/web1/return").json()["node"]
    assert node["ttl"] == 1 and "expiration" in node
    assert r.get_jid(jid)["web1"]["return"] is True  # read through the etcd.returner profile
    time.sleep(2.2)
    assert r.get_jid(jid) == {} and r.get_load(jid) == {}
    assert jid not in r.get_jids()  # only the empty folder is left: not listed
    with pytest.raises(ReturnerError, match="profile 'nowhere' is not a map"):
        create("etcd", {**opts, "etcd.returner_read_profile": "nowhere"})
    r.close()


def start_etcd(folder: Path, port: int, v2: bool = True) -> subprocess.Popen:
    binary = shutil.which("etcd")
    if binary is None:
        pytest.fail("etcd is not installed; run scripts/services.sh", pytrace=False)
    peer = free_port()
    args = [binary, "--name", "p", "--data-dir", str(folder), "--unsafe-no-fsync", "--log-level", "error",
            "--listen-client-urls", f"http://127.0.0.1:{port}", "--advertise-client-urls", f"http://127.0.0.1:{port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"p=http://127.0.0.1:{peer}"] + (["--enable-v2=true"] if v2 else [])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"private etcd did not start on {port}", pytrace=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_v2_api_outage_and_reconnect(tmp_path: Path, master_opts: dict) -> None:
    port = free_port()
    proc = start_etcd(tmp_path / "etcd", port, v2=False)
    opts = {**master_opts, "etcd.host": "127.0.0.1", "etcd.port": port, "etcd.timeout": 3}
    try:
        r = create("etcd", opts)
        jid = gen_jid()
        with pytest.raises(ReturnerError, match="no v2 API .*--enable-v2=true"):
            r.returns([ret(jid, "web1", 1)])
        proc.terminate()
        proc.wait()
        proc = start_etcd(tmp_path / "etcd", port)
        r.returns([ret(jid, "web1", 1)])  # the connection the v2-less server answered is not reused stale
        proc.kill()
        proc.wait()
        with pytest.raises(BackendUnavailable, match=f"^returner etcd: cannot reach etcd at 127.0.0.1:{port}"):
            r.returns([ret(jid, "web2", 2)])
        proc = start_etcd(tmp_path / "etcd", port)
        r.returns([ret(jid, "web3", 3)])  # reconnects by itself
        assert set(r.get_jid(jid)) == {"web1", "web3"}
        r.close()
    finally:
        proc.kill()
        proc.wait()


def test_batch_of_1000_is_fast(tmp_path: Path, master_opts: dict) -> None:
    r = create("etcd", {**master_opts, **config({}, tmp_path)})
    jid = gen_jid()
    rets = [ret(jid, f"minion{i:04d}", {"i": i}, "test.echo") for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"etcd: 1,000 returns ({len(rets[0]) * 1000 + 2000} keys) in {elapsed:.3f}s ({1000 / elapsed:,.0f}/s)")
    assert len(r.get_jid(jid)) == 1000
    assert elapsed < 5
    r.close()
