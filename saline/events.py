"""The master's event bus: Salt-shaped tags and data, delivered to local subscribers.

Tags follow Salt: ``salt/job/<jid>/new``, ``salt/job/<jid>/ret/<id>``, ``salt/auth``,
``salt/minion/<id>/start``, ``salt/key``. Every event's data carries ``_stamp`` (naive UTC
ISO-8601, as Salt writes it). Subscribers (the CLI waiting for a job, ``state.event``) get events
whose tag starts with their prefix; a subscriber that falls too far behind loses events rather
than slowing the master, and is told so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat()


def job_new_tag(jid: str) -> str:
    return f"salt/job/{jid}/new"


def job_ret_tag(jid: str, minion_id: str) -> str:
    return f"salt/job/{jid}/ret/{minion_id}"


@dataclass
class Subscription:
    prefix: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=100_000))
    overflowed: int = 0


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []

    def subscribe(self, prefix: str = "") -> Subscription:
        sub = Subscription(prefix)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def listened(self) -> bool:
        """Whether anyone is subscribed at all."""
        return bool(self._subs)

    def wants(self, tag: str) -> bool:
        """Whether an event with this tag would reach anyone (so it need not be built otherwise)."""
        return any(tag.startswith(sub.prefix) for sub in self._subs)

    def fire(self, tag: str, data: dict[str, Any]) -> dict[str, Any]:
        """Stamp and deliver an event; returns it as ``{"tag", "data"}``."""
        if "_stamp" not in data:  # a stamped dict is not copied: the return path fires thousands a second
            data = {**data, "_stamp": stamp()}
        event = {"tag": tag, "data": data}
        for sub in self._subs:
            if tag.startswith(sub.prefix):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.overflowed += 1
        return event
