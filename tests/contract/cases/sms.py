"""Contract case: ``sms`` (Twilio's client) posting to a real local HTTP server that answers like Twilio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase
from tests.helpers.httpcapture import Capture, Request, shared

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-Auth-Token-Secret"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"


def created(request: Request) -> dict[str, Any]:
    form = request.form()
    return {"sid": "SM0123456789abcdef0123456789abcdef", "account_sid": SID, "body": form.get("Body"),
            "to": form.get("To"), "from": form.get("From"), "status": "queued", "num_segments": "1",
            "direction": "outbound-api", "api_version": "2010-04-01", "uri": MESSAGES}


def twilio(capture: Capture) -> None:
    capture.reply("POST", MESSAGES, 201, created)
    capture.reply("GET", f"/2010-04-01/Accounts/{SID}.json", 200,
                  {"sid": SID, "friendly_name": "saline", "status": "active", "type": "Full"})


def server() -> Capture:
    return shared("sms", twilio)


def texts(jid: str) -> list[dict[str, str]]:
    return [f for f in (r.form() for r in server().matching(lambda r: r.path == MESSAGES))
            if f.get("Body", "").endswith(f"\n\nJid: {jid}")]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"sms.sid": SID, "sms.token": TOKEN, "sms.to": "+14155550100", "sms.from": "+16505550100",
            "sms.api_url": server().url}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"sms.api_url": f"http://127.0.0.1:{closed_port()}", "sms.timeout": 3}


CASES = [ContractCase(
    name="sms", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # Salt's SMS names the minion, function, success and jid, never the return value: counted only
    extra={"count": lambda fx, tmp, jid: len(texts(jid))},
)]
