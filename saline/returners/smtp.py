"""Salt's ``smtp`` returner: an e-mail per return (and per event), one SMTP session per batch."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Mapping

import jinja2

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._notify import Sent, one_line, ret_key
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

DEFAULT_TEMPLATE = "id: {{id}}\r\nfunction: {{fun}}\r\nfunction args: {{fun_args}}\r\njid: {{jid}}\r\nreturn: {{return}}\r\n"


class SmtpReturner(Returner):
    """Salt's ``smtp``: each return as an e-mail, Salt's subject and body.

    The subject is ``subject`` (``Email from Salt``) followed by the values of the return's keys
    listed in ``fields`` (``id,fun`` gives ``Email from Salt web1 test.ping``); the body is
    ``template`` (a file), or Salt's default::

        id: {{id}}
        function: {{fun}}
        function args: {{fun_args}}
        jid: {{jid}}
        return: {{return}}

    Both are Jinja templates over the return's keys, as Salt rendered them (``renderer``: only
    ``jinja`` here). Headers ``From``, ``To`` (``to`` is a comma-separated list), ``Date`` and
    ``Subject`` as Salt's, plus ``Message-ID`` and saline's ``X-Salt-Jid``, ``X-Salt-Minion``
    (``X-Salt-Tag`` for an event) for mail filters; the text is UTF-8 (Salt's raw ASCII message
    failed on any other character). An event is mailed as Salt did, its ``data`` rendered as a
    return.

    One SMTP session per batch (Salt opened one per return): connect to ``host:port``,
    ``STARTTLS`` when ``tls`` is true (the certificate is checked, against ``ssl_ca`` when set;
    ``ssl_verify: false`` for a relay with a self-signed one, as Salt never checked),
    ``AUTH`` when ``username`` and ``password`` are set, then one message per return. Salt
    switched SMTP debugging on after the login; saline never logs the session or the password.
    The server down, refusing the login, or answering 4xx is reported as unavailable (the
    mails wait in the outbox); a message it refuses for itself (5xx on DATA, e.g. too large)
    fails alone. A return already mailed is not mailed again when a batch is retried. Salt's
    GPG encryption (``gpgowner``) is not done: setting it is a config error rather than mail
    sent in clear.

    Example::

        smtp.from: salt@example.com
        smtp.to: ops@example.com, oncall@example.com
        smtp.host: mail.example.com
        smtp.port: 587
        smtp.tls: true
        smtp.username: salt
        smtp.password: s3cret
        smtp.fields: id,fun
    """

    name = "smtp"
    extra = "smtp"
    summary = "E-mail: a message per return and event, Salt's subject and body, one SMTP session per batch"
    options = (
        Option("from", required=True, doc="sender address"),
        Option("to", required=True, doc="recipient addresses, comma-separated"),
        Option("host", required=True, doc="SMTP server"),
        Option("port", int, default=25, doc="SMTP port"),
        Option("username", doc="login name (with password)"),
        Option("password", secret=True, doc="login password"),
        Option("tls", bool, default=False, doc="STARTTLS before the login"),
        Option("subject", default="Email from Salt", doc="subject, a Jinja template over the return's keys"),
        Option("fields", list, default=[], doc="keys of the return whose values are appended to the subject"),
        Option("template", doc="file of the body's Jinja template (default: Salt's)"),
        Option("renderer", default="jinja", doc="template renderer: jinja"),
        Option("gpgowner", doc="Salt's GPG encryption: not supported (a config error when set)"),
        Option("ssl_verify", bool, default=True, doc="check the server's certificate on STARTTLS (saline)"),
        Option("ssl_ca", doc="CA bundle file for that check (saline)"),
        Option("timeout", float, default=30.0, doc="seconds to wait for the server (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        if self.opts.get("gpgowner"):
            raise ConfigError("returner smtp: smtp.gpgowner (GPG encryption) is not supported; remove it to send "
                              "the mails unencrypted")
        if str(self.opts.get("renderer") or "jinja").strip() != "jinja":
            raise ConfigError(f"returner smtp: only the jinja renderer is supported, got {self.opts['renderer']!r}")
        self.recipients = [a.strip() for a in str(self.opts["to"]).split(",") if a.strip()]
        env = jinja2.Environment(keep_trailing_newline=True, autoescape=False)
        try:
            body = DEFAULT_TEMPLATE
            if self.opts.get("template"):
                body = Path(self.opts["template"]).read_text(encoding="utf-8")
            self._body = env.from_string(body)
            self._subject = env.from_string(str(self.opts["subject"]))
        except OSError as exc:
            raise ConfigError(f"returner smtp: cannot read smtp.template {self.opts['template']}: {exc.strerror}") from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"returner smtp: template error: {exc}") from None
        self._secrets = [str(self.opts["password"])] if self.opts.get("password") else []
        self.where = f"SMTP server {self.opts['host']}:{self.opts['port']}"
        self._sent = Sent()

    def message(self, ret: dict[str, Any], tag: str | None = None) -> EmailMessage:
        """The mail of one return (or of one event's data, with its ``tag``)."""
        variables = {k: v for k, v in ret.items() if isinstance(k, str)}
        try:
            subject = self._subject.render(variables)
            body = self._body.render(variables)
        except jinja2.TemplateError as exc:
            raise ReturnerError(one_line(self.name, f"template error: {exc}", self._secrets)) from None
        # values are appended after rendering: Salt rendered them as template text, but a minion's data is no template
        for field in self.opts.get("fields") or []:
            if field in ret:
                subject += f" {ret[field]}"
        msg = EmailMessage()
        msg["From"] = self.opts["from"]
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=True)
        msg["Subject"] = " ".join(_json.text(subject).split())
        msg["Message-ID"] = make_msgid(domain="saline")
        if ret.get("jid") is not None:
            msg["X-Salt-Jid"] = " ".join(_json.text(ret.get("jid")).split())
        if ret.get("id") is not None:
            msg["X-Salt-Minion"] = " ".join(_json.text(ret.get("id")).split())
        if tag is not None:
            msg["X-Salt-Tag"] = " ".join(_json.text(tag).split())
        msg.set_content(_json.text(body), charset="utf-8")
        return msg

    def _session(self) -> smtplib.SMTP:
        server = smtplib.SMTP(str(self.opts["host"]), int(self.opts["port"]), timeout=self.opts["timeout"])
        try:
            server.ehlo_or_helo_if_needed()
            if self.opts.get("tls"):
                context = ssl.create_default_context(cafile=self.opts.get("ssl_ca") or None)
                if not self.opts.get("ssl_verify"):
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                server.starttls(context=context)
                server.ehlo()
            if self.opts.get("username") and self.opts.get("password"):
                server.login(str(self.opts["username"]), str(self.opts["password"]))
        except BaseException:
            server.close()
            raise
        return server

    def _mail(self, items: list[tuple[Any, EmailMessage]]) -> None:
        """Send each message in one session; ``items`` are (key for the sent memory, message)."""
        if not items:
            return
        try:
            server = self._session()
        except smtplib.SMTPException as exc:
            raise BackendUnavailable(self._line(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {exc.strerror or exc}",
                                              self._secrets)) from None
        try:
            for key, msg in items:
                try:
                    server.send_message(msg, from_addr=str(self.opts["from"]), to_addrs=self.recipients)
                except smtplib.SMTPDataError as exc:
                    if 400 <= exc.smtp_code < 500:
                        raise BackendUnavailable(self._line(exc)) from None
                    raise ReturnerError(self._line(exc)) from None
                except (smtplib.SMTPException, OSError) as exc:  # refused sender or recipients, disconnected
                    raise BackendUnavailable(self._line(exc)) from None
                if key is not None:
                    self._sent.add([key])
        finally:
            try:
                server.quit()
            except (smtplib.SMTPException, OSError):
                server.close()

    def _line(self, exc: BaseException) -> str:
        code = getattr(exc, "smtp_code", None)
        text = getattr(exc, "smtp_error", b"")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()), (None, b""))
            text = b"recipients refused: " + (text if isinstance(text, bytes) else str(text).encode())
        detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text or exc)
        return one_line(self.name, f"{self.where} said {code or type(exc).__name__}: {detail}", self._secrets)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        self._mail([(ret_key(ret), self.message(ret)) for ret in self._sent.fresh(rets)])

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        self._mail([(None, self.message(e["data"], tag=e.get("tag"))) for e in events if e.get("data")])

    def check(self) -> None:
        """A session opens (with STARTTLS and the login, as configured) and NOOP is answered."""
        try:
            server = self._session()
            server.noop()
            server.quit()
        except smtplib.SMTPException as exc:
            raise BackendUnavailable(self._line(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {exc.strerror or exc}",
                                              self._secrets)) from None
