"""Salt's ``rawfile_json`` returner: one JSON object per line, appended to a file."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any, Mapping

from saline.config import under_root
from saline.returners import _json
from saline.returners.base import BackendUnavailable, Option, Returner, ReturnerError


DEFAULT_FILE = "/var/log/salt/events"


class RawfileJsonReturner(Returner):
    """Salt's ``rawfile_json``: appends each return and each event to a file, one JSON per line.

    A return is written whole (the JSON of the return load: ``id``, ``jid``, ``fun``,
    ``fun_args``, ``return``, ``retcode``, ``success``, ``_stamp`` …); an event as
    ``{"tag": …, "data": …}``. Loads are not stored, and there is no read side: the file is for
    log shippers (Filebeat, Fluent Bit, Vector, Splunk's forwarder) and ``jq``. JSON as Salt
    writes it (``ensure_ascii=False``); a newline inside a value is escaped by JSON, so a record
    is always exactly one line.

    Each batch is appended with one ``write`` under an exclusive ``flock`` on the file, so lines
    from several processes never interleave. The file is created with mode 0640 (and its folder
    when missing); it is opened per batch, so log rotation (rename, or ``copytruncate``) needs
    no signal. A retried batch is appended again: readers should expect a record more than once
    after a delivery failure (``jid`` + ``id`` identify a return).

    Example::

        jq -c 'select(.jid == "20240105123456123456") | {id, success, return}' /var/log/salt/events
    """

    name = "rawfile_json"
    summary = "Salt's rawfile_json: returns and events appended to a file, one JSON object per line"
    options = (
        Option("filename", str, None, doc=f"the file appended to (unset: Salt's {DEFAULT_FILE}, under the "
               "master's root_dir when that is set)"),
    )

    def __init__(self, options: Mapping[str, Any], master_opts: Mapping[str, Any] | None = None) -> None:
        super().__init__(options, master_opts)
        root = self.master_opts.get("root_dir") or "/"
        self.filename = str(self.opts.get("filename") or under_root(root, DEFAULT_FILE))

    def _append(self, records: list[Any]) -> None:
        if not records:
            return
        data = "".join(_json.dumps(r) + "\n" for r in records).encode("utf-8", errors="replace")
        path = Path(self.filename)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:  # one write() per batch; the loop only continues after a short write
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise self._error(exc) from None
        finally:
            os.close(fd)  # also releases the lock

    def _error(self, exc: OSError) -> ReturnerError:
        reason = "a file is in the way of its folder" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        if exc.errno in (errno.EISDIR, errno.EINVAL):
            return ReturnerError(f"returner rawfile_json: cannot append to {self.filename}: {reason}")
        return BackendUnavailable(f"returner rawfile_json: cannot append to {self.filename}: {reason}")

    def returns(self, rets: list[dict[str, Any]]) -> None:
        self._append(rets)

    def event_returns(self, events: list[dict[str, Any]]) -> None:
        self._append([{"tag": e.get("tag"), "data": e.get("data")} for e in events])

    def check(self) -> None:
        """The file can be opened for appending (it is created when missing)."""
        try:
            Path(self.filename).parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640))
        except OSError as exc:
            raise self._error(exc) from None
