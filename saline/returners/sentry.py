"""Salt's ``sentry`` returner: a Sentry event per return, sent by the official sentry-sdk."""

from __future__ import annotations

import urllib.parse
from typing import Any, Mapping

from sentry_sdk import Client
from sentry_sdk.transport import HttpTransport

try:  # where sentry-sdk 2.x keeps it
    from sentry_sdk.consts import EndpointType
except ImportError:  # pragma: no cover - older 2.x
    from sentry_sdk.transport import EndpointType  # type: ignore[attr-defined,no-redef]

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._notify import Sent, one_line, ret_key
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text


class _InlineTransport(HttpTransport):
    """sentry-sdk's HTTP transport (its envelope, auth header, pooled connection), sending in the
    caller's thread rather than a background queue, so a refusal or an outage reaches the outbox
    instead of being logged and dropped."""

    TIMEOUT = 10.0  # set per returner (its timeout option) on a subclass

    def _get_pool_options(self) -> dict[str, Any]:
        return {**super()._get_pool_options(), "retries": False}  # the outbox retries, with backoff

    def capture_envelope(self, envelope: Any) -> None:
        prepared = self._prepare_envelope(envelope)
        if prepared is None:  # held back by a rate limit Sentry set earlier
            raise _Refused(429, "rate limited by Sentry")
        envelope, body, headers = prepared
        self._send_request(body.getvalue(), headers=headers, endpoint_type=EndpointType.ENVELOPE, envelope=envelope)

    def _handle_response(self, response: Any, envelope: Any) -> None:
        self._update_rate_limits(response)
        if not 200 <= response.status < 300:
            data = getattr(response, "data", b"") or b""
            raise _Refused(response.status, data[:200].decode("utf-8", "replace"))


def salt_message(ret: dict[str, Any]) -> str:
    """Salt's message (and culprit): ``salt func: <fun> <args> <k=v ...>``."""
    args = ret.get("fun_args")
    fun = _json.text(ret.get("fun"))
    if not args:
        return f"salt func: {fun}"
    arg_text = " ".join(a for a in args if isinstance(a, str)) if isinstance(args, list) else ""
    kwarg_text = ""
    if isinstance(args, list) and isinstance(args[-1], dict):
        kwarg_text = " ".join(sorted(f"{k}={v}" for k, v in args[-1].items() if not str(k).startswith("_")))
    return _json.text(f"salt func: {fun} {arg_text} {kwarg_text}".strip())


def level_of(ret: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Salt's level, ``info`` or ``error``, and the failed states of a state run."""
    result = ret.get("return")
    if result and isinstance(result, dict) and all("-" in str(k) for k in result):
        failed = {k: v for k, v in result.items() if not (isinstance(v, dict) and v.get("result"))}
        return ("error" if failed else "info"), failed
    return ("info" if ret.get("success") else "error"), {}


class SentryReturner(Returner):
    """Salt's ``sentry``: each return as a Sentry event, sent with Sentry's official SDK.

    The event is Salt's: message and culprit ``salt func: <function> <string args> <k=v
    kwargs>``, level ``info``, or ``error`` when the return failed (``success`` false) or, for a
    state run, when a state's ``result`` is not true (those states also go into the return as
    ``failed_states``, as in Salt); ``extra.result`` is the return; tags are the return's keys
    named in ``tags`` (Salt took grains of the minion, which the master does not have: use
    ``id``, ``fun``, ``jid``, ``retcode`` …), plus ``server_name`` the minion id.
    ``report_errors_only`` sends only the ``error`` ones.

    Options are read where Salt read them, the map ``raven`` (in Salt, the minion's pillar;
    here, the master config): ``dsn``, or ``servers`` + ``public_key`` + ``secret_key`` +
    ``project`` (the first server is used). Salt's ``hide_pillar`` is accepted: no pillar is ever
    sent from the master.

    Salt used the retired ``raven`` client, made a client per return and logged every failure
    away; saline keeps one ``sentry_sdk.Client`` per returner (one pooled HTTP connection) and
    sends each event in the delivering thread, so an unreachable Sentry, a refusal (HTTP 4xx/5xx)
    or a rate limit is retried from the outbox instead of lost. Refusals for the DSN or its
    project (401, 403, 404, 429, 5xx) count as unavailable; a rejected event (400, 413) fails
    alone. A return already sent is not sent again when a batch is retried. The DSN's key never
    appears in a log line.

    Example::

        raven:
          dsn: https://0123456789abcdef@sentry.example.com/4
          tags: [id, fun]
          report_errors_only: true
    """

    name = "sentry"
    prefix = "raven"
    extra = "sentry"
    summary = "Sentry: an event per return (info or error, as Salt decides), through sentry-sdk"
    options = (
        Option("dsn", secret=True, doc="the project's DSN (https://<key>@<host>/<project>)"),
        Option("servers", list, doc="Sentry server URLs (with public_key, secret_key, project; no dsn)"),
        Option("public_key", secret=True, doc="project key (with servers)"),
        Option("secret_key", secret=True, doc="project secret (with servers)"),
        Option("project", doc="project id (with servers)"),
        Option("tags", list, default=[], doc="keys of the return sent as tags (id, fun, jid …)"),
        Option("hide_pillar", bool, default=False, doc="accepted for Salt's configs: the master sends no pillar"),
        Option("report_errors_only", bool, default=False, doc="send only returns whose level is error"),
        Option("environment", doc="Sentry environment of the events (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for Sentry (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        self.dsn = self._dsn()
        parsed = urllib.parse.urlsplit(self.dsn)
        self.where = f"Sentry at {parsed.scheme}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        self._secrets = [s for s in (self.dsn, parsed.username, parsed.password,
                                     self.opts.get("public_key"), self.opts.get("secret_key")) if s]
        self._client: Client | None = None
        self._sent = Sent()

    def _dsn(self) -> str:
        if self.opts.get("dsn"):
            return str(self.opts["dsn"])
        servers = self.opts.get("servers") or []
        if servers and self.opts.get("public_key") and self.opts.get("project"):
            server = urllib.parse.urlsplit(str(servers[0]))
            auth = str(self.opts["public_key"]) + (f":{self.opts['secret_key']}" if self.opts.get("secret_key") else "")
            path = server.path.rstrip("/")
            return f"{server.scheme}://{auth}@{server.netloc}{path}/{self.opts['project']}"
        raise ConfigError("returner sentry: set raven.dsn, or raven.servers with raven.public_key and raven.project")

    def _sentry(self) -> Client:
        if self._client is None:
            try:
                transport = type("_InlineTransport", (_InlineTransport,), {"TIMEOUT": float(self.opts["timeout"])})
                self._client = Client(
                    self.dsn, transport=transport, default_integrations=False, auto_enabling_integrations=False,
                    release="", environment=self.opts.get("environment"), send_client_reports=False,
                    shutdown_timeout=0, before_send=_drop_empty_release)
            except Exception as exc:  # sentry-sdk raises BadDsn (an Exception) for a malformed DSN
                raise ConfigError(one_line(self.name, f"raven.dsn is not a valid DSN: {type(exc).__name__}",
                                           self._secrets)) from None
        return self._client

    def event(self, ret: dict[str, Any]) -> dict[str, Any] | None:
        """The Sentry event of one return, or None when ``report_errors_only`` skips it."""
        level, failed = level_of(ret)
        if self.opts.get("report_errors_only") and level != "error":
            return None
        result = dict(ret)
        if failed:
            result["failed_states"] = failed
        message = salt_message(ret)
        tags = {str(t): _json.text(ret[t]) for t in self.opts.get("tags") or [] if t in ret}
        return {"message": message, "culprit": message, "level": level, "platform": "python", "logger": "salt",
                "tags": tags, "extra": {"result": _json.decode(result)}, "server_name": _json.text(ret.get("id"))}

    def returns(self, rets: list[dict[str, Any]]) -> None:
        for ret in self._sent.fresh(rets):
            event = self.event(ret)
            if event is not None:
                self._send(event)
            self._sent.add([ret_key(ret)])

    def _send(self, event: dict[str, Any]) -> None:
        try:
            self._sentry().capture_event(event)
        except _Refused as exc:
            line = one_line(self.name, f"{self.where} answered HTTP {exc.status}: {exc.text}", self._secrets)
            if exc.status >= 500 or exc.status in (401, 403, 404, 429):
                raise BackendUnavailable(line) from None
            raise ReturnerError(line) from None
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {_reason(exc)}",
                                              self._secrets)) from None
        except Exception as exc:  # urllib3's errors (MaxRetryError, ProtocolError ...) derive from Exception
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {_reason(exc)}",
                                              self._secrets)) from None

    def check(self) -> None:
        """Sentry's host answers HTTP (its DSN endpoint's host; nothing is sent)."""
        try:
            pool = self._sentry().transport._pool  # type: ignore[union-attr]
            parsed = urllib.parse.urlsplit(self.dsn)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            pool.request("GET", f"{parsed.scheme}://{parsed.hostname}:{port}/")
        except ConfigError:
            raise
        except Exception as exc:
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {_reason(exc)}",
                                              self._secrets)) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close(timeout=0)
            self._client = None


def _drop_empty_release(event: dict[str, Any], hint: Any) -> dict[str, Any]:
    if not event.get("release"):
        event.pop("release", None)
    return event


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if marker in text:
            return marker
    return type(exc).__name__
