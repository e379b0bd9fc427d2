"""``GET /events``: Salt's SSE format for a job's events, authentication without a header, the end
of a stream with its session, and a slow consumer cut off while the server's memory stays flat."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from .conftest import FILE_USERS, Api

pytestmark = pytest.mark.e2e


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(tag, parsed data) pairs from an SSE line stream in Salt's format."""
    tag = None
    for line in lines:
        if line.startswith("tag: "):
            tag = line[5:]
        elif line.startswith("data: "):
            yield tag or "", json.loads(line[6:])


def test_job_events_in_salts_format(api: Api) -> None:
    token = api.login()
    stream = requests.get(api.url + "/events", params={"token": token}, stream=True, timeout=30)
    assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    lines = stream.iter_lines(chunk_size=65536, decode_unicode=True)
    assert next(lines) == "retry: 400"
    seen: list[tuple[str, dict[str, Any]]] = []
    jid = None

    def start_job() -> None:
        nonlocal jid
        time.sleep(0.3)  # the stream is subscribed once its first line came
        jid = api.post("/", {"client": "local_async", "tgt": "*", "fun": "test.echo", "arg": ["sse"]},
                       token).json()["return"][0]["jid"]

    threading.Thread(target=start_job).start()
    wanted: set[str] = set()
    for tag, data in _events(lines):
        seen.append((tag, data))
        if jid:
            wanted = {f"salt/job/{jid}/new", f"salt/job/{jid}/ret/web1", f"salt/job/{jid}/ret/db1"}
            if wanted <= {t for t, _ in seen}:
                break
    stream.close()
    mine = {t: d for t, d in seen if jid and jid in t}
    assert set(mine) == wanted
    for tag, body in mine.items():
        assert body["tag"] == tag and isinstance(body["data"], dict)
    assert mine[f"salt/job/{jid}/new"]["data"]["fun"] == "test.echo"
    assert sorted(mine[f"salt/job/{jid}/new"]["data"]["minions"]) == ["db1", "web1"]
    ret = mine[f"salt/job/{jid}/ret/web1"]["data"]
    assert ret["return"] == "sse" and ret["id"] == "web1" and ret["jid"] == jid and ret["_stamp"]


def test_cookie_and_salt_token_auth_and_the_end_with_the_session(api: Api) -> None:
    browser = requests.Session()  # an EventSource sends the session_id cookie, no header
    login = browser.post(api.url + "/login", json={"username": "alice", "password": FILE_USERS["alice"],
                                                    "eauth": "file"}, timeout=10)
    token = login.json()["return"][0]["token"]
    stream = browser.get(api.url + "/events", stream=True, timeout=30)
    assert stream.status_code == 200
    other = requests.get(api.url + "/events", params={"salt_token": api.login()}, stream=True, timeout=30)
    assert other.status_code == 200
    other.close()
    assert requests.get(api.url + "/events", timeout=10).status_code == 401
    assert requests.get(api.url + "/events", params={"token": "ab" * 20}, timeout=10).status_code == 401
    lines = stream.iter_lines(chunk_size=65536, decode_unicode=True)
    assert next(lines) == "retry: 400"
    began = time.monotonic()
    api.post("/logout", {}, token)
    last = None
    for tag, body in _events(lines):  # the stream ends by itself once its session is gone
        last = (tag, body)
    assert last is not None and last[0] == "saline/api/events/closed"
    assert "session" in last[1]["data"]["reason"]
    assert time.monotonic() - began < 10


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_slow_consumer_is_cut_off_and_memory_stays_flat(api: Api) -> None:
    token = api.login()
    payload = "x" * 256 * 1024  # each job: a 'new' event and two returns of 256 KB each
    low = {"client": "local", "tgt": "*", "fun": "test.echo", "arg": [payload]}
    api.post("/", low, token)  # warm up: the first big job's buffers are not the stream's
    before = _rss_mb(api.proc.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
    sock.sendall(f"GET /events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.5)
    peak = before
    for _ in range(60):  # about 45 MB of events, while the client reads nothing
        assert api.post("/", low, token).status_code == 200
        peak = max(peak, _rss_mb(api.proc.pid))
    # the buffer holds at most events_buffer_bytes (4 MB): without the bound this grows by ~45 MB
    assert peak - before < 20, f"saline-api grew from {before:.0f} MB to {peak:.0f} MB"
    assert api.get("/stats", token).json()["saline-api"]["events_cut"] >= 1
    sock.settimeout(10)
    received = bytearray()
    while True:  # what was already on its way, then the last event and the end of the stream
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        received += chunk
    sock.close()
    text = received.decode("utf-8", "replace")
    assert text.startswith("HTTP/1.1 200") and "retry: 400" in text
    assert "tag: saline/api/events/closed" in text and "read too slowly" in text


def test_async_runner_and_wheel_answer_through_events(api: Api) -> None:
    token = api.login()
    stream = requests.get(api.url + "/events", headers={"X-Auth-Token": token}, stream=True, timeout=30)
    lines = stream.iter_lines(chunk_size=65536, decode_unicode=True)
    assert next(lines) == "retry: 400"
    time.sleep(0.3)
    run = api.post("/", {"client": "runner_async", "fun": "returners.list"}, token).json()["return"][0]
    wheel = api.post("/", {"client": "wheel_async", "fun": "key.list_all"}, token).json()["return"][0]
    wanted = {f"{run['tag']}/ret", f"{wheel['tag']}/ret"}
    found: dict[str, Any] = {}
    for tag, body in _events(lines):
        if tag in wanted:
            found[tag] = body["data"]
            if len(found) == 2:
                break
    stream.close()
    assert found[f"{run['tag']}/ret"]["success"] is True and "mysql" in found[f"{run['tag']}/ret"]["return"]
    assert found[f"{wheel['tag']}/ret"]["jid"] == wheel["jid"]
    assert found[f"{wheel['tag']}/ret"]["return"]["minions"] == ["db1", "web1"]


def test_one_event_larger_than_the_buffer_still_reaches_a_client_that_reads(api: Api) -> None:
    token = api.login()
    stream = requests.get(api.url + "/events", params={"token": token}, stream=True, timeout=30)
    lines = stream.iter_lines(chunk_size=1 << 20, decode_unicode=True)
    assert next(lines) == "retry: 400"
    time.sleep(0.3)
    big = "y" * (5 * 1024 * 1024)  # more than events_buffer_bytes (4 MB), alone; made on the minion
    low = {"client": "local_async", "tgt": "web1", "fun": "cmd.run", "arg": [f"{sys.executable} -c \"print('y' * {len(big)})\""]}
    jid = api.post("/", low, token).json()["return"][0]["jid"]
    for tag, body in _events(lines):
        assert tag != "saline/api/events/closed", body
        if tag == f"salt/job/{jid}/ret/web1":
            assert body["data"]["return"] == big
            break
    stream.close()
