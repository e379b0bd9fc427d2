"""The one interface every returner implements, and the declaration of its options.

A returner only knows how to talk to its backend. Batching, retries, the outbox, dead letters and
health figures live in the master (``saline.master.delivery``), which calls the batch forms
(``returns``, ``save_loads``, ``event_returns``). Salt's single-item names (``returner``,
``save_load``, ``event_return``) are kept as thin wrappers so Salt habits carry over.

A returner declares which parts it has by overriding them; ``supports()`` tells the framework.
A returner without a read side cannot be chosen as ``master_job_cache``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from saline.jid import gen_jid


class ReturnerError(Exception):
    """A returner failed; the message names the returner and the cause in one line."""


class BackendUnavailable(ReturnerError):
    """The backend cannot be reached (down, refused, timed out): retry later."""


class MissingDriver(ReturnerError):
    """The returner's client library is not installed."""


class Unsupported(ReturnerError):
    """The returner has no such function (e.g. no read side)."""


@dataclass(frozen=True)
class Option:
    """One option a returner takes, declared as data.

    ``name`` is the internal name (the key used in ``--return_kwargs``); ``key`` is the config
    suffix when it differs (``<prefix>.<key>`` in the config file).
    """

    name: str
    type: type = str
    default: Any = None
    required: bool = False
    secret: bool = False
    doc: str = ""
    key: str | None = None

    @property
    def suffix(self) -> str:
        return self.key or self.name


_WRITE = ("returns", "save_loads", "event_returns")
_READ = ("get_load", "get_jid", "get_jids")


class Returner:
    """Base class of every returner. Subclasses set the class attributes and override methods."""

    name: ClassVar[str] = ""
    #: the prefix of its config keys when it differs from ``name`` (``returner.postgres``)
    prefix: ClassVar[str] = ""
    #: the pip extra that installs its driver (``saline[mysql]``)
    extra: ClassVar[str | None] = None
    options: ClassVar[tuple[Option, ...]] = ()
    #: one line for the docs and ``returners.status``
    summary: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        self.opts = dict(options)
        self.master_opts: Mapping[str, Any] = master_opts or {}

    # -- what it has ----------------------------------------------------------------------
    @classmethod
    def supports(cls, method: str) -> bool:
        """Whether the subclass provides ``method`` (rather than the base's refusal)."""
        mine = getattr(cls, method, None)
        base = getattr(Returner, method, None)
        return mine is not None and mine is not base

    @classmethod
    def has_read_side(cls) -> bool:
        return all(cls.supports(m) for m in _READ)

    @classmethod
    def option_prefix(cls) -> str:
        return cls.prefix or cls.name

    def _refuse(self, what: str) -> ReturnerError:
        return Unsupported(f"returner {self.name} has no {what}")

    # -- write side: batch forms (the fast path) ------------------------------------------------
    def returns(self, rets: list[dict[str, Any]]) -> None:
        """Store job returns (Salt's ``returner`` for each)."""
        raise self._refuse("returner")

    def returns_first(self, rets: list[dict[str, Any]]) -> None:
        """Store job returns never handed to this returner before, so none of them can be stored
        already: a returner that looks up what a batch would duplicate may skip the lookup. The
        delivery calls ``returns`` for anything retried or possibly sent before."""
        self.returns(rets)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        """Store job loads: ``(jid, load, minions)`` each; a duplicate jid keeps the first load."""
        raise self._refuse("save_load")

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        """Store events, each ``{"tag": str, "data": dict}``."""
        raise self._refuse("event_return")

    def save_minions(self, jid: str, minions: list[str], syndic_id: str | None = None) -> None:
        """Store the minions a job expects. Backends without a place for it keep nothing (as Salt)."""

    def prep_jid(self, nocache: bool = False, passed_jid: str | None = None) -> str:
        return passed_jid or gen_jid(bool(self.master_opts.get("unique_jid")))

    # -- Salt's single-item names ------------------------------------------------------------
    def returner(self, ret: dict[str, Any]) -> None:
        self.returns([ret])

    def save_load(self, jid: str, load: dict[str, Any], minions: list[str] | None = None) -> None:
        self.save_loads([(jid, load, minions)])

    def event_return(self, events: list[dict[str, Any]]) -> None:
        self.event_returns(events)

    # -- read side ----------------------------------------------------------------------------
    def get_load(self, jid: str) -> dict[str, Any]:
        raise self._refuse("read side (get_load)")

    def get_jid(self, jid: str) -> dict[str, Any]:
        raise self._refuse("read side (get_jid)")

    def get_fun(self, fun: str) -> dict[str, Any]:
        raise self._refuse("get_fun")

    def get_jids(self) -> dict[str, Any]:
        raise self._refuse("read side (get_jids)")

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        raise self._refuse("get_jids_filter")

    def get_minions(self) -> list[str]:
        raise self._refuse("get_minions")

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        """Drop (or archive, with ``archive_jobs``) jobs older than ``keep_jobs_seconds``."""

    def init_schema(self) -> None:
        """Create the tables, indexes or folders the returner writes to (``returners.init``)."""
        raise self._refuse("schema to create")

    def check(self) -> None:
        """Raise ReturnerError when the backend cannot be used right now (the health check)."""

    def close(self) -> None:
        """Release connections; the returner may be used again afterwards (it reconnects)."""

    # -- helpers for subclasses ------------------------------------------------------------------
    @property
    def keep_jobs_seconds(self) -> int:
        return int(self.master_opts.get("keep_jobs_seconds") or 0)

    @property
    def master_id(self) -> str:
        return str(self.master_opts.get("master_id") or self.master_opts.get("id") or "")
