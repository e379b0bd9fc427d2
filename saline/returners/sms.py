"""Salt's ``sms`` returner: a text message per return, through Twilio's official client."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from saline.returners import _json
from saline.returners._notify import Sent, http_failure, one_line, ret_key
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

# twilio logs every request and response at INFO: keep that out of the master's log
_HTTP_LOG = logging.getLogger("saline.returners.sms.twilio")
_HTTP_LOG.setLevel(logging.WARNING)


class SmsReturner(Returner):
    """Salt's ``sms``: each return as an SMS through Twilio, Salt's text (no return data)::

        Minion: web1
        Cmd: test.ping
        Success: True

        Jid: 20240105123456123456

    sent from ``from`` to ``to`` (a comma-separated ``to`` sends one message to each). Salt's
    code read ``sms.sid``, ``sms.token``, ``sms.to`` and ``sms.from`` (its docs said
    ``twilio.*``): those are read here. Sent with Twilio's official Python client (``POST
    /2010-04-01/Accounts/<sid>/Messages.json``, HTTP basic auth with the SID and the auth token),
    one pooled connection per returner, to ``api_url`` (saline's, for proxies and tests).

    Salt made a new client per return and logged only an error code; here a refusal names
    Twilio's code and message in one line. Authentication, permission and rate-limit refusals
    (HTTP 401, 403, 429, 5xx) are reported as unavailable, so the messages wait in the outbox;
    a refused number (HTTP 400, e.g. code 21211) fails only its own item. A message already
    sent is not sent again when a batch is retried. ``check()`` reads the account.

    Example::

        sms.sid: AC0123456789abcdef0123456789abcdef
        sms.token: your-auth-token
        sms.from: "+16505550100"
        sms.to: "+14155550100"
    """

    name = "sms"
    extra = "sms"
    summary = "SMS through Twilio: Salt's short text per return"
    options = (
        Option("sid", required=True, doc="the Twilio account SID"),
        Option("token", required=True, secret=True, doc="the Twilio auth token"),
        Option("to", required=True, doc="number(s) to text, comma-separated"),
        Option("from", required=True, doc="the Twilio number texts come from"),
        Option("api_url", default="https://api.twilio.com", doc="API base URL, for proxies and tests (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for Twilio (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.receivers = [n.strip() for n in str(self.opts["to"]).split(",") if n.strip()]
        self._secrets = [str(self.opts["token"])]
        self._client: Client | None = None
        self._sent = Sent()

    def _twilio(self) -> Client:
        if self._client is None:
            http = TwilioHttpClient(timeout=self.opts["timeout"], logger=_HTTP_LOG)
            client = Client(str(self.opts["sid"]), str(self.opts["token"]), http_client=http)
            client.api.base_url = str(self.opts["api_url"]).rstrip("/")
            self._client = client
        return self._client

    @staticmethod
    def body(ret: dict[str, Any]) -> str:
        return _json.text(f"Minion: {ret.get('id')}\nCmd: {ret.get('fun')}\nSuccess: {ret.get('success')}\n\n"
                          f"Jid: {ret.get('jid')}")

    def _do(self, action: Any) -> None:
        try:
            action()
        except TwilioRestException as exc:
            line = one_line(self.name, f"Twilio answered HTTP {exc.status}: code {exc.code}: {exc.msg}", self._secrets)
            if exc.status >= 500 or exc.status in (401, 403, 404, 429):
                raise BackendUnavailable(line) from None
            raise ReturnerError(line) from None
        except (requests.RequestException, TwilioException) as exc:
            raise http_failure(self.name, f"Twilio at {self.opts['api_url']}", self._secrets, exc) from None

    def returns(self, rets: list[dict[str, Any]]) -> None:
        messages = self._twilio().messages
        for ret in rets:
            for receiver in self.receivers:
                key = (ret_key(ret), receiver)
                if key in self._sent:
                    continue
                self._do(lambda: messages.create(body=self.body(ret), to=receiver, from_=self.opts["from"]))
                self._sent.add([key])

    def check(self) -> None:
        """Twilio accepts the credentials (the account can be read)."""
        client = self._twilio()
        self._do(lambda: client.api.v2010.accounts(str(self.opts["sid"])).fetch())

    def close(self) -> None:
        if self._client is not None:
            session = getattr(self._client.http_client, "session", None)
            if session is not None:
                session.close()
            self._client = None
