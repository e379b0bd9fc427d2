"""Reading everything a JetStream stream holds under a subject (from a moment on), completely.

Used where a reader must not take "no message came" for "nothing is stored": a master catching up
after a reconnect (:mod:`saline.cluster.link`) and the nats returner's read side.

* A pull consumer, not a push one: a push consumer starts sending before the client has subscribed
  to its delivery subject, and what a server drops meanwhile looks like an empty stream. A fetch is
  a request whose reply inbox is subscribed first.
* The consumer counts the messages up front, once its copy of the stream is current. JetStream may
  place a one-replica consumer on any node of the stream, and a node that has just restarted lacks
  exactly what was stored while it was down.

A read that cannot be completed raises; the caller decides whether to try again.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any, Callable

#: messages asked for per fetch, and how long a fetch may wait for the messages counted
BATCH = 256
WAIT = 5.0


class StaleCopy(ConnectionError):
    """The consumer sits on a copy of the stream that is still catching up."""


async def read_stream(js: Any, stream: str, subject: str, handle: Callable[[Any], Any],
                      since: float | None = None, inactive: float = 60.0) -> int:
    """Hand ``handle`` (a function or a coroutine function) every message of ``stream`` under
    ``subject``, oldest first, stored since the time ``since`` (everything when None), and
    what comes while reading; how many. Raises StaleCopy, or nats-py's errors."""
    from nats.js import api

    start = None if since is None else datetime.datetime.fromtimestamp(since, tz=datetime.timezone.utc)
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.ALL if start is None else api.DeliverPolicy.BY_START_TIME,
        opt_start_time=start, ack_policy=api.AckPolicy.NONE, num_replicas=1, mem_storage=True,
        inactive_threshold=inactive)  # the server drops it by itself if this reader vanishes
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    name = None
    n = 0
    try:
        info = await sub.consumer_info()
        name = info.name
        await _check_current(js, stream, info)
        left = (await sub.consumer_info()).num_pending  # counted on a current copy
        while left > 0:
            for msg in await sub.fetch(min(left, BATCH), timeout=WAIT):
                n += 1
                result = handle(msg)
                if asyncio.iscoroutine(result):
                    await result
                left = msg.metadata.num_pending
        return n
    finally:
        try:
            await sub.unsubscribe()
            if name is not None:
                await js.delete_consumer(stream, name)
        except Exception:  # ephemeral: the server drops it after ``inactive`` anyway
            pass


async def _check_current(js: Any, stream: str, info: Any) -> None:
    host = info.cluster.leader if info.cluster is not None else None
    if host is None:
        return  # a single server: its copy is the stream
    cluster = (await js.stream_info(stream)).cluster
    if cluster is None or cluster.leader == host:
        return
    if not any(r.name == host and r.current for r in cluster.replicas or ()):
        raise StaleCopy(f"the copy of {stream} on {host} is still catching up")
