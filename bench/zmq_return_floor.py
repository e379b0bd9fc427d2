"""The transport floor of the returns benchmarks: bare pyzmq, no saline.

    python bench/zmq_return_floor.py MINIONS SECONDS

The same traffic as ``bench/loadgen.py`` against the master: ``MINIONS`` DEALER sockets (CURVE
clients) in one process send a minion's ``_return`` message each, job after job, with at most 4,000
unacknowledged, to a ROUTER socket (CURVE server) in another process, which decodes every message
with msgpack and answers with an ack, and does nothing else: no outbox, no returner. Printed: one
JSON line, the acks per second over ``SECONDS``. Whatever saline does per return comes on top of
this, on the same cores.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time

import msgpack
import zmq

WINDOW = 4000


def server(public: bytes, secret: bytes, ports: "multiprocessing.Queue[int]") -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.curve_server = True
    router.curve_publickey, router.curve_secretkey = public, secret
    router.rcvhwm = router.sndhwm = 100_000
    ports.put(router.bind_to_random_port("tcp://127.0.0.1"))
    while True:
        ident, data = router.recv_multipart()
        load = msgpack.unpackb(data)["load"]
        router.send_multipart([ident, msgpack.packb({"cmd": "ack", "jid": load["jid"]})])


def clients(n: int, seconds: float) -> float:
    public, secret = zmq.curve_keypair()
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=server, args=(public, secret, ports), daemon=True)
    proc.start()
    port = ports.get(timeout=30)
    ctx = zmq.Context()
    ctx.max_sockets = n + 64
    socks = []
    poller = zmq.Poller()
    for _ in range(n):
        cpub, csec = zmq.curve_keypair()
        s = ctx.socket(zmq.DEALER)
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = cpub, csec, public
        s.sndhwm = s.rcvhwm = 100_000
        s.linger = 0
        s.connect(f"tcp://127.0.0.1:{port}")
        socks.append(s)
        poller.register(s, zmq.POLLIN)
    ids = [f"load-{k:05d}" for k in range(n)]
    sent = acked = 0

    def drain(timeout_ms: int) -> None:
        nonlocal acked
        for sock, _ in poller.poll(timeout_ms):
            while True:
                try:
                    sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                acked += 1

    def round_of(job: int) -> None:
        nonlocal sent
        jid = f"2026112512{job:010d}"
        for sock, mid in zip(socks, ids):
            while sent - acked >= WINDOW:
                drain(100)
            sock.send(msgpack.packb({"cmd": "_return", "load": {
                "id": mid, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True, "retcode": 0,
                "success": True}}, use_bin_type=True))
            sent += 1
        drain(0)

    for warm in range(3):  # every client connected and through its CURVE handshake
        round_of(warm)
    while acked < sent:
        drain(100)
    job, begin, first = 3, time.monotonic(), acked
    while time.monotonic() - begin < seconds:
        round_of(job)
        job += 1
    rate = (acked - first) / (time.monotonic() - begin)
    proc.terminate()
    return rate


if __name__ == "__main__":
    print(json.dumps(clients(int(sys.argv[1]), float(sys.argv[2]))), flush=True)
    os._exit(0)
