"""slack: chat.postMessage as slack_sdk sends it, received by a real local HTTP server."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.slack import TOKEN, slack
from tests.helpers.httpcapture import Capture

HIGHSTATE = {
    "file_|-motd_|-/etc/motd_|-managed": {"result": True, "changes": {"diff": "+hi"}, "comment": "updated"},
    "pkg_|-vim_|-vim_|-installed": {"result": False, "changes": {}, "comment": "failed"},
    "service_|-ssh_|-ssh_|-running": {"result": True, "changes": {}, "comment": "running"},
}


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture(slack) as server:
        yield server


def make(capture: Capture, master_opts: dict[str, Any], **more: Any):
    return registry.create("slack", {**master_opts, "slack": {"api_key": TOKEN, "username": "salt", "as_user": True,
                                                              "api_url": f"{capture.url}/api/", **more}})


def test_salts_message(capture: Capture, master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = make(capture, master_opts)
    jid = gen_jid()
    r.returns([{"id": "web1", "jid": jid, "fun": "test.arg", "fun_args": ["a"], "return": {"k": [1, None]}}])
    (request,) = capture.requests
    assert request.method == "POST" and request.path == "/api/chat.postMessage"
    assert request.header("Authorization") == f"Bearer {TOKEN}"
    assert request.json() == {"channel": "#general", "username": "salt", "as_user": True,
                              "text": f"```id: web1\r\nfunction: test.arg\r\nfunction args: ['a']\r\n"
                                      f"jid: {jid}\r\nreturn: {{'k': [1, None]}}\r\n```"}
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("option, kept", [("changes", ["file_|-motd_|-/etc/motd_|-managed", "pkg_|-vim_|-vim_|-installed"]),
                                          ("only_show_failed", ["pkg_|-vim_|-vim_|-installed"])])
def test_state_filters_and_yaml(capture: Capture, master_opts: dict[str, Any], option: str, kept: list[str]) -> None:
    r = make(capture, master_opts, **{option: True, "yaml_format": True, "channel": "#ops"})
    r.returns([{"id": "web1", "jid": gen_jid(), "fun": "state.apply", "return": HIGHSTATE}])
    body = capture.requests[0].json()
    assert body["channel"] == "#ops"
    shown = body["text"].split("return: ", 1)[1]
    for state in HIGHSTATE:
        assert (f"{state}:" in shown) == (state in kept)
    assert "  comment: failed" in shown  # YAML, not pprint


def test_config_errors_and_refusals(capture: Capture, master_opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="required option slack.api_key is not set"):
        registry.create("slack", {**master_opts, "slack.channel": "#x"})
    with pytest.raises(ConfigError, match="cannot both be set"):
        make(capture, master_opts, changes=True, only_show_failed=True)
    r = make(capture, master_opts)
    r.check()
    assert capture.requests[-1].path == "/api/auth.test"
    capture.reply("POST", "/api/chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    with pytest.raises(BackendUnavailable, match="^returner slack: Slack at .* answered HTTP 200: channel_not_found$"):
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "return": True}])
    capture.reply("POST", "/api/chat.postMessage", 200, {"ok": False, "error": "msg_too_long"})
    with pytest.raises(ReturnerError, match="msg_too_long") as info:
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "return": True}])
    assert not isinstance(info.value, BackendUnavailable)
    capture.reply("POST", "/api/auth.test", 200, {"ok": False, "error": "invalid_auth"})
    with pytest.raises(BackendUnavailable, match="invalid_auth"):
        r.check()


def test_profile_holds_the_key(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = registry.create("slack", {**master_opts, "slack_profile": {"slack.api_key": TOKEN},
                                  "slack": {"profile": "slack_profile",
                                            "api_url": f"{capture.url}/api/"}})
    r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "return": True}])
    assert capture.requests[0].header("Authorization") == f"Bearer {TOKEN}"
    assert "username" not in capture.requests[0].json() and "as_user" not in capture.requests[0].json()
