"""ZeroMQ sockets with CURVE, and the ZAP handler that decides who gets in.

The master binds a PUB socket (``publish_port``, domain ``pub``) and a ROUTER socket
(``ret_port``, domain ``ret``). The ZAP handler answers each CURVE handshake from the key store:

* ``pub``: only accepted keys;
* ``ret``: accepted keys, and unknown keys (so a new minion can say who it is and land in
  pending); rejected and denied keys are refused.

The user id it hands back is the peer's Z85 public key, which ZeroMQ attaches to every frame from
that peer as ``User-Id``: the master maps it to a minion id through the key store at every message,
so a revoked key stops counting at once and no payload field can claim another identity.
"""

from __future__ import annotations

import logging
from typing import Callable

import zmq
import zmq.asyncio
from zmq.utils import z85

from saline.transport.keys import ACCEPTED, PENDING, KeyStore

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
PUB_DOMAIN, RET_DOMAIN = "pub", "ret"


class ZapHandler:
    """Answers ZAP requests on the master's context from the key store."""

    def __init__(self, ctx: zmq.asyncio.Context, keys: KeyStore, open_mode: bool = False,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        self.keys = keys
        self.open_mode = open_mode
        self.on_refused = on_refused
        self.socket = ctx.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)

    def decide(self, domain: str, mechanism: bytes, credentials: list[bytes]) -> tuple[bool, str]:
        if mechanism != b"CURVE" or not credentials or len(credentials[0]) != 32:
            return False, ""
        key = z85.encode(credentials[0]).decode()
        if self.open_mode:
            return True, key
        self.keys.refresh()
        info = self.keys.by_key(key)
        if domain == PUB_DOMAIN:
            return (info is not None and info.state == ACCEPTED), key
        if domain == RET_DOMAIN:
            return (info is None or info.state in (ACCEPTED, PENDING)), key
        return False, key

    async def serve(self) -> None:
        while True:
            try:
                frames = await self.socket.recv_multipart()
            except (zmq.ContextTerminated, zmq.error.ZMQError):
                return
            if len(frames) < 6:
                # Not a ZAP request we understand; answer so libzmq does not wait forever.
                await self.socket.send_multipart([b"1.0", frames[1] if len(frames) > 1 else b"", b"400", b"bad request", b"", b""])
                continue
            version, request_id, domain, address, _identity, mechanism, *credentials = frames
            try:
                ok, key = self.decide(domain.decode(errors="replace"), mechanism, credentials)
            except Exception:  # a bug here must deny, never leave libzmq waiting for an answer
                log.exception("ZAP handler failed; connection denied")
                ok, key = False, ""
            if not ok:
                log.info("refused %s connection from %s (key %s)", domain.decode(errors="replace"),
                         address.decode(errors="replace"), key[:8] + "…" if key else "none")
                if self.on_refused:
                    self.on_refused(domain.decode(errors="replace"), key)
            reply = [version, request_id, b"200" if ok else b"400", b"OK" if ok else b"denied",
                     key.encode() if ok else b"", b""]
            await self.socket.send_multipart(reply)

    def close(self) -> None:
        self.socket.close(0)


def server_socket(ctx: zmq.asyncio.Context, kind: int, secret_key: str, domain: str, endpoint: str,
                  max_size: int) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.curve_server = True
    sock.curve_secretkey = secret_key.encode()
    sock.zap_domain = domain.encode()
    sock.maxmsgsize = max_size
    sock.linger = 1000
    if kind == zmq.ROUTER:
        sock.router_mandatory = False
    if kind in (zmq.PUB, zmq.XPUB):
        sock.sndhwm = 100_000
    if kind == zmq.XPUB:
        # every subscription reaches the master with its peer's User-Id: it learns who listens
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
    sock.bind(endpoint)
    return sock


def client_socket(ctx: zmq.asyncio.Context, kind: int, public: str, secret: str, server_public: str,
                  endpoint: str, max_size: int) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.curve_publickey = public.encode()
    sock.curve_secretkey = secret.encode()
    sock.curve_serverkey = server_public.encode()
    sock.maxmsgsize = max_size
    sock.linger = 0
    sock.reconnect_ivl = 200
    sock.reconnect_ivl_max = 2000
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.rcvhwm = 100_000
    sock.connect(endpoint)
    return sock


def tcp_endpoint(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
