"""The ``schedule`` module: see and change the minion's scheduled jobs (Salt's ``schedule.*``).

Run as a job (``saline '*' schedule.add ...``), it changes the running minion's scheduler at once.
Run where no minion is running (``saline-call --local``), it reads and writes the saved schedule
(``minion.d/_schedule.conf`` in the config folder), which the minion reads when it starts — Salt's
``offline`` mode. ``persist=True`` (the default, as in Salt) saves every change to that file, so
the schedule survives a restart; ``schedule.save`` saves the whole schedule.

Results are Salt's: ``{"result": bool, "comment": str, "changes": {...}}``; a failure is
``result: False`` with a one-line comment, which fails the job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from saline.minion import scheduler as sched
from saline.modules.context import current

__func_alias__ = {"list_": "list"}

#: schedule.add's keyword names that differ from the entry's keys (Salt's CLI form)
_RENAMED = {"job_args": "args", "job_kwargs": "kwargs"}
_CONTROL = ("persist", "offline")


class _Offline:
    """A schedule kept in the config file only (no minion running in this process)."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.schedule = sched.Schedule(sched.saved_entries(opts))

    def save(self) -> Any:
        return sched.save(self.opts, self.schedule.entries())


def _target() -> Any:
    opts = current().opts
    return sched.live(str(opts.get("id"))) or _Offline(opts)


def _entry(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {_RENAMED.get(k, k): v for k, v in kwargs.items() if not k.startswith("__") and k not in _CONTROL}


def _persist(target: Any, persist: Any, ret: dict[str, Any]) -> dict[str, Any]:
    if persist or isinstance(target, _Offline):
        try:
            target.save()
        except (OSError, sched.ScheduleError) as exc:
            return {**ret, "result": False, "comment": f"{ret['comment']} But it was not saved: {exc}"}
    return ret


def _fail(comment: str) -> dict[str, Any]:
    return {"comment": comment, "result": False, "changes": {}}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%dT%H:%M:%S")


def list_(show_all: bool = False, where: Any = None, return_yaml: bool = True) -> Any:
    """List the jobs in the minion's schedule, as YAML (``return_yaml=False``: as a map).

    ``show_all=True`` adds when each job fires next (``_next_fire_time``).

    CLI Example::

        saline '*' schedule.list
        saline '*' schedule.list return_yaml=False
    """
    target = _target()
    entries = target.schedule.entries()
    if show_all:
        for name in target.schedule.names():
            entries[name]["_next_fire_time"] = _iso(target.schedule.next_fire_time(name))
    if not entries:
        return {"schedule": {}}
    if not return_yaml:
        return entries
    import yaml

    return yaml.safe_dump({"schedule": entries}, default_flow_style=False)


def add(name: Any, persist: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Add a job to the schedule.

    Takes the schedule keys as keyword arguments: ``function``, ``job_args`` (a list),
    ``job_kwargs`` (a map), ``seconds``/``minutes``/``hours``/``days``, ``cron``, ``when``,
    ``once``, ``splay``, ``range``, ``returner``, ``return_job``, ``metadata``, ...

    CLI Example::

        saline '*' schedule.add job1 function=test.ping seconds=3600
        saline '*' schedule.add job2 function=cmd.run job_args="['date >> /tmp/date.log']" seconds=60
        saline '*' schedule.add load function=status.loadavg seconds=60 returner=carbon
    """
    if name in (None, ""):
        return _fail("Job name is required.")
    target = _target()
    try:
        target.schedule.add(str(name), _entry(kwargs))
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    return _persist(target, persist, {"comment": f"Added job: {name} to schedule.", "result": True,
                                      "changes": {str(name): "added"}})


def modify(name: Any, persist: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Change options of a job in the schedule; the changes show the old and new job.

    CLI Example::

        saline '*' schedule.modify job1 function=test.ping seconds=3600
    """
    target = _target()
    try:
        old, new = target.schedule.modify(str(name), _entry(kwargs))
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    if old == new:
        return {"comment": f"Job {name} in correct state", "result": True, "changes": {}}
    return _persist(target, persist, {"comment": f"Modified job: {name} in schedule.", "result": True,
                                      "changes": {str(name): {"old": old, "new": new}}})


def delete(name: Any, persist: bool = True) -> dict[str, Any]:
    """Delete a job from the schedule.

    CLI Example::

        saline '*' schedule.delete job1
    """
    target = _target()
    try:
        target.schedule.delete(str(name))
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    return _persist(target, persist, {"comment": f"Deleted Job {name} from schedule.", "result": True,
                                      "changes": {str(name): "removed"}})


def purge(persist: bool = True) -> dict[str, Any]:
    """Delete every job from the schedule.

    CLI Example::

        saline '*' schedule.purge
    """
    target = _target()
    names = target.schedule.names()
    for name in names:
        target.schedule.delete(name)
    return _persist(target, persist, {"comment": "Deleted all jobs from schedule.", "result": True,
                                      "changes": {n: "removed" for n in names}})


def enable_job(name: Any, persist: bool = True) -> dict[str, Any]:
    """Enable a job in the schedule (it fires again, counting from now).

    CLI Example::

        saline '*' schedule.enable_job job1
    """
    target = _target()
    try:
        target.schedule.set_job_enabled(str(name), True)
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    return _persist(target, persist, {"comment": f"Enabled Job {name} in schedule.", "result": True,
                                      "changes": {str(name): "enabled"}})


def disable_job(name: Any, persist: bool = True) -> dict[str, Any]:
    """Disable a job in the schedule (it stays listed and does not fire).

    CLI Example::

        saline '*' schedule.disable_job job1
    """
    target = _target()
    try:
        target.schedule.set_job_enabled(str(name), False)
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    return _persist(target, persist, {"comment": f"Disabled Job {name} in schedule.", "result": True,
                                      "changes": {str(name): "disabled"}})


def enable(persist: bool = True) -> dict[str, Any]:
    """Enable the whole schedule.

    CLI Example::

        saline '*' schedule.enable
    """
    target = _target()
    target.schedule.set_enabled(True)
    return _persist(target, persist, {"comment": "Enabled schedule on minion.", "result": True,
                                      "changes": {"schedule": "enabled"}})


def disable(persist: bool = True) -> dict[str, Any]:
    """Disable the whole schedule (no job fires until ``schedule.enable``).

    CLI Example::

        saline '*' schedule.disable
    """
    target = _target()
    target.schedule.set_enabled(False)
    return _persist(target, persist, {"comment": "Disabled schedule on minion.", "result": True,
                                      "changes": {"schedule": "disabled"}})


def is_enabled(name: Any = None) -> Any:
    """Return the job's entry when it is enabled (False when not); with no name, whether the
    schedule is enabled.

    CLI Example::

        saline '*' schedule.is_enabled job1
        saline '*' schedule.is_enabled
    """
    target = _target()
    if name in (None, ""):
        return target.schedule.enabled
    job = target.schedule.get(str(name))
    if job is None:
        return _fail(f"Job {name} does not exist in schedule.")
    return job if job["enabled"] else False


def run_job(name: Any, force: bool = False) -> dict[str, Any]:
    """Run a scheduled job now, once (a disabled job only with ``force=True``); its return is
    routed like a scheduled run's.

    CLI Example::

        saline '*' schedule.run_job job1
        saline '*' schedule.run_job job1 force=True
    """
    target = _target()
    if isinstance(target, _Offline):
        return _fail("The minion is not running here: a scheduled job runs only in the minion.")
    try:
        target.schedule.run_now(str(name), bool(force))
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    return {"comment": f"Scheduling Job {name} on minion.", "result": True, "changes": {}}


def save() -> dict[str, Any]:
    """Save the schedule to the minion's config folder (``minion.d/_schedule.conf``), so it is
    there after a restart.

    CLI Example::

        saline '*' schedule.save
    """
    target = _target()
    try:
        path = target.save()
    except (OSError, sched.ScheduleError) as exc:
        return _fail(f"Failed to save schedule: {exc}")
    return {"comment": f"Schedule (non-pillar items) saved to {path}.", "result": True, "changes": {}}


def show_next_fire_time(name: Any) -> dict[str, Any]:
    """Return when a job fires next (local time, ``YYYY-MM-DDTHH:MM:SS``; None when never again).

    CLI Example::

        saline '*' schedule.show_next_fire_time job1
    """
    target = _target()
    try:
        when = target.schedule.next_fire_time(str(name))
    except sched.ScheduleError as exc:
        return _fail(str(exc))
    return {"result": True, "next_fire_time": _iso(when)}
