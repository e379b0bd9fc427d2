"""local: returns and events printed as JSON lines, and logged."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import Unsupported


def test_prints_json_lines_and_logs(master_opts: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                    caplog: pytest.LogCaptureFixture) -> None:
    r = registry.create("local", master_opts)
    jid = gen_jid()
    good = {"id": "a", "jid": jid, "fun": "test.ping", "return": True, "retcode": 0, "success": True}
    bad = {"id": "b", "jid": jid, "fun": "cmd.run", "return": "boom", "retcode": 1, "success": False}
    with caplog.at_level(logging.INFO, logger="saline.returners.local"):
        r.returns([good, bad])
        r.event_returns([{"tag": "salt/auth", "data": {"id": "a"}}])
    out = capsys.readouterr().out
    assert out.split("\n") == [json.dumps(good, ensure_ascii=False), json.dumps(bad, ensure_ascii=False),
                               '{"tag": "salt/auth", "data": {"id": "a"}}', ""]
    assert f"return from a for {jid} (test.ping): success" in caplog.text
    assert f"return from b for {jid} (cmd.run): failure, retcode 1" in caplog.text
    assert "event salt/auth" in caplog.text


def test_stores_nothing(master_opts: dict[str, Any]) -> None:
    r = registry.create("local", master_opts)
    assert not r.has_read_side() and r.options == ()
    for call in (lambda: r.get_jid("1"), lambda: r.get_load("1"), lambda: r.save_load("1", {})):
        with pytest.raises(Unsupported):
            call()
