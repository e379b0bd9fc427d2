"""Contract case: ``pushover`` posting to a real local HTTP server that answers like Pushover's API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase
from tests.helpers.httpcapture import Capture, shared

USER = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"
TOKEN = "azGDORePK8gMaC0QOYAMyEEuzJnyUi"


def pushover(capture: Capture) -> None:
    capture.reply("POST", "/1/messages.json", 200, {"status": 1, "request": "647d2300-702c-4b38-8b2f-d56326ae460b"})
    capture.reply("POST", "/1/users/validate.json", 200, {"status": 1, "group": 0, "devices": ["phone"],
                                                          "request": "e460545a-8e0f-4a66-8d8e-0e8c9e3b1bd0"})


def server() -> Capture:
    return shared("pushover", pushover)


def messages(jid: str) -> list[dict[str, str]]:
    return [f for f in (r.form() for r in server().matching(lambda r: r.path == "/1/messages.json"))
            if f"\r\njid: {jid}\r\n" in f.get("message", "")]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"pushover.user": USER, "pushover.token": TOKEN, "pushover.api_url": server().url, "pushover.title": "Salt"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"pushover.api_url": f"http://127.0.0.1:{closed_port()}", "pushover.timeout": 3}


CASES = [ContractCase(
    name="pushover", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # a notification carries Salt's text (cut to 1,024 characters), not the value: counted only
    extra={"count": lambda fx, tmp, jid: len(messages(jid))},
)]
