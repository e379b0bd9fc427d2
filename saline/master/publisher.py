"""The master's publish socket, and who is listening on it.

The socket is an XPUB with ``XPUB_VERBOSE``: every subscription reaches the master with the
subscriber's CURVE key (``User-Id``) and the file descriptor of its connection (``SRCFD``), and a
socket monitor reports each connection that closes by the same descriptor. So the master knows,
at any moment, which minions can receive a job now; a job is never waited on for a minion that
has no connection (Salt's "Minion did not return. [Not connected]").

A publish is not queued for a minion that is not connected, so there are moments when jobs are
*held* instead of sent: just after a start (the accepted minions need up to ~2 s to reconnect),
while the socket is re-bound to drop a revoked key (ZeroMQ runs the ZAP check only when a
subscriber connects, so revoking means unbinding and binding again; the accepted minions come back
through ZAP, the revoked one does not), and just after a key is accepted (the new minion opens its
subscription only once it learns it was accepted). Each hold lasts until the minions awaited are
subscribed, or a few seconds at most: a hold delays publishes a little and loses none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

#: after re-binding the publish socket, jobs wait at most this long for the listening minions
REBIND_HOLD = 2.0
#: after a start, jobs wait at most this long for the accepted minions to subscribe again (their
#: ZeroMQ reconnect interval backs off to 2 s, plus up to 0.2 s of jitter, while the master is down)
START_HOLD = 3.0
#: after a key is accepted, jobs wait at most this long for that minion to subscribe
ACCEPT_HOLD = 2.0

_SRCFD = 2  # zmq_msg_get's ZMQ_SRCFD: the descriptor of the connection a message came from


class Publisher:
    """Sends jobs on the XPUB socket and tracks its subscribers; see the module docstring."""

    def __init__(self, socket: zmq.asyncio.Socket, key_owner: Callable[[str], str | None],
                 stats: dict[str, Any]) -> None:
        """``key_owner`` maps a subscriber's key to its minion id (None: not an accepted key)."""
        self.socket = socket
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.key_owner = key_owner
        self.stats = stats
        self.subscribers: dict[str, float] = {}  # key -> when it subscribed
        self._fd_key: dict[int, str] = {}         # connection descriptor -> key
        self._key_fds: dict[str, set[int]] = {}   # key -> its connections (two processes may hold one key)
        self._held: list[bytes] | None = None     # publishes waiting while held
        self._holds = 0
        self._monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    # -- sending ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
            self.stats["pub_held"] += 1
            return
        self.socket.send(data)

    def hold(self) -> None:
        self._holds += 1
        if self._held is None:
            self._held = []

    def release(self) -> int:
        """End one hold; when it was the last, send what was held. How many were sent."""
        self._holds -= 1
        if self._holds > 0 or self._held is None:
            return 0
        held, self._held = self._held, None
        for data in held:
            self.socket.send(data)
        return len(held)

    @property
    def holding(self) -> bool:
        return self._held is not None

    # -- who listens -----------------------------------------------------------------------------
    def connected_ids(self) -> set[str]:
        """The minion ids subscribed right now."""
        out = set()
        for key in self.subscribers:
            mid = self.key_owner(key)
            if mid is not None:
                out.add(mid)
        return out

    async def subscriptions(self) -> None:
        """Read the subscriptions: each carries the subscriber's key and connection."""
        while True:
            frame = await self.socket.recv(copy=False)
            if frame.bytes[:1] != b"\x01":
                continue  # an unsubscription: libzmq makes those without a key when a peer leaves
            try:
                key = frame.get("User-Id")
                fd = int(frame.get(_SRCFD))
            except (zmq.ZMQError, TypeError, ValueError):
                continue
            if key:
                self.subscribers[key] = time.monotonic()
                self._fd_key[fd] = key
                self._key_fds.setdefault(key, set()).add(fd)

    async def disconnections(self) -> None:
        """Forget a subscriber as soon as its connection closes."""
        while True:
            event = await recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                fd = int(event["value"])
                key = self._fd_key.pop(fd, None)
                if key is not None:
                    fds = self._key_fds.get(key, set())
                    fds.discard(fd)
                    if not fds:
                        self._key_fds.pop(key, None)
                        self.subscribers.pop(key, None)

    async def wait_for(self, awaited: set[str], limit: float, poll: float = 0.005) -> None:
        """Until every key in ``awaited`` (which may shrink meanwhile) is subscribed, at most ``limit`` s."""
        deadline = time.monotonic() + limit
        while not awaited <= self.subscribers.keys() and time.monotonic() < deadline:
            await asyncio.sleep(poll)

    async def rebind(self, keep: Callable[[str], bool]) -> tuple[int, int, int, float]:
        """Drop every subscriber by binding the socket again; hold publishes until the ones that
        ``keep`` says may come back are subscribed again. (back, awaited, held, milliseconds)."""
        started = time.monotonic()
        awaited = {key for key in self.subscribers if keep(key)}
        self.subscribers = {}
        self._fd_key = {}
        self._key_fds = {}
        self.hold()
        try:
            self.socket.unbind(self.endpoint)
            while True:
                try:
                    self.socket.bind(self.endpoint)
                    break
                except zmq.ZMQError as exc:  # the old listener closes in libzmq's I/O thread
                    if exc.errno != zmq.EADDRINUSE or time.monotonic() - started > 10:
                        raise
                    await asyncio.sleep(0.005)
            await self.wait_for(awaited, REBIND_HOLD, poll=0.002)
        except zmq.ZMQError as exc:
            log.error("cannot re-bind the publish socket %s: %s", self.endpoint, exc)
        finally:
            held = self.release()
        took = (time.monotonic() - started) * 1000
        self.stats["pub_rebinds"] += 1
        self.stats["pub_rebind_ms"] = round(took, 1)
        return len(awaited & self.subscribers.keys()), len(awaited), held, took

    def close(self) -> None:
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(0)
        self.socket.close(0)
