"""The physical floor of a fan-out: bare pyzmq, no saline.

    python bench/zmq_floor.py N RUNS

One process binds a PUB and a ROUTER socket (CURVE servers, like the master); a child process
connects N SUB and N DEALER sockets (CURVE clients, like N minions) and answers every published
message with a reply on its DEALER. Printed: one JSON line with the seconds from the publish to
the N-th reply, for each run (after a warm-up round that every client answered).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import zmq


def clients(n: int, pub_port: int, ret_port: int, server_public: bytes) -> None:
    ctx = zmq.Context()
    ctx.max_sockets = 2 * n + 64
    subs, dealers = [], []
    poller = zmq.Poller()
    for _ in range(n):
        public, secret = zmq.curve_keypair()
        for kind, port, bucket in ((zmq.SUB, pub_port, subs), (zmq.DEALER, ret_port, dealers)):
            s = ctx.socket(kind)
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, server_public
            s.linger = 0
            if kind == zmq.SUB:
                s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(f"tcp://127.0.0.1:{port}")
            bucket.append(s)
        poller.register(subs[-1], zmq.POLLIN)
    pair = {s: d for s, d in zip(subs, dealers)}
    while True:
        for sock, _ in poller.poll(1000):
            while True:
                try:
                    msg = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if msg == b"quit":
                    return
                pair[sock].send(msg)


def server(n: int, runs: int) -> list[float]:
    ctx = zmq.Context()
    public, secret = zmq.curve_keypair()
    socks = []
    for kind in (zmq.PUB, zmq.ROUTER):
        s = ctx.socket(kind)
        s.curve_server = True
        s.curve_secretkey = secret
        s.linger = 0
        if kind == zmq.PUB:
            s.sndhwm = 100_000
        socks.append(s)
    pub, router = socks
    pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    ret_port = router.bind_to_random_port("tcp://127.0.0.1")
    # at most 2,000 clients per process: each costs 4 file descriptors (hard limit here: 20,000)
    children = [subprocess.Popen([sys.executable, __file__, "--clients", str(min(2000, n - k)), str(pub_port),
                                  str(ret_port), public.decode()]) for k in range(0, n, 2000)]
    try:
        # warm-up: every client answers the same message (all SUBs connected)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pub.send(b"warm")
            seen: set[bytes] = set()
            end = time.monotonic() + 1.0
            while len(seen) < n and time.monotonic() < end:
                if router.poll(100):
                    ident, _msg = router.recv_multipart()
                    seen.add(ident)
            if len(seen) >= n:
                break
        while router.poll(200):
            router.recv_multipart()
        times = []
        for k in range(runs):
            token = f"job{k}".encode()
            begin = time.perf_counter()
            pub.send(token)
            got = 0
            while got < n:
                _ident, msg = router.recv_multipart()
                if msg == token:
                    got += 1
            times.append(time.perf_counter() - begin)
        for _ in range(3):
            pub.send(b"quit")
            time.sleep(0.2)
        return times
    finally:
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        ctx.destroy(0)


if __name__ == "__main__":
    if sys.argv[1] == "--clients":
        clients(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode())
    else:
        print(json.dumps(server(int(sys.argv[1]), int(sys.argv[2]))))
