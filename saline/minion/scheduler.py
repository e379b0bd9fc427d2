"""Salt's scheduler: jobs run on a timer on the minion (execution functions) or the master (runners).

A ``schedule:`` map in the config names jobs with Salt's keys::

    schedule:
      load:
        function: status.loadavg
        seconds: 60              # or minutes/hours/days (added up), cron, when, once
        returner: carbon         # one or a list; schedule_returner adds more for every job
        return_job: true         # the return also goes to the master's job cache (Salt's default)

:class:`Schedule` is the clock-driven part, with no I/O: it validates entries
(:func:`normalize`), knows when each job fires next and hands out the jobs that are due. Its clock
is injectable, so cron, ``when`` and intervals are tested without waiting. What it guarantees:

* a run missed while the process was down is not made up at start: intervals count from the start,
  cron and ``when`` from the next time to come, a past ``once`` never runs, unless ``run_on_start``
  asks for one run at start;
* a job whose ``maxrunning`` instances are still running is skipped (one line), not queued;
* ``splay`` shifts each run by a random delay without drifting the schedule; ``range``, ``after``
  and ``until`` skip the runs outside their window.

:class:`MinionScheduler` runs the due jobs on the minion like published jobs (same executor, same
kill and timeout), adds Salt's scheduler fields (``schedule``, ``jid``, ``pid``, ``fun_args``,
``metadata``) and routes the return: through the minion's spool to the master (which delivers it to
the named returners and, with ``return_job``, the job cache), or, with ``returners_on_minion: true``
in the minion config, to the returners through the minion's own outbox. A return sent to the master
stays in the spool until the master acknowledges it, so a master that is down loses none.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

log = logging.getLogger(__name__)

#: the scheduler wakes at least this often (to see jobs added from another thread at once)
MAX_SLEEP = 1.0
#: the file ``schedule.save`` writes, in the minion's config folder (Salt's name)
SAVE_FILE = Path("minion.d") / "_schedule.conf"

INTERVAL_KEYS = ("seconds", "minutes", "hours", "days")
_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
#: every key a schedule entry may have (Salt's names)
KNOWN_KEYS = frozenset({
    "function", "args", "kwargs", *INTERVAL_KEYS, "when", "cron", "once", "once_fmt", "splay", "range",
    "after", "until", "run_on_start", "maxrunning", "enabled", "jid_include", "metadata", "returner",
    "return_config", "return_kwargs", "return_job", "name",
})
DEFAULTS = {"enabled": True, "jid_include": True, "maxrunning": 1, "return_job": True, "run_on_start": False}


class ScheduleError(Exception):
    """A schedule entry or request that cannot be used; one line naming the job and the cause."""


# -- validation ------------------------------------------------------------------------------------

def _local(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts)


def _parse_time(text: Any, default: dt.datetime, what: str) -> dt.datetime:
    from dateutil import parser

    try:
        return parser.parse(str(text), default=default)
    except (ValueError, OverflowError, TypeError):
        raise ScheduleError(f"{what}: cannot read {text!r} as a time") from None


def _bool(name: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScheduleError(f"schedule job '{name}': option '{key}' must be true or false, got {value!r}")
    return value


def returner_list(value: Any) -> list[str]:
    """``"a,b"``, ``["a", "b"]`` or None as a de-duplicated list of names."""
    if value in (None, "", []):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return list(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))


def normalize(name: Any, entry: Any, *, strict: bool = False, now: float | None = None) -> dict[str, Any]:
    """Check one schedule entry and return it with Salt's defaults filled in.

    ``strict`` refuses unknown keys (``schedule.add``); otherwise they are ignored with a warning,
    as in Salt, since configs carry keys of other versions. Raises ScheduleError with one line.
    """
    if not isinstance(name, str) or not name or name == "enabled":
        raise ScheduleError(f"invalid schedule job name: {name!r}")
    if not isinstance(entry, dict):
        raise ScheduleError(f"schedule job '{name}': must be a map of options, got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in KNOWN_KEYS)
    if unknown and strict:
        raise ScheduleError(f"schedule job '{name}': unknown option(s) {', '.join(unknown)}")
    if unknown:
        log.warning("schedule job '%s': unknown option(s) %s ignored", name, ", ".join(unknown))
    job = {k: v for k, v in entry.items() if k in KNOWN_KEYS}
    job["name"] = name
    fun = job.get("function")
    if not isinstance(fun, str) or not fun.strip():
        raise ScheduleError(f"schedule job '{name}': 'function' is required (e.g. function: test.ping)")
    if job.get("args") is None:
        job.pop("args", None)
    elif isinstance(job["args"], (str, int, float, bool)):
        job["args"] = [job["args"]]  # Salt takes a single argument too
    elif not isinstance(job["args"], list):
        raise ScheduleError(f"schedule job '{name}': 'args' must be a list")
    if job.get("kwargs") is None:
        job.pop("kwargs", None)
    elif not isinstance(job["kwargs"], dict):
        raise ScheduleError(f"schedule job '{name}': 'kwargs' must be a map")
    for key in ("enabled", "jid_include", "run_on_start", "return_job"):
        job[key] = _bool(name, key, job.get(key, DEFAULTS[key]))
    maxrunning = job.get("maxrunning", DEFAULTS["maxrunning"])
    if isinstance(maxrunning, bool) or not isinstance(maxrunning, int) or maxrunning < 1:
        raise ScheduleError(f"schedule job '{name}': 'maxrunning' must be a whole number of 1 or more, got {maxrunning!r}")
    job["maxrunning"] = maxrunning
    interval = 0.0
    for key in INTERVAL_KEYS:
        if key in job:
            value = job[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ScheduleError(f"schedule job '{name}': '{key}' must be a number of {key}, got {value!r}")
            interval += value * _UNITS[key]
    kinds = [k for k in ("when", "cron", "once") if job.get(k) not in (None, "", [])]
    has_interval = any(k in job for k in INTERVAL_KEYS)
    if has_interval and kinds:
        raise ScheduleError(f"schedule job '{name}': seconds, minutes, hours or days cannot be used with "
                            f"{' or '.join(kinds)}")
    if len(kinds) > 1:
        raise ScheduleError(f"schedule job '{name}': {' and '.join(kinds)} cannot be used together")
    if not has_interval and not kinds:
        raise ScheduleError(f"schedule job '{name}': no time given (seconds, minutes, hours, days, cron, when or once)")
    if has_interval and interval <= 0:
        raise ScheduleError(f"schedule job '{name}': the interval must be longer than 0 seconds")
    base = _local(now if now is not None else time.time())
    if "cron" in kinds:
        from croniter import croniter

        if not isinstance(job["cron"], str) or not croniter.is_valid(job["cron"]):
            raise ScheduleError(f"schedule job '{name}': invalid cron expression {job['cron']!r}")
    if "when" in kinds:
        whens = job["when"] if isinstance(job["when"], list) else [job["when"]]
        for text in whens:
            _parse_time(text, base, f"schedule job '{name}': when")
    if "once" in kinds:
        _once(job, name)
    if "splay" in job:
        _splay_bounds(job["splay"], name)
    if "range" in job:
        rng = job["range"]
        if not isinstance(rng, dict) or "start" not in rng or "end" not in rng:
            raise ScheduleError(f"schedule job '{name}': 'range' must be a map with start and end")
        _parse_time(rng["start"], base, f"schedule job '{name}': range start")
        _parse_time(rng["end"], base, f"schedule job '{name}': range end")
    for key in ("after", "until"):
        if key in job:
            _parse_time(job[key], base, f"schedule job '{name}': {key}")
    if "metadata" in job and not isinstance(job["metadata"], dict):
        raise ScheduleError(f"schedule job '{name}': 'metadata' must be a map")
    if job.get("return_kwargs") is not None and not isinstance(job["return_kwargs"], dict):
        raise ScheduleError(f"schedule job '{name}': 'return_kwargs' must be a map of option: value")
    if job.get("return_config") is not None and not isinstance(job["return_config"], str):
        raise ScheduleError(f"schedule job '{name}': 'return_config' must be a name")
    if "returner" in job:
        if not isinstance(job["returner"], (str, list)):
            raise ScheduleError(f"schedule job '{name}': 'returner' must be a name or a list of names")
    return job


def _once(job: dict[str, Any], name: str) -> float:
    text = job["once"]
    fmt = job.get("once_fmt")
    try:
        when = dt.datetime.strptime(str(text), str(fmt)) if fmt else dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise ScheduleError(f"schedule job '{name}': once {text!r} does not match "
                            f"{fmt or 'YYYY-MM-DDTHH:MM:SS'}") from None
    return when.timestamp()


def _splay_bounds(splay: Any, name: str) -> tuple[float, float]:
    if isinstance(splay, dict):
        start, end = splay.get("start", 0), splay.get("end")
    else:
        start, end = 0, splay
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (start, end)) or not 0 <= start <= end:
        raise ScheduleError(f"schedule job '{name}': 'splay' must be seconds or a map of start <= end, got {splay!r}")
    return float(start), float(end)


# -- when does a job fire --------------------------------------------------------------------------

def _next_when(job: dict[str, Any], now: float) -> float | None:
    """The first of the ``when`` times after ``now``. A time with no date recurs daily, one with a
    weekday weekly, one with a date once (then never again)."""
    whens = job["when"] if isinstance(job["when"], list) else [job["when"]]
    today = _local(now).replace(hour=0, minute=0, second=0, microsecond=0)
    best: float | None = None
    for text in whens:
        for offset in range(8):  # a weekday comes within the week; a dated time never moves
            candidate = _parse_time(text, today + dt.timedelta(days=offset), "when").timestamp()
            if candidate > now:
                best = candidate if best is None else min(best, candidate)
                break
    return best


def next_fire(job: dict[str, Any], now: float, previous: float | None = None) -> float | None:
    """When ``job`` fires next after ``now`` (without splay); None when it never fires again.

    ``previous`` is the (unsplayed) time it was last due, so intervals keep their phase.
    """
    if any(k in job for k in INTERVAL_KEYS):
        interval = sum(job.get(k, 0) * _UNITS[k] for k in INTERVAL_KEYS)
        if previous is None:
            return now + interval
        nxt = previous + interval
        if nxt <= now:  # fell behind (a long run, a suspended machine): no burst of catch-up runs
            nxt += ((now - nxt) // interval + 1) * interval
        return nxt
    if job.get("cron"):
        from croniter import croniter

        return croniter(job["cron"], _local(now)).get_next(dt.datetime).timestamp()
    if job.get("when") not in (None, "", []):
        return _next_when(job, now)
    if job.get("once"):
        at = _once(job, job["name"])
        return at if at > now and previous is None else None
    return None


def _in_window(job: dict[str, Any], now: float) -> bool:
    """Whether a run due at ``now`` falls inside ``range``, ``after`` and ``until``."""
    moment = _local(now)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if "after" in job and moment < _parse_time(job["after"], day, "after"):
        return False
    if "until" in job and moment > _parse_time(job["until"], day, "until"):
        return False
    rng = job.get("range")
    if rng:
        inside = _parse_time(rng["start"], day, "range") <= moment <= _parse_time(rng["end"], day, "range")
        return inside != bool(rng.get("invert", False))
    return True


@dataclass
class _State:
    job: dict[str, Any]
    base: float | None = None    # when it is due, without splay
    fire: float | None = None    # when it runs: base + this run's splay
    running: int = 0
    forced: bool = False         # schedule.run_job asked for a run now
    runs: int = 0
    last_run: float | None = None


class Schedule:
    """The jobs of one scheduler and when each fires; thread-safe, no I/O, injectable clock."""

    def __init__(self, entries: Any = None, *, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.lock = threading.RLock()
        self.enabled = True
        self.errors: dict[str, str] = {}  # jobs of the config that could not be used, and why
        self._jobs: dict[str, _State] = {}
        self.changed: Callable[[], None] = lambda: None  # wakes the loop when jobs change
        self.load(entries or {}, start=True)

    # -- the set of jobs -------------------------------------------------------------------------
    def load(self, entries: Any, start: bool = False) -> None:
        """Replace every job with ``entries`` (a ``schedule:`` map); a bad job is left out with one
        error line, the others still run."""
        if not isinstance(entries, dict):
            raise ScheduleError(f"schedule: must be a map of job name: options, got {type(entries).__name__}")
        now = self.clock()
        with self.lock:
            self.enabled = entries.get("enabled", True) is not False
            self._jobs.clear()
            self.errors.clear()
            for name, entry in entries.items():
                if name == "enabled":
                    continue
                try:
                    job = normalize(name, entry, now=now)
                except ScheduleError as exc:
                    self.errors[str(name)] = str(exc)
                    log.error("%s", exc)
                    continue
                self._jobs[name] = self._schedule(_State(job), now, first=start)
        self.changed()

    def _schedule(self, state: _State, now: float, first: bool) -> _State:
        job = state.job
        if first and job["run_on_start"]:
            state.base = now
        else:
            state.base = next_fire(job, now, None if first else state.base)
        state.fire = None if state.base is None else state.base + self._splay(job)
        return state

    def _splay(self, job: dict[str, Any]) -> float:
        if "splay" not in job:
            return 0.0
        start, end = _splay_bounds(job["splay"], job["name"])
        return self.rng.uniform(start, end)

    def names(self) -> list[str]:
        with self.lock:
            return list(self._jobs)

    def get(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            state = self._jobs.get(name)
            return copy.deepcopy(state.job) if state else None

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every job as configured (with Salt's defaults), plus ``enabled: false`` when disabled."""
        with self.lock:
            out: dict[str, Any] = {name: copy.deepcopy(s.job) for name, s in self._jobs.items()}
            if not self.enabled:
                out["enabled"] = False
            return out

    def add(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if name in self._jobs:
                raise ScheduleError(f"Job {name} already exists in schedule.")
            job = normalize(name, entry, strict=True, now=self.clock())
            self._jobs[name] = self._schedule(_State(job), self.clock(), first=True)
        self.changed()
        return job

    def modify(self, name: str, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Change some options of a job; (old, new). Timing changes restart its clock."""
        with self.lock:
            state = self._jobs.get(name)
            if state is None:
                raise ScheduleError(f"Job {name} does not exist in schedule.")
            old = copy.deepcopy(state.job)
            merged = {**old, **changes}
            timing = set(INTERVAL_KEYS) | {"when", "cron", "once"}
            if timing & set(changes):  # a new kind of time replaces the old one
                for key in timing - set(changes):
                    merged.pop(key, None)
            new = normalize(name, merged, strict=True, now=self.clock())
            state.job = new
            if new != old:
                self._schedule(state, self.clock(), first=True)
        self.changed()
        return old, copy.deepcopy(new)

    def delete(self, name: str) -> None:
        with self.lock:
            if self._jobs.pop(name, None) is None:
                raise ScheduleError(f"Job {name} does not exist in schedule.")
        self.changed()

    def set_job_enabled(self, name: str, enabled: bool) -> None:
        with self.lock:
            state = self._jobs.get(name)
            if state is None:
                raise ScheduleError(f"Job {name} does not exist in schedule.")
            if state.job["enabled"] != enabled:
                state.job["enabled"] = enabled
                if enabled:  # counts again from now, as a job newly added
                    self._schedule(state, self.clock(), first=True)
        self.changed()

    def set_enabled(self, enabled: bool) -> None:
        with self.lock:
            self.enabled = enabled
        self.changed()

    def run_now(self, name: str, force: bool = False) -> None:
        """Make a job due at once (``schedule.run_job``); a disabled one only with ``force``."""
        with self.lock:
            state = self._jobs.get(name)
            if state is None:
                raise ScheduleError(f"Job {name} does not exist in schedule.")
            if not state.job["enabled"] and not force:
                raise ScheduleError(f"Job {name} is disabled.")
            state.fire = self.clock()
            state.forced = True
        self.changed()

    # -- time ------------------------------------------------------------------------------------
    def next_fire_time(self, name: str) -> float | None:
        with self.lock:
            state = self._jobs.get(name)
            if state is None:
                raise ScheduleError(f"Job {name} does not exist in schedule.")
            return state.fire

    def due(self, now: float | None = None) -> list[dict[str, Any]]:
        """The jobs to run now (copies of their entries), each counted as running until
        :meth:`finished`; their next fire times are set. Jobs at ``maxrunning`` or outside their
        window are skipped."""
        now = self.clock() if now is None else now
        out: list[dict[str, Any]] = []
        with self.lock:
            for name, state in self._jobs.items():
                if state.fire is None or state.fire > now:
                    continue
                forced, state.forced = state.forced, False
                if not forced and (not self.enabled or not state.job["enabled"]):
                    self._schedule(state, now, first=False)
                    continue
                run = forced or _in_window(state.job, now)
                self._schedule(state, now, first=False)
                if not run:
                    log.debug("schedule job %s: outside its range/after/until; skipped", name)
                    continue
                if state.running >= state.job["maxrunning"]:
                    log.warning("schedule job %s: maxrunning (%d) reached, this run is skipped", name,
                                state.job["maxrunning"])
                    continue
                state.running += 1
                state.runs += 1
                state.last_run = now
                out.append(copy.deepcopy(state.job))
        return out

    def finished(self, name: str) -> None:
        with self.lock:
            state = self._jobs.get(name)
            if state is not None and state.running > 0:
                state.running -= 1

    def sleep_for(self, now: float | None = None) -> float | None:
        """Seconds until the next fire time, at most MAX_SLEEP; None when no job will fire (the
        loop then sleeps until a change: a swarm of minions without schedules stays idle)."""
        now = self.clock() if now is None else now
        with self.lock:
            fires = [s.fire for s in self._jobs.values() if s.fire is not None]
        if not fires:
            return None
        return max(0.0, min([MAX_SLEEP, *(f - now for f in fires)]))


# -- running -------------------------------------------------------------------------------------

async def run_loop(schedule: Schedule, fire: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Run ``fire(job)`` for every job when due, each in its own task, until cancelled."""
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    schedule.changed = lambda: loop.call_soon_threadsafe(wake.set)
    tasks: set[asyncio.Task] = set()

    async def one(job: dict[str, Any]) -> None:
        try:
            await fire(job)
        except Exception:  # a bug in routing must not stop the scheduler
            log.exception("schedule job %s failed to run", job["name"])
        finally:
            schedule.finished(job["name"])

    try:
        while True:
            for job in schedule.due():
                task = asyncio.create_task(one(job))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            wake.clear()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
                # that comes as the wake-up does, and this loop would not stop
                async with asyncio.timeout(schedule.sleep_for()):
                    await wake.wait()
            except asyncio.TimeoutError:
                pass
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def job_args(job: dict[str, Any]) -> list[Any]:
    """The publish ``arg`` list of a job: its args, then its kwargs marked as Salt marks them."""
    arg = list(job.get("args") or [])
    if job.get("kwargs"):
        arg.append({**job["kwargs"], "__kwarg__": True})
    return arg


def scheduler_fields(job: dict[str, Any], jid: str, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Salt's scheduler fields of a return: ``schedule``, ``jid``, ``pid``, ``fun_args`` (args and a
    trailing kwargs map), and ``metadata`` with the ``_TOS``/``_TS``/``_TT`` stamps."""
    fields: dict[str, Any] = {"schedule": job["name"], "jid": jid, "pid": os.getpid(),
                              "fun_args": list(job.get("args") or []) + ([dict(job["kwargs"])] if job.get("kwargs") else [])}
    if isinstance(job.get("metadata"), dict):
        now = clock()
        fields["metadata"] = {**job["metadata"], "_TOS": time.strftime("%Y%m%d%H%M%S", time.gmtime(now)),
                              "_TS": time.ctime(now), "_TT": time.strftime("%Y %B %d %a %H %m", time.gmtime(now))}
    return fields


class MinionLike(Protocol):
    """What the minion scheduler uses of the minion (saline.minion.daemon.Minion)."""

    id: str
    opts: dict[str, Any]
    executor: Any
    spool: Any

    def _send(self, message: dict[str, Any]) -> None: ...
    def _return_locally(self, names: list[str], publish: dict[str, Any], ret: dict[str, Any]) -> None: ...


_LIVE: "weakref.WeakValueDictionary[str, MinionScheduler]" = weakref.WeakValueDictionary()


def live(minion_id: str) -> "MinionScheduler | None":
    """The running scheduler of minion ``minion_id`` in this process (for ``schedule.*``)."""
    return _LIVE.get(minion_id)


def saved_entries(opts: dict[str, Any]) -> dict[str, Any]:
    """The minion's ``schedule:`` as its config gives it (``minion.d/_schedule.conf`` included)."""
    entries = opts.get("schedule") or {}
    return entries if isinstance(entries, dict) else {}


def save(opts: dict[str, Any], entries: dict[str, Any]) -> Path:
    """Write ``entries`` to ``<config_dir>/minion.d/_schedule.conf`` (read back at start)."""
    import yaml

    folder = opts.get("config_dir")
    if not folder:
        raise ScheduleError("the minion's config folder is not known; cannot save the schedule")
    path = Path(folder) / SAVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {name: ({k: v for k, v in job.items() if k != "name" and not k.startswith("_")}
                    if isinstance(job, dict) else job) for name, job in entries.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"schedule": clean}, default_flow_style=False, sort_keys=True))
    os.replace(tmp, path)  # never a half-written file that the next start cannot read
    opts["schedule"] = clean
    return path


class MinionScheduler:
    """The minion's scheduler: a :class:`Schedule` of the ``schedule:`` option, run on the minion's
    event loop, each due job run by the minion's executor and its return routed as described in
    the module docstring."""

    def __init__(self, minion: MinionLike, clock: Callable[[], float] = time.time) -> None:
        self.minion = minion
        self.opts = minion.opts
        self.schedule = Schedule(saved_entries(self.opts), clock=clock)
        _LIVE[minion.id] = self

    async def run(self) -> None:
        await run_loop(self.schedule, self.fire)

    def save(self) -> Path:
        return save(self.opts, self.schedule.entries())

    async def fire(self, job: dict[str, Any]) -> None:
        from saline.jid import gen_jid

        jid = gen_jid(bool(self.opts.get("unique_jid")))
        publish = {"jid": jid, "fun": job["function"], "arg": job_args(job), "tgt": self.minion.id,
                   "tgt_type": "glob", "user": "root"}
        log.info("running scheduled job %s: %s (jid %s)", job["name"], job["function"], jid)
        if job["jid_include"]:  # seen by saltutil.running and find_job, stoppable with kill_job
            ret = await self.minion.executor.run(publish)
        else:
            ret = await self._run_untracked(publish)
        ret.update(scheduler_fields(job, jid))
        await self.route(job, ret)

    async def _run_untracked(self, publish: dict[str, Any]) -> dict[str, Any]:
        from saline.modules.context import ExecContext, use
        from saline.modules.loader import execute

        executor = self.minion.executor
        ctx = ExecContext(opts=self.opts, grains=executor.grains, jid=publish["jid"], running=executor.running_jobs,
                          kill=executor.kill, functions=executor.functions)

        def call() -> dict[str, Any]:
            with use(ctx):
                return execute(executor.functions, publish["fun"], publish["arg"], ctx)

        result = await asyncio.get_running_loop().run_in_executor(executor.pool, call)
        return {"id": self.minion.id, "jid": publish["jid"], "fun": publish["fun"], "fun_args": publish["arg"], **result}

    async def route(self, job: dict[str, Any], ret: dict[str, Any]) -> None:
        names = returner_list(job.get("returner")) + returner_list(self.opts.get("schedule_returner"))
        names = list(dict.fromkeys(names))
        local = bool(self.opts.get("returners_on_minion"))
        if job.get("return_config"):
            ret["ret_config"] = job["return_config"]
        if job.get("return_kwargs"):
            ret["ret_kwargs"] = job["return_kwargs"]
        if names and local:
            self.minion._return_locally(names, {"ret_config": job.get("return_config"),
                                                "ret_kwargs": job.get("return_kwargs")}, ret)
        master_names = [] if local else names
        if not master_names and not job["return_job"]:
            return
        load = {**ret, "schedule_route": {"returner": master_names, "return_job": job["return_job"],
                                          "ret_config": job.get("return_config")}}
        # spooled first: the return survives a master that is down and a minion restart
        await asyncio.get_running_loop().run_in_executor(None, self.minion.spool.put, self.minion.id, ret["jid"], load)
        self.minion._send({"cmd": "_return", "load": load})


def local_loops(minion: MinionLike) -> list[Awaitable[None]]:
    """What the minion runs on its own besides jobs from the master: its ``schedule:`` and its
    ``beacons:`` (saline.minion.beacons)."""
    from saline.minion.beacons import MinionBeacons

    return [MinionScheduler(minion).run(), MinionBeacons(minion).run()]
