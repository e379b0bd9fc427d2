"""Salt's ``multi_returner``: a job cache that writes to several returners at once."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from saline.config import ConfigError
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError, Unsupported

log = logging.getLogger(__name__)


class _either:
    """A method that works on the class (``Cls.supports(m)``) and, called on an instance, can
    answer for that instance: a multi_returner supports what its configured returners support."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        return self.func.__get__(obj if obj is not None else owner, owner)


class MultiReturner(Returner):
    """Salt's ``multi_returner``: fans a job cache out to several returners.

    Configured as in Salt, with the master's top-level key::

        master_job_cache: multi_returner
        multi_returner:
          - saline_cache
          - mysql

    (The key is read from the top level of the master config because that is where Salt reads
    it; ``multi_returner.multi_returner`` and ``--return_kwargs '{"multi_returner": [...]}'``
    work too.) Each named returner is created with its own options, as if chosen alone.

    Writes (returns, loads, events, minions, endtimes) go to every returner that has them,
    each batch to each returner; when some fail, the others still get the batch and the
    error names the failing ones (``BackendUnavailable`` when all failures are of that kind,
    so the batch is retried: returners that already stored it ignore the repeat where they can).
    Reads merge as Salt does: ``get_load``, ``get_jid`` and ``get_jids`` ask every returner with a
    read side and merge the answers (later returners win on the same key); ``get_fun``,
    ``get_minions`` and ``get_jids_filter`` come from the first returner that has them.
    ``prep_jid`` takes the first returner's jid and passes it on to the others;
    ``clean_old_jobs``, ``init_schema``, ``check`` and ``close`` run on all. A function is
    there when one of the configured returners has it (``supports`` asks them).

    Example: keep the fast local cache for the CLI and a copy in MySQL for reports::

        multi_returner: [saline_cache, mysql]
    """

    name = "multi_returner"
    summary = "Salt's multi_returner: one job cache that writes to several returners and merges reads"
    options = (
        Option("multi_returner", list, None,
               doc="the returners to fan out to; Salt's top-level master key `multi_returner: [a, b]`"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        names = self.opts.get("multi_returner")
        if names is None:
            names = self.master_opts.get("multi_returner")
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not names:
            raise ConfigError("returner multi_returner: set multi_returner: [returner, ...] in the master config")
        if "multi_returner" in names:
            raise ConfigError("returner multi_returner: multi_returner cannot contain itself")
        from saline.returners import registry

        # master-side, as in Salt: each returner reads its own options from the master config
        self.returners: list[Returner] = [registry.create(str(n), self.master_opts) for n in names]

    # -- what it has ----------------------------------------------------------------------------
    @_either
    def supports(self_or_cls: Any, method: str) -> bool:  # type: ignore[override]
        """On an instance: whether one of its returners has ``method``."""
        if isinstance(self_or_cls, type):
            return Returner.supports.__func__(self_or_cls, method)  # type: ignore[attr-defined]
        return any(r.supports(method) for r in self_or_cls.returners)

    @_either
    def has_read_side(self_or_cls: Any) -> bool:  # type: ignore[override]
        if isinstance(self_or_cls, type):
            return Returner.has_read_side.__func__(self_or_cls)  # type: ignore[attr-defined]
        return any(r.has_read_side() for r in self_or_cls.returners)

    def _having(self, method: str) -> list[Returner]:
        found = [r for r in self.returners if r.supports(method)]
        if not found:
            raise Unsupported(f"returner multi_returner: none of {', '.join(r.name for r in self.returners)} has {method}")
        return found

    def _all(self, method: str, *args: Any, required: bool = True) -> None:
        """Call ``method`` on every returner that has it; report every failure in one line."""
        targets = self._having(method) if required else [r for r in self.returners if r.supports(method)]
        failures: list[ReturnerError] = []
        for returner in targets:
            try:
                getattr(returner, method)(*args)
            except ReturnerError as exc:
                failures.append(exc)
        if failures:
            detail = "; ".join(str(f).removeprefix("returner ") for f in failures)
            kind = BackendUnavailable if all(isinstance(f, BackendUnavailable) for f in failures) else ReturnerError
            raise kind(f"returner multi_returner: {detail}")

    # -- write side -----------------------------------------------------------------------------
    def prep_jid(self, nocache: bool = False, passed_jid: str | None = None) -> str:
        jid = passed_jid
        for returner in self.returners:
            if jid is None:
                jid = returner.prep_jid(nocache=nocache)
            else:
                returner.prep_jid(nocache=nocache, passed_jid=jid)
        return jid or super().prep_jid(nocache, passed_jid)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        self._all("returns", rets)

    def save_loads(self, loads: list[tuple[str, dict[str, Any], list[str] | None]]) -> None:
        self._all("save_loads", loads)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        self._all("event_returns", events)

    def save_minions(self, jid: str, minions: list[str], syndic_id: str | None = None) -> None:
        self._all("save_minions", jid, minions, syndic_id, required=False)

    def update_endtime(self, jid: str, time_: str) -> None:
        self._all("update_endtime", jid, time_, required=False)

    def get_endtime(self, jid: str) -> str | bool:
        for returner in self.returners:
            getter = getattr(returner, "get_endtime", None)
            if getter is not None:
                found = getter(jid)
                if found:
                    return found
        return False

    # -- read side ------------------------------------------------------------------------------
    def _merged(self, method: str, *args: Any) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for returner in self._having(method):
            merged.update(getattr(returner, method)(*args))
        return merged

    def get_load(self, jid: str) -> dict[str, Any]:
        return self._merged("get_load", jid)

    def get_jid(self, jid: str) -> dict[str, Any]:
        return self._merged("get_jid", jid)

    def get_jids(self) -> dict[str, Any]:
        return self._merged("get_jids")

    def get_fun(self, fun: str) -> dict[str, Any]:
        return self._having("get_fun")[0].get_fun(fun)

    def get_jids_filter(self, count: int, filter_find_job: bool = True) -> list[dict[str, Any]]:
        return self._having("get_jids_filter")[0].get_jids_filter(count, filter_find_job)

    def get_minions(self) -> list[str]:
        return self._having("get_minions")[0].get_minions()

    # -- housekeeping ---------------------------------------------------------------------------
    def clean_old_jobs(self) -> None:
        self._all("clean_old_jobs", required=False)

    def init_schema(self) -> None:
        self._all("init_schema")

    def check(self) -> None:
        self._all("check", required=False)

    def close(self) -> None:
        for returner in self.returners:
            returner.close()
