"""JSON the way Salt's returners write it, made safe for whatever a minion returns.

Salt stores ``json.dumps(x, ensure_ascii=False)`` with the default separators and no key sorting
(``mysql.get_jids_filter`` matches the exact ``"fun": "..."`` spacing), after turning bytes into
text (``salt.utils.data.decode``). Here a value that is still not JSON (a set, an object, a key
that is not a string, a reference cycle) is stored in a readable stand-in instead of failing the
whole batch: sets become lists, bytes become text (UTF-8, undecodable bytes replaced), anything
else its ``repr``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, Callable

__all__ = ["decode", "dumps", "dumps_ret", "loads", "text"]

# A Python str may hold lone surrogates (from a surrogateescape decode, say) that no UTF-8
# encoder accepts: in JSON they are written as \udxxxx escapes (lossless), in plain text as U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Marks the place of ``return`` inside the full return while the rest of it is serialised, so a
# large return value is encoded once and spliced in, not encoded twice (``return`` + ``full_ret``).
_MARK = f"\x00saline-return-{uuid.uuid4().hex}\x00"
_MARK_JSON = json.dumps(_MARK)


def _escape_surrogates(json_text: str) -> str:
    if json_text.isascii() or not _SURROGATE.search(json_text):
        return json_text
    return _SURROGATE.sub(lambda m: "\\u%04x" % ord(m.group()), json_text)


def text(value: Any) -> str:
    """``value`` as text for a plain (non-JSON) column: a list is joined with commas (a
    multi-function job's ``fun``), bytes decoded, lone surrogates replaced."""
    if type(value) is str and value.isascii():  # a jid, a minion id, a function name: as they are
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    elif isinstance(value, (bytes, bytearray)):
        value = _bytes_text(value)
    out = value if isinstance(value, str) else str(value)
    return out if out.isascii() else _SURROGATE.sub("\ufffd", out)


def _bytes_text(value: bytes | bytearray | memoryview) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _default(obj: Any) -> Any:
    """Called by the encoder for what JSON has no form for."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _bytes_text(obj)
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, (dt.datetime, dt.date, dt.time)):
        return obj.isoformat()
    return repr(obj)


def _key(key: Any) -> Any:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return _bytes_text(key)
    return repr(key)


def decode(value: Any, _seen: frozenset[int] = frozenset()) -> Any:
    """A copy of ``value`` with bytes as text, keys JSON can hold, and cycles cut (shown as repr)."""
    if isinstance(value, str) or value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _bytes_text(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if id(value) in _seen:
            return f"<cycle {type(value).__name__}>"
        seen = _seen | {id(value)}
        if isinstance(value, dict):
            return {_key(k): decode(v, seen) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            value = _default(value)
        return [decode(v, seen) for v in value]
    return _default(value)


# ``json.dumps(value, ensure_ascii=False, default=...)`` builds a new encoder at every call (a third
# of the time of a small return); one encoder with the same settings writes the same text.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_default)


def _one_encoder() -> Callable[[Any], str]:
    """The C encoder behind ``_ENCODER``, made once: ``JSONEncoder.encode`` makes a new one at
    every call, which costs as much as encoding a small return. It keeps no record of the
    containers it is in (a cycle raises RecursionError, and ``decode`` cuts it)."""
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    made = c_make_encoder(None, _default, encode_basestring, None, ": ", ", ", False, False, True)
    return lambda value: "".join(made(value, 0))


_encode = _one_encoder()
# the JSON of the return values too small to be worth an encoder call (a test.ping's True)
_SCALARS: dict[Any, str] = {True: "true", False: "false", None: "null"}


def dumps(value: Any) -> str:
    """Salt's JSON text of ``value``; never raises for odd values."""
    try:
        out = _encode(value)
    except (TypeError, ValueError, RecursionError):
        # bytes or tuple keys, or a reference cycle: clean a copy and try again
        out = _encode(decode(value))
    return _escape_surrogates(out)


def dumps_ret(ret: dict[str, Any]) -> tuple[str, str]:
    """``(JSON of the whole ret, JSON of ret["return"])``, encoding the return value only once."""
    if "return" not in ret:
        return dumps(ret), "null"
    value = ret["return"]
    if value is None or value is True or value is False:
        return dumps(ret), _SCALARS[value]
    if isinstance(value, (int, float)):
        return dumps(ret), dumps(value)  # small: encoding twice is cheaper than splicing
    value = dumps(value)
    shell = dict(ret)
    shell["return"] = _MARK
    whole = dumps(shell)
    return whole.replace(_MARK_JSON, value, 1), value


def loads(text: str | bytes | None, default: Any = None) -> Any:
    """Parse stored JSON; text that is not JSON (a row written by hand) comes back as it is."""
    if text is None:
        return default
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
