"""What the master takes from minions on their own initiative, and its own scheduled runners.

* **Scheduled returns.** The master refuses returns for jobs it did not publish ("not targeted").
  A minion's scheduled job was never published, so its return says so: it carries Salt's
  ``schedule`` field (the job's name) and a ``schedule_route`` (the returners to deliver to,
  ``return_job``, ``return_config``), which :func:`store_scheduled` takes off before storing. It is
  accepted for the sending minion only (the daemon has already checked the id against the key),
  registered as a job of that minion (so a resent copy is acknowledged, not stored twice), and
  written durably before the ack: to the job cache (and ``ext_job_cache``) with ``return_job``,
  and to the named returners with the entry's ``return_config``. ``return_kwargs`` from a minion
  are not applied on the master: they could point the master's credentials at another server;
  they apply to minion-side returners (``returners_on_minion``). An unknown returner name is left
  out with one warning line; the rest is stored.
* **Beacon events** (:func:`minion_event`): ``salt/beacon/<its own id>/...`` tags only, size-limited,
  fired on the event bus and queued for ``event_return``.
* **The master's ``schedule:``** (:func:`run_schedule`): runner functions on a timer, their results
  fired as ``salt/run/<jid>/ret`` events and sent to the entry's returners.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from saline.config import ConfigError
from saline.events import job_ret_tag
from saline.master.outbox import OutboxError
from saline.minion.scheduler import Schedule, ScheduleError, returner_list, run_loop, scheduler_fields

log = logging.getLogger(__name__)

#: the largest beacon event a minion may send (its data, encoded)
MAX_EVENT_BYTES = 256 * 1024
MAX_TAG_LENGTH = 512


def _known(master: Any, names: list[str], mid: str, jid: str) -> list[str]:
    from saline.returners import registry

    out = []
    for name in names:
        try:
            registry.get_class(name)
        except ConfigError as exc:
            log.warning("scheduled return %s of %s: returner %s left out: %s", jid, mid, name, exc)
            continue
        out.append(name)
    return out


def store_scheduled(master: Any, load: dict[str, Any], received: str) -> dict[str, Any] | None:
    """Store one scheduled return of minion ``load["id"]``; the reply for the minion (None: no ack,
    the minion keeps it and sends it again)."""
    route = load.pop("schedule_route", None)
    jid, mid = load["jid"], load["id"]
    if not isinstance(route, dict) or not isinstance(load.get("schedule"), str):
        master.stats["bad_frames"] += 1
        return {"cmd": "refused", "jid": jid, "reason": "malformed return"}
    job = master.state.job(jid)
    if job is not None and mid not in job[0]:  # a jid of a published job this minion was not sent
        master.stats["untargeted"] += 1
        return {"cmd": "refused", "jid": jid, "reason": "not targeted"}
    if job is not None and mid in job[1]:
        master.stats["duplicates"] += 1
        return {"cmd": "ack", "jid": jid}
    return_job = route.get("return_job", True) is not False
    ret_config = route.get("ret_config") if isinstance(route.get("ret_config"), str) else None
    named = _known(master, returner_list(route.get("returner")), mid, jid)
    own: list[str] = []
    if return_job:
        own = [master.job_cache, *returner_list(master.opts.get("ext_job_cache"))]
    fun_args = load.get("fun_args") if isinstance(load.get("fun_args"), list) else []
    job_load = {"cmd": "publish", "jid": jid, "fun": load.get("fun"), "arg": fun_args, "tgt": mid, "tgt_type": "glob",
                "ret": ",".join(named), "user": "root", "minions": [mid], "schedule": load["schedule"],
                "kwargs": {"ret_config": ret_config} if ret_config else {}}
    ret = {"cmd": "_return", **load, "_stamp": received}
    tag = job_ret_tag(jid, mid)
    try:
        items = master.delivery.items_for_load(own, jid, job_load, [mid])
        items += master.delivery.items_for_return(own if master.opts.get("job_cache", True) else own[1:], ret)
        if named:
            items += master.delivery.items_for_return(named, ret, ret_config)
        items += master.delivery.items_for_event(tag, ret)
        if job is None:
            master.state.add_job(jid, job_load, [mid], 0)
        master.delivery.submit(items)
    except ConfigError as exc:  # the master's own job cache options: fixed by its admin, then resent
        log.error("scheduled return %s of %s not stored: %s", jid, mid, exc)
        return None
    except OutboxError as exc:
        master._store_failed(1, exc)
        return None
    master.state.record_returns([(jid, mid, load.get("retcode") if isinstance(load.get("retcode"), int) else 0)])
    if "returns" in master.stats:
        master.stats["returns"] += 1
    master.events.fire(tag, ret)
    return {"cmd": "ack", "jid": jid}


def minion_event(master: Any, mid: str, message: dict[str, Any]) -> dict[str, Any] | None:
    """A beacon event from minion ``mid``: fired on the bus and queued for ``event_return``; a
    refusal (one line) for a tag outside ``salt/beacon/<mid>/``, bad data or a too large event."""
    from saline.transport.framing import encode

    tag, data = message.get("tag"), message.get("data")
    prefix = f"salt/beacon/{mid}/"
    reason = None
    if not isinstance(tag, str) or not tag.startswith(prefix) or len(tag) > MAX_TAG_LENGTH:
        reason = f"an event tag must start with {prefix}"
    elif not isinstance(data, dict):
        reason = "event data must be a map"
    elif len(encode(data)) > MAX_EVENT_BYTES:
        reason = f"event larger than {MAX_EVENT_BYTES} bytes"
    if reason is not None:
        master.stats["events_refused"] = master.stats.get("events_refused", 0) + 1
        log.warning("minion %s sent an event that was refused: %s", mid, reason)
        return {"cmd": "refused", "reason": reason}
    event = master.events.fire(tag, {**data, "id": mid})
    master.stats["minion_events"] = master.stats.get("minion_events", 0) + 1
    items = master.delivery.items_for_event(tag, event["data"])
    if items:
        try:
            master.delivery.submit(items)
        except OutboxError as exc:
            log.error("event %s not queued for event returners: %s", tag, exc)
    return None


async def run_schedule(master: Any) -> None:
    """The master's ``schedule:``: runner functions (``jobs.list_jobs``, ``manage.status``, ...)."""
    try:
        schedule = Schedule(master.opts.get("schedule") or {})
    except ScheduleError as exc:
        log.error("%s", exc)
        return

    async def fire(job: dict[str, Any]) -> None:
        from saline.jid import gen_jid
        from saline.master import runners

        jid = gen_jid()
        try:
            value = await runners.call(master, job["function"], list(job.get("args") or []), dict(job.get("kwargs") or {}))
            result = {"return": value, "retcode": 0, "success": True}
        except runners.RunnerError as exc:
            result = {"return": f"ERROR: {exc}", "retcode": 1, "success": False}
        except Exception as exc:  # the runner raised: its traceback goes with the return
            result = {"return": f"Exception occurred in runner {job['function']}: {type(exc).__name__}: {exc}\n"
                                f"{traceback.format_exc()}", "retcode": 1, "success": False}
        ret = {"id": master.opts["id"], "fun": job["function"], **result, **scheduler_fields(job, jid)}
        names = list(dict.fromkeys(returner_list(job.get("returner"))
                                   + returner_list(master.opts.get("schedule_returner"))))
        event = master.events.fire(f"salt/run/{jid}/ret", ret)
        try:
            items = master.delivery.items_for_return(_known(master, names, master.opts["id"], jid), ret,
                                                     job.get("return_config"), job.get("return_kwargs"))
            master.delivery.submit(items + master.delivery.items_for_event(event["tag"], event["data"]))
        except (ConfigError, OutboxError) as exc:
            log.error("scheduled runner %s (%s): result not stored: %s", job["name"], jid, exc)

    await run_loop(schedule, fire)
