"""Contract case: ``zabbix`` against a real TCP receiver that speaks Zabbix's trapper protocol.

The receiver parses each ``ZBXD\\x01`` frame and its ``sender data`` JSON and answers as a Zabbix
server does (``{"response": "success", "info": "processed: N; failed: M; ..."}``), refusing
values for hosts listed in ``unknown_hosts`` (a Zabbix without such a host). Each test gets its
own receiver.
"""

from __future__ import annotations

import atexit
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase


class ZabbixReceiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []  # each request's JSON
        self.raw: list[bytes] = []
        self.unknown_hosts: set[str] = set()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, name="zabbix-receiver", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            head = _read(conn, 13)
            if len(head) < 13:
                return  # a health check: connected and went away
            assert head[:5] == b"ZBXD\x01", head
            length, reserved = struct.unpack("<II", head[5:13])
            data = _read(conn, length)
            request = json.loads(data)
            assert request["request"] == "sender data"
            with self._lock:
                self.raw.append(head + data)
                self.requests.append(request)
            failed = sum(1 for v in request["data"] if v["host"] in self.unknown_hosts)
            total = len(request["data"])
            answer = json.dumps({"response": "success", "info": f"processed: {total - failed}; failed: {failed}; "
                                                                f"total: {total}; seconds spent: 0.000042"}).encode()
            conn.sendall(b"ZBXD\x01" + struct.pack("<II", len(answer), 0) + answer)

    def values(self) -> list[dict[str, str]]:
        with self._lock:
            return [v for r in self.requests for v in r["data"]]

    def returns(self, jid: str) -> int:
        """Returns of ``jid`` received: the distinct hosts ``<minion>/<jid>`` of each request."""
        with self._lock:
            return sum(len({v["host"] for v in r["data"] if v["host"].endswith(f"/{jid}")}) for r in self.requests)

    def close(self) -> None:
        self.sock.close()


def _read(conn: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = conn.recv(size - len(out))
        if not chunk:
            break
        out += chunk
    return out


_receivers: dict[Path, ZabbixReceiver] = {}


@atexit.register
def _close_all() -> None:
    for receiver in _receivers.values():
        receiver.close()


def receiver(tmp: Path) -> ZabbixReceiver:
    if tmp not in _receivers:
        _receivers[tmp] = ZabbixReceiver()
    return _receivers[tmp]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    # the host template puts the jid in the host name, so each job's values can be told apart
    return {"zabbix.server": "127.0.0.1", "zabbix.port": receiver(tmp).port, "zabbix.host": "{id}/{jid}"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"zabbix.port": closed_port(), "zabbix.timeout": 3}


CASES = [ContractCase(
    name="zabbix", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # Zabbix keeps Salt's texts ("SALT web1 OK"), not return values: counted, not fetched
    extra={"count": lambda fx, tmp, jid: receiver(tmp).returns(jid)},
)]
