"""The outbox seam: what the master stores for its returners, and how their workers take it.

The master hands the outbox :class:`Record` s: one per return, per job load, per event, each with
its :data:`Route` (the returners it goes to, each with the ``ret_config``/``ret_kwargs`` it is
delivered with). A record is stored ONCE, however many returners it goes to; each returner reads
the stream of records through a cursor of its own and settles what it took:

* :meth:`Outbox.put` stores records durably: when it returns they survive a crash of the master
  (a return is acknowledged to its minion only after that).
* :meth:`Outbox.take` gives a returner's worker up to ``limit`` :class:`Row` s: the records routed
  to it past its cursor, and those whose retry is due. They stay stored until settled.
* :meth:`Outbox.settle` records, in one step, what the worker did with what it took: delivered
  (the cursor moves past them), to retry later (with a delay and the error), or buried as dead
  letters (:meth:`Outbox.replay` brings those back).

Two implementations sit behind this interface: :mod:`.sqlite` (one file next to the master, the
embedded default) and :mod:`.jetstream` (a NATS JetStream stream with one durable consumer per
returner, shared by several masters). The master and the delivery workers do not know which one
they have.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, Mapping, NamedTuple, Sequence

KINDS = ("ret", "load", "event")

#: one returner a record goes to: (name, ret_config, ret_kwargs)
RouteEntry = tuple[str, str | None, Mapping[str, Any] | None]
#: every returner a record goes to (a returner appears at most once)
Route = tuple[RouteEntry, ...]


class OutboxError(Exception):
    """The outbox cannot be opened or written; the message is one line."""


class RecordTooLarge(OutboxError):
    """Some records of a ``put`` are larger than this outbox can ever store (nothing of the
    ``put`` was stored): ``indexes`` are their positions in the records given, ``limit`` the most
    bytes one record may have."""

    def __init__(self, indexes: list[int], sizes: list[int], limit: int, bound: str) -> None:
        self.indexes, self.sizes, self.limit, self.bound = indexes, sizes, limit, bound
        super().__init__(f"{len(indexes)} record(s) larger than the {limit / 1048576:.1f} MiB one record may have "
                         f"(largest {max(sizes) / 1048576:.1f} MiB; {bound})")

    def why(self, index: int) -> str:
        """One line for the record at ``indexes[index]``."""
        return (f"{self.sizes[index] / 1048576:.1f} MiB, more than the {self.limit / 1048576:.1f} MiB one record "
                f"may have ({self.bound})")


class Record(NamedTuple):
    """One thing to store once and deliver to every returner of its route.

    ``payload`` by kind: ``ret`` the return dict; ``load`` ``{"jid", "load", "minions"}``;
    ``event`` ``{"tag", "data"}``. ``jid``/``mid`` name a return (``mid`` the minion id) or a load
    (``jid``); ``mid`` is the tag of an event.
    """

    kind: str
    payload: Any
    route: Route
    jid: str | None = None
    mid: str | None = None
    fun: str | None = None


class Row(NamedTuple):
    """A record as one returner's worker takes it, with its delivery state for that returner."""

    seq: int
    returner: str
    kind: str
    payload: Any
    ret_config: str | None
    ret_kwargs: dict | None
    enqueued: float
    attempts: int
    next_try: float
    first_failure: float | None
    last_error: str | None
    #: whether this returner may have been handed the record before (a retry, or a record an
    #: earlier process may have sent before it could settle it); a record surely seen for the
    #: first time needs no check for what it would duplicate
    maybe_delivered: bool = True


class Retry(NamedTuple):
    """Rows that failed this time: tried again after ``delay`` seconds."""

    seqs: Sequence[int]
    error: str
    delay: float


class Burial(NamedTuple):
    """Rows that kept failing: moved to the dead letters."""

    seqs: Sequence[int]
    error: str


def kwargs_key(kwargs: Mapping[str, Any] | None) -> str:
    """A canonical text for ``ret_kwargs``: equal maps in any key order give the same text."""
    return json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""


def route_key(route: Route) -> str:
    """A canonical text for a route (the same returners with the same options, in any order)."""
    return json.dumps(sorted([name, rc or "", kwargs_key(kw)] for name, rc, kw in route))


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Outbox(ABC):
    """The seam; see the module docstring. Implementations are safe to use from several threads."""

    #: the returner whose store this outbox is itself (the job cache), or None
    serves: str | None = None

    @property
    def keeps_returns(self) -> bool:
        """Whether every return put here stays readable (``returned``) for as long as its job is
        known (``keep_jobs``), so the master need not keep a list of them besides."""
        return False

    def returned(self, jid: str) -> set[str]:
        """The minions whose return of ``jid`` is stored (when ``keeps_returns``)."""
        return set()

    @abstractmethod
    def put(self, records: Sequence[Record]) -> None:
        """Store ``records``; when this returns they survive a crash of the master."""

    @abstractmethod
    def take(self, returner: str, limit: int, after: int | None = None) -> list[Row]:
        """Up to ``limit`` rows for ``returner``, oldest first: due retries and records past its
        cursor (only those past ``after`` when given: a batch filling up). A take without
        ``after`` starts a new batch: what an earlier one took and never settled (its worker gave
        up on it, say when the store could not be read or written) is to be delivered again."""

    @abstractmethod
    def settle(self, returner: str, taken: Sequence[Row], done: Sequence[int] = (),
               retries: Sequence[Retry] = (), burials: Sequence[Burial] = ()) -> None:
        """What the worker did with the rows it ``took`` (every one of them must be in ``done``, a
        retry or a burial), in one step: nothing is lost or delivered twice by a crash between."""

    @abstractmethod
    def next_due(self, returner: str) -> float | None:
        """When ``returner`` next has something to take (now, or its earliest retry); None: nothing."""

    @abstractmethod
    def has_pending(self, returner: str | None = None) -> bool:
        """Whether anything (for ``returner``, when given) is still to deliver."""

    @abstractmethod
    def counts(self) -> dict[str, dict[str, Any]]:
        """Per returner: ``pending``, ``retrying``, ``dead``, ``delivered``, ``buried``,
        ``last_error``, ``last_error_time``, ``last_success_time``, ``oldest_enqueued``."""

    @abstractmethod
    def replay(self, returner: str) -> int:
        """Send the dead letters of ``returner`` again; how many."""

    @abstractmethod
    def dead_letters(self, returner: str, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest ``limit`` dead letters of ``returner``, decoded."""

    @abstractmethod
    def close(self) -> None:
        """Release the outbox (a later call raises OutboxError)."""
