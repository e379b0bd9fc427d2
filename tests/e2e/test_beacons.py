"""Beacons firing events that land in salt_events, with real processes and the real MariaDB.

One master (``event_return: mysql``, and a ``schedule:`` of its own running a runner) and one
minion with the ``load`` and ``diskusage`` beacons at thresholds they always cross, an ``inotify``
beacon on a temporary folder, and a scheduled job whose returner runs on the minion
(``returners_on_minion``). Also: ``state.event`` shows beacon events, ``beacons.*`` from the
master, and a minion may not fire events under another minion's tag.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pymysql
import pytest
import yaml
import zmq

from saline.localcluster import LocalCluster
from saline.transport.framing import decode, encode
from saline.transport.keys import ensure_keypair
from tests.conftest import MYSQL, require_port, unique_name
from tests.e2e.test_schedule import query

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_port("MariaDB", MYSQL["host"], MYSQL["port"])
    root = tmp_path_factory.mktemp("beacons")
    name = unique_name("saline_beacon")
    admin = pymysql.connect(host=MYSQL["host"], port=MYSQL["port"], user=MYSQL["user"], password=MYSQL["pass"],
                            autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER IF NOT EXISTS 'salt'@'{host}' IDENTIFIED BY 'saltpass'")
            cur.execute(f"GRANT ALL ON `{name}`.* TO 'salt'@'{host}'")
    db = {**MYSQL, "db": name, "user": "salt", "pass": "saltpass"}
    mid = f"beacon{uuid.uuid4().hex[:8]}"
    watched = root / "watched"
    watched.mkdir()
    runner_lines = root / "runner-results.jsonl"
    master_opts = {"event_return": "mysql", "mysql.host": db["host"], "mysql.port": db["port"],
                   "mysql.user": db["user"], "mysql.pass": db["pass"], "mysql.db": db["db"],
                   "mysql.create_schema": True, "rawfile_json.filename": str(runner_lines),
                   "schedule": {"rl": {"function": "returners.list", "seconds": 2, "returner": "rawfile_json"}}}
    beacons = {
        "load": [{"averages": {"1m": [0.0, 0.0]}}, {"interval": 2}],  # any load is outside [0, 0]
        "diskusage": [{"/": "1%"}, {"interval": 2}],
        "inotify": [{"files": {str(watched): {"mask": ["create", "modify"]}}}, {"interval": 1}],
    }
    edge_db = root / "edge-returns.db"
    schedule = {"edge": {"function": "test.echo", "args": ["kept on the edge"], "seconds": 2, "returner": "sqlite3",
                         "return_job": False}}
    try:
        with LocalCluster(root, master_opts=master_opts) as cluster:
            cluster.start_master()
            cluster.start_minion(mid, beacons=beacons, schedule=schedule, returners_on_minion=True,
                                 **{"sqlite3.database": str(edge_db)})
            cluster.accept(mid)
            yield {"cluster": cluster, "mid": mid, "db": db, "watched": watched, "edge_db": edge_db,
                   "runner_lines": runner_lines}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def events(env: dict, prefix: str) -> list[tuple[str, dict]]:
    try:
        found = query(env["db"], "SELECT tag, data FROM salt_events WHERE tag LIKE %s ORDER BY id", (prefix + "%",))
    except pymysql.err.ProgrammingError:  # the table is created with the first delivery
        return []
    return [(tag, json.loads(data)) for tag, data in found]


def test_load_and_diskusage_beacons_land_in_salt_events(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    cluster.wait_for(lambda: len(events(env, f"salt/beacon/{mid}/load/")) >= 2, 45, "two load beacon events")
    tag, data = events(env, f"salt/beacon/{mid}/load/")[0]
    assert tag == f"salt/beacon/{mid}/load/" and data["id"] == mid
    assert {"1m", "5m", "15m"} <= set(data) and data["1m"] > 0 and data["_stamp"]
    cluster.wait_for(lambda: events(env, f"salt/beacon/{mid}/diskusage/"), 45, "a diskusage beacon event")
    tag, data = events(env, f"salt/beacon/{mid}/diskusage/")[0]
    assert data["mount"] == "/" and 1 <= data["diskusage"] <= 100 and data["id"] == mid


def test_inotify_sees_a_file_written(env: dict) -> None:
    cluster, mid, watched = env["cluster"], env["mid"], env["watched"]
    target = watched / "new-file.txt"
    target.write_text("hello\n")
    prefix = f"salt/beacon/{mid}/inotify/{watched}"
    cluster.wait_for(lambda: any(d["path"] == str(target) for _t, d in events(env, prefix)), 45,
                     "the inotify beacon event")
    seen = [(t, d) for t, d in events(env, prefix) if d["path"] == str(target)]
    assert seen[0][0] == prefix and seen[0][1]["change"] == "IN_CREATE" and seen[0][1]["id"] == mid
    assert {d["change"] for _t, d in seen} >= {"IN_CREATE", "IN_MODIFY"}


def test_state_event_shows_beacon_events(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    watcher = subprocess.run([sys.executable, "-m", "saline.cli.run", "-c", str(cluster.master_dir), "state.event",
                              f"tagmatch=salt/beacon/{mid}/load/*", "count=1"], capture_output=True, text=True,
                             timeout=30)
    tag, _, data = watcher.stdout.strip().partition("\t")
    assert tag == f"salt/beacon/{mid}/load/" and json.loads(data)["id"] == mid


def test_beacons_module_from_the_master(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]

    def call(*args: str) -> Any:
        out = cluster.cli("saline", mid, *args, "--out", "json")
        return json.loads(out.stdout)[mid]

    assert call("beacons.add", "memusage", "[{percent: '1%'}, {interval: 2}]") == {
        "comment": "Added beacon: memusage.", "result": True}
    bad = call("beacons.add", "mem2", "[{percent: lots}, {beacon_module: memusage}]")
    assert bad["result"] is False and "not adding" in bad["comment"] and "\n" not in bad["comment"]
    assert call("beacons.add", "memusage", "[{percent: '5%'}]")["comment"] == "Beacon memusage is already configured."
    cluster.wait_for(lambda: events(env, f"salt/beacon/{mid}/memusage/"), 45, "a memusage beacon event")
    listed = call("beacons.list", "return_yaml=False")
    assert set(listed) == {"load", "diskusage", "inotify", "memusage"}
    assert call("beacons.disable_beacon", "load")["comment"] == f"Disabled beacon load on minion."
    saved = call("beacons.save")
    assert saved["result"] is True
    conf = yaml.safe_load((cluster.minion_dir(mid) / "minion.d" / "beacons.conf").read_text())
    assert conf["beacons"]["memusage"] == [{"percent": "1%"}, {"interval": 2}]
    assert {"enabled": False} in conf["beacons"]["load"]
    time.sleep(3)  # what was fired before is delivered meanwhile
    before = len(events(env, f"salt/beacon/{mid}/load/"))
    time.sleep(4.5)  # two intervals of the load beacon
    assert len(events(env, f"salt/beacon/{mid}/load/")) == before  # disabled: no new event
    assert call("beacons.delete", "memusage")["comment"] == "Deleted beacon: memusage."


def test_a_minion_cannot_fire_another_minions_beacon_events(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]
    public, secret = ensure_keypair(cluster.minion_dir(mid) / "pki", "minion")
    master_pub = (cluster.master_dir / "pki" / "master.pub").read_text().strip()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public.encode(), secret.encode(), master_pub.encode()
    sock.linger = 0
    sock.connect(f"tcp://127.0.0.1:{cluster.ret_port}")
    try:
        replies = []
        for tag in ("salt/beacon/someone-else/load/", "salt/job/20240101000000000000/ret/x"):
            sock.send(encode({"cmd": "_minion_event", "tag": tag, "data": {"1m": 99}}))
            assert sock.poll(10_000), "no answer from the master"
            replies.append(decode(sock.recv(), 1 << 20))
        assert all(r["cmd"] == "refused" and f"salt/beacon/{mid}/" in r["reason"] for r in replies)
        sock.send(encode({"cmd": "_minion_event", "tag": f"salt/beacon/{mid}/custom/", "data": "not a map"}))
        assert sock.poll(10_000) and decode(sock.recv(), 1 << 20)["reason"] == "event data must be a map"
        # a scheduled return without its job's name is malformed; one naming an unknown returner is
        # stored all the same (job cache), the unknown returner left out
        sock.send(encode({"cmd": "_return", "load": {"jid": "20240101000000000001", "fun": "test.ping", "return": True,
                                                     "schedule_route": {"returner": []}}}))
        assert sock.poll(10_000) and decode(sock.recv(), 1 << 20) == {
            "cmd": "refused", "jid": "20240101000000000001", "reason": "malformed return"}
        sock.send(encode({"cmd": "_return", "load": {"jid": "20240101000000000002", "fun": "test.ping", "return": True,
                                                     "retcode": 0, "success": True, "schedule": "handmade",
                                                     "schedule_route": {"returner": ["nosuchreturner"],
                                                                        "return_job": True}}}))
        assert sock.poll(10_000) and decode(sock.recv(), 1 << 20) == {"cmd": "ack", "jid": "20240101000000000002"}
    finally:
        sock.close()
        ctx.term()
    assert not events(env, "salt/beacon/someone-else/") and not events(env, "salt/job/20240101000000000000/")
    stored = cluster.cli("saline-run", "jobs.lookup_jid", "20240101000000000002", "--out", "json")
    assert json.loads(stored.stdout) == {mid: True}


def test_scheduled_returns_on_the_minion_and_the_masters_schedule(env: dict) -> None:
    cluster, mid = env["cluster"], env["mid"]

    def edge_rows() -> list[tuple]:
        try:
            with sqlite3.connect(env["edge_db"]) as conn:
                return conn.execute("SELECT id, jid, full_ret FROM salt_returns WHERE fun = 'test.echo'").fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
    cluster.wait_for(lambda: len(edge_rows()) >= 1, 45, "the minion-side returner's rows")
    row_id, jid, full = edge_rows()[0]
    assert row_id == mid and json.loads(full) == "kept on the edge"
    # return_job False and a minion-side returner: the master's job cache has none of it
    assert json.loads(cluster.cli("saline-run", "jobs.lookup_jid", jid, "--out", "json").stdout) == {}
    # the master's own schedule: a runner every 2 s, its result in rawfile_json
    lines = env["runner_lines"]
    cluster.wait_for(lambda: lines.exists() and '"schedule": "rl"' in lines.read_text(), 45, "the runner's result")
    record = next(json.loads(line) for line in lines.read_text().splitlines() if '"rl"' in line)
    assert record["fun"] == "returners.list" and "mysql" in record["return"] and record["success"] is True
