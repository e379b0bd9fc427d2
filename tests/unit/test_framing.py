"""The wire decoder refuses hostile frames with FrameError, never another exception."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saline.transport.framing import FrameError, decode, encode, require


def test_round_trip() -> None:
    msg = {"cmd": "_return", "load": {"return": "héllo ✓", "set": [1, 2], "blob": b"\x00\xff"}}
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("data, why", [
    (b"\xc1", "invalid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (msgpack.packb({"x": 1}), "string 'cmd'"),
    (msgpack.packb({"cmd": 5}), "string 'cmd'"),
    (msgpack.packb({"cmd": "a", "x": 1})[:-1], "invalid msgpack"),
    (msgpack.packb({1: "a"}), "invalid msgpack"),
])
def test_bad_frames_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(FrameError, match=why):
        decode(data)


def test_oversized_and_deeply_nested_frames() -> None:
    with pytest.raises(FrameError, match="exceeds the limit"):
        decode(encode({"cmd": "x", "pad": "a" * 2000}), max_size=1000)
    nested: object = "leaf"
    for _ in range(200):
        nested = [nested]
    with pytest.raises(FrameError, match="nested deeper"):
        decode(encode({"cmd": "x", "n": nested}))


def test_require_checks_types() -> None:
    assert require({"jid": "1"}, "jid", str) == "1"
    with pytest.raises(FrameError, match="field 'n' must be int"):
        require({"n": True}, "n", int)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    try:
        message = decode(data)
    except FrameError:
        return
    assert isinstance(message, dict) and isinstance(message["cmd"], str)


json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
                         lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
                         max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_like, st.integers(min_value=0, max_value=40))
def test_fuzz_truncated_valid_frames(value: object, cut: int) -> None:
    data = encode({"cmd": "_return", "load": value})
    try:
        decode(data[: max(0, len(data) - cut)])
    except FrameError:
        pass
