"""What the returners that send messages share (chat, mail, SMS, HTTP collectors, syslog, Kafka).

- :func:`salt_text`: Salt's message text (``id`` / ``function`` / ``function args`` / ``jid`` /
  ``return``), which the xmpp, slack, pushover and hipchat returners all sent.
- :class:`Sent`: a bounded memory of the returns a returner instance already delivered, so a batch
  the outbox retries after a partial failure does not notify anyone twice.
- :func:`cut`: text shortened to a service's limit, saying so at its end.
- :func:`http_failure`: a ``requests`` error or a refused answer as one line, unavailable or not.
"""

from __future__ import annotations

import collections
import pprint
import re
from typing import Any, Iterable

from saline.returners import _json
from saline.returners.base import BackendUnavailable, ReturnerError
from saline.returners.options import scrub

# HTTP answers that say "not now" or "not with this configuration": the whole batch waits and is
# tried again later (a wrong token or URL is fixed in the config, not by splitting the batch).
# Any other refusal (400, 413, 422, ...) is about the items sent: the batch is split to find them.
_RETRY_LATER = {401, 403, 404, 407, 408, 409, 425, 429}

# Characters XML 1.0 cannot carry (XMPP stanzas, NRDP's XMLDATA): dropped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def salt_text(ret: dict[str, Any], returns: str | None = None) -> str:
    """Salt's text of one return; ``returns`` replaces the pretty-printed return value."""
    shown = pprint.pformat(ret.get("return")) if returns is None else returns
    return _json.text(f"id: {ret.get('id')}\r\nfunction: {ret.get('fun')}\r\nfunction args: {ret.get('fun_args')}\r\n"
                      f"jid: {ret.get('jid')}\r\nreturn: {shown}\r\n")


def xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (and lone surrogates replaced)."""
    return _NOT_XML.sub("", _json.text(text))


def cut(text: str, limit: int, unit: str = "characters") -> str:
    """``text`` cut to ``limit`` characters (or UTF-8 bytes with ``unit="bytes"``), ending with a
    note of how much was left out."""
    size = len(text.encode("utf-8")) if unit == "bytes" else len(text)
    if limit <= 0 or size <= limit:
        return text
    note = f"\r\n... ({size} {unit}, cut to {limit})"
    keep = max(limit - len(note.encode("utf-8") if unit == "bytes" else note), 0)
    if unit == "bytes":
        return text.encode("utf-8")[:keep].decode("utf-8", errors="ignore") + note
    return text[:keep] + note


def ret_key(ret: dict[str, Any]) -> tuple[str, str, str]:
    """What identifies a return: a minion answers a job (a function) once."""
    return (_json.text(ret.get("jid")), _json.text(ret.get("id")), _json.text(ret.get("fun")))


class Sent:
    """The keys of the last ``size`` returns delivered, oldest forgotten first."""

    def __init__(self, size: int = 10000) -> None:
        self._order: collections.deque[Any] = collections.deque()
        self._keys: set[Any] = set()
        self._size = size

    def __contains__(self, key: Any) -> bool:
        return key in self._keys

    def add(self, keys: Iterable[Any]) -> None:
        for key in keys:
            if key in self._keys:
                continue
            self._keys.add(key)
            self._order.append(key)
            if len(self._order) > self._size:
                self._keys.discard(self._order.popleft())

    def fresh(self, rets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The returns of ``rets`` not delivered yet (and each only once)."""
        seen: set[Any] = set()
        out = []
        for ret in rets:
            key = ret_key(ret)
            if key not in self._keys and key not in seen:
                seen.add(key)
                out.append(ret)
        return out


def one_line(name: str, text: str, secrets: list[str]) -> str:
    """``returner <name>: <text>`` on one line, secret values masked."""
    return scrub(f"returner {name}: {' '.join(str(text).split())}", secrets)


def http_failure(name: str, where: str, secrets: list[str], exc: BaseException | None = None,
                 status: int | None = None, body: str = "") -> ReturnerError:
    """The error for a request to ``where`` that raised ``exc`` or was answered with ``status``."""
    if exc is not None:
        reason = type(exc).__name__
        detail = str(exc.args[0]) if exc.args else ""
        # urllib3 buries the useful part ("Connection refused") at the end of a long repr
        found = re.search(r"\[Errno -?\d+\] [^'\")]+|timed out|Name or service not known", detail)
        text = f"{where} unreachable: {found.group(0) if found else reason}"
        return BackendUnavailable(one_line(name, text, secrets))
    text = f"{where} answered HTTP {status}" + (f": {body[:200]}" if body.strip() else "")
    if status is not None and (status >= 500 or status in _RETRY_LATER):
        return BackendUnavailable(one_line(name, text, secrets))
    return ReturnerError(one_line(name, text, secrets))


def apply_profile(prefix: str, opts: dict[str, Any], master_opts: Any, names: Iterable[str | tuple[str, str]],
                  profile_option: str = "profile") -> None:
    """Salt's ``<prefix>.profile``: the name of a config map whose ``<prefix>.<key>`` entries
    supply options (credentials kept in one place). ``names`` are option names, or (option name,
    config key) pairs where they differ. A key the profile lacks keeps its value."""
    profile = opts.get(profile_option)
    creds = master_opts.get(profile) if profile and hasattr(master_opts, "get") else None
    if not isinstance(creds, dict):
        return
    for entry in names:
        name, key = (entry, entry) if isinstance(entry, str) else entry
        value = creds.get(f"{prefix}.{key}")
        if value not in (None, "", "None"):
            opts[name] = value
