"""The master's local socket, from asyncio: the API's only way to the master.

The same framing as the CLI (:mod:`saline.transport.local`: 4-byte length, msgpack map), so the
API runs as its own process beside the master, as the master's user. Short requests (runner,
wheel, expected, metrics) reuse a few idle connections; a publish that waits for returns and an
event stream each hold a connection of their own, closed when done.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from saline.transport.framing import FrameError, decode
from saline.transport.local import HEADER, MAX_LOCAL_FRAME, MasterUnreachable, pack, socket_path

#: idle connections kept for short requests
POOL_SIZE = 8


class MasterError(Exception):
    """The master refused a request; one line naming the cause."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, message: dict[str, Any]) -> None:
        try:
            self.writer.write(pack(message))
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise MasterUnreachable(f"lost the connection to the master: {exc}") from None

    async def recv(self) -> dict[str, Any]:
        try:
            (size,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            if size > MAX_LOCAL_FRAME:
                raise MasterUnreachable(f"the master sent an oversized frame ({size} bytes)")
            return decode(await self.reader.readexactly(size), MAX_LOCAL_FRAME)
        except asyncio.IncompleteReadError:
            raise MasterUnreachable("the master closed the connection") from None
        except (ConnectionError, OSError) as exc:
            raise MasterUnreachable(f"lost the connection to the master: {exc}") from None
        except FrameError as exc:
            raise MasterUnreachable(f"the master sent a bad frame: {exc}") from None

    def close(self) -> None:
        self.writer.close()


class MasterLink:
    """Requests to the master over its local socket in ``sock_dir``."""

    def __init__(self, sock_dir: str) -> None:
        self.path = socket_path(sock_dir)
        self._idle: list[Connection] = []

    async def connect(self) -> Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_LOCAL_FRAME)
        except FileNotFoundError:
            raise MasterUnreachable(f"the master is not running (no socket at {self.path})") from None
        except PermissionError:
            raise MasterUnreachable(f"permission denied on {self.path}: run saline-api as the master's user") from None
        except ConnectionRefusedError:
            raise MasterUnreachable(f"the master is not running (connection refused on {self.path})") from None
        except OSError as exc:
            raise MasterUnreachable(f"cannot reach the master at {self.path}: {exc.strerror or exc}") from None
        return Connection(reader, writer)

    async def request(self, message: dict[str, Any]) -> Any:
        """One request answered by ``result`` (its data is returned) or ``error`` (MasterError)."""
        conn = self._idle.pop() if self._idle else await self.connect()
        try:
            try:
                await conn.send(message)
                reply = await conn.recv()
            except MasterUnreachable:
                conn.close()
                conn = await self.connect()  # an idle connection the master dropped (a restart): once more
                await conn.send(message)
                reply = await conn.recv()
        except BaseException:
            conn.close()
            raise
        if len(self._idle) < POOL_SIZE:
            self._idle.append(conn)
        else:
            conn.close()
        if reply.get("cmd") == "error":
            raise MasterError(str(reply.get("message") or "the master refused the request"))
        return reply.get("data")

    async def runner(self, fun: str, arg: list[Any], kwarg: dict[str, Any]) -> Any:
        return await self.request({"cmd": "runner", "fun": fun, "arg": arg, "kwarg": kwarg})

    async def wheel(self, fun: str, arg: list[Any], kwarg: dict[str, Any], user: str, client: str = "wheel") -> Any:
        return await self.request({"cmd": "wheel", "client": client, "fun": fun, "arg": arg, "kwarg": kwarg,
                                   "user": user})

    async def expected(self, tgt: Any, tgt_type: str) -> list[str]:
        return list(await self.request({"cmd": "expected", "tgt": tgt, "tgt_type": tgt_type}) or [])

    async def metrics(self) -> str:
        return str(await self.request({"cmd": "metrics"}))

    async def publish(self, load: dict[str, Any]) -> dict[str, Any]:
        """Publish without waiting: ``{"jid", "minions"}``."""
        conn = await self.connect()
        try:
            await conn.send({"cmd": "publish", **load, "wait": False})
            return _published(await conn.recv())
        finally:
            conn.close()

    async def publish_wait(self, load: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Publish and yield ``published``, each ``return``, then ``done`` or ``timeout``."""
        conn = await self.connect()
        try:
            await conn.send({"cmd": "publish", **load, "wait": True})
            yield {"cmd": "published", **_published(await conn.recv())}
            while True:
                message = await conn.recv()
                yield message
                if message.get("cmd") in ("done", "timeout"):
                    return
        finally:
            conn.close()

    async def events(self, prefix: str = "") -> AsyncIterator[dict[str, Any]]:
        """Every event of the master whose tag starts with ``prefix``, live, as ``{"tag", "data"}``."""
        conn = await self.connect()
        try:
            await conn.send({"cmd": "events", "prefix": prefix})
            while True:
                message = await conn.recv()
                if message.get("cmd") == "event":
                    yield {"tag": message.get("tag"), "data": message.get("data")}
        finally:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _published(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("cmd") == "error":
        raise MasterError(str(reply.get("message") or "publish failed"))
    if reply.get("cmd") != "published":
        raise MasterError(f"unexpected answer from the master: {reply.get('cmd')}")
    return {"jid": reply["jid"], "minions": list(reply.get("minions") or [])}
