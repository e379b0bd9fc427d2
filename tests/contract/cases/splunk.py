"""Contract case: ``splunk`` posting to a real local HTTP server standing in for Splunk's HEC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase
from tests.helpers.httpcapture import Capture, Request, shared

TOKEN = "6d3e5a0c-hec-token-secret"


def hec(capture: Capture) -> None:
    capture.reply("POST", "/services/collector/event", 200, {"text": "Success", "code": 0})
    capture.reply("GET", "/services/collector/health", 200, {"text": "HEC is healthy", "code": 17})


def server() -> Capture:
    return shared("splunk", hec)


def events_of(request: Request) -> Iterator[dict[str, Any]]:
    """The HEC events of one request body (JSON objects one after the other)."""
    decoder, text, at = json.JSONDecoder(), request.text(), 0
    while at < len(text):
        while at < len(text) and text[at] in " \r\n\t":
            at += 1
        if at < len(text):
            obj, at = decoder.raw_decode(text, at)
            yield obj


def posted(jid: str) -> list[dict[str, Any]]:
    out = []
    for request in server().matching(lambda r: r.path == "/services/collector/event"):
        for event in events_of(request):
            body = event.get("event") or {}
            if body.get("jid") == jid or jid in str(body.get("tag", "")):
                out.append(event)
    return out


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"splunk_http_forwarder.token": TOKEN, "splunk_http_forwarder.indexer": "127.0.0.1",
            "splunk_http_forwarder.port": server().port, "splunk_http_forwarder.scheme": "http",
            "splunk_http_forwarder.index": "salt", "splunk_http_forwarder.sourcetype": "salt"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"splunk_http_forwarder.port": closed_port(), "splunk_http_forwarder.timeout": 3}


CASES = [ContractCase(
    name="splunk", fixtures=(), config=config, unreachable=unreachable,
    extra={"count": lambda fx, tmp, jid: sum(1 for e in posted(jid) if "tag" not in e["event"]),
           "count_events": lambda fx, tmp, jid: sum(1 for e in posted(jid) if "tag" in e["event"]),
           "fetch": lambda fx, tmp, jid: {e["event"]["id"]: e["event"]["return"] for e in posted(jid)
                                          if "tag" not in e["event"]}},
)]
