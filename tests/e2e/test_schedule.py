"""Scheduled jobs feeding the returners, with real processes, the real carbon server and MariaDB.

One master and one minion for the whole file (the tests run in order on it):

1. a minion ``schedule:`` puts ``status.loadavg`` points into carbon, fills ``salt_returns`` and
   the job cache (``return_job``), fires cron jobs on the right second and a ``when`` job once at
   its time, and reports a job that raises with ``success: False`` and its traceback;
2. the master down for 10 s: none of the scheduled returns made meanwhile is lost;
3. ``schedule.add`` from the master, ``schedule.save``, a minion restart: the job is still there;
4. ``pkg.install``/``pkg.remove`` of a small Debian package, as a job from the master.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pymysql
import pytest
import yaml

from saline.localcluster import LocalCluster
from tests.conftest import MYSQL, require_port, unique_name
from tests.contract.cases.carbon import HOST as CARBON_HOST, PORT as CARBON_PORT
from tests.integration.test_returner_carbon import value as carbon_value

pytestmark = pytest.mark.e2e

WHEN_DELAY = 6  # seconds from schedule.add to the `when` job's time


def query(db: dict, sql: str, args: tuple = ()) -> list[tuple]:
    conn = pymysql.connect(host=db["host"], port=db["port"], user=db["user"], password=db["pass"], database=db["db"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def db() -> Iterator[dict]:
    require_port("MariaDB", MYSQL["host"], MYSQL["port"])
    name = unique_name("saline_sched")
    conn = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"],
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")  # the tables: mysql.create_schema
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'salt'@'{host}' IDENTIFIED BY 'saltpass'")
            cur.execute(f"GRANT ALL ON `{name}`.* TO 'salt'@'{host}'")
    try:
        yield {**MYSQL, "db": name, "user": "salt", "pass": "saltpass"}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, db: dict) -> Iterator[dict[str, Any]]:
    require_port("carbon (plaintext)", CARBON_HOST, CARBON_PORT)
    root = tmp_path_factory.mktemp("schedule")
    mid = f"sched{uuid.uuid4().hex[:8]}"
    counter = root / "runs.log"
    schedule = {
        "load": {"function": "status.loadavg", "seconds": 2, "returner": "carbon"},
        "args": {"function": "test.arg", "args": ["one", 2], "kwargs": {"k": "v"}, "seconds": 2,
                 "returner": "mysql", "return_job": True, "metadata": {"team": "ops"}},
        "cron3": {"function": "test.echo", "args": ["cron"], "cron": "* * * * * */3", "returner": "mysql",
                  "return_job": False},
        "boom": {"function": "test.exception", "args": ["kaboom"], "seconds": 3, "returner": "mysql",
                 "return_job": False},
        "counter": {"function": "cmd.run", "args": [f"echo x >> {counter}; wc -l < {counter}"], "seconds": 1,
                    "returner": "mysql", "return_job": False},
    }
    master_opts = {"carbon.host": CARBON_HOST, "carbon.port": CARBON_PORT, "carbon.skip_on_error": True,
                   "mysql.host": db["host"], "mysql.port": db["port"], "mysql.user": db["user"],
                   "mysql.pass": db["pass"], "mysql.db": db["db"], "mysql.create_schema": True}
    with LocalCluster(root, master_opts=master_opts) as cluster:
        cluster.start_master()
        cluster.start_minion(mid, schedule=schedule)
        cluster.accept(mid)
        yield {"cluster": cluster, "mid": mid, "db": db, "counter": counter, "root": root}


def rows(env: dict, fun: str, ret: str | None = None) -> list[tuple[str, Any, str, dict]]:
    """(jid, return, success, full_ret) of the minion's rows for ``fun``, oldest first."""
    sql = "SELECT jid, `return`, success, full_ret FROM salt_returns WHERE id = %s AND fun = %s"
    args: tuple = (env["mid"], fun)
    try:
        found = query(env["db"], sql + " ORDER BY jid", args)
    except pymysql.err.ProgrammingError:  # the table is created with the first delivery
        return []
    out = [(jid, json.loads(r), s, json.loads(f)) for jid, r, s, f in found]
    return [row for row in out if ret is None or row[1] == ret]


def test_scheduled_returns_feed_carbon_mysql_and_the_job_cache(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    # a `when` job added from the master, for a time a few seconds ahead (real time)
    when_at = (dt.datetime.now() + dt.timedelta(seconds=WHEN_DELAY)).replace(microsecond=0)
    added = cluster.cli("saline", mid, "schedule.add", "at", "function=test.echo", "job_args=[when]",
                        f"when={when_at.strftime('%H:%M:%S')}", "returner=mysql")
    assert added.returncode == 0, added.stdout
    # carbon: Salt's metric paths, <fun>.<minion id>.<key>
    assert carbon_value(f"status.loadavg.{mid}.1-min") >= 0.0
    cluster.wait_for(lambda: len(rows(env, "test.arg")) >= 2, 45, "two test.arg rows in salt_returns")
    jid, ret, success, full = rows(env, "test.arg")[0]
    assert ret == {"args": ["one", 2], "kwargs": {"k": "v"}} and success == "1"
    assert full["schedule"] == "args" and full["jid"] == jid and full["id"] == mid and isinstance(full["pid"], int)
    assert full["fun_args"] == ["one", 2, {"k": "v"}]
    assert full["metadata"]["team"] == "ops" and {"_TOS", "_TS", "_TT"} <= set(full["metadata"])
    assert "schedule_route" not in full
    # return_job: the job cache has the job too
    lookup = cluster.cli("saline-run", "jobs.lookup_jid", jid, "--out", "json")
    assert json.loads(lookup.stdout) == {mid: {"args": ["one", 2], "kwargs": {"k": "v"}}}
    listed = json.loads(cluster.cli("saline-run", "jobs.list_jobs", "search_function=test.arg", "--out", "json").stdout)
    assert jid in listed and listed[jid]["Target"] == mid
    # a job that raises: success False, and the traceback in the return
    cluster.wait_for(lambda: rows(env, "test.exception"), 45, "the failing job's row")
    _jid, boom, success, _full = rows(env, "test.exception")[0]
    assert success == "0" and "kaboom" in boom and "Traceback" in boom
    # return_job False: not in the job cache
    assert json.loads(cluster.cli("saline-run", "jobs.lookup_jid", _jid, "--out", "json").stdout) == {}
    # cron with a seconds field fires on its seconds (the jid is the run's start, UTC)
    cluster.wait_for(lambda: len(rows(env, "test.echo", "cron")) >= 2, 45, "two cron rows")
    for jid, *_ in rows(env, "test.echo", "cron"):
        started = dt.datetime.strptime(jid, "%Y%m%d%H%M%S%f")
        assert (started.second + started.microsecond / 1e6) % 3 < 1.5, jid  # at 0, 3, 6, ... s
    # when: once, at its time
    wait = (when_at - dt.datetime.now()).total_seconds() + 10
    cluster.wait_for(lambda: rows(env, "test.echo", "when"), max(wait, 5), "the when job's row")
    time.sleep(1.5)
    whens = rows(env, "test.echo", "when")
    assert len(whens) == 1
    started = dt.datetime.strptime(whens[0][0], "%Y%m%d%H%M%S%f").replace(tzinfo=dt.timezone.utc).astimezone()
    lag = (started.replace(tzinfo=None) - when_at).total_seconds()
    assert 0 <= lag < 3, lag
    status = json.loads(cluster.cli("saline-run", "returners.status", "--out", "json").stdout)
    assert status["carbon"]["delivered"] >= 1 and status["mysql"]["delivered"] >= 4


def test_master_down_for_a_while_loses_no_scheduled_return(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    cluster.wait_for(lambda: len(rows(env, "cmd.run")) >= 2, 45, "the counter job's rows")
    cluster.stop("master")
    time.sleep(10)  # the counter job runs every second meanwhile; its returns wait in the spool
    cluster.start_master()
    cluster.wait_for(lambda: cluster.cli("saline", mid, "test.ping", "-t", "3").returncode == 0, 45, "the minion back")
    stopped = cluster.cli("saline", mid, "schedule.disable_job", "counter", "--out", "json")
    assert json.loads(stopped.stdout)[mid]["result"] is True, stopped.stdout
    time.sleep(1.5)  # a run that started just before is finished
    runs = len(env["counter"].read_text().splitlines())
    assert runs >= 12
    cluster.wait_for(lambda: len(rows(env, "cmd.run")) >= runs, 60, f"{runs} counter rows")
    numbers = sorted(int(r[1]) for r in rows(env, "cmd.run"))
    assert numbers == list(range(1, runs + 1))  # every run, once


def test_schedule_add_save_and_a_minion_restart(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    added = cluster.cli("saline", mid, "schedule.add", "nightly", "function=pkg.list_upgrades", "cron=30 2 * * *",
                        "job_kwargs={refresh: false}", "returner=mysql", "persist=False", "--out", "json")
    assert json.loads(added.stdout)[mid] == {"comment": "Added job: nightly to schedule.", "result": True,
                                             "changes": {"nightly": "added"}}
    bad = cluster.cli("saline", mid, "schedule.add", "broken", "function=test.ping", "cron=99 * * * *")
    assert bad.returncode == 1 and "invalid cron expression" in bad.stdout
    nxt = json.loads(cluster.cli("saline", mid, "schedule.show_next_fire_time", "nightly", "--out", "json").stdout)[mid]
    fire = dt.datetime.strptime(nxt["next_fire_time"], "%Y-%m-%dT%H:%M:%S")
    assert (fire.hour, fire.minute, fire.second) == (2, 30, 0) and fire > dt.datetime.now()
    saved = json.loads(cluster.cli("saline", mid, "schedule.save", "--out", "json").stdout)[mid]
    assert saved["result"] is True
    conf = yaml.safe_load((cluster.minion_dir(mid) / "minion.d" / "_schedule.conf").read_text())
    assert conf["schedule"]["nightly"]["cron"] == "30 2 * * *" and conf["schedule"]["counter"]["enabled"] is False
    cluster.stop(mid)
    cluster.start_minion(mid)
    cluster.wait_for(lambda: cluster.cli("saline", mid, "test.ping", "-t", "3").returncode == 0, 45, "the minion back")
    listed = json.loads(cluster.cli("saline", mid, "schedule.list", "return_yaml=False", "--out", "json").stdout)[mid]
    assert listed["nightly"]["function"] == "pkg.list_upgrades" and listed["nightly"]["kwargs"] == {"refresh": False}
    assert listed["counter"]["enabled"] is False and set(listed) >= {"load", "args", "cron3", "boom", "at"}
    assert "when" in listed["at"]  # added at run time, saved (persist) and read back
    # run_job runs it now, through the same route: its return lands in salt_returns
    ran = json.loads(cluster.cli("saline", mid, "schedule.run_job", "nightly", "--out", "json").stdout)[mid]
    assert ran["result"] is True
    cluster.wait_for(lambda: rows(env, "pkg.list_upgrades"), 60, "the nightly job's row")
    assert rows(env, "pkg.list_upgrades")[0][3]["schedule"] == "nightly"


def test_pkg_install_and_remove_a_small_package(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    package = "sl"
    if subprocess.run(["dpkg-query", "-W", package], capture_output=True).returncode == 0:
        subprocess.run(["apt-get", "remove", "-y", "-q", package], capture_output=True, check=True)
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
    refresh = "refresh=False" if re.search(r"Candidate: (?!\(none\))\S+", policy) else "refresh=True"
    installed = cluster.cli("saline", mid, "pkg.install", package, refresh, "--out", "json", "-t", "300", timeout=320)
    changes = json.loads(installed.stdout)[mid]
    assert installed.returncode == 0 and changes[package]["old"] == "" and changes[package]["new"], installed.stdout
    version = json.loads(cluster.cli("saline", mid, "pkg.version", package, "--out", "json").stdout)[mid]
    assert version == changes[package]["new"] and Path("/usr/games/sl").exists()
    removed = cluster.cli("saline", mid, "pkg.remove", package, "--out", "json", "-t", "120", timeout=140)
    assert json.loads(removed.stdout)[mid] == {package: {"old": version, "new": ""}}
    assert json.loads(cluster.cli("saline", mid, "pkg.version", package, "--out", "json").stdout)[mid] == ""
