"""splunk: the HEC requests as they reach a real local HTTP server, field by field."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Iterator

import pytest

from saline.jid import gen_jid
from saline.returners import registry
from saline.returners.base import BackendUnavailable, ReturnerError
from tests.contract.cases.splunk import TOKEN, events_of, hec
from tests.helpers.httpcapture import Capture


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture(hec) as server:
        yield server


def ret(jid: str, minion: str, value: Any = True, **extra: Any) -> dict[str, Any]:
    return {"cmd": "_return", "id": minion, "jid": jid, "fun": "test.ping", "fun_args": [], "return": value,
            "retcode": 0, "success": True, "_stamp": "2024-01-05T12:34:56.123456", **extra}


def make(capture: Capture, master_opts: dict[str, Any], **more: Any):
    # Salt's form: one map under splunk_http_forwarder
    conf = {"token": TOKEN, "indexer": "127.0.0.1", "port": capture.port, "scheme": "http",
            "index": "salt_idx", "sourcetype": "salt:return", **more}
    return registry.create("splunk", {**master_opts, "splunk_http_forwarder": conf})


def test_a_batch_is_one_request_with_salts_events(capture: Capture, master_opts: dict[str, Any],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = make(capture, master_opts)
    jid = gen_jid()
    rets = [ret(jid, f"web{i}", {"i": i, "ü": "漢字"}) for i in range(50)]
    before = int(time.time())
    r.returns(rets)
    assert len(capture.requests) == 1
    request = capture.requests[0]
    assert request.method == "POST" and request.path == "/services/collector/event"
    assert request.header("Authorization") == f"Splunk {TOKEN}"
    assert request.header("Content-Type") == "application/json"
    events = list(events_of(request))
    assert len(events) == 50
    for i, event in enumerate(events):
        assert list(event) == ["time", "index", "sourcetype", "event", "host"]  # Salt's order
        assert isinstance(event["time"], str) and before <= int(event["time"]) <= int(time.time())
        assert event["index"] == "salt_idx" and event["sourcetype"] == "salt:return"
        assert event["event"] == rets[i]
        assert event["host"] == f"web{i}"
    assert TOKEN not in caplog.text


def test_events_and_unset_index(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = make(capture, master_opts, index=None, sourcetype="")
    r.event_returns([{"tag": "salt/job/1/new", "data": {"jid": "1", "_stamp": "x"}, "other": "dropped"},
                     {"tag": "salt/auth", "data": {"id": "m1"}}])
    events = list(events_of(capture.requests[0]))
    assert [e["event"] for e in events] == [{"tag": "salt/job/1/new", "data": {"jid": "1", "_stamp": "x"}},
                                           {"tag": "salt/auth", "data": {"id": "m1"}}]
    assert all(set(e) == {"time", "event", "host"} and e["host"] == socket.gethostname() for e in events)


def test_large_batches_are_split_at_max_content_bytes(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = make(capture, master_opts, max_content_bytes=20_000)
    jid = gen_jid()
    r.returns([ret(jid, f"m{i}", "x" * 3000) for i in range(20)])
    assert len(capture.requests) > 1
    assert all(len(q.body) <= 20_000 for q in capture.requests)
    assert sum(len(list(events_of(q))) for q in capture.requests) == 20


def test_refusals(capture: Capture, master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = make(capture, master_opts)
    capture.reply("POST", "/services/collector/event", 503, {"text": "Server is busy", "code": 9})
    with pytest.raises(BackendUnavailable, match=r"^returner splunk: Splunk HEC at http://127.0.0.1:\d+ answered HTTP 503"):
        r.returns([ret(gen_jid(), "a")])
    capture.reply("POST", "/services/collector/event", 403, {"text": "Invalid token", "code": 4})
    with pytest.raises(BackendUnavailable, match="HTTP 403"):
        r.returns([ret(gen_jid(), "a")])
    capture.reply("POST", "/services/collector/event", 400, {"text": "Invalid data format", "code": 6})
    with pytest.raises(ReturnerError, match="HTTP 400") as info:
        r.returns([ret(gen_jid(), "a")])
    assert not isinstance(info.value, BackendUnavailable)  # the batch is split to find the bad event
    assert TOKEN not in caplog.text


def test_a_retried_batch_sends_only_what_did_not_go(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = make(capture, master_opts)
    jid = gen_jid()
    first = [ret(jid, "a"), ret(jid, "b")]
    r.returns(first)
    r.returns(first + [ret(jid, "c")])  # the outbox retries a batch of which a and b had gone
    hosts = [e["host"] for q in capture.requests for e in events_of(q)]
    assert hosts == ["a", "b", "c"]


def test_check_uses_the_health_endpoint(capture: Capture, master_opts: dict[str, Any]) -> None:
    r = make(capture, master_opts)
    r.check()
    assert capture.requests[-1].method == "GET" and capture.requests[-1].path == "/services/collector/health"
    capture.reply("GET", "/services/collector/health", 503, {"text": "HEC is unhealthy", "code": 18})
    with pytest.raises(BackendUnavailable):
        r.check()


def test_through_the_masters_delivery_an_outage_loses_and_repeats_nothing(
        capture: Capture, master_opts: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    from pathlib import Path

    from saline.master.delivery import Delivery
    from saline.master.outbox import SqliteOutbox

    caplog.set_level(logging.DEBUG)
    opts = {**master_opts, "returner_retry_max_seconds": 0.3, "event_return": "splunk",
            "splunk_http_forwarder": {"token": TOKEN, "indexer": "127.0.0.1", "port": capture.port, "scheme": "http"}}
    outbox = SqliteOutbox(Path(opts["cachedir"]) / "outbox.db")
    delivery = Delivery(opts, outbox)
    capture.reply("POST", "/services/collector/event", 503, {"text": "Server is busy", "code": 9})
    delivery.start()
    try:
        jid = gen_jid()
        for i in range(300):
            delivery.submit(delivery.items_for_return(["splunk"], ret(jid, f"m{i}")))
        delivery.submit(delivery.items_for_event("salt/auth", {"id": "m0"}))
        capture.wait(lambda r: r.path == "/services/collector/event", 2)  # refused while the HEC is busy
        capture.reply("POST", "/services/collector/event", 200, {"text": "Success", "code": 0})
        assert delivery.flush(30)
    finally:
        delivery.stop()
        outbox.close()
    accepted = [e for q in capture.requests if q.path == "/services/collector/event" and q.status == 200
                for e in events_of(q)]
    assert sorted(e["host"] for e in accepted if "tag" not in e["event"]) == sorted(f"m{i}" for i in range(300))
    assert [e["event"] for e in accepted if "tag" in e["event"]] == [{"tag": "salt/auth", "data": {"id": "m0"}}]
    assert "returner splunk: " in caplog.text and "answered HTTP 503" in caplog.text  # the outage, logged
    assert TOKEN not in caplog.text
