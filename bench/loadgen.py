"""A load generator that speaks the minion protocol: many minions' worth of ``_return`` messages.

    python bench/loadgen.py --master-dir DIR --ret-port PORT --minions 1000 --seconds 60

It makes ``--minions`` CURVE key pairs, accepts them into the master's pki_dir (as
``saline-swarm --accept-into`` does), opens one DEALER socket per minion to the master's return
port, says hello, and then, job after job, publishes ``test.ping`` to all of them through the
master's local socket (``LocalClient.publish``: the master records the job and its expected
minions) and sends every minion's return for it, keeping at most ``--window`` returns unacked.
Acks come only after the master's outbox commit, so this is "as fast as acks allow".

It prints one JSON line per second (``sent``, ``acked``, ``jobs``) and a last one with ``"end"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack  # noqa: E402
import zmq  # noqa: E402

from saline.transport.keys import ACCEPTED, KeyStore  # noqa: E402


class LoadGenError(Exception):
    pass


class LoadGen:
    """``count`` minions on DEALER sockets of one context, driven from one thread."""

    def __init__(self, master_dir: Path, ret_port: int, count: int, prefix: str = "load-") -> None:
        self.master_dir = Path(master_dir)
        self.prefix = prefix
        from saline.cli.common import raise_open_files

        raise_open_files(4 * count + 256)
        self.ctx = zmq.Context()
        self.ctx.max_sockets = max(1024, 2 * count + 64)
        master_pub = (self.master_dir / "pki" / "master.pub").read_text().strip()
        store = KeyStore(self.master_dir / "pki")
        self.ids = [f"{prefix}{n:05d}" for n in range(count)]
        self.socks: list[zmq.Socket] = []
        keys = [zmq.curve_keypair() for _ in self.ids]
        for mid, (public, _secret) in zip(self.ids, keys):
            if store.accepted_key(mid) != public.decode():
                store.add(ACCEPTED, mid, public.decode(), refresh=False)
        for mid, (public, secret) in zip(self.ids, keys):
            s = self.ctx.socket(zmq.DEALER)
            s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, master_pub.encode()
            s.linger = 0
            s.sndhwm = s.rcvhwm = 100_000
            s.connect(f"tcp://127.0.0.1:{ret_port}")
            self.socks.append(s)
        self.index = {s: i for i, s in enumerate(self.socks)}
        self.poller = zmq.Poller()
        for s in self.socks:
            self.poller.register(s, zmq.POLLIN)
        self.sent = self.acked = self.jobs = 0

    def client(self) -> Any:
        from saline.client import LocalClient

        return LocalClient(str(self.master_dir / "sock"))

    def hello(self, timeout: float = 60.0) -> None:
        """Say hello until every minion is welcomed."""
        waiting = set(range(len(self.socks)))
        deadline = time.monotonic() + timeout
        last = 0.0
        while waiting:
            now = time.monotonic()
            if now > deadline:
                raise LoadGenError(f"{len(waiting)} load minions not welcomed in {timeout:.0f} s")
            if now - last > 2.0:
                for i in waiting:
                    self.socks[i].send(msgpack.packb({"cmd": "hello", "id": self.ids[i], "grains": {"id": self.ids[i]}}))
                last = now
            for sock, _ in self.poller.poll(200):
                i = self.index[sock]
                while True:
                    try:
                        msg = msgpack.unpackb(sock.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    if msg.get("cmd") == "welcome":
                        waiting.discard(i)

    def _drain(self, timeout_ms: int) -> int:
        got = 0
        for sock, _ in self.poller.poll(timeout_ms):
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if data[:64].find(b"ack") >= 0:
                    got += 1
        self.acked += got
        return got

    @staticmethod
    def ret(jid: str, mid: str) -> bytes:
        return msgpack.packb({"cmd": "_return", "load": {
            "id": mid, "jid": jid, "fun": "test.ping", "fun_args": [], "return": True, "retcode": 0,
            "success": True}}, use_bin_type=True)

    def rets(self, jid: str) -> list[bytes]:
        """Every minion's return for ``jid``: packed once, then only the id differs (the ids all have
        the same length), so the generator spends its CPU on sending, not on packing."""
        first = self.ret(jid, self.ids[0])
        start = first.index(self.ids[0].encode())
        head, tail = first[:start], first[start + len(self.ids[0]):]
        return [head + mid.encode() + tail for mid in self.ids]

    def run(self, seconds: float, window: int, report: Any = None, max_returns: int = 0) -> None:
        """Send returns job after job for ``seconds`` (or until ``max_returns``), ``window`` unacked at most."""
        jids: deque[str] = deque()
        stop = threading.Event()
        why: list[str] = []

        def publisher() -> None:
            try:
                client = self.client()
                while not stop.is_set():
                    if len(jids) >= 4:
                        time.sleep(0.002)
                        continue
                    jids.append(client.publish(f"{self.prefix}*", "test.ping")["jid"])
                    self.jobs += 1
            except Exception as exc:  # the master went away: the sending loop ends, naming why
                why.append(str(exc))

        t = threading.Thread(target=publisher, daemon=True)
        t.start()
        begin = time.monotonic()
        last_report = begin
        try:
            while time.monotonic() - begin < seconds and not (max_returns and self.sent >= max_returns):
                while not jids and t.is_alive() and time.monotonic() - begin < seconds:
                    time.sleep(0.001)
                if not jids:
                    if t.is_alive():
                        break  # the time is up
                    # a master that went away publishes nothing more: end, not wait for ever
                    raise LoadGenError(f"the master stopped taking jobs: {why[0]}")
                jid = jids.popleft()
                for sock, data in zip(self.socks, self.rets(jid)):
                    while self.sent - self.acked >= window:
                        self._drain(100)
                    sock.send(data)
                    self.sent += 1
                    if max_returns and self.sent >= max_returns:
                        break
                self._drain(0)
                now = time.monotonic()
                if report and now - last_report >= 1.0:
                    report({"t": round(now - begin, 3), "sent": self.sent, "acked": self.acked, "jobs": self.jobs})
                    last_report = now
            end = time.monotonic() + 30
            while self.acked < self.sent and time.monotonic() < end:
                self._drain(100)
        finally:
            stop.set()
            t.join(5)
        if report:
            report({"t": round(time.monotonic() - begin, 3), "sent": self.sent, "acked": self.acked,
                    "jobs": self.jobs, "end": True})

    def close(self) -> None:
        for s in self.socks:
            s.close(0)
        self.ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--master-dir", required=True)
    parser.add_argument("--ret-port", type=int, required=True)
    parser.add_argument("--minions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--window", type=int, default=4000)
    parser.add_argument("--max-returns", type=int, default=0)
    parser.add_argument("--prefix", default="load-")
    args = parser.parse_args()
    gen = LoadGen(Path(args.master_dir), args.ret_port, args.minions, args.prefix)

    def report(d: dict) -> None:
        print(json.dumps(d), flush=True)

    try:
        gen.hello()
        report({"ready": True})
        gen.run(args.seconds, args.window, report, args.max_returns)
    except LoadGenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    finally:
        gen.close()
    os._exit(0)


if __name__ == "__main__":
    main()
