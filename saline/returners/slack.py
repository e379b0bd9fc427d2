"""Salt's ``slack`` returner: a Slack message per return, through the official slack_sdk."""

from __future__ import annotations

import pprint
import urllib.error
from typing import Any, Mapping

import yaml
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._notify import Sent, apply_profile, cut, one_line, ret_key, salt_text
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

TEXT_MAX = 39_990  # Slack cuts text at 40,000 characters; leave room for the fences

# Slack errors that no retry of the same message can mend but a config change (or time) can:
# the whole batch waits (BackendUnavailable) instead of being split message by message.
_WAIT = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
         "missing_scope", "channel_not_found", "not_in_channel", "is_archived", "ratelimited", "org_login_required",
         "team_access_not_granted", "restricted_action", "fatal_error", "internal_error", "service_unavailable",
         "request_timeout"}


class SlackReturner(Returner):
    """Salt's ``slack``: each return as a Slack message (``chat.postMessage``), Salt's text in a
    code block::

        ```id: web1
        function: state.apply
        function args: []
        jid: 20240105123456123456
        return: {'file_|-motd_|-/etc/motd_|-managed': {...}}```

    with ``channel`` (``#general`` by default), ``username`` and ``as_user`` as Salt sent them.
    ``yaml_format`` shows the return as YAML; for a state run, ``changes`` keeps only the states
    that changed or failed and ``only_show_failed`` only the failed ones (Salt's filters raised
    a TypeError; they work here; both at once is a config error, as Salt refused it too).
    ``profile`` names a config map holding ``slack.api_key``, as in Salt. Text past Slack's
    40,000 characters is cut, saying so.

    Sent with Slack's official client, ``slack_sdk`` (token in the ``Authorization: Bearer``
    header; Salt put it in the URL), to ``api_url`` (saline's, for proxies and tests). A token,
    channel or rate-limit problem (``invalid_auth``, ``channel_not_found``, ``ratelimited`` …)
    is reported as unavailable, so the messages wait in the outbox until it is fixed; a return
    already delivered is not sent again when a batch is retried. ``check()`` calls
    ``auth.test``.

    Example::

        slack:
          channel: "#salt"
          api_key: xoxb-1234-5678-abcdef
          username: salt
          as_user: true
    """

    name = "slack"
    extra = "slack"
    summary = "Slack: a chat.postMessage per return, Salt's text, through slack_sdk"
    options = (
        Option("channel", default="#general", doc="channel to post to"),
        Option("api_key", secret=True, doc="the Slack token (xoxb-…); required, here or in the profile"),
        Option("username", doc="name the message is posted under"),
        Option("as_user", bool, doc="post as the token's user (Salt required it set)"),
        Option("changes", bool, default=False, doc="state runs: show only states that changed or failed"),
        Option("only_show_failed", bool, default=False, doc="state runs: show only failed states"),
        Option("yaml_format", bool, default=False, doc="show the return as YAML (default: Python's pprint)"),
        Option("profile", doc="name of a config map holding slack.<option> keys (e.g. the api_key)"),
        Option("api_url", default="https://slack.com/api/", doc="Web API base URL, for proxies and tests (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for Slack (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        apply_profile("slack", self.opts, self.master_opts, ("api_key", "channel", "username", "as_user"))
        if not self.opts.get("api_key"):
            raise ConfigError("returner slack: required option slack.api_key is not set (nor in slack.profile)")
        if self.opts.get("changes") and self.opts.get("only_show_failed"):
            raise ConfigError("returner slack: slack.changes and slack.only_show_failed cannot both be set")
        self._secrets = [str(self.opts["api_key"])]
        self._client: WebClient | None = None
        self._sent = Sent()

    def _web(self) -> WebClient:
        if self._client is None:
            # no retry inside the client: the outbox retries, with backoff
            self._client = WebClient(token=str(self.opts["api_key"]), base_url=str(self.opts["api_url"]),
                                     timeout=int(self.opts["timeout"]), retry_handlers=[])
        return self._client

    def text(self, ret: dict[str, Any]) -> str:
        """Salt's message for one return, in a code block."""
        shown = ret.get("return")
        if isinstance(shown, dict) and (self.opts.get("changes") or self.opts.get("only_show_failed")):
            def keep(state: Any) -> bool:
                if not isinstance(state, dict):
                    return True
                return state.get("result") is not True or (bool(state.get("changes")) and not self.opts.get("only_show_failed"))
            shown = {k: v for k, v in shown.items() if keep(v)}
        if self.opts.get("yaml_format"):
            rendered = yaml.safe_dump(_json.decode(shown), allow_unicode=True)
        else:
            rendered = pprint.pformat(shown)
        return "```" + cut(salt_text(ret, rendered), TEXT_MAX) + "```"

    def _call(self, what: str, **kwargs: Any) -> None:
        try:
            getattr(self._web(), what)(**kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "")
            status = exc.response.status_code
            line = one_line(self.name, f"Slack at {self.opts['api_url']} answered HTTP {status}: {error or 'refused'}",
                            self._secrets)
            if error in _WAIT or status >= 500 or status in (401, 403, 404, 429):
                raise BackendUnavailable(line) from None
            raise ReturnerError(line) from None
        except (SlackClientError, urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise BackendUnavailable(one_line(self.name, f"Slack at {self.opts['api_url']} unreachable: {reason}",
                                              self._secrets)) from None

    def returns(self, rets: list[dict[str, Any]]) -> None:
        for ret in self._sent.fresh(rets):
            message: dict[str, Any] = {"channel": self.opts["channel"], "text": self.text(ret)}
            if self.opts.get("username"):
                message["username"] = self.opts["username"]
            if self.opts.get("as_user") is not None:
                message["as_user"] = self.opts["as_user"]
            self._call("chat_postMessage", **message)
            self._sent.add([ret_key(ret)])

    def check(self) -> None:
        """Slack accepts the token (``auth.test``)."""
        self._call("auth_test")

    def close(self) -> None:
        self._client = None  # slack_sdk opens a connection per call: nothing held
