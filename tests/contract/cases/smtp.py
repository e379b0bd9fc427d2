"""Contract case: ``smtp`` against a real SMTP server (aiosmtpd) that keeps every mail it receives."""

from __future__ import annotations

import atexit
import email
import email.policy
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.contract.cases.postgres import closed_port
from tests.contract.harness import ContractCase

USER, PASSWORD = "salt", "Smtp-Password-Secret"


class Mailbox:
    """aiosmtpd's handler: each accepted mail as (envelope sender, recipients, parsed message)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], EmailMessage]] = []
        self.sessions = 0
        self.refuse_data: str | None = None  # an SMTP reply to DATA instead of 250, e.g. "552 too big"
        self._lock = threading.Lock()

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        with self._lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data:
            return self.refuse_data
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self._lock:
            self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def find(self, test: Any) -> list[EmailMessage]:
        with self._lock:
            return [m for _, _, m in self.mails if test(m)]


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    good = getattr(auth_data, "login", None) == USER.encode() and getattr(auth_data, "password", None) == PASSWORD.encode()
    return AuthResult(success=good, handled=False)


def start(mailbox: Mailbox, **kwargs: Any) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=closed_port(), authenticator=authenticator,
                            auth_require_tls=False, **kwargs)
    controller.start()
    return controller


_shared: tuple[Mailbox, Controller] | None = None
_lock = threading.Lock()


def shared() -> tuple[Mailbox, Controller]:
    global _shared
    with _lock:
        if _shared is None:
            box = Mailbox()
            _shared = (box, start(box))
            atexit.register(_shared[1].stop)
        return _shared


def config(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    _, controller = shared()
    return {"smtp.from": "salt@example.com", "smtp.to": "ops@example.com", "smtp.host": "127.0.0.1",
            "smtp.port": controller.port, "smtp.username": USER, "smtp.password": PASSWORD, "smtp.fields": "id,fun"}


def unreachable(fx: dict[str, Any], tmp: Path) -> dict[str, Any]:
    return {"smtp.port": closed_port(), "smtp.timeout": 3}


def returns(jid: str) -> list[EmailMessage]:
    return shared()[0].find(lambda m: m["X-Salt-Jid"] == jid and m["X-Salt-Tag"] is None)


def events(jid: str) -> list[EmailMessage]:
    return shared()[0].find(lambda m: jid in (m["X-Salt-Tag"] or ""))


CASES = [ContractCase(
    name="smtp", fixtures=(), config=config, unreachable=unreachable, lossless=False,
    # a mail shows the return as text (Python's str of it): counted, not compared
    extra={"count": lambda fx, tmp, jid: len(returns(jid)), "count_events": lambda fx, tmp, jid: len(events(jid))},
)]
