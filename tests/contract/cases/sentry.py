"""Contract case: ``sentry`` (sentry-sdk) sending envelopes to a real local HTTP server with a DSN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase
from tests.helpers.httpcapture import Capture, Request, shared

KEY = "0123456789abcdefSentryKey"
ENVELOPE = "/api/1/envelope/"


def sentry(capture: Capture) -> None:
    capture.reply("POST", ENVELOPE, 200, lambda r: {"id": envelope(r)[0].get("event_id")})
    capture.reply("GET", "/", 200, "<html>Sentry</html>", "text/html")


def envelope(request: Request) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Any]]]:
    """(envelope headers, [(item headers, item payload)]) of one envelope request."""
    body = request.body
    head, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        item_head, _, rest = rest.partition(b"\n")
        header = json.loads(item_head)
        if "length" in header:
            payload, rest = rest[:header["length"]], rest[header["length"]:].lstrip(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((header, json.loads(payload) if header.get("type") == "event" else payload))
    return json.loads(head), items


def server() -> Capture:
    return shared("sentry", sentry)


def events(jid: str) -> list[dict[str, Any]]:
    found = []
    for request in server().matching(lambda r: r.path == ENVELOPE):
        for header, payload in envelope(request)[1]:
            if header.get("type") == "event" and payload.get("extra", {}).get("result", {}).get("jid") == jid:
                found.append(payload)
    return found


def dsn(port: int) -> str:
    return f"http://{KEY}@127.0.0.1:{port}/1"


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"raven.dsn": dsn(server().port), "raven.tags": ["id", "fun"]}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"raven.dsn": dsn(closed_port()), "raven.timeout": 3}


CASES = [ContractCase(
    name="sentry", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # sentry-sdk trims deep and wide data in `extra`: counted, not compared
    extra={"count": lambda fx, tmp, jid: len(events(jid))},
)]
