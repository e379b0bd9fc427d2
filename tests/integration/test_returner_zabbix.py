"""zabbix: Salt's trapper items and texts, as a real TCP receiver speaking Zabbix's protocol gets them."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable
from tests.contract.cases.postgres import closed_port
from tests.contract.cases.zabbix import receiver


def state(name: str, result: bool | None, changes: dict, comment: str) -> dict[str, Any]:
    return {"name": name, "result": result, "changes": changes, "comment": comment, "__run_num__": 0}


def test_salts_items_and_texts(master_opts: dict[str, Any], tmp_path: Path) -> None:
    zbx = receiver(tmp_path)
    r = registry.create("zabbix", {**master_opts, "zabbix": {"server": "127.0.0.1", "port": zbx.port}})
    jid = gen_jid()
    highstate = {
        "file_|-motd_|-/etc/motd_|-managed": state("/etc/motd", True, {"diff": "+hi"}, "File /etc/motd updated"),
        "pkg_|-vim_|-vim_|-installed": state("vim", False, {}, "Package vim failed to install"),
        "service_|-ssh_|-ssh_|-running": state("ssh", True, {}, "The service ssh is already running"),
    }
    r.returns([
        {"id": "web1", "jid": jid, "fun": "state.apply", "return": highstate, "retcode": 2, "success": False},
        {"id": "web2", "jid": jid, "fun": "test.ping", "return": True, "retcode": 0, "success": True},
        {"id": "web3", "jid": jid, "fun": "cmd.run", "return": "boom", "retcode": 1, "success": False},
        {"id": "web4", "jid": jid, "fun": "state.apply", "return": {"a_|-b_|-c_|-d": state("c", True, {}, "ok")},
         "retcode": 0, "success": True},
    ])
    assert len(zbx.raw) == 1
    raw = zbx.raw[0]
    assert raw[:5] == b"ZBXD\x01" and struct.unpack("<II", raw[5:13]) == (len(raw) - 13, 0)
    assert json.loads(raw[13:])["request"] == "sender data"
    assert zbx.values() == [
        {"host": "web1", "key": "salt.trap.warning", "value": "SALT:\nname: /etc/motd\ncomment: File /etc/motd updated"},
        {"host": "web1", "key": "salt.trap.high", "value": "SALT:\nname: vim\ncomment: Package vim failed to install"},
        {"host": "web2", "key": "salt.trap.info", "value": "SALT web2 OK"},
        {"host": "web3", "key": "salt.trap.high", "value": "SALT web3 FAILED: cmd.run retcode 1"},
        {"host": "web4", "key": "salt.trap.info", "value": "SALT web4 OK"},
    ]


def test_requests_of_at_most_values_per_request_and_refused_values(
        master_opts: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    zbx = receiver(tmp_path)
    zbx.unknown_hosts = {"m3.example.com"}
    r = registry.create("zabbix", {**master_opts, "zabbix.port": zbx.port, "zabbix.values_per_request": 4,
                                   "zabbix.host": "{id}.example.com"})
    jid = gen_jid()
    with caplog.at_level(logging.WARNING):
        r.returns([{"id": f"m{i}", "jid": jid, "fun": "test.ping", "return": True} for i in range(10)])
    assert [len(q["data"]) for q in zbx.requests] == [4, 4, 2]
    assert [v["host"] for v in zbx.values()] == [f"m{i}.example.com" for i in range(10)]
    assert "returner zabbix: Zabbix at 127.0.0.1:" in caplog.text and "refused 1 of 10 value(s)" in caplog.text
    r.save_load(jid, {"jid": jid})  # Salt's no-op, kept


def test_unreachable(master_opts: dict[str, Any]) -> None:
    r = registry.create("zabbix", {**master_opts, "zabbix.port": closed_port()})
    with pytest.raises(BackendUnavailable, match=r"^returner zabbix: Zabbix at 127.0.0.1:\d+ unreachable: Connection refused$"):
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "return": True}])
    with pytest.raises(BackendUnavailable):
        r.check()
