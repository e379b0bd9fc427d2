"""The outbox: the durable store between the master and its returners (see :mod:`.base`).

:func:`open_outbox` gives the implementation the configuration asks for: the SQLite file next to
the master (the embedded default, :mod:`.sqlite`) or, with ``nats_servers``, a JetStream stream
shared by several masters (:mod:`.jetstream`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from saline.master.outbox.base import (Burial, Outbox, OutboxError, Record, RecordTooLarge, Retry, Route,
                                       RouteEntry, Row, kwargs_key, route_key)
from saline.master.outbox.sqlite import SqliteOutbox, try_lock

__all__ = ["Burial", "Outbox", "OutboxError", "Record", "RecordTooLarge", "Retry", "Route", "RouteEntry", "Row",
           "SqliteOutbox", "kwargs_key", "open_outbox", "route_key", "try_lock"]


def open_outbox(opts: Mapping[str, Any], *, master: bool, serves: str | None = None, shared: bool = True) -> Outbox:
    """The outbox the configuration asks for. ``master``: the process that stores records (it
    holds the SQLite file's guard); otherwise a delivery worker. ``serves``: the job cache that is
    the outbox's own store. OutboxError (or ClusterError) with one line when it cannot be opened."""
    from saline.cluster.config import from_opts

    config = from_opts(opts)
    if config is None:
        return SqliteOutbox(Path(opts["cachedir"]) / "outbox.db", shared=shared, guard=master, serves=serves)
    from saline.cluster.bridge import shared as shared_bridge
    from saline.master.outbox.jetstream import JetStreamOutbox

    return JetStreamOutbox(config, shared_bridge(config), origin=str(opts.get("id") or ""), serves=serves,
                           keep_seconds=float(opts.get("keep_jobs_seconds") or 0),
                           batch_size=int(opts.get("returner_batch_size") or 4000),
                           ack_wait=float(opts.get("nats_ack_wait") or 60))
