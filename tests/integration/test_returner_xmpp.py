"""xmpp: chat messages as another real XMPP client receives them through Prosody."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable
from tests.contract.cases.xmpp import RECEIVER, SENDER, SENDER_PASSWORD, config, receiver


def ret(jid: str, minion: str, value: Any = True) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "test.arg", "fun_args": ["a"], "return": value, "retcode": 0, "success": True}


def received(jid: str) -> list[tuple[str, str, str]]:
    receiver().sync()
    return [m for m in receiver().messages if f"\njid: {jid}\n" in m[2]]


def test_salts_message_one_session_per_batch(master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = registry.create("xmpp", {**master_opts, **config({}, None)})  # type: ignore[arg-type]
    jid = gen_jid()
    r.returns([ret(jid, "web1", {"ü": [1, None]}), ret(jid, "web2", "bell\x07 and \x00 gone")])
    (one, two) = received(jid)
    assert one == (f"{SENDER}/master", "chat",
                   f"id: web1\nfunction: test.arg\nfunction args: ['a']\njid: {jid}\nreturn: {{'ü': [1, None]}}\n")
    assert two[2].endswith("return: 'bell\\x07 and \\x00 gone'\n")  # pprint escapes; nothing XML refuses
    assert SENDER_PASSWORD not in caplog.text


def test_profile_kwargs_and_cut(master_opts: dict[str, Any]) -> None:
    base = {"xmpp.recipient": RECEIVER, "xmpp.host": "127.0.0.1", "xmpp.tls": "none", "xmpp.max_length": 300}
    with pytest.raises(ConfigError, match="required option xmpp.jid is not set"):
        registry.create("xmpp", {**master_opts, **base})
    # Salt's profile form: the credentials in a map of their own
    r = registry.create("xmpp", {**master_opts, **base, "xmpp.profile": "xmpp_profile",
                                 "xmpp_profile": {"xmpp.jid": f"{SENDER}/profiled", "xmpp.password": SENDER_PASSWORD}})
    jid = gen_jid()
    r.returns([ret(jid, "long", "x" * 1000)])
    (message,) = received(jid)
    assert message[0] == f"{SENDER}/profiled" and len(message[2]) <= 300 and message[2].endswith("cut to 300)")
    # --return_kwargs use Salt's internal names
    k = registry.create("xmpp", {**master_opts, **base, "xmpp.jid": "nobody@localhost", "xmpp.password": "x"},
                        None, {"from_jid": f"{SENDER}/kwargs", "password": SENDER_PASSWORD, "recipient_jid": RECEIVER})
    jid = gen_jid()
    k.returns([ret(jid, "kw")])
    assert [m[0] for m in received(jid)] == [f"{SENDER}/kwargs"]


def test_refusals(master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    opts = {**master_opts, **config({}, None), "xmpp.password": "Wrong-Password-1"}  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable, match="^returner xmpp: XMPP server 127.0.0.1:5222 refused the login of "
                                                 "saline@localhost$"):
        registry.create("xmpp", opts).returns([ret(gen_jid(), "a")])
    assert "Wrong-Password-1" not in caplog.text
    # tls: starttls (the default) never sends the password in clear: this Prosody offers no TLS
    strict = {**master_opts, **config({}, None), "xmpp.tls": "starttls"}  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable, match="offers no login this returner may use"):
        registry.create("xmpp", strict).check()
    with pytest.raises(ConfigError, match="tls must be one of"):
        registry.create("xmpp", {**strict, "xmpp.tls": "maybe"})
