"""Salt's ``splunk`` returner: returns and events to Splunk's HTTP Event Collector, batched."""

from __future__ import annotations

import socket
import time
from typing import Any, Mapping

import requests

from saline.returners import _json
from saline.returners._notify import Sent, http_failure, ret_key
from saline.returners.base import Option, Returner


class SplunkReturner(Returner):
    """Salt's ``splunk``: each return and each event as a Splunk HTTP Event Collector (HEC) event.

    The options are read where Salt reads them, the map ``splunk_http_forwarder``::

        splunk_http_forwarder:
          token: 6d3e5a0c-...        # the HEC token (secret)
          indexer: splunk.example.com
          sourcetype: salt
          index: salt
          verify_ssl: true

    Each event is Salt's, ``{"time": "<epoch seconds>", "index", "sourcetype", "event", "host"}``:
    ``event`` is the whole return (``id``, ``jid``, ``fun``, ``fun_args``, ``return``,
    ``retcode``, ``success`` …), or for a master event ``{"tag", "data"}``. ``host`` is the
    minion id for a return (Salt sent from the minion, with its host name) and this host's name
    for an event. ``index``/``sourcetype`` are left out when not set (Salt sent ``null``), so
    the token's defaults apply.

    Salt posted one request per return; here a batch is one ``POST
    <scheme>://<indexer>:<port>/services/collector/event`` whose body is the events one after
    the other (HEC reads concatenated JSON), split only where a body would pass
    ``max_content_bytes``. Header ``Authorization: Splunk <token>``; one pooled HTTPS connection
    per returner. Salt logged the options, token included, at INFO: saline never logs the token.
    A return already delivered by this returner is not sent again when a batch is retried.
    ``port`` and ``scheme`` are saline's (Salt always used ``https`` and 8088), for an HEC behind
    a proxy and for tests.

    Example search::

        index=salt sourcetype=salt event.fun="state.apply" event.success=false | table event.id event.jid
    """

    name = "splunk"
    prefix = "splunk_http_forwarder"
    extra = "splunk"
    summary = "Splunk HTTP Event Collector: each return and event as an HEC event, a batch per request"
    options = (
        Option("token", required=True, secret=True, doc="the HTTP Event Collector token"),
        Option("indexer", required=True, doc="host name or address of the indexer (HEC)"),
        Option("sourcetype", doc="sourcetype of the events (default: the token's)"),
        Option("index", doc="index of the events (default: the token's)"),
        Option("verify_ssl", bool, default=True, doc="check the indexer's TLS certificate"),
        Option("port", int, default=8088, doc="HEC port (saline; Salt: always 8088)"),
        Option("scheme", default="https", doc="https, or http for an HEC without TLS (saline)"),
        Option("max_content_bytes", int, default=1_000_000,
               doc="largest request body; a larger batch is sent in several requests (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the indexer (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.base = f"{self.opts['scheme']}://{self.opts['indexer']}:{self.opts['port']}"
        self.url = f"{self.base}/services/collector/event"
        self._secrets = [str(self.opts["token"])]
        self._session: requests.Session | None = None
        self._sent = Sent()
        self._hostname = socket.gethostname()

    def _http(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Splunk {self.opts['token']}"
            session.verify = bool(self.opts["verify_ssl"])
            self._session = session
        return self._session

    def _event(self, event: Any, host: str) -> str:
        payload: dict[str, Any] = {"time": str(int(time.time()))}
        for key in ("index", "sourcetype"):
            if self.opts.get(key):
                payload[key] = self.opts[key]
        payload["event"] = event
        payload["host"] = host
        return _json.dumps(payload)

    def _post(self, bodies: list[str]) -> None:
        limit = max(int(self.opts["max_content_bytes"]), 1)
        chunk: list[bytes] = []
        size = 0
        for text in bodies:
            data = text.encode("utf-8")
            if chunk and size + len(data) + 1 > limit:
                self._send(b"\n".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data) + 1
        if chunk:
            self._send(b"\n".join(chunk))

    def _send(self, body: bytes) -> None:
        try:
            answer = self._http().post(self.url, data=body, timeout=self.opts["timeout"],
                                       headers={"Content-Type": "application/json"})
        except requests.RequestException as exc:
            raise http_failure(self.name, f"Splunk HEC at {self.base}", self._secrets, exc) from None
        if answer.status_code != 200:
            raise http_failure(self.name, f"Splunk HEC at {self.base}", self._secrets, status=answer.status_code,
                               body=answer.text)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        fresh = self._sent.fresh(rets)
        if fresh:
            self._post([self._event(ret, _json.text(ret.get("id")) or self._hostname) for ret in fresh])
            self._sent.add(ret_key(r) for r in fresh)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if events:
            self._post([self._event({"tag": e.get("tag"), "data": e.get("data")}, self._hostname) for e in events])

    def check(self) -> None:
        """HEC's health endpoint answers 200."""
        try:
            answer = self._http().get(f"{self.base}/services/collector/health", timeout=self.opts["timeout"])
        except requests.RequestException as exc:
            raise http_failure(self.name, f"Splunk HEC at {self.base}", self._secrets, exc) from None
        if answer.status_code != 200:
            raise http_failure(self.name, f"Splunk HEC at {self.base}", self._secrets, status=answer.status_code,
                               body=answer.text)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

