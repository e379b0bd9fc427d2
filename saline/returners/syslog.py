"""Salt's ``syslog`` returner: each return as one syslog record holding its JSON."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import syslog as _syslog
import time
from typing import Any, Mapping

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._notify import Sent, cut, one_line, ret_key
from saline.returners.base import BackendUnavailable, Option, Returner

_FLAGS = ("LOG_PID", "LOG_CONS", "LOG_NDELAY", "LOG_ODELAY", "LOG_NOWAIT", "LOG_PERROR")


def _constant(kind: str, name: Any) -> int:
    value = getattr(_syslog, str(name), None)
    if not str(name).startswith("LOG_") or not isinstance(value, int):
        raise ConfigError(f"returner syslog: {name!r} is not a syslog {kind} (e.g. LOG_INFO, LOG_USER, LOG_PID)")
    return value


def ascii_json(value: Any) -> str:
    """Salt's record text: ``json.dumps`` with its default ASCII escapes (syslog daemons escape
    or drop other bytes), made safe for what JSON has no form for."""
    return json.dumps(_json.decode(value), ensure_ascii=True)


class SyslogReturner(Returner):
    """Salt's ``syslog``: each return as one syslog record whose message is the JSON of the return.

    The record is what Salt's call of the C library's ``syslog()`` produced (RFC 3164)::

        <14>Jan  5 12:34:56 saline-master[4242]: {"id": "web1", "jid": "20240105123456123456", "fun": "test.ping", ...}

    priority = ``facility`` | ``level`` (``LOG_USER`` | ``LOG_INFO`` = 14 by default), then the
    local time, ``tag`` (default: the program's name, as Salt; at most 32 characters),
    ``[pid]`` with ``LOG_PID`` in ``options``, and the JSON of the whole return (ASCII, as Salt's
    ``json.dumps``). ``LOG_PERROR`` also writes each record to standard error; the other
    ``LOG_*`` options are accepted and change nothing. An unknown level, facility or option is a
    config error when the config is read (Salt logged it and sent nothing, every time).

    Salt opened and closed the process-wide syslog connection for each return; saline keeps its
    own socket per returner and writes a batch with one datagram per record (one write of all
    records on a stream), so it can report a missing or dead syslog daemon (``BackendUnavailable``:
    the records wait in the outbox) instead of losing the records silently. ``address`` is
    saline's: the Unix socket (``/dev/log`` by default), ``udp://host:514`` / ``host:514``, or
    ``tcp://host:514`` (records end with a newline; the host name goes into the header, as RFC
    3164 has it for the network). Records longer than ``max_length`` bytes are cut (syslog daemons
    cut them anyway: rsyslog at 8 KiB unless ``$MaxMessageSize`` says more). Events (saline's
    addition) are records of ``{"tag", "data"}``. A return already written is not written again
    when a batch is retried.

    Example, with rsyslog writing them to their own file::

        if $programname == 'saline-master' then /var/log/salt-returns.log
    """

    name = "syslog"
    summary = "syslog: one RFC 3164 record per return holding its JSON, to /dev/log or a syslog server"
    options = (
        Option("level", default="LOG_INFO", doc="priority level (a LOG_* name)"),
        Option("facility", default="LOG_USER", doc="facility (a LOG_* name)"),
        Option("tag", doc="the record's tag, at most 32 characters (default: the program's name)"),
        Option("options", list, default=[], doc="LOG_* flags: LOG_PID adds [pid], LOG_PERROR copies to stderr"),
        Option("address", default="/dev/log",
               doc="Unix socket path, host:port or udp://host:port (UDP), tcp://host:port (saline)"),
        Option("max_length", int, default=65536, doc="longest record in bytes; longer ones are cut (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the socket (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.priority = _constant("facility", self.opts["facility"]) | _constant("level", self.opts["level"])
        flags = [str(f).strip() for f in self.opts.get("options") or []]
        for flag in flags:
            if flag not in _FLAGS:
                _constant("option", flag)  # a LOG_ constant that is not an option still fails here
                raise ConfigError(f"returner syslog: {flag!r} is not a syslog option ({', '.join(_FLAGS)})")
        self.with_pid = "LOG_PID" in flags
        self.to_stderr = "LOG_PERROR" in flags
        tag = self.opts.get("tag")
        self.tag = str(tag) if tag else os.path.basename(sys.argv[0] or "saline") or "saline"
        if len(self.tag) > 32:
            raise ConfigError(f"returner syslog: the tag is limited to 32 characters, got {len(self.tag)}")
        self.kind, self.target = self._parse(str(self.opts["address"]))
        self._sock: socket.socket | None = None
        self._sent = Sent()

    @staticmethod
    def _parse(address: str) -> tuple[str, Any]:
        if address.startswith("/"):
            return "unix", address
        scheme, _, rest = address.rpartition("://")
        host, _, port = rest.rpartition(":")
        if scheme not in ("", "udp", "tcp") or not host or not port.isdigit():
            raise ConfigError(f"returner syslog: address must be a socket path, host:port, udp://host:port "
                              f"or tcp://host:port, got {address!r}")
        return scheme or "udp", (host.strip("[]"), int(port))

    # -- the records ------------------------------------------------------------------------------------
    def record(self, message: str) -> bytes:
        """One RFC 3164 record of ``message`` (as bytes, cut to ``max_length``)."""
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        stamp = stamp[:4] + (" " + stamp[5:] if stamp[4] == "0" else stamp[4:])  # "Jan  5", as syslog(3)
        host = f" {socket.gethostname()}" if self.kind != "unix" else ""
        pid = f"[{os.getpid()}]" if self.with_pid else ""
        data = f"<{self.priority}>{stamp}{host} {self.tag}{pid}: {message}"
        return cut(data, max(int(self.opts["max_length"]), 64), unit="bytes").encode("utf-8")

    # -- the socket ------------------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.settimeout(self.opts["timeout"])
                sock.connect(self.target)
                return sock
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EPROTOTYPE:  # the daemon listens on a stream socket
                    raise
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.kind = "unix-stream"
        elif self.kind == "tcp":
            return socket.create_connection(self.target, timeout=self.opts["timeout"])
        else:
            family = socket.getaddrinfo(self.target[0], self.target[1], type=socket.SOCK_DGRAM)[0][0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.settimeout(self.opts["timeout"])
            sock.connect(self.target)
        except OSError:
            sock.close()
            raise
        return sock

    def _write(self, records: list[bytes]) -> None:
        for attempt in (0, 1):  # a socket the daemon dropped (restart) is opened once more
            try:
                if self._sock is None:
                    self._sock = self._connect()
                if self.kind in ("tcp", "unix-stream"):
                    end = b"\n" if self.kind == "tcp" else b"\0"
                    self._sock.sendall(b"".join(r + end for r in records))
                else:
                    for record in records:
                        self._sock.send(record)
                if self.to_stderr:
                    sys.stderr.write("".join(r.decode("utf-8", "replace") + "\n" for r in records))
                return
            except OSError as exc:
                self.close()
                if attempt or self.kind in ("tcp", "unix-stream"):
                    raise self._unavailable(exc) from None

    def returns(self, rets: list[dict[str, Any]]) -> None:
        fresh = self._sent.fresh(rets)
        if fresh:
            self._write([self.record(ascii_json(ret)) for ret in fresh])
            self._sent.add(ret_key(r) for r in fresh)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if events:
            self._write([self.record(ascii_json({"tag": e.get("tag"), "data": e.get("data")})) for e in events])

    def check(self) -> None:
        """The socket can be opened."""
        self.close()
        try:
            self._sock = self._connect()
        except OSError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: OSError) -> BackendUnavailable:
        where = self.target if self.kind.startswith("unix") else f"{self.kind}://{self.target[0]}:{self.target[1]}"
        return BackendUnavailable(one_line(self.name, f"cannot write to {where}: {exc.strerror or exc}", []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
