"""The ``carbon`` returner: numbers in returns as Graphite metrics, Salt's paths, one kept socket."""

from __future__ import annotations

import os
import pickle
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

from saline.returners import _json
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

DEFAULT_PATTERN = "[module].[function].[minion_id]"
_PICKLE_CHUNK = 500  # metrics per pickle message (carbon refuses messages over 1 MiB)
# characters that would split a plaintext line or a path (whitespace, control characters), that
# Graphite reads as the start of tags (;), or that UTF-8 cannot carry (lone surrogates)
_UNSAFE = re.compile(r"[\s;\x00-\x1f\x7f\ud800-\udfff]+")


class CarbonReturner(Returner):
    """Salt's ``carbon`` returner: every number in a return sent to Graphite's carbon.

    The return is walked as Salt walks it: a map adds ``.<key>`` to the path, a list adds
    ``.<item>`` for each item (the item's value becomes part of the path, as in Salt), and every
    leaf that ``float()`` accepts is one metric, stamped with the current second::

        <fun>.<minion id with . → _>.<key>...     e.g. status.loadavg.web1_example_com.1-min
        <fun>.<key>...                             for virt.* functions (stable across hosts)

    ``metric_base_pattern`` (documented by Salt, never read by it) sets the base: tokens
    ``[module]``, ``[function]``, ``[minion_id]`` and, in saline, ``[jid]``; the default
    ``[module].[function].[minion_id]`` is Salt's path. A leaf that is not a number fails the
    batch unless ``skip_on_error`` (as Salt). ``mode: pickle`` sends the pickle protocol (port
    2004 usually) instead of plaintext lines (2003). Events: the base is the tag and the values
    are the event's ``data.data`` (as Salt), or its whole ``data`` when it has no ``data`` map
    (Salt sent nothing for those, nearly every event); non-numbers are always skipped.

    Differences from Salt: one TCP connection per returner, kept and opened again when the
    server closed it (checked before each send, so a restarted carbon loses nothing); a batch is
    one stream of lines (or pickles of 500 metrics); plaintext is sent as bytes (Salt passed
    ``str`` to the socket and failed on Python 3, salt#61284); whitespace and control characters
    and ``;`` in a path become ``_`` (they would split a plaintext line; ``;`` starts
    Graphite tags, and carbon refused the metric); ``retcode_metric`` also sends
    ``<base>.retcode`` for each return, so every return leaves a point even when its value holds
    no number. carbon sends no acknowledgement: what reached its socket counts as delivered.

    Example, reading back with Graphite's tools::

        whisper-fetch /var/lib/graphite/whisper/status/loadavg/web1/1-min.wsp
    """

    name = "carbon"
    summary = "Graphite carbon: numbers in returns as metrics <fun>.<minion>.<key>…, plaintext or pickle"
    options = (
        Option("host", required=True, doc="carbon host"),
        Option("port", int, required=True, doc="carbon port (2003 plaintext, 2004 pickle)"),
        Option("skip_on_error", bool, default=False, doc="skip values that are not numbers instead of failing"),
        Option("mode", default="text", doc="text or pickle"),
        Option("metric_base_pattern", default=DEFAULT_PATTERN,
               doc="the base of each path: [module], [function], [minion_id], [jid]"),
        Option("retcode_metric", bool, default=False, doc="also send <base>.retcode for each return (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the server (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        mode = str(self.opts.get("mode") or "text").lower()
        if mode not in ("text", "pickle"):
            raise ReturnerError(self._line(f"mode must be text or pickle, not {mode!r}"))
        self.mode = mode
        self._sock: socket.socket | None = None
        self._lock = threading.RLock()
        self._pid = os.getpid()

    @property
    def where(self) -> str:
        return f"carbon at {self.opts.get('host')}:{self.opts.get('port')}"

    def _line(self, text: str) -> str:
        return f"returner {self.name}: {' '.join(str(text).split())}"

    # -- metrics ---------------------------------------------------------------------------------------
    def _walk(self, path: str, value: Any, out: list[tuple[str, float, int]], stamp: int, skip: bool) -> None:
        if isinstance(value, Mapping):
            for key, val in value.items():
                self._walk(f"{path}.{key}", val, out, stamp, skip)
        elif isinstance(value, list):
            for item in value:
                self._walk(f"{path}.{item}", item, out, stamp, skip)
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                if skip:
                    return
                raise ReturnerError(self._line(f"the value at {_clean(path)} is not a number ({_json.text(value)[:60]!r}); "
                                               "set carbon.skip_on_error to leave such values out")) from None
            out.append((_clean(path), number, stamp))

    def base(self, ret: Mapping[str, Any]) -> str:
        fun = _json.text(ret.get("fun"))
        module, _, function = fun.partition(".")
        minion = _json.text(ret.get("id")).replace(".", "_")
        pattern = str(self.opts.get("metric_base_pattern") or DEFAULT_PATTERN)
        if fun.startswith("virt."):  # Salt leaves the minion out: stable paths when a VM moves
            pattern = re.sub(r"\.?\[minion_id\]", "", pattern)
        for token, value in (("[module]", module), ("[function]", function), ("[minion_id]", minion),
                             ("[jid]", _json.text(ret.get("jid")))):
            pattern = pattern.replace(token, value)
        return ".".join(part for part in pattern.split(".") if part)

    # -- sending -----------------------------------------------------------------------------------------
    def _encode(self, metrics: list[tuple[str, float, int]]) -> list[bytes]:
        if self.mode == "pickle":
            out = []
            for start in range(0, len(metrics), _PICKLE_CHUNK):
                data = pickle.dumps([(p, (t, v)) for p, v, t in metrics[start:start + _PICKLE_CHUNK]], protocol=2)
                out.append(struct.pack("!L", len(data)) + data)
            return out
        return ["".join(f"{p} {v} {t}\n" for p, v, t in metrics).encode("utf-8")]

    def _connected(self) -> socket.socket:
        if self._sock is not None and self._pid == os.getpid():
            # carbon never writes to us: a readable socket means it closed (or reset) the connection
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return self._sock
            self.close()
        self._sock = None
        try:
            sock = socket.create_connection((str(self.opts["host"]), int(self.opts["port"])),
                                            timeout=float(self.opts.get("timeout") or 10.0))
        except OSError as exc:
            raise BackendUnavailable(self._line(f"cannot reach {self.where}: {_describe(exc)}")) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._pid = sock, os.getpid()
        return sock

    def _send(self, metrics: list[tuple[str, float, int]]) -> None:
        if not metrics:
            return
        payload = self._encode(metrics)
        with self._lock:
            for attempt in (0, 1):
                kept = self._sock is not None
                sock = self._connected()
                try:
                    for part in payload:
                        sock.sendall(part)
                    return
                except OSError as exc:
                    self.close()
                    if kept and attempt == 0:
                        continue  # a kept connection that broke: once more (a resent point rewrites itself)
                    raise BackendUnavailable(self._line(f"lost {self.where}: {_describe(exc)}")) from None

    # -- write side ----------------------------------------------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        stamp = int(time.time())
        skip = bool(self.opts.get("skip_on_error"))
        metrics: list[tuple[str, float, int]] = []
        for ret in rets:
            base = self.base(ret)
            self._walk(base, ret.get("return"), metrics, stamp, skip)
            if self.opts.get("retcode_metric"):
                code = ret.get("retcode")
                metrics.append((_clean(f"{base}.retcode"), float(code) if isinstance(code, (int, float)) else 0.0, stamp))
        self._send(metrics)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        stamp = int(time.time())
        metrics: list[tuple[str, float, int]] = []
        for event in events:
            data = event.get("data")
            if isinstance(data, Mapping) and isinstance(data.get("data"), Mapping):
                data = data["data"]
            self._walk(_json.text(event.get("tag")), data, metrics, stamp, True)
        self._send(metrics)

    def check(self) -> None:
        with self._lock:
            self._connected()

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            if sock is not None and self._pid == os.getpid():
                try:
                    sock.close()
                except OSError:
                    pass


def _clean(path: str) -> str:
    return _UNSAFE.sub("_", path)


def _describe(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
