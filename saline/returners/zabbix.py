"""Salt's ``zabbix`` returner: Salt's trapper items, sent with Zabbix's own sender protocol."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
from typing import Any, Mapping

from saline.returners import _json
from saline.returners._notify import Sent, one_line, ret_key
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

log = logging.getLogger(__name__)

HEADER = b"ZBXD\x01"
_PROCESSED = re.compile(r"processed:?\s*(\d+);\s*failed:?\s*(\d+)", re.I)


def frame(payload: dict[str, Any]) -> bytes:
    """A Zabbix protocol message: ``ZBXD\\x01``, the data length (8 bytes, little-endian), the JSON."""
    data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return HEADER + struct.pack("<II", len(data), 0) + data


def read_frame(sock: socket.socket) -> dict[str, Any]:
    head = _read(sock, 13)
    if head[:5] != HEADER:
        raise ValueError(f"not a Zabbix answer (starts {head[:5]!r})")
    length = struct.unpack("<I", head[5:9])[0]
    return json.loads(_read(sock, length))


def _read(sock: socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        out += chunk
    return bytes(out)


class ZabbixReturner(Returner):
    """Salt's ``zabbix``: each return as values of Salt's trapper items, on the minion's host.

    For a state run (a return whose values are state results), each failed state sends
    ``salt.trap.high`` and each state with changes ``salt.trap.warning``, with Salt's text::

        SALT:
        name: /etc/motd
        comment: File /etc/motd updated

    and a return with neither sends ``salt.trap.info`` = ``SALT <minion id> OK``. Salt also said
    OK for a command that failed (``cmd.run`` with retcode 1); saline sends ``salt.trap.high``
    = ``SALT <minion id> FAILED: <function> retcode <n>`` for it. The Zabbix host is the minion
    id (``host``, a template over the return's keys, changes that: ``{id}.example.com``). In
    Zabbix, create the three items (type Zabbix trapper, type of information Text) on each
    host, as Salt's docs said.

    Salt ran ``zabbix_sender`` on the minion once per value, through a shell (a quoting hazard);
    saline speaks the sender protocol itself (``ZBXD\\x01`` header, then
    ``{"request": "sender data", "data": [{"host", "key", "value"}, …]}``) to ``server:port``
    from the master, up to ``values_per_request`` values a request (zabbix_sender's 250), one
    connection each (Zabbix closes it after answering). The answer's ``processed``/``failed``
    counts are read: values Zabbix refuses (no such host or item) are logged at WARNING, not
    retried (sending them again would not help). ``server``, ``port``, ``host``, ``timeout`` and
    ``values_per_request`` are saline's: Salt had no options. A return already delivered is not
    sent again when a batch is retried.

    Example, with the Zabbix API or ``zabbix_get``-style tooling::

        history.get {"itemids": ["<salt.trap.high of web1>"], "history": 4, "sortorder": "DESC", "limit": 10}
    """

    name = "zabbix"
    summary = "Zabbix: Salt's salt.trap.high/warning/info trapper values, sent with the sender protocol"
    options = (
        Option("server", default="127.0.0.1", doc="Zabbix server or proxy (its trapper) (saline)"),
        Option("port", int, default=10051, doc="trapper port (saline)"),
        Option("host", default="{id}", doc="Zabbix host name, a template over the return's keys (saline)"),
        Option("values_per_request", int, default=250, doc="values sent in one request (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the server (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.where = f"Zabbix at {self.opts['server']}:{self.opts['port']}"
        self._sent = Sent()

    def values(self, ret: dict[str, Any]) -> list[dict[str, str]]:
        """Salt's trapper values for one return."""
        host = self._host(ret)
        minion = _json.text(ret.get("id"))
        out: list[dict[str, str]] = []
        result = ret.get("return")
        if isinstance(result, dict):
            for item in result.values():
                if not isinstance(item, dict) or "comment" not in item or "name" not in item:
                    continue
                text = _json.text(f"SALT:\nname: {item['name']}\ncomment: {item['comment']}")
                if item.get("result") is False:
                    out.append({"host": host, "key": "salt.trap.high", "value": text})
                elif item.get("changes"):
                    out.append({"host": host, "key": "salt.trap.warning", "value": text})
        if not out:
            retcode = ret.get("retcode") or 0
            if ret.get("success") is False or retcode != 0:
                out.append({"host": host, "key": "salt.trap.high",
                            "value": f"SALT {minion} FAILED: {_json.text(ret.get('fun'))} retcode {retcode}"})
            else:
                out.append({"host": host, "key": "salt.trap.info", "value": f"SALT {minion} OK"})
        return out

    def _host(self, ret: dict[str, Any]) -> str:
        fields = {k: _json.text(v) for k, v in ret.items() if isinstance(k, str) and k != "return"}
        try:
            return str(self.opts["host"]).format(**fields)
        except (KeyError, IndexError, ValueError):
            return fields.get("id", "")

    def returns(self, rets: list[dict[str, Any]]) -> None:
        fresh = self._sent.fresh(rets)
        values = [v for ret in fresh for v in self.values(ret)]
        step = max(int(self.opts["values_per_request"]), 1)
        refused = 0
        for start in range(0, len(values), step):
            refused += self._send(values[start:start + step])
        self._sent.add(ret_key(r) for r in fresh)
        if refused:
            log.warning("returner zabbix: %s refused %d of %d value(s) (is each minion a Zabbix host with "
                        "the items salt.trap.high, salt.trap.warning and salt.trap.info?)",
                        self.where, refused, len(values))

    def _send(self, values: list[dict[str, str]]) -> int:
        """Send one request; the number of values Zabbix refused."""
        try:
            with socket.create_connection((self.opts["server"], self.opts["port"]), timeout=self.opts["timeout"]) as sock:
                sock.sendall(frame({"request": "sender data", "data": values}))
                answer = read_frame(sock)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {reason}", [])) from None
        if answer.get("response") != "success":
            raise ReturnerError(one_line(self.name, f"{self.where} answered {answer.get('response')!r}: "
                                                    f"{answer.get('info', '')}", []))
        counts = _PROCESSED.search(str(answer.get("info", "")))
        return int(counts.group(2)) if counts else 0

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        """Nothing to store (Salt's ``save_load`` was there "for API consistency")."""

    def check(self) -> None:
        """The trapper port accepts a connection."""
        try:
            socket.create_connection((self.opts["server"], self.opts["port"]), timeout=self.opts["timeout"]).close()
        except OSError as exc:
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {exc.strerror or exc}", [])) from None
