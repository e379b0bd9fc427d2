"""Salt's ``pushover`` returner: a Pushover notification per return."""

from __future__ import annotations

from typing import Any, Mapping

import requests

from saline.config import ConfigError
from saline.returners._notify import Sent, apply_profile, cut, http_failure, ret_key, salt_text
from saline.returners.base import BackendUnavailable, Option, Returner

MESSAGE_MAX = 1024  # Pushover refuses longer messages
TITLE_MAX = 250


class PushoverReturner(Returner):
    """Salt's ``pushover``: each return as a Pushover message, Salt's text::

        id: web1
        function: test.ping
        function args: []
        jid: 20240105123456123456
        return: True

    posted (form fields ``token``, ``user``, ``message``, and ``title``, ``device``,
    ``priority``, ``expire``, ``retry``, ``sound`` when set) to ``<api_url>/1/messages.json``.
    Pushover takes at most 1,024 characters of message and 250 of title: longer ones are cut,
    saying so. Priority 2 (emergency) needs ``expire`` and ``retry``, checked when the config is
    read. ``profile`` names a config map holding ``pushover.token`` (and any other option), as
    in Salt.

    Salt validated the user key (and the sound) with extra API calls before every message and
    sent unset options as the text ``None``; saline validates in ``check()``
    (``users/validate.json``), sends only what is set, keeps one pooled HTTPS connection per
    returner, and does not send a return twice when a batch is retried. An invalid token or user
    key (and any 401/403/429/5xx answer) is reported as unavailable, so the messages wait in the
    outbox until the config is fixed. ``api_url`` is saline's, for proxies and tests.

    Example::

        pushover:
          user: uQiRzpo4DXghDmr9QzzfQu27cmVRsG
          token: azGDORePK8gMaC0QOYAMyEEuzJnyUi
          title: Salt
          priority: 1
    """

    name = "pushover"
    extra = "pushover"
    summary = "Pushover: a notification per return, Salt's text"
    options = (
        Option("user", secret=True, doc="the user or group key to notify; required, here or in the profile"),
        Option("token", secret=True, doc="the application's API token; required, here or in the profile"),
        Option("title", doc="message title (default: the application's name)"),
        Option("device", doc="device name(s) to send to, comma-separated (default: all)"),
        Option("priority", default="0", doc="-2 to 2; 2 (emergency) needs expire and retry"),
        Option("expire", int, doc="seconds an emergency message is retried for"),
        Option("retry", int, doc="seconds between retries of an emergency message"),
        Option("sound", doc="notification sound"),
        Option("profile", doc="name of a config map holding pushover.<option> keys (e.g. the token)"),
        Option("api_version", default="1", doc="API version in the URL"),
        Option("api_url", default="https://api.pushover.net", doc="API base URL, for proxies and tests (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for the API (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        apply_profile("pushover", self.opts, self.master_opts,
                      ("user", "token", "title", "device", "priority", "expire", "retry", "sound", "api_version"))
        missing = [f"pushover.{k}" for k in ("user", "token") if not self.opts.get(k)]
        if missing:
            raise ConfigError(f"returner pushover: required option {', '.join(missing)} is not set (nor in pushover.profile)")
        if str(self.opts.get("priority") or "0").strip() == "2" and not (self.opts.get("expire") and self.opts.get("retry")):
            raise ConfigError("returner pushover: priority 2 needs pushover.expire and pushover.retry")
        base = str(self.opts["api_url"]).rstrip("/")
        self.url = f"{base}/{self.opts['api_version']}/messages.json"
        self.validate_url = f"{base}/{self.opts['api_version']}/users/validate.json"
        self._secrets = [str(self.opts[k]) for k in ("user", "token") if self.opts.get(k)]
        self._session: requests.Session | None = None
        self._sent = Sent()

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def form(self, ret: dict[str, Any]) -> dict[str, str]:
        """The form fields of one message."""
        fields: dict[str, Any] = {"token": self.opts["token"], "user": self.opts["user"],
                                  "message": cut(salt_text(ret), MESSAGE_MAX)}
        for key in ("title", "device", "priority", "expire", "retry", "sound"):
            if self.opts.get(key) not in (None, ""):
                fields[key] = str(self.opts[key])
        if "title" in fields:
            fields["title"] = cut(fields["title"], TITLE_MAX)
        return fields

    def _post(self, url: str, form: dict[str, str]) -> None:
        try:
            answer = self._http().post(url, data=form, timeout=self.opts["timeout"])
        except requests.RequestException as exc:
            raise http_failure(self.name, "Pushover", self._secrets, exc) from None
        if answer.status_code == 200:
            return
        error = http_failure(self.name, "Pushover", self._secrets, status=answer.status_code, body=answer.text)
        try:
            said = answer.json()
        except ValueError:
            said = {}
        if isinstance(said, dict) and (said.get("token") == "invalid" or said.get("user") == "invalid"):
            raise BackendUnavailable(str(error)) from None  # a config problem: wait, do not split the batch
        raise error

    def returns(self, rets: list[dict[str, Any]]) -> None:
        for ret in self._sent.fresh(rets):
            self._post(self.url, self.form(ret))
            self._sent.add([ret_key(ret)])

    def check(self) -> None:
        """Pushover says the user key (and device) is valid for the token."""
        form = {"token": self.opts["token"], "user": self.opts["user"]}
        if self.opts.get("device"):
            form["device"] = self.opts["device"]
        self._post(self.validate_url, form)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
