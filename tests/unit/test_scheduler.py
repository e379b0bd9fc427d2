"""The scheduler's clock-driven part with an injected clock: intervals, cron, when, once, splay,
range, maxrunning, run_on_start, restarts; schedule entries' validation; the schedule.* module
offline (the saved _schedule.conf)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from saline.config import load_config
from saline.minion.scheduler import Schedule, ScheduleError, job_args, normalize, save, scheduler_fields
from saline.modules.args import parse_cli_args
from saline.modules.context import ExecContext
from saline.modules.loader import execute, load_functions


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, when: dt.datetime) -> float:
        self.now = when.timestamp()
        return self.now


def local(*parts: int) -> dt.datetime:
    return dt.datetime(*parts)


def fired(schedule: Schedule, now: float | None = None) -> list[str]:
    jobs = schedule.due(now)
    for job in jobs:
        schedule.finished(job["name"])
    return [j["name"] for j in jobs]


# -- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, message", [
    ({"seconds": 5}, "'function' is required"),
    ({"function": "test.ping"}, "no time given"),
    ({"function": "test.ping", "seconds": 5, "cron": "* * * * *"}, "cannot be used with cron"),
    ({"function": "test.ping", "when": "5pm", "cron": "* * * * *"}, "when and cron cannot be used together"),
    ({"function": "test.ping", "cron": "61 * * * *"}, "invalid cron expression"),
    ({"function": "test.ping", "seconds": "often"}, "'seconds' must be a number"),
    ({"function": "test.ping", "seconds": 0}, "longer than 0 seconds"),
    ({"function": "test.ping", "seconds": 5, "maxrunning": 0}, "'maxrunning' must be a whole number"),
    ({"function": "test.ping", "when": "not a time at all"}, "when: cannot read"),
    ({"function": "test.ping", "once": "tomorrowish"}, "does not match"),
    ({"function": "test.ping", "seconds": 5, "splay": {"start": 9, "end": 2}}, "'splay' must be"),
    ({"function": "test.ping", "seconds": 5, "range": {"start": "8am"}}, "'range' must be a map with start and end"),
    ({"function": "test.ping", "seconds": 5, "enabled": "yes"}, "'enabled' must be true or false"),
    ({"function": "test.ping", "seconds": 5, "args": {"a": 1}}, "'args' must be a list"),
    ({"function": "test.ping", "seconds": 5, "return_kwargs": "db=x"}, "'return_kwargs' must be a map"),
])
def test_bad_entries_are_one_line(entry: dict, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        normalize("job1", entry)
    assert "\n" not in str(info.value) and str(info.value).startswith(("schedule job 'job1'", "invalid"))


def test_defaults_and_strictness() -> None:
    job = normalize("j", {"function": "test.ping", "minutes": 1, "args": "one"})
    assert job == {"function": "test.ping", "minutes": 1, "args": ["one"], "name": "j", "enabled": True,
                   "jid_include": True, "run_on_start": False, "return_job": True, "maxrunning": 1}
    with pytest.raises(ScheduleError, match="unknown option"):
        normalize("j", {"function": "test.ping", "seconds": 1, "colour": "red"}, strict=True)
    assert "colour" not in normalize("j", {"function": "test.ping", "seconds": 1, "colour": "red"})


def test_a_bad_job_in_the_config_leaves_the_others_running() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    schedule = Schedule({"good": {"function": "test.ping", "seconds": 10}, "bad": {"function": "x", "cron": "nope"}},
                        clock=clock)
    assert schedule.names() == ["good"] and "invalid cron expression" in schedule.errors["bad"]
    with pytest.raises(ScheduleError, match="must be a map of job name"):
        Schedule(["not", "a", "map"])


# -- intervals -------------------------------------------------------------------------------------

def test_interval_counts_from_the_start_and_keeps_its_phase() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    start = clock.now
    schedule = Schedule({"load": {"function": "status.loadavg", "seconds": 30, "minutes": 1}}, clock=clock)
    assert schedule.next_fire_time("load") == start + 90
    assert fired(schedule) == []
    assert fired(schedule, start + 89.9) == []
    assert fired(schedule, start + 90.4) == ["load"]
    assert schedule.next_fire_time("load") == start + 180  # the phase, not 90.4 + 90
    # the machine slept for ten intervals: one run, not ten, and the phase is kept
    assert fired(schedule, start + 1000) == ["load"]
    assert fired(schedule, start + 1000) == []
    assert schedule.next_fire_time("load") == start + 1080


def test_run_on_start_runs_once_at_start() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    schedule = Schedule({"j": {"function": "test.ping", "hours": 1, "run_on_start": True},
                         "k": {"function": "test.ping", "hours": 1}}, clock=clock)
    assert fired(schedule) == ["j"]
    assert schedule.next_fire_time("j") == clock.now + 3600 and schedule.next_fire_time("k") == clock.now + 3600


def test_maxrunning_skips_while_earlier_runs_go_on() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    schedule = Schedule({"slow": {"function": "test.sleep", "seconds": 1, "maxrunning": 2}}, clock=clock)
    t0 = clock.now
    assert [j["name"] for j in schedule.due(t0 + 1)] == ["slow"]   # 1 running
    assert [j["name"] for j in schedule.due(t0 + 2)] == ["slow"]   # 2 running
    assert schedule.due(t0 + 3) == []                               # at maxrunning: skipped
    schedule.finished("slow")
    assert [j["name"] for j in schedule.due(t0 + 4)] == ["slow"]


def test_splay_delays_each_run_within_bounds_without_drift() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    t0 = clock.now
    schedule = Schedule({"s": {"function": "test.ping", "seconds": 60, "splay": {"start": 5, "end": 10}}},
                        clock=clock, rng=random.Random(7))
    for n in range(1, 6):
        fire = schedule.next_fire_time("s")
        assert t0 + 60 * n + 5 <= fire <= t0 + 60 * n + 10
        assert fired(schedule, fire - 0.01) == []
        assert fired(schedule, fire) == ["s"]


def test_range_after_and_until_skip_runs_outside_their_window() -> None:
    clock = Clock(local(2024, 3, 4, 7, 58, 0))
    schedule = Schedule({"office": {"function": "test.ping", "minutes": 1, "range": {"start": "8:00am", "end": "5:00pm"}},
                         "night": {"function": "test.ping", "minutes": 1,
                                   "range": {"start": "8:00am", "end": "5:00pm", "invert": True}}}, clock=clock)
    assert fired(schedule, clock.at(local(2024, 3, 4, 7, 59, 0))) == ["night"]
    assert fired(schedule, clock.at(local(2024, 3, 4, 8, 0, 0))) == ["office"]
    assert fired(schedule, clock.at(local(2024, 3, 4, 17, 1, 0))) == ["night"]
    clock = Clock(local(2024, 3, 4, 11, 59, 0))
    windowed = Schedule({"w": {"function": "test.ping", "minutes": 1, "after": "2024-03-04 12:01", "until": "12:02"}},
                        clock=clock)
    assert fired(windowed, clock.at(local(2024, 3, 4, 12, 0, 0))) == []
    assert fired(windowed, clock.at(local(2024, 3, 4, 12, 1, 0))) == ["w"]
    assert fired(windowed, clock.at(local(2024, 3, 4, 12, 2, 0))) == ["w"]
    assert fired(windowed, clock.at(local(2024, 3, 4, 12, 3, 0))) == []


# -- cron, when, once ------------------------------------------------------------------------------

def test_cron_fires_at_the_right_minutes() -> None:
    clock = Clock(local(2024, 3, 4, 12, 3, 10))
    schedule = Schedule({"c": {"function": "test.ping", "cron": "*/5 * * * *"}}, clock=clock)
    assert schedule.next_fire_time("c") == local(2024, 3, 4, 12, 5, 0).timestamp()
    assert fired(schedule, clock.at(local(2024, 3, 4, 12, 4, 59))) == []
    assert fired(schedule, clock.at(local(2024, 3, 4, 12, 5, 0, 200000))) == ["c"]
    assert schedule.next_fire_time("c") == local(2024, 3, 4, 12, 10, 0).timestamp()
    nightly = Schedule({"n": {"function": "pkg.list_upgrades", "cron": "30 2 * * 1-5"}},
                       clock=Clock(local(2024, 3, 8, 3, 0, 0)))  # a Friday after 2:30
    assert nightly.next_fire_time("n") == local(2024, 3, 11, 2, 30, 0).timestamp()  # Monday


def test_cron_with_seconds_field() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 1))
    schedule = Schedule({"c": {"function": "test.ping", "cron": "* * * * * */20"}}, clock=clock)
    assert schedule.next_fire_time("c") == local(2024, 3, 4, 12, 0, 20).timestamp()


def test_when_daily_weekly_and_dated() -> None:
    clock = Clock(local(2024, 3, 4, 16, 59, 0))  # a Monday
    schedule = Schedule({"daily": {"function": "test.ping", "when": "5:00pm"},
                         "weekly": {"function": "test.ping", "when": ["Wednesday 9:00am", "Monday 4:00pm"]},
                         "dated": {"function": "test.ping", "when": "2024-03-04 17:30"},
                         "past": {"function": "test.ping", "when": "2024-03-01 10:00"}}, clock=clock)
    assert schedule.next_fire_time("daily") == local(2024, 3, 4, 17, 0).timestamp()
    assert schedule.next_fire_time("weekly") == local(2024, 3, 6, 9, 0).timestamp()  # Monday 4pm has passed
    assert schedule.next_fire_time("past") is None
    assert fired(schedule, clock.at(local(2024, 3, 4, 17, 0, 0))) == ["daily"]
    assert schedule.next_fire_time("daily") == local(2024, 3, 5, 17, 0).timestamp()
    assert fired(schedule, clock.at(local(2024, 3, 4, 17, 30, 0))) == ["dated"]
    assert schedule.next_fire_time("dated") is None  # a dated time runs once
    assert fired(schedule, clock.at(local(2024, 3, 6, 9, 0, 1))) == ["daily", "weekly"]
    assert schedule.next_fire_time("weekly") == local(2024, 3, 11, 16, 0).timestamp()


def test_once_runs_once_and_a_past_once_never() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    schedule = Schedule({"soon": {"function": "test.ping", "once": "2024-03-04T12:00:30"},
                         "fmt": {"function": "test.ping", "once": "04/03/2024 12:01", "once_fmt": "%d/%m/%Y %H:%M"},
                         "gone": {"function": "test.ping", "once": "2024-03-04T11:00:00"}}, clock=clock)
    assert schedule.next_fire_time("gone") is None
    assert fired(schedule, clock.at(local(2024, 3, 4, 12, 0, 30))) == ["soon"]
    assert fired(schedule, clock.at(local(2024, 3, 4, 12, 1, 0))) == ["fmt"]
    assert fired(schedule, clock.at(local(2024, 3, 5, 12, 1, 0))) == []


def test_a_restart_does_not_run_missed_runs_unless_run_on_start() -> None:
    entries = {"c": {"function": "test.ping", "cron": "0 * * * *"},
               "w": {"function": "test.ping", "when": "3:00am"},
               "i": {"function": "test.ping", "minutes": 10},
               "r": {"function": "test.ping", "cron": "0 * * * *", "run_on_start": True}}
    # the minion was down from 2:50 to 4:20: 3:00 and 4:00 (cron), 3:00 (when) were missed
    clock = Clock(local(2024, 3, 4, 4, 20, 0))
    schedule = Schedule(entries, clock=clock)
    assert fired(schedule) == ["r"]  # only the one that asks, once
    assert fired(schedule) == []
    assert schedule.next_fire_time("c") == local(2024, 3, 4, 5, 0).timestamp()
    assert schedule.next_fire_time("w") == local(2024, 3, 5, 3, 0).timestamp()
    assert schedule.next_fire_time("i") == local(2024, 3, 4, 4, 30).timestamp()


# -- changes at run time ---------------------------------------------------------------------------

def test_add_modify_enable_disable_run_now_delete() -> None:
    clock = Clock(local(2024, 3, 4, 12, 0, 0))
    t0 = clock.now
    schedule = Schedule({}, clock=clock)
    woken = []
    schedule.changed = lambda: woken.append(1)
    schedule.add("j", {"function": "test.ping", "seconds": 10})
    with pytest.raises(ScheduleError, match="Job j already exists in schedule."):
        schedule.add("j", {"function": "test.ping", "seconds": 10})
    old, new = schedule.modify("j", {"cron": "*/2 * * * *"})
    assert old["seconds"] == 10 and "seconds" not in new and new["cron"] == "*/2 * * * *"
    assert schedule.next_fire_time("j") == local(2024, 3, 4, 12, 2).timestamp()
    schedule.set_job_enabled("j", False)
    assert fired(schedule, t0 + 120) == []
    with pytest.raises(ScheduleError, match="Job j is disabled."):
        schedule.run_now("j")
    schedule.run_now("j", force=True)
    assert fired(schedule) == ["j"]
    schedule.set_job_enabled("j", True)
    schedule.set_enabled(False)
    assert fired(schedule, t0 + 600) == []
    assert schedule.entries()["enabled"] is False
    schedule.set_enabled(True)
    assert fired(schedule, t0 + 720) == ["j"]
    schedule.delete("j")
    with pytest.raises(ScheduleError, match="Job j does not exist in schedule."):
        schedule.delete("j")
    assert len(woken) >= 8


def test_scheduler_fields_and_args() -> None:
    job = normalize("load", {"function": "test.arg", "seconds": 5, "args": [1, "a"], "kwargs": {"k": "v"},
                             "metadata": {"team": "ops"}})
    assert job_args(job) == [1, "a", {"k": "v", "__kwarg__": True}]
    fields = scheduler_fields(job, "20240304120000000000", clock=lambda: 1709553600.0)
    assert fields["schedule"] == "load" and fields["jid"] == "20240304120000000000" and fields["pid"] > 0
    assert fields["fun_args"] == [1, "a", {"k": "v"}]
    assert fields["metadata"]["team"] == "ops" and set(fields["metadata"]) == {"team", "_TOS", "_TS", "_TT"}


def test_save_writes_minion_d_and_the_config_reads_it_back(tmp_path: Path) -> None:
    (tmp_path / "minion").write_text(yaml.safe_dump({"id": "m1", "schedule": {"old": {"function": "test.ping",
                                                                                        "seconds": 5}}}))
    opts = load_config("minion", tmp_path)
    schedule = Schedule(opts["schedule"])
    schedule.add("new", {"function": "status.loadavg", "minutes": 1, "returner": ["carbon", "mysql"]})
    path = save(opts, schedule.entries())
    assert path == tmp_path / "minion.d" / "_schedule.conf"
    again = load_config("minion", tmp_path)
    assert set(again["schedule"]) == {"old", "new"}
    assert again["schedule"]["new"]["returner"] == ["carbon", "mysql"] and "name" not in again["schedule"]["new"]


# -- the schedule.* module, with no minion running (Salt's offline mode) --------------------------

def run(ctx: ExecContext, fun: str, *cli: str) -> dict[str, Any]:
    return execute(load_functions({}), fun, parse_cli_args(list(cli)), ctx)


def test_schedule_module_offline(tmp_path: Path) -> None:
    (tmp_path / "minion").write_text("id: offline1\n")
    opts = load_config("minion", tmp_path)
    ctx = ExecContext(opts=opts, grains={}, jid="20240101000000000000")
    added = run(ctx, "schedule.add", "job1", "function=test.ping", "seconds=3600", "returner=mysql")
    assert added["return"] == {"comment": "Added job: job1 to schedule.", "result": True,
                               "changes": {"job1": "added"}}
    saved = yaml.safe_load((tmp_path / "minion.d" / "_schedule.conf").read_text())
    assert saved["schedule"]["job1"]["seconds"] == 3600 and saved["schedule"]["job1"]["returner"] == "mysql"
    listed = run(ctx, "schedule.list", "return_yaml=False")["return"]
    assert listed["job1"]["function"] == "test.ping"
    assert yaml.safe_load(run(ctx, "schedule.list")["return"])["schedule"]["job1"]["seconds"] == 3600
    modified = run(ctx, "schedule.modify", "job1", "seconds=60")["return"]
    assert modified["result"] and modified["changes"]["job1"]["new"]["seconds"] == 60
    nxt = run(ctx, "schedule.show_next_fire_time", "job1")["return"]
    assert nxt["result"] is True and dt.datetime.strptime(nxt["next_fire_time"], "%Y-%m-%dT%H:%M:%S")
    assert run(ctx, "schedule.disable_job", "job1")["return"]["comment"] == "Disabled Job job1 in schedule."
    assert run(ctx, "schedule.is_enabled", "job1")["return"] is False
    assert run(ctx, "schedule.delete", "job1")["return"]["changes"] == {"job1": "removed"}
    for args, message in [(("schedule.add", "job2", "seconds=5"), "'function' is required"),
                          (("schedule.add", "job2", "function=test.ping", "cron=bogus"), "invalid cron expression"),
                          (("schedule.delete", "nope"), "Job nope does not exist in schedule."),
                          (("schedule.run_job", "nope"), "The minion is not running here"),
                          (("schedule.add", "job2", "function=test.ping", "seconds=5", "colour=red"), "unknown option")]:
        ret = run(ctx, *args)
        assert ret["success"] is False and ret["retcode"] == 1, ret
        assert message in ret["return"]["comment"] and "\n" not in ret["return"]["comment"]


# -- the minion side: running a due job and routing its return --------------------------------------

class Recorder:
    """The minion the scheduler talks to: a real executor and spool; what it sends is recorded."""

    def __init__(self, tmp: Path, **opts: Any) -> None:
        import concurrent.futures

        from saline.minion.executor import Executor
        from saline.minion.spool import Spool

        self.id = "m1"
        self.opts = {"id": "m1", "cachedir": str(tmp), **opts}
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.executor = Executor(self.opts, {"id": "m1"}, load_functions({}), self.pool)
        self.spool = Spool(tmp / "spool.db")
        self.sent: list[dict] = []
        self.local: list[tuple[list[str], dict, dict]] = []

    def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def _return_locally(self, names: list[str], publish: dict[str, Any], ret: dict[str, Any]) -> None:
        self.local.append((names, publish, ret))


def test_a_fired_job_is_spooled_with_its_route(tmp_path: Path) -> None:
    import asyncio

    from saline.minion.scheduler import MinionScheduler

    minion = Recorder(tmp_path, schedule_returner=["b", "a"])
    sched = MinionScheduler(minion)
    job = normalize("j", {"function": "test.arg", "args": [1], "kwargs": {"k": 2}, "seconds": 5, "returner": "a",
                          "return_config": "alt", "return_kwargs": {"db": "x"}, "jid_include": False})
    asyncio.run(sched.fire(job))
    (message,) = minion.sent
    load = message["load"]
    assert load["return"] == {"args": [1], "kwargs": {"k": 2}} and load["success"] is True
    assert load["schedule"] == "j" and load["fun_args"] == [1, {"k": 2}] and load["ret_config"] == "alt"
    assert load["schedule_route"] == {"returner": ["a", "b"], "return_job": True, "ret_config": "alt"}
    assert minion.spool.due("m1", -1)[0][1] == load  # waits in the spool until the master acks
    assert minion.local == []


def test_a_raising_job_and_returners_on_the_minion(tmp_path: Path) -> None:
    import asyncio

    from saline.minion.scheduler import MinionScheduler

    minion = Recorder(tmp_path, returners_on_minion=True)
    sched = MinionScheduler(minion)
    boom = normalize("boom", {"function": "test.exception", "args": ["kaboom"], "seconds": 5, "returner": "sqlite3",
                              "return_job": False, "return_kwargs": {"database": "/tmp/x.db"}})
    asyncio.run(sched.fire(boom))
    assert minion.sent == [] and minion.spool.count("m1") == 0  # return_job False: nothing for the master
    ((names, publish, ret),) = minion.local
    assert names == ["sqlite3"] and publish["ret_kwargs"] == {"database": "/tmp/x.db"}
    assert ret["success"] is False and ret["retcode"] == 1
    assert "kaboom" in ret["return"] and "Traceback" in ret["return"] and ret["schedule"] == "boom"
    ping = normalize("ping", {"function": "test.ping", "seconds": 5, "returner": "sqlite3"})
    asyncio.run(sched.fire(ping))
    assert minion.sent[0]["load"]["schedule_route"]["returner"] == []  # the master gets it for its job cache only
