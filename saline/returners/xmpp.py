"""Salt's ``xmpp`` returner: a chat message per return, one XMPP session per batch (slixmpp)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

import slixmpp

from saline.config import ConfigError
from saline.returners._notify import Sent, apply_profile, cut, one_line, ret_key, salt_text, xml_text
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

_TLS = ("starttls", "direct", "none")


class _Failed(Exception):
    def __init__(self, text: str, unavailable: bool = True) -> None:
        super().__init__(text)
        self.unavailable = unavailable


class XmppReturner(Returner):
    """Salt's ``xmpp``: each return as an XMPP chat message to ``recipient``, Salt's text::

        id: web1
        function: test.ping
        function args: []
        jid: 20240105123456123456
        return: True

    Options as Salt read them: ``xmpp.jid`` (the sender's JID), ``xmpp.password``,
    ``xmpp.recipient``, ``xmpp.profile`` (a config map holding ``xmpp.jid`` and
    ``xmpp.password``); ``--return_kwargs`` use Salt's internal names ``from_jid``,
    ``recipient_jid`` and ``password``.

    Salt logged in once per return (sleekxmpp, long unmaintained); saline logs in once per batch
    with slixmpp, sends every message of the batch, then pings the server and waits for its
    answer before leaving: the server handles a session's stanzas in order, so the answer means
    it has taken every message (a disconnect alone would not say so). An unreachable server, a
    refused login or a timeout is reported as unavailable, the messages waiting in the outbox; a
    stream error (a message the server refuses) fails the batch, which is split to find it. A
    return already sent is not sent again when a batch is retried.

    saline's options: ``host``/``port`` (default: the JID's domain, 5222), ``tls``
    (``starttls``, the default, requires TLS; ``direct`` for XEP-0368 TLS on connect; ``none``
    sends the password in clear and is meant for a server on the loopback only), ``ssl_verify``,
    ``max_length`` (characters of a message; XMPP servers refuse stanzas past a size, Prosody at
    256 KiB by default: longer texts are cut, saying so) and ``timeout`` (for a whole session).
    Characters XML cannot carry are dropped.

    Example::

        xmpp:
          jid: salt@example.com/master
          password: s3cret
          recipient: ops@example.com
    """

    name = "xmpp"
    extra = "xmpp"
    summary = "XMPP: a chat message per return, Salt's text, one session per batch (slixmpp)"
    options = (
        Option("from_jid", key="jid", doc="the sender's JID (user@domain/resource); required, here or in the profile"),
        Option("password", secret=True, doc="the sender's password; required, here or in the profile"),
        Option("recipient_jid", key="recipient", required=True, doc="the JID messages go to"),
        Option("xmpp_profile", key="profile", doc="name of a config map holding xmpp.jid and xmpp.password"),
        Option("host", doc="server to connect to (default: the JID's domain) (saline)"),
        Option("port", int, default=5222, doc="server port (saline)"),
        Option("tls", default="starttls", doc="starttls (required), direct, or none (loopback only) (saline)"),
        Option("ssl_verify", bool, default=True, doc="check the server's certificate (saline)"),
        Option("max_length", int, default=100_000, doc="longest message in characters; longer ones are cut (saline)"),
        Option("timeout", float, default=30.0, doc="seconds a whole session may take (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        apply_profile("xmpp", self.opts, self.master_opts, (("from_jid", "jid"), "password"), "xmpp_profile")
        for name, key in (("from_jid", "jid"), ("password", "password")):
            if not self.opts.get(name):
                raise ConfigError(f"returner xmpp: required option xmpp.{key} is not set (nor in xmpp.profile)")
        if self.opts.get("tls") not in _TLS:
            raise ConfigError(f"returner xmpp: tls must be one of {', '.join(_TLS)}, got {self.opts.get('tls')!r}")
        self.sender = slixmpp.JID(str(self.opts["from_jid"]))
        self.host = str(self.opts.get("host") or self.sender.domain)
        self.where = f"XMPP server {self.host}:{self.opts['port']}"
        self._secrets = [str(self.opts["password"])]
        self._sent = Sent()

    def text(self, ret: dict[str, Any]) -> str:
        return xml_text(cut(salt_text(ret), int(self.opts["max_length"])))

    # -- one session --------------------------------------------------------------------------------
    def _client(self) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(str(self.opts["from_jid"]), str(self.opts["password"]))
        tls = self.opts["tls"]
        client.enable_starttls = tls == "starttls"
        client.enable_direct_tls = tls == "direct"
        client.enable_plaintext = tls == "none"
        if tls == "none":
            client.plugin["feature_mechanisms"].unencrypted_plain = True
        if not self.opts.get("ssl_verify"):
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = 0  # ssl.CERT_NONE
        client.register_plugin("xep_0199")  # XMPP ping: the server's answer closes the session
        return client

    async def _session(self, bodies: list[str]) -> None:
        client = self._client()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def fail(text: str, unavailable: bool = True) -> None:
            if not done.done():
                done.set_exception(_Failed(text, unavailable))

        async def start(_event: Any) -> None:
            try:
                client.send_presence()
                for body in bodies:
                    client.send_message(mto=str(self.opts["recipient_jid"]), mbody=body, mtype="chat")
                await client.plugin["xep_0199"].send_ping(self.sender.domain, timeout=self.opts["timeout"])
            except Exception as exc:  # an IqTimeout or IqError: the server did not confirm
                fail(f"{self.where} did not confirm the messages: {type(exc).__name__}")
                return
            if not done.done():
                done.set_result(None)

        client.add_event_handler("session_start", start)
        client.add_event_handler("failed_auth", lambda _e: fail(f"{self.where} refused the login of {self.sender.bare}"))
        client.add_event_handler("no_auth", lambda _e: fail(
            f"{self.where} offers no login this returner may use (with tls: {self.opts['tls']}, the password goes "
            "only over TLS)"))
        client.add_event_handler("connection_failed", lambda e: fail(f"{self.where} unreachable: {e}"))
        client.add_event_handler("stream_error", lambda e: fail(f"{self.where} closed the stream: "
                                                                 f"{e['condition']} {e['text']}".strip(), False))
        client.add_event_handler("disconnected", lambda _e: fail(f"{self.where} closed the connection"))
        try:
            client.connect(self.host, int(self.opts["port"]))
            await done
        finally:
            client.disconnect(wait=1.0) if client.is_connected() else client.abort()

    def _run(self, bodies: list[str]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        quiet = logging.getLogger("slixmpp")
        level = quiet.level
        try:
            # slixmpp logs every reconnection attempt at ERROR: the outbox reports the outage once
            quiet.setLevel(logging.CRITICAL)
            loop.run_until_complete(asyncio.wait_for(self._session(bodies), self.opts["timeout"]))
        except asyncio.TimeoutError:
            raise BackendUnavailable(one_line(self.name, f"{self.where}: no session within {self.opts['timeout']:g} s",
                                              self._secrets)) from None
        except _Failed as exc:
            line = one_line(self.name, str(exc), self._secrets)
            raise (BackendUnavailable(line) if exc.unavailable else ReturnerError(line)) from None
        except OSError as exc:
            raise BackendUnavailable(one_line(self.name, f"{self.where} unreachable: {exc.strerror or exc}",
                                              self._secrets)) from None
        finally:
            quiet.setLevel(level)
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            asyncio.set_event_loop(None)
            loop.close()

    def returns(self, rets: list[dict[str, Any]]) -> None:
        fresh = self._sent.fresh(rets)
        if fresh:
            self._run([self.text(ret) for ret in fresh])
            self._sent.add(ret_key(r) for r in fresh)

    def check(self) -> None:
        """A session opens: the server answers and accepts the login."""
        self._run([])
