"""Contract case: ``nagios_nrdp`` posting to a real local HTTP server that answers like NRDP."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase
from tests.helpers.httpcapture import Capture, Request, shared

TOKEN = "nrdp-Token-Secret-7"


def nrdp_ok(request: Request) -> str:
    n = len(checkresults(request))
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<result>\n  <status>0</status>\n  <message>OK</message>\n'
            f"    <meta>\n       <output>{n} checks processed.</output>\n    </meta>\n</result>\n")


def nrdp(capture: Capture) -> None:
    capture.reply("POST", "/nrdp", 200, nrdp_ok, "application/xml")
    capture.reply("GET", "/nrdp", 200, "<html><body>NRDP</body></html>", "text/html")


def checkresults(request: Request) -> list[dict[str, str]]:
    """Each <checkresult> of a submitcheck request: its attributes and child elements."""
    form = request.form()
    if form.get("cmd") != "submitcheck":
        return []
    root = ET.fromstring(form["XMLDATA"])
    return [{**el.attrib, **{child.tag: child.text or "" for child in el}} for el in root.findall("checkresult")]


def server() -> Capture:
    return shared("nagios_nrdp", nrdp)


def results(jid: str) -> list[dict[str, str]]:
    return [c for r in server().matching(lambda r: r.method == "POST") for c in checkresults(r)
            if f"(jid {jid})" in c.get("output", "")]


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"nagios_nrdp.url": f"{server().url}/nrdp/", "nagios_nrdp.token": TOKEN,
            "nagios_nrdp.service": "salt-jobs"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"nagios_nrdp.url": f"http://127.0.0.1:{closed_port()}/nrdp/", "nagios_nrdp.timeout": 3}


CASES = [ContractCase(
    name="nagios_nrdp", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # Nagios keeps a state per host, not the return value: counted, not fetched
    extra={"count": lambda fx, tmp, jid: len(results(jid))},
)]
