"""A minion resends a return it has no ack for; when the master's store is slow, the copy can
arrive while the first one still waits in the same group. The copy is acknowledged only if the
first one is stored: an ack for a return the store then refused would make the minion drop a
return that was never kept (seen with the whole NATS cluster stopped: 10-20 returns lost).

A real Master on a temporary cachedir with its SQLite outbox; the store is made to refuse for real,
by another connection holding the file's write lock (as an operator's ``sqlite3`` shell would).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from saline.master.daemon import Master
from saline.transport.framing import decode
from saline.transport.keys import ACCEPTED
from tests.helpers import make_ret

JID = "20261207090000000001"


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    from saline.config import MASTER_OPTIONS, _finish

    opts: dict[str, Any] = {k: v[1] for k, v in MASTER_OPTIONS.items()}
    opts.update(id="copies", cachedir=str(tmp_path / "cache"), pki_dir=str(tmp_path / "pki"),
                sock_dir=str(tmp_path / "sock"), config_dir=str(tmp_path))
    _finish("master", opts)
    m = Master(opts)
    for mid, key in (("m1", "a" * 40), ("m2", "b" * 40)):
        m.keys.add(ACCEPTED, mid, key)
    m.state.add_job(JID, {"jid": JID, "fun": "test.ping", "arg": [], "tgt": "*", "tgt_type": "glob", "ret": "",
                          "user": "root", "minions": ["m1", "m2"], "kwargs": {}}, ["m1", "m2"], 5)
    yield m
    m.outbox.close()
    m.state.close()


def _answers(replies: list[tuple[bytes, Any]]) -> dict[bytes, list[str]]:
    out: dict[bytes, list[str]] = {}
    for routing, reply in replies:
        message = decode(reply) if isinstance(reply, bytes) else reply
        out.setdefault(routing, []).append(message["cmd"])
    return out


def test_a_copy_in_the_same_group_is_acked_only_once_the_first_is_stored(master: Master) -> None:
    first, copy, other = (b"first", make_ret(JID, "m1")), (b"copy", make_ret(JID, "m1")), (b"other", make_ret(JID, "m2"))

    holder = sqlite3.connect(str(master.cachedir / "outbox.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the store cannot write: a real lock, held elsewhere
    try:
        refused = master._store_returns([first, copy, other])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _answers(refused) == {}, refused  # nothing stored, so nothing acknowledged: all three are resent
    assert master.outbox.returned(JID) == set()

    stored = master._store_returns([first, copy, other])
    assert _answers(stored) == {b"first": ["ack"], b"copy": ["ack"], b"other": ["ack"]}
    assert master.outbox.returned(JID) == {"m1", "m2"}

    again = master._store_returns([copy])  # a copy after the store: acked from what is known, not stored twice
    assert _answers(again) == {b"copy": ["ack"]}
