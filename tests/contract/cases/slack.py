"""Contract case: ``slack`` (slack_sdk) posting to a real local HTTP server that answers like Slack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase
from tests.helpers.httpcapture import Capture, shared

TOKEN = "xoxb-1111-2222-SlackSecretToken"


def slack(capture: Capture) -> None:
    capture.reply("POST", "/api/chat.postMessage", 200,
                  lambda r: {"ok": True, "channel": "C123", "ts": "1503435956.000247",
                             "message": {"text": r.json().get("text"), "type": "message"}})
    capture.reply("POST", "/api/auth.test", 200, {"ok": True, "url": "https://example.slack.com/", "team": "T",
                                                  "user": "salt", "team_id": "T1", "user_id": "U1"})


def server() -> Capture:
    return shared("slack", slack)


def messages(jid: str) -> list[dict[str, Any]]:
    return [m for m in (r.json() for r in server().matching(lambda r: r.path == "/api/chat.postMessage"))
            if f"\r\njid: {jid}\r\n" in m.get("text", "")]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"slack.api_key": TOKEN, "slack.channel": "#salt", "slack.username": "salt", "slack.as_user": True,
            "slack.api_url": f"{server().url}/api/"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"slack.api_url": f"http://127.0.0.1:{closed_port()}/api/", "slack.timeout": 3}


CASES = [ContractCase(
    name="slack", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    extra={"count": lambda fx, tmp, jid: len(messages(jid))},
)]
