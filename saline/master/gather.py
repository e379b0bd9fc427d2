"""Publish a function to a list of minions and collect their returns: the master's own small jobs
(``saltutil.find_job`` for a CLI waiting on a job, ``manage.status``' ``test.ping`` and the like)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from saline.jid import gen_jid


async def gather_returns(master: Any, targets: list[str], fun: str, arg: list[Any], timeout: float) -> dict[str, Any]:
    """Publish ``fun`` to ``targets`` (a list) and collect ``{minion: return}`` for up to ``timeout`` s."""
    jid = gen_jid(bool(master.opts.get("unique_jid")))
    sub = master.events.subscribe(f"salt/job/{jid}/ret/")
    out: dict[str, Any] = {}
    try:
        published = master.publish({"jid": jid, "tgt": targets, "tgt_type": "list", "fun": fun, "arg": arg,
                                    "user": "root"})
        pending = set(published["minions"])
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(sub.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            mid = event["data"].get("id")
            pending.discard(mid)
            out[mid] = event["data"].get("return")
    finally:
        master.events.unsubscribe(sub)
    return out
