"""The outbox: the durable store between the master and its returners (see :mod:`.base`).

:func:`open_outbox` gives the implementation the configuration asks for: the SQLite file next to
the master (the embedded default, :mod:`.sqlite`) or, with ``nats_servers``, a JetStream stream
shared by several masters (:mod:`.jetstream`).
"""

from __future__ import annotations

from saline.master.outbox.base import (Burial, Outbox, OutboxError, Record, Retry, Route, RouteEntry, Row,
                                       kwargs_key, route_key)
from saline.master.outbox.sqlite import SqliteOutbox, try_lock

__all__ = ["Burial", "Outbox", "OutboxError", "Record", "Retry", "Route", "RouteEntry", "Row", "SqliteOutbox",
           "kwargs_key", "route_key", "try_lock"]
