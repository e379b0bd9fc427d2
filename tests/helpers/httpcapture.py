"""A real HTTP server on 127.0.0.1 that records every request a real client library sends.

For the returners whose backend is a SaaS API (Slack, Pushover, Twilio, Sentry, Splunk HEC,
Nagios NRDP): the returner's own client sends to this server, which keeps each request (method,
path, query, headers, body) for the test to check field by field, and answers from a table of
rules (``reply``), else ``200 {"ok": true}``. HTTP/1.1 with keep-alive, so pooled clients reuse
their connection as they would against the service. No mock: a socket, a server, real requests.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["Capture", "Request", "shared"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    raw: bytes  # the body as received
    body: bytes  # the body after Content-Encoding (gzip, deflate) was undone
    at: float = field(default_factory=time.time)
    status: int = 0  # what the server answered

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """An ``application/x-www-form-urlencoded`` body, one value per field."""
        pairs = urllib.parse.parse_qsl(self.text(), keep_blank_values=True, strict_parsing=False)
        return dict(pairs)


#: (method, path) -> (status, body, content type); the body may be a callable of the request
Reply = tuple[int, Any, str]


class Capture:
    """One server; ``url`` is its base, ``requests`` what came in, ``reply`` sets answers."""

    def __init__(self, setup: Callable[["Capture"], None] | None = None) -> None:
        self.requests: list[Request] = []
        self._rules: list[tuple[str, str, Reply]] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = self._chunked()
                body = raw
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(raw)
                elif encoding == "deflate":
                    body = zlib.decompress(raw)
                split = urllib.parse.urlsplit(self.path)
                request = Request(self.command, split.path, urllib.parse.parse_qs(split.query, keep_blank_values=True),
                                  {k.lower(): v for k, v in self.headers.items()}, raw, body)
                status, reply, ctype = capture._answer(request)
                request.status = status
                data = reply if isinstance(reply, bytes) else (
                    reply.encode() if isinstance(reply, str) else json.dumps(reply).encode())
                with capture._cond:
                    capture.requests.append(request)
                    capture._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunked(self) -> bytes:
                out = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="httpcapture", daemon=True)
        self._thread.start()
        if setup is not None:
            setup(self)

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def reply(self, method: str, path_prefix: str, status: int, body: Any,
              content_type: str = "application/json") -> None:
        """Answer requests whose method is ``method`` (``*``: any) and path starts with
        ``path_prefix``; later rules win. ``body`` may be ``callable(request) -> body``."""
        with self._lock:
            self._rules.insert(0, (method.upper(), path_prefix, (status, body, content_type)))

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            rules = list(self._rules)
        for method, prefix, (status, body, ctype) in rules:
            if method in ("*", request.method) and request.path.startswith(prefix):
                return status, body(request) if callable(body) else body, ctype
        return 200, {"ok": True}, "application/json"

    def matching(self, test: Callable[[Request], bool]) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if test(r)]

    def wait(self, test: Callable[[Request], bool], count: int, timeout: float = 10.0) -> list[Request]:
        """The requests passing ``test`` once there are ``count`` of them (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.requests if test(r)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._cond.wait(left)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_shared: dict[str, Capture] = {}
_shared_lock = threading.Lock()


def shared(name: str, setup: Callable[[Capture], None] | None = None) -> Capture:
    """One capture server per ``name`` for the whole test process (the contract cases use these;
    each test tells its requests apart by its own job ids)."""
    with _shared_lock:
        capture = _shared.get(name)
        if capture is None:
            capture = _shared[name] = Capture(setup)
        return capture
