"""A real TCP forwarder that tests put between a client and a real server to simulate outages.

``cut()`` makes the server look down: the listening socket is closed (new connections are refused
by the kernel) and every open connection is reset. ``restore()`` listens again on the same port.
The server itself is never touched, so other tests using it carry on.

    with TcpProxy("127.0.0.1", 3306) as proxy:
        opts["mysql.port"] = proxy.port
        proxy.cut(); ...; proxy.restore()
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from typing import Any


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = port
        self.accepted = 0  # connections accepted so far (a reconnect shows here)
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    # -- control ----------------------------------------------------------------------------------
    def start(self) -> "TcpProxy":
        self._listen()
        return self

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        self._stop_listening()
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.listen_host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._closing.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), name="tcpproxy-accept", daemon=True)
        self._thread.start()

    def _stop_listening(self) -> None:
        sock, self._listener = self._listener, None
        if sock is None:
            return
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)
        sock.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            while not self._closing.is_set():
                if not sel.select(timeout=0.05):
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                    upstream.settimeout(None)
                except OSError:
                    _reset(client)
                    continue
                pair = (client, upstream)
                with self._lock:
                    self._pairs.add(pair)
                    self.accepted += 1
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True,
                                     name="tcpproxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            known = pair in self._pairs
            self._pairs.discard(pair)
        if known:  # an orderly end from one side: end the other too
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed server or a cut cable looks to the client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked in recv; sends nothing
    except OSError:
        pass
    sock.close()
