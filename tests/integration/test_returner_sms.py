"""sms: Twilio's client sending Salt's text to a real local HTTP server, checked field by field."""

from __future__ import annotations

import base64
import logging
from typing import Any, Iterator

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.sms import MESSAGES, SID, TOKEN, twilio
from tests.helpers.httpcapture import Capture


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture(twilio) as server:
        yield server


def make(capture: Capture, master_opts: dict[str, Any], to: str = "+14155550100"):
    return registry.create("sms", {**master_opts, "sms": {"sid": SID, "token": TOKEN, "to": to,
                                                          "from": "+16505550100", "api_url": capture.url}})


def test_salts_text_to_each_number(capture: Capture, master_opts: dict[str, Any],
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = make(capture, master_opts, to="+14155550100, +14155550101")
    jid = gen_jid()
    r.returns([{"id": "web1", "jid": jid, "fun": "test.ping", "return": True, "success": True},
               {"id": "web2", "jid": jid, "fun": "cmd.run", "return": "x" * 100, "success": False}])
    assert len(capture.requests) == 4
    for request in capture.requests:
        assert request.method == "POST" and request.path == MESSAGES
        assert request.header("Authorization") == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    forms = [q.form() for q in capture.requests]
    assert forms[0] == {"Body": f"Minion: web1\nCmd: test.ping\nSuccess: True\n\nJid: {jid}",
                        "To": "+14155550100", "From": "+16505550100"}
    assert [f["To"] for f in forms] == ["+14155550100", "+14155550101"] * 2
    assert forms[2]["Body"] == f"Minion: web2\nCmd: cmd.run\nSuccess: False\n\nJid: {jid}"
    assert TOKEN not in caplog.text
    assert "BEGIN Twilio API Request" not in caplog.text  # the client's INFO chatter stays out


def test_refusals_and_check(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = make(capture, master_opts)
    r.check()
    assert capture.requests[-1].method == "GET" and capture.requests[-1].path == f"/2010-04-01/Accounts/{SID}.json"
    capture.reply("POST", MESSAGES, 400, {"code": 21211, "message": "The 'To' number is not a valid phone number.",
                                          "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
    with pytest.raises(ReturnerError, match="^returner sms: Twilio answered HTTP 400: code 21211: ") as info:
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "success": True}])
    assert not isinstance(info.value, BackendUnavailable)
    capture.reply("POST", MESSAGES, 401, {"code": 20003, "message": "Authenticate", "status": 401})
    with pytest.raises(BackendUnavailable, match="HTTP 401: code 20003: Unable to create record: Authenticate$") as info:
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "success": True}])
    assert TOKEN not in str(info.value)
