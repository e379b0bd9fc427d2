"""Beacons on this machine's real figures (psutil, /proc), real inotify and a real init-script
service: thresholds, onchangeonly, tags, intervals, validation; the beacons.* module offline."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from saline.config import load_config
from saline.minion.beacons import BeaconError, Beacons, merge
from saline.modules.args import parse_cli_args
from saline.modules.context import ExecContext
from saline.modules.loader import execute, load_functions
from tests.integration.test_exec_modules import initd_service  # noqa: F401  (a fixture)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fire(beacons: Beacons) -> list[dict[str, Any]]:
    return beacons.process()


def test_merge_and_validation_errors() -> None:
    assert merge([{"a": 1}, {"b": 2}]) == {"a": 1, "b": 2} and merge({"a": 1}) == {"a": 1}
    with pytest.raises(BeaconError, match="list of maps"):
        merge(["a"], "x")
    bad = Beacons({"load": [{"averages": {"2m": [0, 1]}}],
                   "diskusage": [{"/": "lots"}],
                   "memusage": [{"interval": 5}],
                   "nosuch": [{"a": 1}],
                   "status": [{"nosuchfunction": "all"}],
                   "inotify": [{"files": {"/no/such/dir": {"mask": ["modify"]}}}],
                   "slow": [{"beacon_module": "load", "averages": {"1m": [0, 1]}}, {"interval": -1}]}, "m1")
    assert "unknown average '2m'" in bad.errors["load"]
    assert "'lots' is not a percentage" in bad.errors["diskusage"]
    assert "'percent' is required" in bad.errors["memusage"]
    assert "Beacon nosuch is not available" in bad.errors["nosuch"]
    assert "status.nosuchfunction is not available" in bad.errors["status"]
    assert "cannot watch /no/such/dir" in bad.errors["inotify"]
    assert "'interval' must be a number of seconds" in bad.errors["slow"]
    assert all("\n" not in e for e in bad.errors.values()) and bad.names() == []


def test_load_fires_outside_its_range_and_onchangeonly() -> None:
    one_minute = os.getloadavg()[0]
    clock = Clock()
    beacons = Beacons({"low": [{"beacon_module": "load"}, {"averages": {"1m": [-1.0, -0.5]}}, {"emitatstartup": False}],
                       "wide": [{"beacon_module": "load"}, {"averages": {"1m": [-1.0, 10_000.0]}},
                                {"emitatstartup": False}],
                       "change": [{"beacon_module": "load"}, {"averages": {"1m": [-1.0, -0.5]}},
                                  {"onchangeonly": True}, {"emitatstartup": False}],
                       "startup": [{"beacon_module": "load"}, {"averages": {"1m": [-1.0, 10_000.0]}}]},
                      "m1", clock=clock)
    events = fire(beacons)
    tags = sorted(e["tag"] for e in events)
    assert tags == ["salt/beacon/m1/low/", "salt/beacon/m1/startup/"]
    data = next(e["data"] for e in events if e["tag"] == "salt/beacon/m1/low/")
    assert set(data) == {"1m", "5m", "15m", "id"} and data["id"] == "m1" and abs(data["1m"] - one_minute) < 5
    assert fire(beacons) == []  # interval (1 s) not over
    clock.now += 1
    assert sorted(e["tag"] for e in fire(beacons)) == ["salt/beacon/m1/low/"]  # no change: onchangeonly quiet


def test_diskusage_memusage_and_status() -> None:
    import psutil

    clock = Clock()
    beacons = Beacons({"diskusage": [{"/": "0%"}, {"^/nomatch.*$": "0%"}, {"interval": 30}],
                       "full": [{"beacon_module": "diskusage"}, {"/": "100%"}],
                       "memusage": [{"percent": "0.1%"}],
                       "status": [{"loadavg": ["1-min"]}, {"meminfo": "all"}]}, "m1", clock=clock)
    events = {"salt/beacon/m1/status/" if "/status/" in e["tag"] else e["tag"]: e["data"] for e in fire(beacons)}
    assert abs(events["salt/beacon/m1/diskusage/"]["diskusage"] - psutil.disk_usage("/").percent) < 1
    assert events["salt/beacon/m1/diskusage/"]["mount"] == "/"
    assert "salt/beacon/m1/full/" not in events or psutil.disk_usage("/").percent >= 100
    assert 0 < events["salt/beacon/m1/memusage/"]["memusage"] <= 100
    status = events["salt/beacon/m1/status/"]["data"]
    assert set(status) == {"loadavg", "meminfo"} and set(status["loadavg"]) == {"1-min"}
    assert "MemTotal" in status["meminfo"]
    clock.now += 5
    assert not any(e["tag"] == "salt/beacon/m1/diskusage/" for e in fire(beacons))  # its interval is 30 s
    clock.now += 30
    assert any(e["tag"] == "salt/beacon/m1/diskusage/" for e in fire(beacons))


def test_inotify_sees_changes_in_a_folder(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    beacons = Beacons({"inotify": [{"files": {str(tmp_path): {"mask": ["create", "modify", "delete"], "recurse": True,
                                                              "exclude": [str(tmp_path / "skip")]}}}]}, "m1",
                      clock=Clock())
    (tmp_path / "a.txt").write_text("1")
    (sub / "b.txt").write_text("2")
    (tmp_path / "skip.txt").write_text("3")
    (tmp_path / "a.txt").unlink()
    time.sleep(0.05)
    seen = [(e["tag"], e["data"]["path"], e["data"]["change"]) for e in fire(beacons)]
    assert (f"salt/beacon/m1/inotify/{tmp_path}", str(tmp_path / "a.txt"), "IN_CREATE") in seen
    assert (f"salt/beacon/m1/inotify/{tmp_path}", str(tmp_path / "a.txt"), "IN_MODIFY") in seen
    assert (f"salt/beacon/m1/inotify/{tmp_path}", str(tmp_path / "a.txt"), "IN_DELETE") in seen
    assert (f"salt/beacon/m1/inotify/{sub}", str(sub / "b.txt"), "IN_CREATE") in seen  # recurse
    assert not any("skip" in path for _t, path, _c in seen)
    beacons.close()


def test_service_beacon_on_a_real_service(initd_service: tuple[str, int]) -> None:  # noqa: F811
    name, _port = initd_service
    clock = Clock()
    beacons = Beacons({"service": [{"services": {name: {"onchangeonly": True}}}]}, "m1", clock=clock)
    first = fire(beacons)
    assert first == [{"tag": f"salt/beacon/m1/service/{name}",
                      "data": {name: {"running": False}, "service_name": name, "id": "m1"}}]
    clock.now += 1
    assert fire(beacons) == []  # no change
    subprocess.run([f"/etc/init.d/{name}", "start"], check=True, capture_output=True)
    clock.now += 1
    assert fire(beacons)[0]["data"][name] == {"running": True}


def test_enable_disable_add_modify_delete() -> None:
    clock = Clock()
    beacons = Beacons({"memusage": [{"percent": "0.1%"}]}, "m1", clock=clock)
    assert len(fire(beacons)) == 1
    beacons.set_beacon_enabled("memusage", False)
    assert beacons.config()["memusage"] == [{"percent": "0.1%"}, {"enabled": False}]
    clock.now += 2
    assert fire(beacons) == []
    beacons.set_beacon_enabled("memusage", True)
    assert len(fire(beacons)) == 1
    beacons.set_enabled(False)
    clock.now += 2
    assert fire(beacons) == [] and beacons.config()["enabled"] is False
    beacons.set_enabled(True)
    with pytest.raises(BeaconError, match="already configured"):
        beacons.add("memusage", [{"percent": "5%"}])
    with pytest.raises(BeaconError, match="not a percentage"):
        beacons.modify("memusage", [{"percent": "x"}])
    assert beacons.config()["memusage"] == [{"percent": "0.1%"}]  # a bad change leaves it as it was
    beacons.modify("memusage", [{"percent": "100%"}])
    beacons.delete("memusage")
    with pytest.raises(BeaconError, match="not configured"):
        beacons.delete("memusage")


def test_beacons_module_offline_saves_beacons_conf(tmp_path: Path) -> None:
    (tmp_path / "minion").write_text("id: off1\n")
    opts = load_config("minion", tmp_path)
    ctx = ExecContext(opts=opts, grains={}, jid="20240101000000000000")
    functions = load_functions({})

    def run(fun: str, *cli: str) -> dict[str, Any]:
        return execute(functions, fun, parse_cli_args(list(cli)), ctx)

    assert run("beacons.add", "diskusage", "[{'/': '90%'}, {interval: 60}]")["return"] == {
        "comment": "Added beacon: diskusage.", "result": True}
    saved = yaml.safe_load((tmp_path / "minion.d" / "beacons.conf").read_text())
    assert saved == {"beacons": {"diskusage": [{"/": "90%"}, {"interval": 60}]}}
    assert load_config("minion", tmp_path)["beacons"] == saved["beacons"]
    assert run("beacons.list_available", "return_yaml=False")["return"] == [
        "diskusage", "inotify", "load", "memusage", "service", "status"]
    failed = run("beacons.add", "load", "[{averages: nope}]")
    assert failed["success"] is False and "configuration invalid" in failed["return"]["comment"]
    assert run("beacons.delete", "nope")["return"] == {"comment": "Beacon nope is not configured.", "result": False}
    assert run("beacons.disable_beacon", "diskusage")["return"]["result"] is True
    assert {"enabled": False} in yaml.safe_load((tmp_path / "minion.d" / "beacons.conf").read_text())["beacons"]["diskusage"]
