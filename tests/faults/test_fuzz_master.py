"""Hypothesis feeds arbitrary decoded maps to the master's message handling (``_handle_message``
then ``_store_returns``, what every frame from a minion goes through after decoding) on a real
Master built on a temporary cachedir: no exception may escape, and every answer is a map with a
string ``cmd``."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from saline.master.daemon import Master
from saline.transport.framing import decode, encode
from saline.transport.keys import ACCEPTED, PENDING, REJECTED

JID = "20240101120000000001"
KEYS = {"m1": "a" * 40, "pend": "b" * 40, "rej": "c" * 40}


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    from saline.config import MASTER_OPTIONS, _finish

    root = tmp_path_factory.mktemp("fuzz")
    opts: dict[str, Any] = {k: v[1] for k, v in MASTER_OPTIONS.items()}
    opts.update(id="fuzzmaster", cachedir=str(root / "cache"), pki_dir=str(root / "pki"), sock_dir=str(root / "sock"),
                config_dir=str(root))
    _finish("master", opts)
    m = Master(opts)
    m.keys.add(ACCEPTED, "m1", KEYS["m1"])
    m.keys.add(PENDING, "pend", KEYS["pend"])
    m.keys.add(REJECTED, "rej", KEYS["rej"])
    m.state.add_job(JID, {"jid": JID, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "ret": "",
                          "user": "root", "minions": ["m1"], "kwargs": {}}, ["m1"], 5)
    yield m
    m.outbox.close()
    m.state.close()


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
           | st.floats(allow_nan=True) | st.text(max_size=30) | st.binary(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
jids = st.sampled_from([JID, "2" * 20, "", "not-a-jid", JID + "_123"]) | values
ids = st.sampled_from(["m1", "pend", "rej", "other", "", "../x", "a" * 300]) | values
loads = st.fixed_dictionaries(
    {}, optional={"jid": jids, "id": ids, "fun": st.sampled_from(["test.ping", ""]) | values, "return": values,
                  "retcode": values, "success": values, "fun_args": values, "out": values, "ret_config": values,
                  "ret_kwargs": values}) | values
messages = st.fixed_dictionaries(
    {"cmd": st.sampled_from(["hello", "_return", "ping", "publish", "nope"]) | st.text(max_size=50)},
    optional={"id": ids, "grains": values, "load": loads, "jid": jids, "extra": values})
peer_keys = st.sampled_from([KEYS["m1"], KEYS["pend"], KEYS["rej"], "d" * 40, None])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(peer_keys, messages), min_size=1, max_size=5))
# first: m1's return stored (its ack encoded once for the job), then a copy of it (a duplicate)
@example(batch=[(KEYS["m1"], {"cmd": "_return", "load": {"jid": JID, "fun": "test.ping", "return": True}})] * 2)
def test_no_exception_escapes(master: Master, batch: list[tuple[str | None, dict[str, Any]]]) -> None:
    accepted: list[tuple[bytes, dict[str, Any]]] = []
    replies = []
    for n, (key, message) in enumerate(batch):
        try:  # what arrives is what decode lets through; a map it refuses never reaches the handler
            message = decode(encode(message))
        except Exception:
            continue
        reply = master._handle_message(bytes([n]), key, message, accepted)
        if reply is not None:
            replies.append(reply)
    replies += [r for _routing, r in master._store_returns(accepted)]
    for reply in replies:
        if isinstance(reply, bytes):  # an ack, encoded once for all the returns of its job in a group
            reply = decode(reply)
        assert isinstance(reply, dict) and isinstance(reply.get("cmd"), str), reply
        encode(reply)  # every answer can go back on the wire
    # no return is ever stored under an id other than the one bound to the key
    for _routing, load in accepted:
        assert load["id"] == "m1"
