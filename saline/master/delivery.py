"""Delivery: one worker per returner, draining the outbox in batches, with retries.

The master turns each return, job load and event into one :class:`~saline.master.outbox.Record`
with its route, the returners it goes to (``records_for_return``, ``items_for_return``,
``items_for_load``, ``items_for_event``), and hands them to ``submit``, which stores them durably
(once each, :mod:`saline.master.outbox`) and wakes the workers concerned. A worker:

1. takes up to ``returner_batch_size`` due items, oldest first. When fewer are there, it waits for
   more, but never past ``returner_batch_wait_ms`` after the oldest of them was stored, so a lone
   item is delayed by that much at most;
2. groups them by (kind, ``ret_config``, ``ret_kwargs``) and calls the batch form (``returns``,
   ``save_loads``, ``event_returns``; ``save_minions`` item by item) on a returner instance made by
   ``registry.create`` and kept per (``ret_config``, ``ret_kwargs``): one pooled connection each,
   closed after ``IDLE_CLOSE_SECONDS`` unused;
3. settles the batch in one step (:meth:`~saline.master.outbox.Outbox.settle`): what was stored
   moves its cursor on; what failed is retried after an exponential backoff with full jitter
   (a random delay in [0, min(0.2 s * 2**attempts, ``returner_retry_max_seconds``)]); when nothing
   in the batch got through, the worker itself pauses that long, so a dead backend is not hammered
   with every queued item. A batch that fails with anything but :class:`BackendUnavailable` is
   split in halves, again and again, so one poison item cannot hold back the others; it ends up
   alone, and once its first failure is older than ``returner_dead_after_seconds`` it goes to the
   dead letters (``replay`` brings them back). A :class:`ConfigError` from creating the returner
   (a wrong option) is handled the same way: the items wait until the config is fixed.

Each failed batch logs ONE line at WARNING naming the returner and the cause, with secret option
values scrubbed (a traceback only at DEBUG). Nothing is dropped silently: an item leaves the outbox
only when a returner stored it or when it is buried as a dead letter, which is counted and logged.

Salt's ``event_return_queue`` / ``event_return_queue_max_seconds`` map onto the batching of event
items: when a worker has only events due and ``event_return_queue`` is N > 0, it holds them until
N are there (at most ``returner_batch_size``) or the oldest has waited
``event_return_queue_max_seconds`` (without that limit, until N are there, as Salt does; ``flush``
sends them at once). The events are in the outbox meanwhile, so holding them loses nothing; when a return or load for
the same returner comes in, the held events go along with it. With
``event_return_queue`` 0 (Salt's default: send at once), events batch like returns, within
``returner_batch_wait_ms``.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import logging
import math
import random
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from saline.config import ConfigError, returner_names
from saline.master.metrics import BatchFigures
from saline.master.outbox import Burial, Outbox, OutboxError, Record, Retry, Route, Row, kwargs_key
from saline.master.remote_worker import RemoteWorker
from saline.returners import registry
from saline.returners.base import BackendUnavailable, Returner
from saline.returners.options import MASK, masked, resolve, scrub, secret_values

log = logging.getLogger(__name__)

#: a returner instance unused this long is closed (its connection released)
IDLE_CLOSE_SECONDS = 60.0
#: the first retry delay bound; it doubles with each attempt up to ``returner_retry_max_seconds``
RETRY_BASE_SECONDS = 0.2
#: a delivery process is started again at most this often
RESTART_MIN_SECONDS = 1.0
#: the window of the throughput figure
THROUGHPUT_WINDOW = 60.0
#: routes remembered, at most (jobs with their own --return_kwargs each add one)
ROUTES_REMEMBERED = 10_000

_UNAVAILABLE = (BackendUnavailable, ConnectionError, TimeoutError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kwargs(value: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """``--return_kwargs`` as a dict (the CLI may pass its JSON text); None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--return_kwargs is not valid JSON: {exc.msg}") from None
    if not isinstance(value, Mapping):
        raise ConfigError("--return_kwargs must be a JSON object of option: value")
    return dict(value) or None


def backoff(attempts: int, cap: float) -> float:
    """A full-jitter delay for an item that failed ``attempts`` times before this failure."""
    bound = min(cap, RETRY_BASE_SECONDS * 2 ** min(attempts, 62))
    return random.uniform(0.0, max(bound, 0.0))


class Delivery:
    """The returner workers of one master; see the module docstring."""

    def __init__(self, master_opts: Mapping[str, Any], outbox: Outbox, processes: bool = False,
                 workers: bool = True) -> None:
        """``processes``: each returner's worker runs in its own process
        (:mod:`saline.master.returner_process`; the outbox must then be opened shared).
        ``workers``: False when others deliver (a cluster's ``saline-deliver`` workers, with
        ``master_delivers: False``): this one only stores and reports."""
        self.opts = master_opts
        self.outbox = outbox
        self.processes = processes
        self.workers = workers
        self.batch_size = max(1, int(master_opts.get("returner_batch_size") or 4000))
        self.batch_wait = max(0.0, float(master_opts.get("returner_batch_wait_ms") or 0) / 1000.0)
        self.retry_max = max(0.0, float(master_opts.get("returner_retry_max_seconds") or 60))
        self.dead_after = float(master_opts.get("returner_dead_after_seconds") or 86400)
        self.event_queue = int(master_opts.get("event_return_queue") or 0)
        self.event_queue_seconds = float(master_opts.get("event_return_queue_max_seconds") or 0)
        self.whitelist = list(master_opts.get("event_return_whitelist") or [])
        self.blacklist = list(master_opts.get("event_return_blacklist") or [])
        self.idle_close = IDLE_CLOSE_SECONDS
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._classes: dict[str, type[Returner]] = {}
        self._support: dict[tuple[str, str], bool] = {}
        self._routes: dict[Any, list[Route]] = {}
        self._routes_by_id: dict[int, tuple[Any, str, list[Route]]] = {}
        self._stored_in_place = 0  # records the outbox keeps as the job cache (nothing to deliver)
        self._checked: set[tuple[str, str, str]] = set()
        self._started = False
        self._flushing = 0
        registry.load_dirs(list(master_opts.get("returner_dirs") or []))
        self.event_names: list[str] = []
        for name in returner_names(master_opts.get("event_return")):
            if not self._class(name).supports("event_returns"):
                raise ConfigError(f"option 'event_return': returner {name} has no event_return")
            self.event_names.append(name)
        self._event_route: Route = tuple((n, None, None) for n in self.event_names)

    # -- what to send where -------------------------------------------------------------------
    def _class(self, name: str) -> type[Returner]:
        cls = self._classes.get(name)
        if cls is None:
            cls = self._classes[name] = registry.get_class(name)  # ConfigError when unknown
        return cls

    def _supports(self, name: str, method: str) -> bool:
        """``supports`` of the returner class, remembered: asked for every return."""
        key = (name, method)
        found = self._support.get(key)
        if found is None:
            found = self._support[key] = self._class(name).supports(method)
        return found

    def _route(self, method: str, parts: Sequence[tuple[Sequence[str], str | None, Any]]) -> list[Route]:
        """The routes for (names, ret_config, ret_kwargs) parts: the returners that have ``method``,
        each once per route (a returner named twice with other options gets a second route).
        Remembered: the master builds the same few routes for every return, from the same
        ``parts`` object (its own cache), which is recognised without a look inside."""
        hit = self._routes_by_id.get(id(parts))
        if hit is not None and hit[0] is parts and hit[1] == method:
            return hit[2]
        key = (method, tuple((tuple(names), rc or "", kwargs_key(kw) if isinstance(kw, Mapping) else str(kw or ""))
                             for names, rc, kw in parts))
        found = self._routes.get(key)
        if found is None:
            routes: list[list[tuple[str, str | None, Any]]] = []
            for names, rc, kw in parts:
                kwargs = _kwargs(kw)
                for name in names:
                    if not self._supports(name, method):
                        continue
                    for route in routes:  # the first route that does not have this returner yet
                        if all(entry[0] != name for entry in route):
                            route.append((name, rc or None, kwargs))
                            break
                    else:
                        routes.append([(name, rc or None, kwargs)])
            found = self._routes[key] = [tuple(r) for r in routes] or [()]
        if len(self._routes_by_id) > ROUTES_REMEMBERED:  # many jobs with their own --return_kwargs
            self._routes_by_id.clear()
            self._routes.clear()
        self._routes_by_id[id(parts)] = (parts, method, found)  # holds ``parts``: its id stays its own
        return found

    def records_for_return(self, parts: Sequence[tuple[Sequence[str], str | None, Any]], ret: dict) -> list[Record]:
        """The record(s) of one return for the job's routes ``[(names, ret_config, ret_kwargs)]``:
        one record, stored once for every returner (a second only when a returner is named twice
        with other options). ConfigError for an unknown returner."""
        jid, mid, fun = ret.get("jid"), ret.get("id"), ret.get("fun")
        routes = self._route("returns", parts)
        out = [Record("ret", ret, routes[0], jid, mid, fun if isinstance(fun, str) else None)]
        if len(routes) > 1:
            out += [Record("ret", ret, route, jid, mid, None) for route in routes[1:]]
        return out

    def items_for_return(self, names: list[str], ret: dict, ret_config: str | None = None,
                         ret_kwargs: Mapping[str, Any] | str | None = None) -> list[Record]:
        """The record of a return for the named returners (with these options)."""
        return self.records_for_return([(names, ret_config, ret_kwargs)], ret)

    def items_for_load(self, names: list[str], jid: str, load: dict, minions: list[str] | None,
                       ret_config: str | None = None, ret_kwargs: Mapping[str, Any] | str | None = None) -> list[Record]:
        """The record of a job's load for the named returners that store loads. Called at publish
        time, it also resolves each returner's options (once per combination), so an unknown
        returner, a missing driver or a bad ``--return_kwargs`` is a ConfigError for the CLI, not a
        retry loop later."""
        kwargs = _kwargs(ret_kwargs)
        for name in names:
            self.validate(name, ret_config, kwargs)
        payload = {"jid": jid, "load": load, "minions": minions}
        return [Record("load", payload, route, jid) for route in self._route("save_loads", [(names, ret_config, kwargs)])
                if route]

    def items_for_event(self, tag: str, data: dict) -> list[Record]:
        """The record of an event for the ``event_return`` returners, when the tag passes
        ``event_return_whitelist`` (if set) and not ``event_return_blacklist`` (fnmatch globs)."""
        if not self.event_names:
            return []
        if self.whitelist and not any(fnmatch.fnmatch(tag, g) for g in self.whitelist):
            return []
        if any(fnmatch.fnmatch(tag, g) for g in self.blacklist):
            return []
        return [Record("event", {"tag": tag, "data": data}, self._event_route, None, tag)]

    def validate(self, name: str, ret_config: str | None = None, ret_kwargs: dict | None = None) -> None:
        """Raise ConfigError when ``name`` with these options cannot be created."""
        key = (name, ret_config or "", kwargs_key(ret_kwargs))
        if key in self._checked:
            return
        resolve(self._class(name), self.opts, ret_config, ret_kwargs)
        self._checked.add(key)

    # -- running --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a worker for every returner that has items waiting (from before a restart)."""
        if not self.workers:
            return
        with self._lock:
            self._started = True
        for name, c in self.outbox.counts().items():
            if c["pending"]:
                self._worker(name).wake()

    def start_one(self, name: str) -> None:
        """Start the worker of ``name`` only (in a returner's own process)."""
        with self._lock:
            self._started = True
        self._worker(name).wake()

    def wake(self, name: str, submitted: int = 0, not_events: int = 0) -> None:
        """Tell the worker of ``name`` that items were put (by another process)."""
        if self._started:
            self._worker(name).wake(submitted, not_events)

    def add_flushing(self, delta: int) -> None:
        """A flush began (+1) or ended (-1): held events go at once meanwhile."""
        with self._lock:
            self._flushing += delta
            workers = list(self._workers.values())
        for w in workers:
            w.flushing(delta)

    def batch_figures(self) -> dict[str, dict[str, Any]]:
        """Per returner with a worker: its :class:`~saline.master.metrics.BatchFigures` as data (a
        delivery process's as of its last ``figures`` answer: call ``status`` first)."""
        with self._lock:
            workers = dict(self._workers)
        return {name: w.batch_figures() for name, w in workers.items()}

    def worker_figures(self, name: str) -> tuple[float, float]:
        """(throughput, paused_until) of the worker of ``name``; zeros when it has none."""
        with self._lock:
            w = self._workers.get(name)
        return w.figures() if w is not None else (0.0, 0.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Let each worker finish the batch in flight, then close its returner connections."""
        with self._lock:
            self._started = False
            workers = list(self._workers.values())
            self._workers.clear()
        for w in workers:
            w.stop()
        deadline = time.monotonic() + timeout
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                log.warning("returner %s: worker still busy after %.0f s; its unacked items stay in the outbox",
                            w.returner, timeout)

    def submit(self, records: Sequence[Record]) -> None:
        """Store ``records`` durably (OutboxError when that fails) and wake their workers."""
        if not records:
            return
        self.outbox.put(records)
        served = self.outbox.serves
        per: dict[str, list[int]] = {}
        for rec in records:
            not_event = rec.kind != "event"
            for name, _rc, _kw in rec.route:
                counts = per.get(name)
                if counts is None:
                    counts = per[name] = [0, 0]
                counts[0] += 1
                counts[1] += not_event
        if served is not None and served in per:
            self._stored_in_place += per.pop(served)[0]
        if not self._started:
            return
        for name, (n, not_events) in per.items():
            self._worker(name).wake(n, not_events)

    def replay(self, name: str) -> int:
        """Move the dead letters of ``name`` back to the queue; how many."""
        n = self.outbox.replay(name)
        if n and self._started:
            self._worker(name).wake()
        return n

    def dead_letters(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The dead letters of ``name`` fit to show: secret ``ret_kwargs`` masked, errors scrubbed."""
        out = []
        for letter in self.outbox.dead_letters(name, limit):
            kwargs = letter.get("ret_kwargs")
            secrets = self._secrets(name, letter.get("ret_config"), kwargs)
            if kwargs:
                try:
                    letter["ret_kwargs"] = masked(self._class(name), kwargs)
                except ConfigError:
                    letter["ret_kwargs"] = {k: MASK for k in kwargs}  # unknown returner: show no value
            if letter.get("last_error"):
                letter["last_error"] = scrub(letter["last_error"], secrets)
            out.append(letter)
        return out

    def flush(self, timeout: float, returner: str | None = None) -> bool:
        """Wait until nothing is pending (for ``returner`` only, when given); False on timeout.
        Events held for ``event_return_queue`` go at once meanwhile."""
        deadline = time.monotonic() + timeout
        self.add_flushing(1)
        try:
            if self._started:
                for name, c in self.outbox.counts().items():
                    if c["pending"] and returner in (None, name):
                        self._worker(name).wake()
            while self.outbox.has_pending(returner):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
            return True
        finally:
            self.add_flushing(-1)

    def revive(self) -> None:
        """Start again the delivery processes that died (the master calls this every tick, so a
        process that died while nothing new came in does not leave its items waiting)."""
        with self._lock:
            dead = [name for name, w in self._workers.items() if not w.is_alive()] if self._started else []
        for name in dead:
            self._worker(name).wake()

    def _worker(self, name: str) -> "_Worker | RemoteWorker":
        with self._lock:
            w = self._workers.get(name)
            if w is None or not w.is_alive():
                if self.processes:
                    if isinstance(w, RemoteWorker):
                        if time.monotonic() - w.started < RESTART_MIN_SECONDS:
                            return w  # it died at once (a broken install?): not started again at every wake
                        log.error("returner %s: its delivery process ended (%s); starting another", name, w.how_it_ended())
                    w = self._workers[name] = RemoteWorker(name, self.opts, str(self.outbox.path), self._flushing)
                else:
                    w = self._workers[name] = _Worker(self, name)
                    w.start()
            return w

    # -- health -----------------------------------------------------------------------------------
    def status(self) -> dict[str, dict]:
        """Per returner: delivered, pending, retrying, dead, buried, last_error (scrubbed),
        last_error_time, last_success_time, throughput (items/s over the last 60 s),
        oldest_pending_age_s, backoff_s (how long the worker still pauses) and options (masked)."""
        counts = self.outbox.counts()
        with self._lock:
            workers = dict(self._workers)
        figures = {name: w.figures() for name, w in workers.items()}
        names = set(counts) | set(workers) | set(self.event_names) | set(returner_names(self.opts.get("return")))
        served = self.outbox.serves
        if served is not None:
            names.add(served)
        now = time.time()
        out: dict[str, dict] = {}
        for name in sorted(names):
            if name == served and name not in counts:
                # the outbox's own file is this returner's store: each record is kept there as it
                # is stored, so nothing waits for it
                out[name] = {"delivered": self._stored_in_place, "pending": 0, "retrying": 0, "dead": 0, "buried": 0,
                             "last_error": None, "last_error_time": None, "last_success_time": None,
                             "throughput": 0.0, "oldest_pending_age_s": 0.0, "backoff_s": 0.0,
                             "stored_in_place": True, "options": self._shown_options(name, [])}
                continue
            c = counts.get(name, {})
            throughput, paused_until = figures.get(name, (0.0, 0.0))
            secrets = self._secrets(name, None, None)
            oldest = c.get("oldest_enqueued")
            err = c.get("last_error")
            out[name] = {
                "delivered": c.get("delivered", 0),
                "pending": c.get("pending", 0),
                "retrying": c.get("retrying", 0),
                "dead": c.get("dead", 0),
                "buried": c.get("buried", 0),
                "last_error": scrub(err, secrets) if err else None,
                "last_error_time": c.get("last_error_time"),
                "last_success_time": c.get("last_success_time"),
                "throughput": round(throughput, 1),
                "oldest_pending_age_s": round(max(0.0, now - oldest), 3) if oldest else 0.0,
                "backoff_s": round(max(0.0, paused_until - now), 3),
                "options": self._shown_options(name, secrets),
            }
        return out

    def _shown_options(self, name: str, secrets: list[str]) -> dict[str, Any]:
        try:
            cls = self._class(name)
            return masked(cls, resolve(cls, self.opts))
        except Exception as exc:  # the status shows the config problem instead of failing
            return {"error": scrub(_one_line(exc), secrets)}

    def _secrets(self, name: str, ret_config: str | None, ret_kwargs: dict | None) -> list[str]:
        """Every secret option value this returner could be using, to scrub from messages."""
        try:
            cls = self._class(name)
        except Exception:
            return []
        found: set[str] = set()
        for rc, kw in ((ret_config, ret_kwargs), (ret_config, None), (None, None)):
            try:
                found.update(secret_values(cls, resolve(cls, self.opts, rc, kw)))
            except Exception:
                continue  # the options that resolve still give their secrets
        for option in cls.options:
            for k in (option.name, option.suffix):
                if option.secret and ret_kwargs and ret_kwargs.get(k) not in (None, ""):
                    found.add(str(ret_kwargs[k]))
        return sorted(found, key=len, reverse=True)  # longest first: no partial masking


@dataclass
class _Failure:
    rows: list[Row]
    error: BaseException
    secrets: list[str]
    systemic: bool  # the backend as a whole refused (unreachable, or the returner cannot be made)


class _Slot:
    """A returner instance for one (ret_config, ret_kwargs), or the error that prevented it."""

    def __init__(self, instance: Returner | None, secrets: list[str], error: BaseException | None = None) -> None:
        self.instance = instance
        self.secrets = secrets
        self.error = error
        self.last_used = time.monotonic()


class _Worker(threading.Thread):
    """Delivers the items of one returner; see the module docstring for the loop."""

    def __init__(self, delivery: Delivery, returner: str) -> None:
        super().__init__(name=f"saline-returner-{returner}", daemon=True)
        self.d = delivery
        self.returner = returner
        self.cond = threading.Condition()
        self.generation = 0   # bumped by every wake-up
        self.submitted = 0    # items submitted so far (to know when a batch has filled up)
        self.not_events = 0   # of which not events (they end a hold for event_return_queue)
        self.paused_until = 0.0
        self.stopping = False
        self.slots: dict[tuple[str, str], _Slot] = {}
        self.recent: collections.deque[tuple[float, int]] = collections.deque()
        self.batches = BatchFigures()  # sizes, latencies and failures, for the metrics
        self._last_idle_check = time.monotonic()

    # -- signals ------------------------------------------------------------------------------------
    def wake(self, submitted: int = 0, not_events: int = 0) -> None:
        with self.cond:
            self.submitted += submitted
            self.not_events += not_events
            self.generation += 1
            self.cond.notify_all()

    def stop(self) -> None:
        """Finish the batch in flight, then end (each worker has its own flag, so a worker still
        busy after ``Delivery.stop`` timed out never runs beside its successor)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def _stopping(self) -> bool:
        return self.stopping

    def flushing(self, delta: int) -> None:
        """Nothing to pass on: this thread reads ``Delivery._flushing`` itself."""

    def figures(self) -> tuple[float, float]:
        return self.throughput(), self.paused_until

    def batch_figures(self) -> dict[str, Any]:
        return self.batches.as_dict()

    def throughput(self) -> float:
        now = time.time()
        total = sum(n for t, n in list(self.recent) if now - t <= THROUGHPUT_WINDOW)
        return total / THROUGHPUT_WINDOW

    # -- the loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._stopping():
                try:
                    self._once()
                except OutboxError as exc:
                    log.error("returner %s: %s", self.returner, exc)
                    with self.cond:
                        self.cond.wait_for(self._stopping, timeout=1.0)
                except Exception as exc:  # never let the worker die: items would sit unseen
                    secrets = self.d._secrets(self.returner, None, None)
                    log.error("returner %s: delivery worker error: %s", self.returner, scrub(_one_line(exc), secrets))
                    log.debug("%s", scrub("".join(traceback.format_exception(exc)), secrets))
                    with self.cond:
                        self.cond.wait_for(self._stopping, timeout=1.0)
        finally:
            self._close_slots(everything=True)

    def _once(self) -> None:
        now = time.time()
        if self.paused_until > now:
            with self.cond:
                self.cond.wait_for(self._stopping, timeout=self.paused_until - now)
            return
        with self.cond:
            generation, mark = self.generation, (self.submitted, self.not_events)
        rows = self.d.outbox.take(self.returner, self.d.batch_size)
        if not rows:
            due = self.d.outbox.next_due(self.returner)
            idle = self.d.idle_close
            timeout = idle if due is None else min(idle, max(0.001, due - time.time()))
            with self.cond:
                self.cond.wait_for(lambda: self.generation != generation or self._stopping(), timeout=timeout)
            self._close_slots()
            return
        rows = self._fill(rows, mark)
        self._deliver_batch(rows)
        self._close_slots()

    def _batching(self, rows: list[Row]) -> tuple[int, float, bool]:
        """(how many items make a full batch, how long the oldest may wait for one, whether
        these are events held for ``event_return_queue``)."""
        d = self.d
        if d.event_queue > 0 and all(r.kind == "event" for r in rows):
            return min(d.event_queue, d.batch_size), d.event_queue_seconds or math.inf, True
        return d.batch_size, d.batch_wait, False

    def _fill(self, rows: list[Row], mark: tuple[int, int]) -> list[Row]:
        """Wait for more items while the batch is short and its oldest item may still wait.
        Held events go along with anything else that arrives for this returner meanwhile."""
        while not (self._stopping() or self.d._flushing):
            target, hold, events_held = self._batching(rows)
            if len(rows) >= target:
                break
            remaining = min(r.enqueued for r in rows) + hold - time.time()
            if remaining <= 0:
                break
            need = target - len(rows)
            submitted, not_events = mark

            def more() -> bool:
                return (self.submitted - submitted >= need or (events_held and self.not_events != not_events)
                        or self._stopping() or self.d._flushing > 0)

            with self.cond:
                self.cond.wait_for(more, timeout=None if math.isinf(remaining) else remaining)
                mark = (self.submitted, self.not_events)
            # only what came since: the rows in hand are not read and unpacked again
            rows += self.d.outbox.take(self.returner, self.d.batch_size - len(rows), after=max(r.seq for r in rows))
        return rows

    # -- one batch ----------------------------------------------------------------------------------
    def _deliver_batch(self, rows: list[Row]) -> None:
        began = time.monotonic()
        groups: dict[tuple[str, str, str], list[Row]] = {}
        for r in rows:
            groups.setdefault((r.kind, r.ret_config or "", kwargs_key(r.ret_kwargs)), []).append(r)
        ok: list[Row] = []
        failed: list[_Failure] = []
        for (kind, _rc, _kw), group in groups.items():
            slot = self._slot(group[0])
            if slot.instance is None:
                failed.append(_Failure(group, slot.error or ConfigError("no instance"), slot.secrets, True))
                continue
            good, bad = self._send_bisecting(slot.instance, kind, group)
            ok.extend(good)
            failed.extend(_Failure(part, exc, slot.secrets, isinstance(exc, _UNAVAILABLE)) for part, exc in bad)
        self.batches.observe(len(rows), time.monotonic() - began, sum(len(f.rows) for f in failed))
        retries, burials = self._failed(failed, total=len(rows), any_ok=bool(ok)) if failed else ([], [])
        # one step for the whole batch: delivered, to retry, dead (and what was not tried stays)
        self.d.outbox.settle(self.returner, rows, [r.seq for r in ok], retries, burials)
        if ok:
            self.recent.append((time.time(), len(ok)))
            while self.recent and time.time() - self.recent[0][0] > THROUGHPUT_WINDOW:
                self.recent.popleft()
        if not failed:
            self.paused_until = 0.0

    def _slot(self, row: Row) -> _Slot:
        key = (row.ret_config or "", kwargs_key(row.ret_kwargs))
        slot = self.slots.get(key)
        if slot is not None and slot.instance is not None:
            slot.last_used = time.monotonic()
            return slot
        secrets = self.d._secrets(self.returner, row.ret_config, row.ret_kwargs)
        try:
            inst = registry.create(self.returner, self.d.opts, row.ret_config, row.ret_kwargs)
        except Exception as exc:  # ConfigError, a driver's import error, ...: retried like a failure
            return _Slot(None, secrets, exc)
        slot = self.slots[key] = _Slot(inst, secret_values(type(inst), inst.opts) + secrets)
        return slot

    def _send_bisecting(self, inst: Returner, kind: str, rows: list[Row]) -> tuple[list[Row], list[tuple[list[Row], BaseException]]]:
        """Send ``rows``; on an error other than unavailability, split and send the halves, so what
        can be stored is stored. Returns (stored rows, [(rows, error)])."""
        ok: list[Row] = []
        bad: list[tuple[list[Row], BaseException]] = []
        stack = [rows]
        failed = False  # after a failure, what is sent again may be stored already
        while stack:
            part = stack.pop()
            try:
                self._send(inst, kind, part, first=not failed)
                ok.extend(part)
            except Exception as exc:
                failed = True
                if isinstance(exc, _UNAVAILABLE):
                    bad.append(([r for p in [part, *stack] for r in p], exc))
                    stack.clear()
                    self._reset(inst)
                elif len(part) == 1:
                    bad.append((part, exc))
                else:
                    mid = len(part) // 2
                    stack.append(part[mid:])
                    stack.append(part[:mid])
            if self._stopping() and stack:
                break  # finish quickly; the untried rows stay pending as they were
        return ok, bad

    @staticmethod
    def _send(inst: Returner, kind: str, rows: list[Row], first: bool = False) -> None:
        """``first``: nothing of ``rows`` was sent in this batch before (the outbox says whether
        a row may have been sent by an earlier batch or process)."""
        payloads = [r.payload for r in rows]
        if kind == "ret":
            if first and not any(r.maybe_delivered for r in rows):
                inst.returns_first(payloads)
            else:
                inst.returns(payloads)
        elif kind == "load":
            inst.save_loads([(p["jid"], p["load"], p.get("minions")) for p in payloads])
        elif kind == "event":
            inst.event_returns(payloads)
        elif kind == "minions":
            for p in payloads:
                inst.save_minions(p["jid"], p["minions"], p.get("syndic_id"))
        else:
            raise ValueError(f"unknown item kind {kind!r}")

    def _reset(self, inst: Returner) -> None:
        """Drop a connection that failed; the returner reconnects on its next call."""
        try:
            inst.close()
        except Exception as exc:
            log.debug("returner %s: close failed: %s", self.returner, _one_line(exc))

    def _failed(self, failed: list["_Failure"], total: int, any_ok: bool) -> tuple[list[Retry], list[Burial]]:
        """What to retry (or bury) of what failed, with one log line; pause the worker when the
        backend as a whole refused: unreachable, not creatable, or every one of several items
        failed. A lone item failing alone is its own business (its next_try): it must not hold
        the others back."""
        now = time.time()
        d = self.d
        longest = 0.0
        buried = 0
        retries: list[Retry] = []
        burials: list[Burial] = []
        messages = [scrub(_one_line(f.error), f.secrets) for f in failed]
        for f, msg in zip(failed, messages):
            dead = [r for r in f.rows if r.first_failure is not None and now - r.first_failure >= d.dead_after]
            gone = {r.seq for r in dead}
            live = [r for r in f.rows if r.seq not in gone]
            if dead:
                burials.append(Burial([r.seq for r in dead], msg))
                buried += len(dead)
                log.error("returner %s: %d item(s) moved to dead letters after failing for %.0f s "
                          "(replay with returners.replay): %s", self.returner, len(dead),
                          now - min(r.first_failure or now for r in dead), msg)
            if live:
                delay = backoff(max(r.attempts for r in live), d.retry_max)
                retries.append(Retry([r.seq for r in live], msg, delay))
                longest = max(longest, delay)
        n_failed = sum(len(f.rows) for f in failed)
        if not any_ok and (n_failed > 1 or any(f.systemic for f in failed)):
            self.paused_until = now + longest
        if n_failed > buried:
            others = len(set(messages)) - 1
            more = f" (+{others} other error{'s' if others > 1 else ''})" if others > 0 else ""
            log.warning("returner %s: %d of %d item(s) not delivered, retrying within %.1f s: %s%s",
                        self.returner, n_failed - buried, total, longest, messages[0], more)
        if log.isEnabledFor(logging.DEBUG):
            trace = "".join(traceback.format_exception(failed[0].error))
            log.debug("returner %s: traceback of the first failure:\n%s", self.returner, scrub(trace, failed[0].secrets))
        return retries, burials

    def _close_slots(self, everything: bool = False) -> None:
        now = time.monotonic()
        if not everything and now - self._last_idle_check < 1.0:
            return
        self._last_idle_check = now
        for key, slot in list(self.slots.items()):
            if everything or now - slot.last_used > self.d.idle_close:
                del self.slots[key]
                if slot.instance is not None:
                    self._reset(slot.instance)
