"""The local socket between the master and its command-line tools.

A Unix socket in the master's ``sock_dir`` (folder 0700, socket 0600), so only the master's user
can open it; the master also checks the peer's uid with SO_PEERCRED. Messages are length-prefixed
msgpack maps (4-byte big-endian length). The client side is plain blocking ``socket`` so that
the CLI starts fast.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any, Iterator

from saline.transport.framing import FrameError, decode, encode

HEADER = struct.Struct(">I")
SOCKET_NAME = "master.sock"
MAX_LOCAL_FRAME = 256 * 1024 * 1024


class MasterUnreachable(Exception):
    """The master's local socket cannot be reached; one line saying why."""


def socket_path(sock_dir: str | Path) -> Path:
    return Path(sock_dir) / SOCKET_NAME


def pack(message: dict[str, Any]) -> bytes:
    body = encode(message)
    return HEADER.pack(len(body)) + body


class Client:
    """A blocking connection from a CLI tool to the master."""

    def __init__(self, sock_dir: str | Path, timeout: float | None = None) -> None:
        path = socket_path(sock_dir)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except FileNotFoundError:
            raise MasterUnreachable(f"the master is not running (no socket at {path})") from None
        except PermissionError:
            raise MasterUnreachable(f"permission denied on {path}: run as the master's user") from None
        except ConnectionRefusedError:
            raise MasterUnreachable(f"the master is not running (connection refused on {path})") from None
        except OSError as exc:
            raise MasterUnreachable(f"cannot reach the master at {path}: {exc.strerror or exc}") from None
        self._buf = b""

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(pack(message))
        except OSError as exc:
            raise MasterUnreachable(f"lost the connection to the master: {exc.strerror or exc}") from None

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except socket.timeout:
                raise
            except OSError as exc:
                raise MasterUnreachable(f"lost the connection to the master: {exc.strerror or exc}") from None
            if not chunk:
                raise MasterUnreachable("the master closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def recv(self) -> dict[str, Any]:
        (size,) = HEADER.unpack(self._read(HEADER.size))
        if size > MAX_LOCAL_FRAME:
            raise MasterUnreachable(f"the master sent an oversized frame ({size} bytes)")
        try:
            return decode(self._read(size), MAX_LOCAL_FRAME)
        except FrameError as exc:
            raise MasterUnreachable(f"the master sent a bad frame: {exc}") from None

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.recv()

    def stream(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.recv()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
