"""Salt's ``nagios_nrdp`` returner: passive check results posted to Nagios NRDP."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping
from xml.sax.saxutils import escape

import requests

from saline.config import ConfigError
from saline.returners import _json
from saline.returners._notify import Sent, http_failure, one_line, ret_key, xml_text
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError

_CHECKTYPES = {"active": "0", "passive": "1", "0": "0", "1": "1"}
_STATUS = re.compile(r"<status>\s*(-?\d+)\s*</status>")
_MESSAGE = re.compile(r"<message>(.*?)</message>", re.S)


def _attr(text: str) -> str:
    return escape(xml_text(text), {'"': "&quot;", "'": "&apos;"})


class NagiosNrdpReturner(Returner):
    """Salt's ``nagios_nrdp``: each return as a passive check result in Nagios, through NRDP.

    A return becomes Salt's ``checkresult``: a service check when ``service`` is set (else a
    host check), ``checktype`` 1 (passive) or 0 (active), ``hostname`` the minion id, and
    ``state`` 0 (OK) or 2 (CRITICAL)::

        <?xml version='1.0'?>
        <checkresults>
        <checkresult type='service' checktype='1'><hostname>web1</hostname><servicename>salt</servicename><state>0</state><output>test.ping (jid 20240105123456123456): OK</output></checkresult>
        </checkresults>

    posted as the form fields ``token``, ``cmd=submitcheck`` and ``XMLDATA`` to ``url``. Salt
    said CRITICAL only when the return value was empty or false, so a failed ``state.apply``
    showed OK; saline also says CRITICAL when the return failed (``success`` false or a non-zero
    ``retcode``). ``<output>`` (function, jid, OK or the retcode) is saline's: Salt sent no text.
    ``hostname`` is a template over the return's keys (``{id}.example.com``; default ``{id}``).

    A batch is one request carrying all its check results (NRDP takes any number); one pooled
    HTTP connection per returner. NRDP answers HTTP 200 even when it refuses: its
    ``<status>`` is read, and ``BAD TOKEN`` or an NRDP that is switched off are reported as
    unavailable (retried), other refusals as errors. Salt's code read ``nagios_nrdp.*`` while its
    docs said ``nagios.*``: both are read here, ``nagios_nrdp.*`` first. A return already
    delivered is not sent again when a batch is retried. Salt sent the token in the URL; saline
    sends it in the body, so it never shows in a proxy's access log.

    Example, in the master config::

        nagios_nrdp:
          url: https://nagios.example.com/nrdp/
          token: r4nd0mt0k3n
          service: salt-jobs
    """

    name = "nagios_nrdp"
    alt_prefixes = ("nagios",)
    extra = "nagios_nrdp"
    summary = "Nagios NRDP: each return as a passive host or service check result, a batch per request"
    options = (
        Option("url", required=True, doc="the NRDP URL (https://nagios.example.com/nrdp/)"),
        Option("token", required=True, secret=True, doc="an NRDP token"),
        Option("service", doc="service name: a service check (default: a host check)"),
        Option("checktype", default="1", doc="1 or passive, 0 or active"),
        Option("hostname", default="{id}", doc="host name sent, a template over the return's keys (saline)"),
        Option("verify_ssl", bool, default=True, doc="check the server's TLS certificate (saline)"),
        Option("timeout", float, default=10.0, doc="seconds to wait for NRDP (saline)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        checktype = _CHECKTYPES.get(str(self.opts.get("checktype") or "1").strip().lower())
        if checktype is None:
            raise ConfigError(f"returner {self.name}: checktype must be active, passive, 0 or 1, "
                              f"got {self.opts.get('checktype')!r}")
        self.checktype = checktype
        self._secrets = [str(self.opts["token"]).strip(), str(self.opts["token"])]
        self._session: requests.Session | None = None
        self._sent = Sent()

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.verify = bool(self.opts["verify_ssl"])
        return self._session

    def _hostname(self, ret: dict[str, Any]) -> str:
        fields = {k: _json.text(v) for k, v in ret.items() if isinstance(k, str) and k != "return"}
        try:
            return str(self.opts["hostname"]).format(**fields)
        except (KeyError, IndexError, ValueError):
            return fields.get("id", "")

    def checkresult(self, ret: dict[str, Any]) -> str:
        """Salt's ``<checkresult>`` element for one return."""
        failed = not ret.get("return") or ret.get("success") is False or (ret.get("retcode") or 0) != 0
        service = self.opts.get("service")
        kind = "service" if service else "host"
        parts = [f"<checkresult type='{kind}' checktype='{self.checktype}'>",
                 f"<hostname>{_attr(self._hostname(ret))}</hostname>"]
        if service:
            parts.append(f"<servicename>{_attr(str(service))}</servicename>")
        outcome = f"FAILED, retcode {ret.get('retcode')}" if failed else "OK"
        parts.append(f"<state>{2 if failed else 0}</state>")
        output = f"{_json.text(ret.get('fun'))} (jid {_json.text(ret.get('jid'))}): {outcome}"
        parts.append(f"<output>{_attr(output)}</output>")
        parts.append("</checkresult>")
        return "".join(parts)

    def returns(self, rets: list[dict[str, Any]]) -> None:
        fresh = self._sent.fresh(rets)
        if not fresh:
            return
        xml = "<?xml version='1.0'?>\n<checkresults>\n" + "\n".join(self.checkresult(r) for r in fresh) + "\n</checkresults>"
        form = {"token": str(self.opts["token"]).strip(), "cmd": "submitcheck", "XMLDATA": xml}
        try:
            answer = self._http().post(self.opts["url"], data=form, timeout=self.opts["timeout"])
        except requests.RequestException as exc:
            raise http_failure(self.name, f"NRDP at {self.opts['url']}", self._secrets, exc) from None
        if answer.status_code != 200:
            raise http_failure(self.name, f"NRDP at {self.opts['url']}", self._secrets, status=answer.status_code,
                               body=answer.text)
        self._refused(answer.text)
        self._sent.add(ret_key(r) for r in fresh)

    def _refused(self, text: str) -> None:
        """Raise when NRDP's answer (XML, or JSON) says it did not take the results."""
        status: Any = None
        message = ""
        if text.lstrip().startswith("{"):
            try:
                result = json.loads(text).get("result", {})
                status, message = result.get("status"), str(result.get("message", ""))
            except (ValueError, AttributeError):
                pass
        else:
            found = _STATUS.search(text)
            status = found.group(1) if found else None
            said = _MESSAGE.search(text)
            message = said.group(1).strip() if said else ""
        if status is None:
            raise ReturnerError(one_line(self.name, f"NRDP at {self.opts['url']} gave no status: {text[:200]}",
                                         self._secrets))
        if str(status) != "0":
            line = one_line(self.name, f"NRDP at {self.opts['url']} refused the results: {message or status}",
                            self._secrets)
            if "TOKEN" in message.upper() or "DISABLED" in message.upper():
                raise BackendUnavailable(line)
            raise ReturnerError(line)

    def check(self) -> None:
        """NRDP's URL answers (any answer below 500)."""
        try:
            answer = self._http().get(self.opts["url"], timeout=self.opts["timeout"])
        except requests.RequestException as exc:
            raise http_failure(self.name, f"NRDP at {self.opts['url']}", self._secrets, exc) from None
        if answer.status_code >= 500:
            raise http_failure(self.name, f"NRDP at {self.opts['url']}", self._secrets, status=answer.status_code)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
