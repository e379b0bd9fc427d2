"""``saline-run`` functions, executed inside the master: jobs.*, returners.*, manage.*.

The jobs functions read the job cache through its returner (``ext_job_cache`` first, then
``master_job_cache``, as Salt does), after giving the outbox a moment to deliver what is pending
to it, so a job that just finished is visible.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
from typing import Any, Callable

from saline.config import ConfigError
from saline.jid import format_jid_instance, is_jid, jid_to_time
from saline.master.errors import PublishError
from saline.master.gather import gather_returns
from saline.returners.base import ReturnerError


class RunnerError(Exception):
    """A runner call that failed; one line for the CLI."""


_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def runner(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _FUNCTIONS[name] = fn
        return fn
    return register


def names() -> list[str]:
    return sorted(_FUNCTIONS)


def describe() -> dict[str, str]:
    """Each runner's name and docstring (``saline-run --help`` shows the first line)."""
    return {name: (_FUNCTIONS[name].__doc__ or "") for name in names()}


async def call(master: Any, fun: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    fn = _FUNCTIONS.get(fun)
    if fn is None:
        raise RunnerError(f"'{fun}' is not available (runners: {', '.join(names())})")
    try:
        inspect.signature(fn).bind(master, *args, **kwargs)
    except TypeError as exc:
        raise RunnerError(f"passed invalid arguments to {fun}: {exc}") from None
    try:
        if inspect.iscoroutinefunction(fn):
            return await fn(master, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(master, *args, **kwargs))
    except (ConfigError, ReturnerError) as exc:
        raise RunnerError(str(exc)) from None
    except PublishError as exc:  # a round trip to the minions could not be published
        raise RunnerError(f"{fun}: {exc}") from None


def _with_cache(master: Any, fn: Callable[[Any], Any]) -> Any:
    from saline.returners import registry

    name = master.opts.get("ext_job_cache") or master.job_cache
    master.delivery.flush(timeout=2.0, returner=name)
    cache = registry.create(name, master.opts)
    try:
        return fn(cache)
    finally:
        cache.close()


def _jid_arg(jid: Any) -> str:
    jid = str(jid)
    if not is_jid(jid):
        raise RunnerError(f"'{jid}' is not a job id (20 digits)")
    return jid


def _globs(value: Any) -> list[str]:
    if value is None:
        return []
    return [v.strip() for v in (value if isinstance(value, list) else str(value).split(",")) if v.strip()]


@runner("jobs.list_jobs")
def list_jobs(master: Any, search_function: Any = None, search_target: Any = None,
              search_metadata: dict | None = None, start_time: str | None = None,
              end_time: str | None = None, **_: Any) -> dict[str, Any]:
    """Every job in the job cache: Function, Arguments, Target, Target-type, User, StartTime (search_function, search_target, start_time, end_time filter)."""
    jobs = _with_cache(master, lambda c: c.get_jids())
    funs, tgts = _globs(search_function), _globs(search_target)
    out = {}
    for jid in sorted(jobs):
        job = jobs[jid]
        if funs and not any(fnmatch.fnmatch(str(job.get("Function")), g) for g in funs):
            continue
        if tgts and not any(fnmatch.fnmatch(str(job.get("Target")), g) for g in tgts):
            continue
        if search_metadata and not any((job.get("Metadata") or {}).get(k) == v for k, v in search_metadata.items()):
            continue
        if start_time and jid < _jid_bound(start_time):
            continue
        if end_time and jid > _jid_bound(end_time):
            continue
        out[jid] = job
    return out


def _jid_bound(text: str) -> str:
    """A time given on the command line as the jid prefix it corresponds to."""
    digits = "".join(ch for ch in str(text) if ch.isdigit())
    return (digits + "0" * 20)[:20]


@runner("jobs.list_job")
def list_job(master: Any, jid: Any) -> dict[str, Any]:
    """One job: its load, the minions it expected, and each return."""
    jid = _jid_arg(jid)

    def read(cache: Any) -> dict[str, Any]:
        load = cache.get_load(jid)
        if not load:
            return {"Error": "Cannot contact returner or no job with this jid"}
        out = {"jid": jid, **format_jid_instance(jid, load)}
        minions = load.get("Minions") or load.get("minions")
        if minions:
            out["Minions"] = sorted(minions)
        out["Result"] = cache.get_jid(jid)
        return out
    return _with_cache(master, read)


@runner("jobs.print_job")
def print_job(master: Any, jid: Any) -> dict[str, Any]:
    """One job with its returns, in the shape Salt prints it."""
    job = list_job(master, jid)
    return {str(jid): job}


@runner("jobs.lookup_jid")
def lookup_jid(master: Any, jid: Any, missing: bool = False, display_progress: bool = False) -> dict[str, Any]:
    """The returns of a job, {minion: return}, read from the job cache (missing=True also lists the silent minions)."""
    jid = _jid_arg(jid)

    def read(cache: Any) -> dict[str, Any]:
        results = cache.get_jid(jid)
        out = {mid: (r.get("return") if isinstance(r, dict) else r) for mid, r in sorted(results.items())}
        if missing:
            load = cache.get_load(jid) or {}
            for mid in load.get("Minions") or load.get("minions") or []:
                out.setdefault(mid, "Minion did not return")
        return out
    return _with_cache(master, read)


@runner("jobs.exit_success")
def exit_success(master: Any, jid: Any) -> dict[str, bool]:
    """Whether each minion targeted by a job ran it with success."""
    jid = _jid_arg(jid)

    def read(cache: Any) -> dict[str, bool]:
        load = cache.get_load(jid) or {}
        results = cache.get_jid(jid)
        out = {mid: False for mid in load.get("Minions") or load.get("minions") or []}
        for mid, ret in results.items():
            out[mid] = bool(ret.get("return") if isinstance(ret, dict) else ret)
        return out
    return _with_cache(master, read)


@runner("jobs.active")
async def active(master: Any) -> dict[str, Any]:
    """Jobs still running on some minion, asked of the minions with saltutil.running."""
    targets = master.matching_ids("*")
    if not targets:
        return {}
    running: dict[str, dict[str, Any]] = {}
    replies = await _gather(master, targets, "saltutil.running", [])
    for mid, jobs in replies.items():
        for job in jobs or []:
            if not isinstance(job, dict) or not is_jid(job.get("jid")):
                continue
            entry = running.setdefault(job["jid"], {
                "Function": job.get("fun"), "Arguments": job.get("arg") or [], "Target": job.get("tgt"),
                "Target-type": job.get("tgt_type"), "User": job.get("user") or "root",
                "StartTime": jid_to_time(job["jid"]), "Running": [], "Returned": []})
            entry["Running"].append({mid: job.get("pid")})
    for jid, entry in running.items():
        job = master.state.job(jid)
        if job:
            entry["Returned"] = sorted(job[1])
    return running


async def _gather(master: Any, targets: list[str], fun: str, arg: list[Any]) -> dict[str, Any]:
    return await gather_returns(master, targets, fun, arg, float(master.opts.get("timeout") or 5))


@runner("manage.status")
async def manage_status(master: Any) -> dict[str, list[str]]:
    """Which accepted minions answer test.ping (``up``) and which do not (``down``)."""
    targets = master.matching_ids("*")
    answered = await _gather(master, targets, "test.ping", []) if targets else {}
    return {"up": sorted(answered), "down": sorted(set(targets) - set(answered))}


@runner("manage.up")
async def manage_up(master: Any) -> list[str]:
    """The accepted minions that answer test.ping."""
    return (await manage_status(master))["up"]


@runner("manage.down")
async def manage_down(master: Any) -> list[str]:
    """The accepted minions that do not answer test.ping."""
    return (await manage_status(master))["down"]


@runner("manage.masters")
def manage_masters(master: Any) -> dict[str, Any]:
    """The masters of the cluster that are alive, each with the number of minions connected to it."""
    cluster = getattr(master, "cluster", None)
    if cluster is None:
        return {str(master.opts["id"]): {"seen_s_ago": 0.0, "minions": len(master.connected_minions())}}
    return cluster.masters()


def _iso(t: float | None) -> str | None:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds") if t else None


@runner("returners.status")
def returners_status(master: Any) -> dict[str, Any]:
    """Per returner: delivered, pending, retrying, dead, last error and time, throughput.

    Times are ISO 8601 (UTC). ``state`` is ``failing`` while the last error is newer than the last
    success, else ``ok``; ``last_error_resolved`` says whether the last error is older than the
    last success (the returner recovered since)."""
    out: dict[str, Any] = {}
    for name, figures in master.delivery.status().items():
        shown = dict(figures)
        err_t, ok_t = figures.get("last_error_time"), figures.get("last_success_time")
        resolved = bool(err_t and ok_t and ok_t >= err_t)
        shown["state"] = "failing" if err_t and not resolved else "ok"
        shown["last_error_time"] = _iso(err_t)
        shown["last_success_time"] = _iso(ok_t)
        shown["last_error_resolved"] = resolved if err_t else None
        out[name] = shown
    return out


@runner("returners.replay")
def returners_replay(master: Any, name: str) -> dict[str, Any]:
    """Send the dead letters of returner ``name`` again."""
    return {"replayed": master.delivery.replay(str(name))}


@runner("returners.dead")
def returners_dead(master: Any, name: str, limit: int = 100) -> list[dict[str, Any]]:
    """The dead letters of returner ``name`` (items that kept failing), oldest first."""
    return master.delivery.dead_letters(str(name), int(limit))


@runner("returners.init")
def returners_init(master: Any, name: str, **kwargs: Any) -> dict[str, Any]:
    """Create the tables (or folders) returner ``name`` writes to."""
    from saline.returners import registry

    ret = registry.create(str(name), master.opts, kwargs.pop("return_config", None), kwargs or None)
    try:
        ret.init_schema()
    finally:
        ret.close()
    return {"initialised": str(name)}


@runner("returners.list")
def returners_list(master: Any) -> list[str]:
    """Every returner that can be chosen here (built-in, installed, custom)."""
    from saline.returners import registry

    return registry.available()


@runner("master.stats")
def master_stats(master: Any) -> dict[str, Any]:
    """Counters of refused connections and frames, forged ids, untargeted and duplicate returns."""
    return {**master.stats, "minions_known": len(master.state.grains),
            "accepted": len(master.keys.ids("minions"))}

