"""sentry: the envelopes sentry-sdk sends to a real local HTTP server, decoded and checked."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.sentry import ENVELOPE, KEY, dsn, envelope, sentry
from tests.helpers.httpcapture import Capture


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture(sentry) as server:
        yield server


def sent(capture: Capture) -> list[dict[str, Any]]:
    return [payload for r in capture.requests if r.path == ENVELOPE
            for header, payload in envelope(r)[1] if header.get("type") == "event"]


def test_events_as_salt_made_them(capture: Capture, master_opts: dict[str, Any],
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = registry.create("sentry", {**master_opts, "raven": {"dsn": dsn(capture.port), "tags": ["id", "fun", "nope"],
                                                            "environment": "prod"}})
    jid = gen_jid()
    states = {"pkg_|-vim_|-vim_|-installed": {"result": False, "comment": "failed", "changes": {}},
              "file_|-motd_|-/etc/motd_|-managed": {"result": True, "comment": "ok", "changes": {}}}
    r.returns([
        {"id": "web1", "jid": jid, "fun": "test.arg", "fun_args": ["a", 3, "b", {"k": 1, "__kwarg__": True, "z": "y"}],
         "return": {"args": ["a"]}, "retcode": 0, "success": True},
        {"id": "web2", "jid": jid, "fun": "state.apply", "fun_args": [], "return": states, "retcode": 2, "success": False},
        {"id": "web3", "jid": jid, "fun": "cmd.run", "fun_args": ["false"], "return": "", "retcode": 1, "success": False},
    ])
    request = capture.requests[0]
    auth = request.header("X-Sentry-Auth")
    assert auth.startswith("Sentry ") and f"sentry_key={KEY}" in auth
    one, two, three = sent(capture)
    assert one["message"] == one["culprit"] == "salt func: test.arg a b k=1 z=y"
    assert one["level"] == "info" and one["platform"] == "python" and one["logger"] == "salt"
    assert one["tags"] == {"id": "web1", "fun": "test.arg"} and one["server_name"] == "web1"
    assert one["environment"] == "prod" and "release" not in one
    assert one["extra"]["result"]["return"] == {"args": ["a"]} and one["extra"]["result"]["jid"] == jid
    assert two["message"] == "salt func: state.apply" and two["level"] == "error"
    assert two["extra"]["result"]["failed_states"] == {"pkg_|-vim_|-vim_|-installed": states["pkg_|-vim_|-vim_|-installed"]}
    assert three["message"] == "salt func: cmd.run false" and three["level"] == "error"
    assert KEY not in caplog.text


def test_errors_only_and_servers_form(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = registry.create("sentry", {**master_opts, "raven": {
        "servers": [capture.url], "public_key": KEY, "secret_key": "oldsecret", "project": "1",
        "report_errors_only": True, "hide_pillar": True}})
    jid = gen_jid()
    r.returns([{"id": "ok", "jid": jid, "fun": "test.ping", "return": True, "success": True},
               {"id": "bad", "jid": jid, "fun": "test.ping", "return": False, "success": False}])
    assert [e["server_name"] for e in sent(capture)] == ["bad"]
    with pytest.raises(ConfigError, match="set raven.dsn, or raven.servers"):
        registry.create("sentry", {**master_opts, "raven.tags": ["id"]})


def test_refusals(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = registry.create("sentry", {**master_opts, "raven.dsn": dsn(capture.port)})
    r.check()
    capture.reply("POST", ENVELOPE, 400, {"detail": "invalid event"})
    with pytest.raises(ReturnerError, match=r"^returner sentry: Sentry at http://127.0.0.1:\d+ answered HTTP 400") as info:
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "return": True, "success": True}])
    assert not isinstance(info.value, BackendUnavailable) and KEY not in str(info.value)
    capture.reply("POST", ENVELOPE, 429, {"detail": "slow down"})
    with pytest.raises(BackendUnavailable, match="HTTP 429"):
        r.returns([{"id": "a", "jid": gen_jid(), "fun": "test.ping", "return": True, "success": True}])
