"""nagios_nrdp: the NRDP form and its XML, as a real local HTTP server receives them."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest

from saline.config import ConfigError
from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.nagios_nrdp import TOKEN, checkresults, nrdp
from tests.helpers.httpcapture import Capture


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture(nrdp) as server:
        yield server


def ret(jid: str, minion: str, value: Any = True, retcode: int = 0) -> dict[str, Any]:
    return {"id": minion, "jid": jid, "fun": "state.apply", "fun_args": [], "return": value,
            "retcode": retcode, "success": retcode == 0}


def test_a_batch_is_one_submitcheck(capture: Capture, master_opts: dict[str, Any],
                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = registry.create("nagios_nrdp", {**master_opts, "nagios_nrdp": {
        "url": f"{capture.url}/nrdp/", "token": f"  {TOKEN} ", "service": "salt & <jobs>"}})
    jid = gen_jid()
    r.returns([ret(jid, "web1"), ret(jid, "web<2>", {"a": 1}, retcode=2), ret(jid, "web3", False),
               ret(jid, "web4", {})])
    assert len(capture.requests) == 1
    request = capture.requests[0]
    assert request.method == "POST" and request.path == "/nrdp/"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    assert request.query == {}  # the token is in the body, not the URL
    form = request.form()
    assert form["token"] == TOKEN and form["cmd"] == "submitcheck"
    assert form["XMLDATA"].startswith("<?xml version='1.0'?>\n<checkresults>\n<checkresult type='service' checktype='1'>")
    results = checkresults(request)
    assert [c["hostname"] for c in results] == ["web1", "web<2>", "web3", "web4"]
    assert all(c["type"] == "service" and c["checktype"] == "1" and c["servicename"] == "salt & <jobs>" for c in results)
    assert [c["state"] for c in results] == ["0", "2", "2", "2"]  # failed retcode, false, empty: CRITICAL
    assert results[0]["output"] == f"state.apply (jid {jid}): OK"
    assert results[1]["output"] == f"state.apply (jid {jid}): FAILED, retcode 2"
    assert TOKEN not in caplog.text


def test_host_checks_active_and_hostname_template(capture: Capture, master_opts: dict[str, Any]) -> None:
    # Salt's documented spelling nagios.* is read too
    r = registry.create("nagios_nrdp", {**master_opts, "nagios.url": f"{capture.url}/nrdp/", "nagios.token": TOKEN,
                                        "nagios.checktype": "active", "nagios.hostname": "{id}.example.com"})
    r.returns([ret(gen_jid(), "db1")])
    (result,) = checkresults(capture.requests[0])
    assert result["type"] == "host" and result["checktype"] == "0" and "servicename" not in result
    assert result["hostname"] == "db1.example.com"
    with pytest.raises(ConfigError, match="checktype must be active, passive, 0 or 1"):
        registry.create("nagios_nrdp", {**master_opts, "nagios.url": "http://x/", "nagios.token": "t",
                                        "nagios.checktype": "sometimes"})


def test_refusals(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = registry.create("nagios_nrdp", {**master_opts, "nagios_nrdp.url": f"{capture.url}/nrdp/",
                                        "nagios_nrdp.token": TOKEN})
    capture.reply("POST", "/nrdp", 200, "<result><status>-1</status><message>BAD TOKEN</message></result>", "text/xml")
    with pytest.raises(BackendUnavailable, match=r"^returner nagios_nrdp: NRDP at .* refused the results: BAD TOKEN$"):
        r.returns([ret(gen_jid(), "a")])
    capture.reply("POST", "/nrdp", 200, '{"result": {"status": -1, "message": "BAD XML"}}')
    with pytest.raises(ReturnerError, match="refused the results: BAD XML") as info:
        r.returns([ret(gen_jid(), "a")])
    assert not isinstance(info.value, BackendUnavailable)
    capture.reply("POST", "/nrdp", 500, "oops", "text/plain")
    with pytest.raises(BackendUnavailable, match="answered HTTP 500"):
        r.returns([ret(gen_jid(), "a")])
    capture.reply("POST", "/nrdp", 200, '{"result": {"status": 0, "message": "OK"}}')
    r.returns([ret(gen_jid(), "a")])
    r.check()
