"""Job ids in Salt's form: the UTC start time as ``%Y%m%d%H%M%S%f`` (20 digits).

Two jobs started in the same microsecond still get different jids: the generator never hands out
a jid that is not greater than the previous one (it moves on by one microsecond instead).
"""

from __future__ import annotations

import datetime as dt
import os
import threading

_lock = threading.Lock()
_last = 0  # microseconds since the epoch of the last jid handed out


def gen_jid(unique_jid: bool = False) -> str:
    global _last
    now = dt.datetime.now(dt.timezone.utc)
    micros = int(now.timestamp()) * 1_000_000 + now.microsecond
    with _lock:
        micros = max(micros, _last + 1)
        _last = micros
    stamp = dt.datetime.fromtimestamp(micros // 1_000_000, dt.timezone.utc).replace(microsecond=micros % 1_000_000)
    jid = stamp.strftime("%Y%m%d%H%M%S%f")
    return f"{jid}_{os.getpid()}" if unique_jid else jid


def is_jid(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 20 or not value[:20].isdigit():
        return False
    return len(value) == 20 or value[20] == "_"


def jid_to_datetime(jid: str) -> dt.datetime | None:
    if not is_jid(jid):
        return None
    try:  # the fields by position (``%Y%m%d%H%M%S%f``): a fifth of the time strptime takes
        return dt.datetime(int(jid[0:4]), int(jid[4:6]), int(jid[6:8]), int(jid[8:10]), int(jid[10:12]),
                           int(jid[12:14]), int(jid[14:20]), tzinfo=dt.timezone.utc)
    except ValueError:  # a month 13, a second 61
        return None


def jid_to_time(jid: str) -> str:
    """``2024, Jan 05 12:34:56.123456`` as Salt shows a jid's start time; ``""`` for non-jids."""
    when = jid_to_datetime(jid)
    return when.strftime("%Y, %b %d %H:%M:%S.%f") if when else ""


def format_jid_instance(jid: str, load: dict) -> dict:
    """One job as ``jobs.list_jobs`` shows it (Salt's ``format_jid_instance``)."""
    out = {
        "Function": load.get("fun") or "unknown-function",
        "Arguments": list(load.get("arg") or []),
        "Target": load.get("tgt") or "unknown-target",
        "Target-type": load.get("tgt_type") or "list",
        "User": load.get("user") or "root",
        "StartTime": jid_to_time(jid),
    }
    metadata = load.get("metadata") or (load.get("kwargs") or {}).get("metadata")
    if metadata:
        out["Metadata"] = metadata
    return out


def format_jid_instance_ext(jid: str, load: dict) -> dict:
    return {"JID": jid, **format_jid_instance(jid, load)}
