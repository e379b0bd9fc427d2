"""syslog: RFC 3164 records as a real socket the test binds receives them (Unix datagram, UDP, TCP)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable
from tests.contract.cases.syslog import RECORD, SyslogSocket


@pytest.fixture
def daemon() -> Iterator[SyslogSocket]:
    sock = SyslogSocket()
    yield sock
    sock.close()


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value, "retcode": 0, "success": True}


def test_salts_record(daemon: SyslogSocket, master_opts: dict[str, Any]) -> None:
    r = registry.create("syslog", {**master_opts, "syslog": {"address": daemon.path, "level": "LOG_ERR",
                                                             "facility": "LOG_DAEMON", "tag": "mysalt",
                                                             "options": ["LOG_PID"]}})
    jid = gen_jid()
    sent = [ret(jid, "web1", {"ü": "漢字", "b": b"\xff"}), ret(jid, "web2")]
    r.returns(sent)
    one, two = daemon.records()
    assert one["pri"] == 3 | (3 << 3) == 27  # LOG_ERR | LOG_DAEMON
    assert one["tag"] == "mysalt" and one["pid"] == os.getpid() and one["host"] is None
    assert time.strptime(one["stamp"], "%b %d %H:%M:%S")
    assert one["message"] == json.dumps({**sent[0], "return": {"ü": "漢字", "b": "\ufffd"}})  # Salt's ASCII JSON
    assert one["message"].isascii() and json.loads(two["message"]) == sent[1]


def test_defaults_events_and_cut(daemon: SyslogSocket, master_opts: dict[str, Any]) -> None:
    r = registry.create("syslog", {**master_opts, "syslog.address": daemon.path, "syslog.max_length": 200})
    r.event_returns([{"tag": "salt/auth", "data": {"id": "m1"}}])
    r.returns([ret(gen_jid(), "big", "x" * 1000)])
    event, big = daemon.records()
    assert event["pri"] == 14 and event["pid"] is None  # LOG_USER | LOG_INFO, no LOG_PID
    assert event["tag"] == os.path.basename(sys.argv[0])  # Salt's default: the program's name
    assert json.loads(event["message"]) == {"tag": "salt/auth", "data": {"id": "m1"}}
    raw = daemon.datagrams[-1]
    assert len(raw) <= 200 and raw.decode().endswith("bytes, cut to 200)")


def test_config_errors(master_opts: dict[str, Any]) -> None:
    for bad, message in (({"syslog.level": "LOG_LOUD"}, "'LOG_LOUD' is not a syslog level"),
                         ({"syslog.facility": "user"}, "'user' is not a syslog facility"),
                         ({"syslog.options": ["LOG_INFO"]}, "'LOG_INFO' is not a syslog option"),
                         ({"syslog.tag": "t" * 33}, "limited to 32 characters"),
                         ({"syslog.address": "ftp://host:21"}, "address must be")):
        with pytest.raises(ConfigError, match=message):
            registry.create("syslog", {**master_opts, **bad})


def test_the_daemon_restarting_is_survived(master_opts: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "log"
    first = SyslogSocket(path)
    r = registry.create("syslog", {**master_opts, "syslog.address": str(path)})
    r.returns([ret(gen_jid(), "a")])
    first.close()
    os.unlink(path)
    with pytest.raises(BackendUnavailable, match=f"^returner syslog: cannot write to {path}: "):
        r.returns([ret(gen_jid(), "b")])
    second = SyslogSocket(path)  # the daemon is back, on a new socket
    r.returns([ret(gen_jid(), "c")])
    assert [json.loads(x["message"])["id"] for x in second.records()] == ["c"]
    second.close()


def test_udp_and_tcp(master_opts: dict[str, Any]) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    r = registry.create("syslog", {**master_opts, "syslog.address": f"127.0.0.1:{udp.getsockname()[1]}"})
    r.returns([ret(gen_jid(), "u1"), ret(gen_jid(), "u2")])
    got = [RECORD.match(udp.recv(65536)) for _ in range(2)]
    assert [g.group(3).decode() for g in got] == [socket.gethostname()] * 2  # the host name, on the network
    assert [json.loads(g.group(6))["id"] for g in got] == ["u1", "u2"]
    udp.close()

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    r = registry.create("syslog", {**master_opts, "syslog.address": f"tcp://127.0.0.1:{server.getsockname()[1]}"})
    r.returns([ret(gen_jid(), "t1"), ret(gen_jid(), "t2")])
    conn, _ = server.accept()
    conn.settimeout(5)
    data = b""
    while data.count(b"\n") < 2:
        data += conn.recv(65536)
    lines = data.split(b"\n")[:2]
    assert [json.loads(RECORD.match(line).group(6))["id"] for line in lines] == ["t1", "t2"]
    conn.close()
    server.close()
    r.close()
