"""carbon returner on the real carbon-cache: Salt's metric paths and values, read back through
carbon's cache query port (7002) and its whisper files; plaintext and pickle; errors.
"""

from __future__ import annotations

import pickle
import socket
import subprocess
import struct
import time
import uuid
from pathlib import Path

import pytest

from saline.jid import gen_jid
from saline.returners.base import ReturnerError
from saline.returners.registry import create
from tests.contract.cases.carbon import HOST, PORT, WHISPER, config

QUERY_PORT = 7002


def cached(metric: str) -> list[tuple[int, float]]:
    """The points carbon holds in memory for ``metric`` (its cache query protocol)."""
    request = pickle.dumps({"type": "cache-query", "metric": metric}, protocol=2)
    with socket.create_connection((HOST, QUERY_PORT), timeout=5) as sock:
        sock.sendall(struct.pack("!L", len(request)) + request)
        size = struct.unpack("!L", _read(sock, 4))[0]
        return list(pickle.loads(_read(sock, size)).get("datapoints", []))


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def value(metric: str) -> float:
    for _ in range(50):
        points = cached(metric)
        if points:
            return points[-1][1]
        path = WHISPER / (metric.replace(".", "/") + ".wsp")
        if path.exists():
            out = subprocess.run(["whisper-fetch", "--from", str(int(time.time()) - 300), str(path)],
                                 capture_output=True, text=True, check=True).stdout
            numbers = [line.split()[1] for line in out.splitlines() if line.split()[1] != "None"]
            if numbers:
                return float(numbers[-1])
        time.sleep(0.1)
    raise AssertionError(f"{metric} never reached carbon")


@pytest.mark.parametrize("mode,port", [("text", PORT), ("pickle", 2004)])
def test_salt_metric_paths(tmp_path: Path, master_opts: dict, mode: str, port: int) -> None:
    config({}, tmp_path)
    fun = f"itest{uuid.uuid4().hex[:6]}.loadavg"
    r = create("carbon", {**master_opts, "carbon.host": HOST, "carbon.port": port, "carbon.mode": mode,
                          "carbon.skip_on_error": True})
    jid = gen_jid()
    r.returns([{"id": "web1.example.com", "jid": jid, "fun": fun, "retcode": 0,
                "return": {"1-min": 0.5, "nested": {"n": 3}, "list": [7, "x"], "text": "skipped", "ok": True}}])
    base = f"{fun}.web1_example_com"  # <fun>.<minion id with . → _>
    assert value(f"{base}.1-min") == 0.5
    assert value(f"{base}.nested.n") == 3.0
    assert value(f"{base}.list.7") == 7.0  # a list item's value is part of its path, as Salt
    assert value(f"{base}.ok") == 1.0
    r.returns([{"id": "host1", "jid": jid, "fun": f"virt.{fun.split('.')[0]}", "return": {"cpu": 2}}])
    assert value(f"virt.{fun.split('.')[0]}.cpu") == 2.0  # virt.*: no minion id in the path
    r.close()


def test_pattern_events_and_errors(tmp_path: Path, master_opts: dict) -> None:
    config({}, tmp_path)
    tag = uuid.uuid4().hex[:8]
    r = create("carbon", {**master_opts, "carbon.host": HOST, "carbon.port": PORT,
                          "carbon.metric_base_pattern": "carbon.[minion_id].[module].[function]"})
    jid = gen_jid()
    r.returns([{"id": f"m{tag}", "jid": jid, "fun": "disk.usage", "return": {"root": 42}}])
    assert value(f"carbon.m{tag}.disk.usage.root") == 42.0
    with pytest.raises(ReturnerError, match="is not a number .*skip_on_error"):
        r.returns([{"id": f"m{tag}", "jid": jid, "fun": "test.echo", "return": "text"}])
    r.event_returns([{"tag": f"custom/{tag}/one", "data": {"data": {"temp": 21.5}, "_stamp": "x"}},
                     {"tag": f"custom/{tag}/two", "data": {"level": 3, "text": "skipped"}}])
    assert value(f"custom/{tag}/one.temp") == 21.5  # Salt's data.data
    assert value(f"custom/{tag}/two.level") == 3.0  # no data map: the event's data
    r.close()


def test_kept_connection_and_batch_of_1000(tmp_path: Path, master_opts: dict) -> None:
    config({}, tmp_path)
    tag = uuid.uuid4().hex[:8]
    r = create("carbon", {**master_opts, "carbon.host": HOST, "carbon.port": PORT})
    jid = gen_jid()
    r.returns([{"id": "warm", "jid": jid, "fun": f"itest{tag}.warm", "return": 1}])
    sock = r._sock
    rets = [{"id": f"minion{i:04d}", "jid": jid, "fun": f"itest{tag}.echo", "return": {"i": i}} for i in range(1000)]
    started = time.perf_counter()
    r.returns(rets)
    elapsed = time.perf_counter() - started
    print(f"carbon: 1,000 returns in {elapsed:.4f}s ({1000 / elapsed:,.0f}/s)")
    assert r._sock is sock  # one connection, kept
    assert value(f"itest{tag}.echo.minion0999.i") == 999.0
    r.close()
