"""Contract case: ``syslog`` writing to a real Unix datagram socket that the test binds and reads."""

from __future__ import annotations

import atexit
import json
import re
import select
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.contract.harness import ContractCase

RECORD = re.compile(rb"^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?:([^\s:\[]+) )?([^:\[\s]+)(?:\[(\d+)\])?: (.*)$", re.S)


class SyslogSocket:
    """A Unix datagram socket bound in a temporary folder, each datagram kept as it arrived."""

    def __init__(self, path: Path | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="saline-syslog-"))
        self.path = str(path or self.folder / "log")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(self.path)
        self.datagrams: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="syslog-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # keeps the socket's queue short while a big batch comes in (a full queue blocks the sender)
        while not self._stop.is_set():
            try:
                select.select([self.sock], [], [], 0.1)
                self._drain()
            except (OSError, ValueError):
                return

    def _drain(self) -> None:
        """Take every datagram waiting in the socket (what a send returned from is there)."""
        with self._lock:
            while True:
                try:
                    self.datagrams.append(self.sock.recv(1 << 20, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    return

    def records(self) -> list[dict[str, Any]]:
        """Each datagram split into RFC 3164 parts; ``message`` is the text after ``tag[pid]: ``."""
        out = []
        self._drain()
        with self._lock:
            got = list(self.datagrams)
        for data in got:
            found = RECORD.match(data)
            assert found, data[:200]
            pri, stamp, host, tag, pid, message = found.groups()
            out.append({"pri": int(pri), "stamp": stamp.decode(), "host": host and host.decode(), "tag": tag.decode(),
                        "pid": pid and int(pid), "message": message.decode("utf-8")})
        return out

    def close(self) -> None:
        """Stop reading, then close: a socket another thread still selects on would stay alive."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_shared: SyslogSocket | None = None
_lock = threading.Lock()


def shared() -> SyslogSocket:
    global _shared
    with _lock:
        if _shared is None:
            _shared = SyslogSocket()
            atexit.register(_shared.close)
        return _shared


def _messages(jid: str) -> list[str]:
    # a cut record is no longer JSON: recognise a job by its jid near the start
    return [r["message"] for r in shared().records() if f'"jid": "{jid}"' in r["message"][:400]]


def _fetch(jid: str) -> dict[str, Any]:
    out = {}
    for message in _messages(jid):
        try:
            ret = json.loads(message)
        except ValueError:
            continue  # cut at max_length
        if "tag" not in ret:
            out[ret["id"]] = ret["return"]
    return out


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"syslog.address": shared().path, "syslog.tag": "saline-test", "syslog.options": ["LOG_PID"]}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"syslog.address": str(tmp / "no-daemon-here" / "log")}


CASES = [ContractCase(
    name="syslog", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    extra={"count": lambda fx, tmp, jid: sum(1 for m in _messages(jid) if not m.startswith('{"tag"')),
           "count_events": lambda fx, tmp, jid: sum(1 for r in shared().records()
                                                    if r["message"].startswith('{"tag"') and jid in r["message"][:200]),
           "fetch": lambda fx, tmp, jid: _fetch(jid)},
)]
