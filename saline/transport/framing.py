"""The wire format: one msgpack map per message, decoded defensively.

Every message crossing a socket is a msgpack-encoded map with a string ``cmd``. Decoding refuses
oversized frames, deep nesting, non-string keys at the top level and invalid msgpack with
:class:`FrameError`, whose message is one line naming the cause. (msgspec encodes and decodes:
several times faster than msgpack-python on the master's return path.)
"""

from __future__ import annotations

from typing import Any

import msgspec

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
MAX_DEPTH = 64


class FrameError(ValueError):
    """A frame that cannot be accepted; the message names why."""


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, bytearray):
        return bytes(obj)
    return str(obj)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_default)
_DECODER = msgspec.msgpack.Decoder()
# a frame as it must be: a map with string keys, checked in C while decoding (the untyped decoder
# above only says what is wrong with one that is not)
_FRAME_DECODER = msgspec.msgpack.Decoder(dict[str, Any])


def encode(message: dict[str, Any]) -> bytes:
    try:
        return _ENCODER.encode(message)
    except OverflowError:  # an integer MessagePack cannot hold: sent as its text, as the slow path does
        import msgpack

        return msgpack.packb(message, use_bin_type=True, default=_default)


#: every byte that is not the first byte of a msgpack map or array header
_NOT_CONTAINER = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or b in (0xDC, 0xDD, 0xDE, 0xDF)))


def _may_nest(data: bytes, limit: int) -> bool:
    """False when ``data`` cannot hold more than ``limit`` nested maps and arrays: each level needs a
    header byte, so fewer candidate bytes (counted in C) than levels settles it without a walk."""
    return len(data.translate(None, _NOT_CONTAINER)) > limit


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def decode(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> dict[str, Any]:
    if len(data) > max_size:
        raise FrameError(f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        message = _FRAME_DECODER.decode(data)
    except msgspec.ValidationError:
        message = _not_a_frame(data)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise FrameError(f"invalid msgpack: {exc.__class__.__name__}: {exc}"[:200]) from None
    except Exception as exc:  # anything else hostile input may provoke
        raise FrameError(f"undecodable frame: {exc.__class__.__name__}") from None
    if not isinstance(message.get("cmd"), str):
        raise FrameError("a frame must carry a string 'cmd'")
    if _may_nest(data, MAX_DEPTH) and not _depth_ok(message, MAX_DEPTH):
        raise FrameError(f"frame nested deeper than {MAX_DEPTH} levels")
    return message


def _not_a_frame(data: bytes) -> dict[str, Any]:
    """Why valid msgpack is not a frame (FrameError naming it)."""
    try:
        value = _DECODER.decode(data)
    except Exception as exc:
        raise FrameError(f"invalid msgpack: {exc.__class__.__name__}: {exc}"[:200]) from None
    if not isinstance(value, dict):
        raise FrameError(f"a frame must be a map, got {type(value).__name__}")
    raise FrameError("invalid msgpack: a frame's keys must be strings")


def require(message: dict[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    """The value of ``field``, or FrameError when it is missing or of the wrong type."""
    value = message.get(field)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise FrameError(f"field '{field}' must be {names}, got {type(value).__name__}")
    return value
