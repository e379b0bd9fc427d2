"""The master's side of the local socket: publish and wait, runners, live events.

Requests (one msgpack map each, see ``saline.transport.local``):

* ``publish``: publishes a job and answers ``published`` (jid, expected minions, the named ids
  that are not minions); with ``wait`` it then streams each ``return`` and ends with ``done``, or
  ``timeout`` naming the minions that did not answer: those with no connection to the master
  (``not_connected``, not waited for: the job cannot reach them) and those that stayed silent
  after being asked with ``saltutil.find_job``, as Salt does.
* ``runner``: runs a ``saline-run`` function and answers ``result`` or ``error``.
* ``events``: streams every event whose tag starts with ``prefix`` (``state.event``).
* ``expected``: the minions a target should reach (batch mode, ``--preview-target``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from typing import Any

from saline.jid import gen_jid, is_jid
from saline.master.gather import gather_returns
from saline.transport.framing import FrameError, decode
from saline.transport.local import HEADER, MAX_LOCAL_FRAME, pack, socket_path

log = logging.getLogger(__name__)

#: in a cluster, how long a minion another master has not yet reported connected is waited for
#: before it is called not connected (masters report their minions within a fraction of this)
PRESENCE_GRACE = 1.0


class LocalAPI:
    def __init__(self, master: Any) -> None:
        self.master = master
        self.path = socket_path(master.opts["sock_dir"])
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if self.path.exists():
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LOCAL_FRAME)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    @staticmethod
    def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return False
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.getuid())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self._peer_allowed(writer):
                log.warning("refused a local connection from another user")
                return
            while True:
                try:
                    header = await reader.readexactly(HEADER.size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                (size,) = HEADER.unpack(header)
                if size > MAX_LOCAL_FRAME:
                    await self._send(writer, {"cmd": "error", "message": "request too large"})
                    return
                try:
                    request = decode(await reader.readexactly(size), MAX_LOCAL_FRAME)
                except FrameError as exc:
                    await self._send(writer, {"cmd": "error", "message": f"bad request: {exc}"})
                    return
                if not await self._dispatch(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:
            log.exception("local API request failed")
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(pack(message))
        await writer.drain()

    async def _dispatch(self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; False ends the connection."""
        cmd = request["cmd"]
        if cmd == "publish":
            await self._publish(request, reader, writer)
            return False
        if cmd == "runner":
            from saline.master.runners import RunnerError, call

            try:
                data = await call(self.master, str(request.get("fun", "")), list(request.get("arg") or []),
                                  dict(request.get("kwarg") or {}))
                await self._send(writer, {"cmd": "result", "data": data})
            except RunnerError as exc:
                await self._send(writer, {"cmd": "error", "message": str(exc)})
            return True
        if cmd == "events":
            await self._events(str(request.get("prefix") or ""), reader, writer)
            return False
        if cmd in ("wheel", "metrics"):  # saline-api's keys, config and /metrics
            from saline.master.wheel import serve_request

            await self._send(writer, await serve_request(self.master, request))
            return True
        if cmd == "expected":
            from saline.targeting import TargetError

            try:
                minions = self.master.expected_minions(request.get("tgt", "*"), request.get("tgt_type") or "glob")
                await self._send(writer, {"cmd": "result", "data": minions})
            except TargetError as exc:
                await self._send(writer, {"cmd": "error", "message": f"bad target: {exc}"})
            return True
        await self._send(writer, {"cmd": "error", "message": f"unknown request {cmd[:40]!r}"})
        return True

    async def _events(self, prefix: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sub = self.master.events.subscribe(prefix)
        closed = asyncio.create_task(reader.read())
        try:
            await self._send(writer, {"cmd": "subscribed"})
            while not closed.done():
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                await self._send(writer, {"cmd": "event", **getter.result()})
        finally:
            closed.cancel()
            self.master.events.unsubscribe(sub)

    async def _publish(self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from saline.master.errors import PublishError

        master = self.master
        # a jid given by the caller is kept (Salt's LocalClient takes one too)
        jid = request["jid"] if is_jid(request.get("jid")) else gen_jid(bool(master.opts.get("unique_jid")))
        sub = master.events.subscribe(f"salt/job/{jid}/ret/")
        try:
            try:
                published = master.publish({**request, "jid": jid})
            except PublishError as exc:
                await self._send(writer, {"cmd": "error", "message": str(exc)})
                return
            await self._send(writer, {"cmd": "published", **published})
            if request.get("wait"):
                timeout = float(request.get("timeout") or master.opts["timeout"])
                await self._stream_returns(jid, set(published["minions"]), sub, timeout, writer,
                                           set(published.get("not_connected") or ()))
        finally:
            master.events.unsubscribe(sub)

    async def _stream_returns(self, jid: str, expected: set[str], sub: Any, timeout: float,
                              writer: asyncio.StreamWriter, not_connected: set[str] = frozenset()) -> None:
        """Stream the returns of ``jid``; ``not_connected``: expected minions that had no
        connection when the job was sent, so it cannot reach them: they are not waited for."""
        returned: set[str] = set()
        started = time.monotonic()
        deadline = started + timeout
        probed = False
        # In a cluster another master's word on who is connected to it may be a moment old: a minion
        # that just connected there is given that moment before it is called not connected
        grace = PRESENCE_GRACE if getattr(self.master, "cluster", None) is not None else 0.0
        checked = grace == 0.0
        while not expected <= returned:
            if not checked and time.monotonic() - started >= grace:
                checked = True
                not_connected = not_connected - self.master.connected_minions()
            if checked and not_connected and expected - returned <= not_connected:
                break  # only minions the job cannot reach are left
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if probed:
                    break
                # Salt's find_job round: ask the silent minions whether they still run the job;
                # a minion with no connection now cannot answer, so it is not asked (nor waited for).
                probed = True
                gone = (expected - returned) - self.master.connected_minions()
                not_connected = not_connected | gone
                asked = sorted(expected - returned - not_connected)
                still = await self._find_job(jid, asked) if asked else []
                if not still:
                    break
                deadline = time.monotonic() + timeout
                probed = False
                continue
            wait = remaining if checked else min(remaining, max(0.01, started + grace - time.monotonic()))
            try:
                event = await asyncio.wait_for(sub.queue.get(), wait)
            except asyncio.TimeoutError:
                continue
            data = event["data"]
            mid = data.get("id")
            if mid in returned:
                continue
            returned.add(mid)
            await self._send(writer, {"cmd": "return", "id": mid, "data": data})
        missing = sorted(expected - returned)
        await self._send(writer, {"cmd": "timeout" if missing else "done", "missing": missing,
                                  "not_connected": sorted(not_connected & set(missing))})

    async def _find_job(self, jid: str, minions: list[str]) -> list[str]:
        """The minions (among ``minions``) that report job ``jid`` as still running."""
        try:
            answers = await gather_returns(self.master, minions, "saltutil.find_job", [jid],
                                           float(self.master.opts.get("gather_job_timeout") or 10))
        except Exception as exc:
            log.warning("find_job for %s failed: %s", jid, exc)
            return []
        return [mid for mid, ret in answers.items() if ret]
