"""Malformed, truncated, oversized and deeply nested frames, and wrong types in every field of
every message, sent over a real CURVE connection with an accepted key: each is refused, the
master keeps serving."""

from __future__ import annotations

import time
from typing import Any, Iterator

import msgpack
import pytest
import zmq

from tests.faults.conftest import Cluster, RawPeer, figure, install_key, key_pair, logs, master_key

pytestmark = pytest.mark.e2e

MAX_FRAME = 1024 * 1024
WRONG = [None, True, 0, -1, 2 ** 64 - 1, -(2 ** 63), 1.5, float("nan"), "", "x" * 300, "../../etc/passwd",
         "\udcff".encode("utf-8", "surrogatepass"), b"\xff\x00", [], [1, [2, [3]]], {}, {"a": {"b": None}},
         msgpack.ExtType(5, b"ext")]


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def raw_frames() -> Iterator[tuple[str, bytes]]:
    """Frames that are not a valid message at all."""
    valid = _pack({"cmd": "ping"})
    yield "empty", b""
    yield "invalid msgpack byte", b"\xc1"
    yield "truncated map", _pack({"cmd": "_return", "load": {"jid": "1" * 20, "fun": "x"}})[:-3]
    yield "truncated string", valid[:-2]
    yield "trailing bytes", valid + b"\x00\x01"
    yield "array32 claiming 4G items", b"\xdd\xff\xff\xff\xff"
    yield "map32 claiming 4G pairs", b"\xdf\xff\xff\xff\xff"
    yield "str32 claiming 4 GB", b"\xdb\xff\xff\xff\xff" + b"a" * 10
    yield "not a map (list)", _pack(["cmd", "ping"])
    yield "not a map (int)", _pack(7)
    yield "not a map (str)", _pack("ping")
    yield "no cmd", _pack({"id": "m1"})
    yield "non-string key", msgpack.packb({1: "ping", "cmd": "ping"}, use_bin_type=True)
    yield "bytes cmd", _pack({"cmd": b"ping"})
    yield "nested 100 deep", _pack({"cmd": "ping", "x": _deep(100)})
    yield "nested 1000 deep", _pack({"cmd": "_return", "load": _deep(1000)})
    yield "invalid utf-8 in str", b"\x81\xa3cmd\xa4\xff\xfe\xfd\xfc"
    yield "ext type as cmd", _pack({"cmd": msgpack.ExtType(1, b"x")})
    yield "random bytes", bytes(range(256)) * 4


def typed_messages(jid: str, mid: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field of every message type with every wrong type."""
    good_load = {"id": mid, "jid": jid, "fun": "test.ping", "return": True, "retcode": 0, "success": True,
                 "fun_args": []}
    for value in WRONG:
        yield f"cmd={value!r:.30}", {"cmd": value}
        yield f"hello id={value!r:.30}", {"cmd": "hello", "id": value, "grains": {}}
        yield f"hello grains={value!r:.30}", {"cmd": "hello", "id": mid, "grains": value}
        yield f"ping extra={value!r:.30}", {"cmd": "ping", "id": value}
        yield f"_return load={value!r:.30}", {"cmd": "_return", "load": value}
        for field in good_load:
            yield f"_return load.{field}={value!r:.30}", {"cmd": "_return", "load": {**good_load, field: value}}
        yield f"unknown with {value!r:.30}", {"cmd": "nope", "load": value}
    yield "unknown cmd, long", {"cmd": "z" * 100_000}
    yield "publish from a minion", {"cmd": "publish", "jid": jid, "fun": "cmd.run", "arg": ["id"], "tgt": "*"}
    yield "_return without load", {"cmd": "_return"}
    yield "_return for an unknown jid", {"cmd": "_return", "load": {**good_load, "jid": "2" * 20}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("frames"), master_opts={"max_frame_size": MAX_FRAME}) as c:
        c.start_master()
        c.start_minions("m1")
        yield c


@pytest.fixture
def peer(cluster: Cluster) -> Iterator[RawPeer]:
    keys = key_pair()
    install_key(cluster, "minions", "fuzzer", keys[0])
    time.sleep(0.4)
    p = RawPeer(zmq.DEALER, cluster.ret_port, master_key(cluster), keys, max_size=-1)
    assert p.request({"cmd": "hello", "id": "fuzzer"}) == {"cmd": "welcome", "master_id": "master"}
    yield p
    p.close()


def _alive(cluster: Cluster) -> None:
    assert cluster.procs["master"].poll() is None, logs(cluster)
    assert cluster.client.cmd("m1", "test.ping", timeout=5) == {"m1": True}


def test_malformed_frames_are_refused(cluster: Cluster, peer: RawPeer) -> None:
    before = cluster.runner("master.stats")["bad_frames"]
    frames = list(raw_frames())
    for _name, data in frames:
        assert peer.send(data)
    peer.sock.send_multipart([b"a", b"b", b"c"])  # a multipart message: the master wants one frame
    answers = peer.drain(1.0)
    assert all(a.get("cmd") in ("refused", "not_accepted") for a in answers), answers
    _alive(cluster)
    after = cluster.runner("master.stats")["bad_frames"]
    assert after - before >= len(frames), (before, after)
    # the connection is still usable: a valid ping is answered
    assert peer.request({"cmd": "ping"}) == {"cmd": "pong"}
    assert "Traceback" not in cluster.master_log()
    figure("bad_frames_malformed", frames=len(frames) + 1, counted_bad=after - before, master="alive")


def test_wrong_types_in_every_field(cluster: Cluster, peer: RawPeer) -> None:
    jid = cluster.publish_many("fuzzer", "test.ping", 1)[0]
    messages = list(typed_messages(jid, "fuzzer"))
    answers = 0
    for _name, message in messages:
        peer.send(message)
    answers = len(peer.drain(2.0))
    _alive(cluster)
    assert peer.request({"cmd": "ping"}) == {"cmd": "pong"}
    assert "Traceback" not in cluster.master_log(), cluster.master_log()[-3000:]
    # whatever the fuzzer managed to store under its own id for its own job is at most one return
    stored = cluster.runner("jobs.lookup_jid", jid)
    assert set(stored) <= {"fuzzer"}
    figure("bad_frames_wrong_types", messages=len(messages), answered=answers, master="alive",
           stored_for_own_job=len(stored))


def test_oversized_frame_drops_the_connection_only(cluster: Cluster, peer: RawPeer) -> None:
    peer.send(b"\x81\xa3cmd\xa4ping")  # hand-packed {"cmd": "ping"}
    assert peer.recv(5) == {"cmd": "pong"}
    big = _pack({"cmd": "_return", "load": {"jid": "1" * 20, "fun": "x", "return": "y" * (MAX_FRAME + 10)}})
    peer.send(big)
    assert peer.recv(1.5) is None  # ZeroMQ's maxmsgsize: the connection is dropped, nothing answered
    _alive(cluster)
    # the peer reconnects by itself (ZeroMQ) and is served again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and peer.request({"cmd": "ping"}, timeout=0.5) != {"cmd": "pong"}:
        time.sleep(0.1)
    assert peer.request({"cmd": "ping"}) == {"cmd": "pong"}
    figure("bad_frames_oversized", frame_bytes=len(big), max_frame_size=MAX_FRAME, master="alive",
           peer="reconnected")
