"""pushover: each message as Pushover's API receives it, on a real local HTTP server."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.pushover import TOKEN, USER, pushover
from tests.helpers.httpcapture import Capture


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture(pushover) as server:
        yield server


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "test.arg", "fun_args": ["a", {"k": 1}], "return": value,
            "retcode": 0, "success": True}


def test_each_return_is_one_message_with_salts_text(capture: Capture, master_opts: dict[str, Any],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = registry.create("pushover", {**master_opts, "pushover": {
        "user": USER, "token": TOKEN, "title": "Salt", "device": "phone", "priority": 1, "sound": "siren",
        "api_url": capture.url}})
    jid = gen_jid()
    r.returns([ret(jid, "web1", {"b": [1, 2], "a": "ü"}), ret(jid, "web2", "x" * 5000)])
    assert [q.path for q in capture.requests] == ["/1/messages.json"] * 2
    first, second = (q.form() for q in capture.requests)
    assert capture.requests[0].header("Content-Type") == "application/x-www-form-urlencoded"
    assert first == {"token": TOKEN, "user": USER, "title": "Salt", "device": "phone", "priority": "1",
                     "sound": "siren",
                     "message": f"id: web1\r\nfunction: test.arg\r\nfunction args: ['a', {{'k': 1}}]\r\n"
                                f"jid: {jid}\r\nreturn: {{'a': 'ü', 'b': [1, 2]}}\r\n"}
    assert "expire" not in first and "retry" not in first  # unset options are not sent (Salt sent "None")
    assert len(second["message"]) == 1024 and second["message"].endswith("characters, cut to 1024)")
    assert TOKEN not in caplog.text and USER not in caplog.text


def test_emergency_priority_and_profile(capture: Capture, master_opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="priority 2 needs pushover.expire and pushover.retry"):
        registry.create("pushover", {**master_opts, "pushover.user": USER, "pushover.token": TOKEN,
                                     "pushover.priority": 2})
    # the token from a profile, as Salt's pushover_profile example
    r = registry.create("pushover", {**master_opts, "pushover_profile": {"pushover.token": TOKEN},
                                     "pushover": {"user": USER, "profile": "pushover_profile",
                                                  "priority": "2", "expire": 3600, "retry": 60,
                                                  "api_url": capture.url}})
    r.returns([ret(gen_jid(), "web1")])
    form = capture.requests[0].form()
    assert form["token"] == TOKEN and form["priority"] == "2" and form["expire"] == "3600" and form["retry"] == "60"


def test_refusals_and_check(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = registry.create("pushover", {**master_opts, "pushover.user": USER, "pushover.token": TOKEN,
                                     "pushover.api_url": capture.url})
    r.check()
    assert capture.requests[-1].path == "/1/users/validate.json"
    assert capture.requests[-1].form() == {"token": TOKEN, "user": USER}
    capture.reply("POST", "/1/messages.json", 400, {"token": "invalid", "errors": ["application token is invalid"],
                                                    "status": 0})
    with pytest.raises(BackendUnavailable, match="^returner pushover: Pushover answered HTTP 400") as info:
        r.returns([ret(gen_jid(), "a")])
    assert TOKEN not in str(info.value)
    capture.reply("POST", "/1/messages.json", 400, {"message": "cannot be blank", "errors": ["message cannot be blank"],
                                                    "status": 0})
    with pytest.raises(ReturnerError) as info:
        r.returns([ret(gen_jid(), "a")])
    assert not isinstance(info.value, BackendUnavailable)
    capture.reply("POST", "/1/messages.json", 429, {"status": 0})
    with pytest.raises(BackendUnavailable, match="HTTP 429"):
        r.returns([ret(gen_jid(), "a")])


def test_a_retried_batch_does_not_notify_twice(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = registry.create("pushover", {**master_opts, "pushover.user": USER, "pushover.token": TOKEN,
                                     "pushover.api_url": capture.url})
    jid = gen_jid()
    batch = [ret(jid, f"m{i}") for i in range(4)]
    sent = []

    def record(request: Any) -> dict[str, Any]:
        sent.append(request.form()["message"])
        return {"status": 1}
    capture.reply("POST", "/1/messages.json", 200, record)
    r.returns(batch[:2])
    capture.reply("POST", "/1/messages.json", 503, {"status": 0})
    with pytest.raises(BackendUnavailable):
        r.returns(batch)  # m0 and m1 went before; m2 meets the outage
    capture.reply("POST", "/1/messages.json", 200, record)
    r.returns(batch)  # the outbox tries again: only m2 and m3 are sent
    assert [m.split("\r\n")[0] for m in sent] == ["id: m0", "id: m1", "id: m2", "id: m3"]
