"""Contract case: ``xmpp`` logging in to Prosody (127.0.0.1:5222) as saline@localhost, with the test's
own XMPP client logged in as receiver@localhost collecting every chat message it gets."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path
from typing import Any

import slixmpp

from tests.conftest import require_port
from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

SENDER, SENDER_PASSWORD = "saline@localhost", "saline-secret"
RECEIVER, RECEIVER_PASSWORD = "receiver@localhost", "receiver-secret"


class Receiver:
    """receiver@localhost, online in a thread of its own; ``messages`` as (from, type, body)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, name="xmpp-receiver", daemon=True).start()
        if not self._ready.wait(15):
            raise RuntimeError("the test's XMPP receiver could not log in to Prosody on 127.0.0.1:5222")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        # a resource of this process's own: a second test run logged in as receiver/tests would
        # make Prosody close this session (a resource conflict), and its messages would be lost
        client = slixmpp.ClientXMPP(f"{RECEIVER}/tests-{os.getpid()}", RECEIVER_PASSWORD)
        client.enable_starttls = client.enable_direct_tls = False
        client.enable_plaintext = True
        client.plugin["feature_mechanisms"].unencrypted_plain = True
        client.register_plugin("xep_0199")
        self.client = client

        def started(_event: Any) -> None:
            client.send_presence()
            client.get_roster()
            self._ready.set()

        def message(msg: Any) -> None:
            with self._lock:
                self.messages.append((str(msg["from"]), str(msg["type"]), str(msg["body"])))

        client.add_event_handler("session_start", started)
        client.add_event_handler("message", message)
        client.connect("127.0.0.1", 5222)
        self.loop.run_forever()

    def sync(self) -> None:
        """Ping the server from the receiver: its answer comes after every message routed before."""
        async def ping() -> None:
            await self.client.plugin["xep_0199"].send_ping("localhost", timeout=10)

        asyncio.run_coroutine_threadsafe(ping(), self.loop).result(15)

    def bodies(self) -> list[str]:
        self.sync()
        with self._lock:
            return [body for _, _, body in self.messages]


_receiver: Receiver | None = None
_lock = threading.Lock()


def receiver() -> Receiver:
    global _receiver
    with _lock:
        if _receiver is None:
            require_port("Prosody (XMPP)", "127.0.0.1", 5222)
            _receiver = Receiver()
        return _receiver


def count(jid: str) -> int:
    line = re.compile(rf"\njid: {jid}\r?\n")  # XML reads CR LF as LF
    return sum(1 for body in receiver().bodies() if line.search(body))


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    receiver()
    return {"xmpp.jid": f"{SENDER}/master", "xmpp.password": SENDER_PASSWORD, "xmpp.recipient": RECEIVER,
            "xmpp.host": "127.0.0.1", "xmpp.port": 5222, "xmpp.tls": "none"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"xmpp.port": closed_port(), "xmpp.timeout": 5}


CASES = [ContractCase(
    name="xmpp", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # a chat message carries Salt's text (pretty-printed, cut at max_length): counted only
    extra={"count": lambda fx, tmp, jid: count(jid)},
)]
