"""``GET /events``: the master's events as Server-Sent Events, in Salt's format.

The stream starts with ``retry: 400``; each event is ``tag: <tag>`` then ``data: {"tag", "data"}``
and a blank line, as rest_cherrypy writes them. The events come from the master's local socket
into a buffer bounded in events and bytes (``events_buffer_events``, ``events_buffer_bytes``; one event
alone always fits): a client that reads slower than events come fills it, and is then cut off: its subscription to the
master is closed at once, the buffer dropped, and the stream ends with one last event
``saline/api/events/closed`` whose data says why, and the connection is closed (a client that
reads nothing at all is dropped 30 s later). So a slow or stuck client costs at most its buffer
plus the socket's write buffer, never a growing share of the server's memory. The stream
also ends, with the same last event, when its session expires or is logged out.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any, Callable

from aiohttp import web

from saline.api.masterlink import MasterLink
from saline.transport.local import MasterUnreachable

log = logging.getLogger(__name__)

CLOSED_TAG = "saline/api/events/closed"
#: how often an idle stream checks that its session still lives
SESSION_CHECK_SECONDS = 2.0
#: how long the last event may take to go out before the connection is closed anyway
LAST_WRITE_SECONDS = 1.0
#: a closed stream whose client still has not taken the last bytes is dropped after this long
ABORT_AFTER_SECONDS = 30.0


def _default(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def chunk(tag: str, data: Any) -> bytes:
    body = json.dumps({"tag": tag, "data": data}, default=_default, separators=(", ", ": "))
    return f"tag: {tag}\ndata: {body}\n\n".encode()


class _Buffer:
    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.items: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.max_events, self.max_bytes = max_events, max_bytes
        self.ready = asyncio.Event()
        self.cut: str | None = None
        self.done = False  # the stream is over: the writer stops at its next step

    def put(self, data: bytes) -> bool:
        # one event alone always fits (it is in memory already): a client reading at once gets even
        # an event larger than the bound; more waiting behind it than the bound allows is a cut
        if self.items and (len(self.items) + 1 > self.max_events or self.size + len(data) > self.max_bytes):
            self.cut = (f"the client read too slowly: more than {self.max_events} events or {self.max_bytes} bytes "
                        "waited for it")
            self.items.clear()
            self.size = 0
            self.ready.set()
            return False
        self.items.append(data)
        self.size += len(data)
        self.ready.set()
        return True


async def _read(link: MasterLink, buf: _Buffer) -> str:
    try:
        async for event in link.events(""):
            if not buf.put(chunk(str(event.get("tag")), event.get("data"))):
                return buf.cut or "cut"
    except MasterUnreachable as exc:
        return f"the master went away: {exc}"
    return "the master ended the stream"


async def _write(resp: web.StreamResponse, buf: _Buffer, alive: Callable[[], bool]) -> str:
    # buf.done is checked after every wait: Python 3.11's wait_for can swallow a cancellation that
    # comes as the awaited event is set, so cancelling this task alone may not end it
    while not buf.done:
        if not buf.items:
            buf.ready.clear()
            try:
                await asyncio.wait_for(buf.ready.wait(), SESSION_CHECK_SECONDS)
            except asyncio.TimeoutError:
                pass
        if buf.done:
            break
        if not alive():
            return "the session expired or was logged out"
        while buf.items and not buf.done:
            data = buf.items.popleft()
            buf.size -= len(data)
            await resp.write(data)
    return buf.cut or "closed"


async def serve(request: web.Request, link: MasterLink, alive: Callable[[], bool], max_events: int,
                max_bytes: int, headers: dict[str, str], stats: dict[str, int]) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                   "Connection": "keep-alive", **headers})
    await resp.prepare(request)
    await resp.write(b"retry: 400\n")
    buf = _Buffer(max_events, max_bytes)
    reader = asyncio.create_task(_read(link, buf))
    writer = asyncio.create_task(_write(resp, buf, alive))
    stats["events_streams"] += 1
    try:
        done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        buf.done = True
        buf.ready.set()
        for task in (reader, writer):
            task.cancel()
        await asyncio.wait({reader, writer}, timeout=LAST_WRITE_SECONDS)
        stats["events_streams"] -= 1
    finished = done.pop()
    if finished.exception() is not None:  # the client went away: nothing more to say
        return resp
    reason = finished.result()
    if buf.cut:
        stats["events_cut"] += 1
        log.warning("event stream to %s cut off: %s", request.remote, reason)
    try:
        await asyncio.wait_for(resp.write(chunk(CLOSED_TAG, {"reason": reason})), LAST_WRITE_SECONDS)
        await asyncio.wait_for(resp.write_eof(), LAST_WRITE_SECONDS)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass
    transport = request.transport
    if transport is not None:
        # close() lets what is buffered (at most the write limit plus the last event) go out to a
        # client still reading; one that never reads is dropped after ABORT_AFTER_SECONDS
        transport.close()
        asyncio.get_running_loop().call_later(ABORT_AFTER_SECONDS, transport.abort)
    return resp
