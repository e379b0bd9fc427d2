"""Salt's ``local`` returner: print each return and event on the master's output."""

from __future__ import annotations

import logging
import sys
from typing import Any

from saline.returners import _json
from saline.returners.base import Returner

log = logging.getLogger(__name__)


class LocalReturner(Returner):
    """Salt's ``local``: prints each return and each event where the master runs (for trying out).

    Each return is printed to standard output as one line of JSON (the whole return: ``id``,
    ``jid``, ``fun``, ``return``, ``retcode``, ``success`` …), and each event as
    ``{"tag": …, "data": …}``; a line per return is also logged at INFO
    (``return from <id> for <jid> (<fun>): success``). Salt prints Python's ``repr``; saline
    prints JSON so the output can be piped into ``jq``. Nothing is stored: no read side, no
    loads, no options.

    Example::

        saline-master -l info | grep '"fun": "test.ping"'
    """

    name = "local"
    summary = "Salt's local: prints returns and events on the master's standard output (debugging)"
    options = ()

    def _print(self, records: list[Any]) -> None:
        if records:
            out = sys.stdout  # looked up per call: follows redirection of the process's output
            lines = "".join(_json.dumps(r) + "\n" for r in records)
            try:
                out.write(lines)
            except UnicodeEncodeError:  # an output that is not UTF-8: escape what it cannot show
                encoding = out.encoding or "ascii"
                out.write(lines.encode(encoding, errors="backslashreplace").decode(encoding))
            out.flush()

    def returns(self, rets: list[dict[str, Any]]) -> None:
        if log.isEnabledFor(logging.INFO):
            for ret in rets:
                log.info("return from %s for %s (%s): %s", ret.get("id"), ret.get("jid"), ret.get("fun"),
                         "success" if ret.get("success") else f"failure, retcode {ret.get('retcode')}")
        self._print(rets)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        if log.isEnabledFor(logging.INFO):
            for event in events:
                log.info("event %s", event.get("tag"))
        self._print([{"tag": e.get("tag"), "data": e.get("data")} for e in events])
