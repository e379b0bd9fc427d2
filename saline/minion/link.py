"""A minion's connection to one master, and the list of masters it may connect to.

:func:`master_addresses` reads Salt's ``master:`` option: one master (``host`` or ``host:port``)
or a YAML list of them. The port of an entry is that master's ``ret_port`` (Salt's rule: it wins
over ``master_port``); ``publish_port`` and ``master_pub_port`` are the same for every master, as
in Salt, so several masters on one machine need an address each (``127.0.0.2``, an IP alias).

When masters share a machine on other ports (a test bench, several masters on one host), an
entry may be a mapping instead, saline's own: ``{master: host, master_port: …, publish_port: …,
master_pub_port: …}``, each port defaulting to the option of the same name.

A :class:`MasterLink` is one master: its two CURVE sockets (a DEALER for hello, returns and
pings; a SUB for published jobs), the session the master grants (welcome, pending, rejected),
the publishes that arrived before its welcome, and when it was last heard from. Everything a
link learns that concerns the minion as a whole (a job to run, an ack, a refusal, a handshake
that failed) goes to its owner, the minion, which decides what it means with one master, with
all of them at once (Salt's hot multi-master) or with one at a time (``master_type: failover``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from saline.transport import bootstrap
from saline.transport.framing import FrameError, decode, encode
from saline.transport.zeromq import client_socket, tcp_endpoint

log = logging.getLogger(__name__)

#: without a connection for this long, a link says once why (at WARNING)
UNREACHABLE_WARN_SECONDS = 5.0
#: the longest wait between two attempts at resolving a master's name
BACKOFF_MAX_SECONDS = 30.0
#: publishes kept while a master's welcome is on its way
EARLY_JOBS_MAX = 1000
#: a failed handshake makes the minion compare the master's served key at most this often
KEY_CHECK_EVERY = 10.0
#: how long closing a link waits for its tasks to end
CLOSE_WAIT = 2.0
#: the master types saline knows (Salt's ``func`` and ``disable`` are not supported)
MASTER_TYPES = ("str", "failover")

_MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
              | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class MasterListError(ValueError):
    """The ``master:`` option (or ``master_type``) cannot be used; the message is one line."""


@dataclass(frozen=True)
class MasterAddress:
    host: str
    port: int  # the master's ret_port
    publish_port: int
    pub_port: int  # master_pub_port: where it serves its public key

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _split(item: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    text = item.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = (text[1:end], text[end + 1:]) if end > 0 else ("", "")
        if not host or (rest and not rest.startswith(":")):
            raise MasterListError(f"option 'master': {item!r} is not host, host:port or [ipv6]:port")
        if not rest:
            return host, default_port
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host or any(c.isspace() for c in host):
        raise MasterListError(f"option 'master': {item!r} is not host or host:port")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise MasterListError(f"option 'master': the port of {item!r} must be a number between 1 and 65535")
    return host, int(port_text)


_ENTRY_PORTS = ("master_port", "publish_port", "master_pub_port")


def _entry(item: Any, opts: dict[str, Any]) -> MasterAddress:
    ports = {"master_port": int(opts.get("master_port") or 4506), "publish_port": int(opts.get("publish_port") or 4505),
             "master_pub_port": int(opts.get("master_pub_port") or 4507)}
    if isinstance(item, dict):
        unknown = sorted(str(k) for k in item if k not in ("master", *_ENTRY_PORTS))
        if unknown or not isinstance(item.get("master"), str):
            raise MasterListError(f"option 'master': a master given as a mapping has the keys master (its address), "
                                  f"master_port, publish_port, master_pub_port; got {item!r}")
        for key in _ENTRY_PORTS:
            value = item.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise MasterListError(f"option 'master': {key} of {item['master']!r} must be a port number between "
                                      f"1 and 65535, got {value!r}")
            ports[key] = value
        item = item["master"]
    if not isinstance(item, str) or not item.strip():
        raise MasterListError(f"option 'master': each master must be a host name or address, got {item!r}")
    host, port = _split(item, ports["master_port"])
    return MasterAddress(host, port, ports["publish_port"], ports["master_pub_port"])


def master_addresses(opts: dict[str, Any]) -> list[MasterAddress]:
    """The masters ``opts`` names, in the order given; MasterListError with one line."""
    value = opts.get("master")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise MasterListError("option 'master': the list of masters is empty")
    found: list[MasterAddress] = []
    for item in items:
        address = _entry(item, opts)
        if any((a.host, a.port) == (address.host, address.port) for a in found):
            raise MasterListError(f"option 'master': {address.where} is listed twice")
        found.append(address)
    master_type = opts.get("master_type") or "str"
    if master_type not in MASTER_TYPES:
        raise MasterListError(f"option 'master_type': {master_type!r} is not supported (str or failover)")
    return found


async def fetch_first_key(addresses: list[MasterAddress], timeout: float = 5.0) -> tuple[str, MasterAddress]:
    """The public key served by the first of ``addresses`` that answers on its ``master_pub_port``
    (all masters share one key pair); BootstrapError naming what each one did."""
    errors = []
    for address in addresses:
        try:
            return await bootstrap.fetch(address.host, address.pub_port, timeout=timeout), address
        except bootstrap.BootstrapError as exc:
            errors.append(str(exc))
    raise bootstrap.BootstrapError("; ".join(errors))


async def resolves(host: str, port: int) -> str | None:
    """None when ``host`` resolves, else why not (one line)."""
    try:
        await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return None
    except (socket.gaierror, UnicodeError) as exc:
        return str(getattr(exc, "strerror", None) or exc)


async def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` (Salt's master liveness probe)."""
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that
        # comes as the awaited thing finishes, and a loop cancelled then would never end
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, asyncio.TimeoutError, UnicodeError):
        return False
    writer.close()
    return True


class RecentJobs:
    """The jids of the jobs started lately, each with the link that brought it first.

    With several masters a job arrives once per master (they relay jobs to each other): only the
    first copy runs. Copies arrive within the relay's delay, so a few minutes of memory, capped,
    is plenty; what falls out is the oldest."""

    def __init__(self, keep_seconds: float = 300.0, most: int = 4096) -> None:
        self.keep_seconds = keep_seconds
        self.most = most
        self._seen: OrderedDict[str, tuple[float, MasterLink]] = OrderedDict()

    def first(self, jid: str, link: "MasterLink") -> bool:
        """True (and remembered) if ``jid`` was not seen lately, else False."""
        now = time.monotonic()
        seen = self._seen
        while seen:
            oldest_jid, (when, _link) = next(iter(seen.items()))
            if now - when < self.keep_seconds and len(seen) < self.most:
                break
            del seen[oldest_jid]
        if jid in seen:
            return False
        seen[jid] = (now, link)
        return True

    def origin(self, jid: str) -> "MasterLink | None":
        entry = self._seen.get(jid)
        return entry[1] if entry else None

    def __len__(self) -> int:
        return len(self._seen)


class LinkOwner(Protocol):
    """What a link needs from the minion (saline.minion.daemon.Minion)."""

    id: str
    opts: dict[str, Any]
    grains: dict[str, Any]
    public: str
    secret: str
    master_key: str | None
    max_size: int
    ctx: zmq.asyncio.Context

    def on_publish(self, link: "MasterLink", publish: dict[str, Any]) -> None: ...
    def on_session(self, link: "MasterLink") -> None: ...
    def on_ack(self, link: "MasterLink", jid: str) -> None: ...
    def on_refused(self, link: "MasterLink", message: dict[str, Any]) -> None: ...
    async def check_key(self, link: "MasterLink") -> None: ...
    def announce_ready(self) -> None: ...


class MasterLink:
    """One master: sockets, session and liveness. ``start()`` opens it, ``await close()`` ends it.

    ``named`` puts the master's address in the log lines (several masters); ``alive_interval``
    (``master_alive_interval``, 0 for none) makes the link ping at least three times per
    interval, so that a master that answers is never taken for a dead one."""

    def __init__(self, owner: LinkOwner, address: MasterAddress, *, named: bool = False,
                 alive_interval: float = 0.0) -> None:
        self.owner = owner
        self.address = address
        self.label = f" at {address.where}" if named else ""
        opts = owner.opts
        self.ping_every = float(opts.get("ping_interval") or 10)
        self.hello_every = float(opts.get("acceptance_wait_time") or 10)
        if alive_interval > 0:
            self.ping_every = min(self.ping_every, alive_interval / 3)
            self.hello_every = min(self.hello_every, alive_interval / 3)
        self.alive_interval = alive_interval
        self.state = "connecting"
        self.accepted = asyncio.Event()
        self.connected = False
        self.opened_at = time.monotonic()
        self.last_heard = 0.0  # monotonic time of the last frame from the master; 0: never
        self.last_pong = 0.0
        self.refused = False  # its key is not the trusted one: never used again
        self.early: list[dict[str, Any]] = []  # publishes received before the master's welcome
        self.dealer: zmq.asyncio.Socket | None = None
        self.sub: zmq.asyncio.Socket | None = None
        self.monitor: zmq.asyncio.Socket | None = None
        self._sub_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._down_since = time.monotonic()
        self._said_unreachable = False
        self._said_key_unchecked = False
        self._said_refused_key = False
        self._last_key_check = 0.0

    def __repr__(self) -> str:
        return f"<MasterLink {self.address.where} {self.state}>"

    # -- what the minion asks ----------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._run())

    def healthy(self) -> bool:
        """Accepted, connected, and heard from within ``alive_interval``: fit to take returns."""
        if not (self.accepted.is_set() and self.connected) or self.refused:
            return False
        return self.alive_interval <= 0 or time.monotonic() - self.last_heard < self.alive_interval

    def silent_for(self) -> float:
        """Seconds since the master was last heard from (or since the link opened)."""
        return time.monotonic() - max(self.last_heard, self.opened_at)

    def send(self, message: dict[str, Any]) -> None:
        if self.dealer is None:
            return
        try:
            self.dealer.send(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug("master%s not reachable; %s kept for later", self.label, message.get("cmd"))

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a task that ignored its cancellation must not hold the minion's switch
            _done, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            for task in stuck:
                log.warning("master%s: a task did not stop when asked (%s); left behind", self.label,
                            task.get_coro().__qualname__)
        if self.dealer is not None:
            try:
                self.dealer.disable_monitor()
            except zmq.ZMQError:
                pass
        for sock in (self.monitor, self.dealer, self.sub):
            if sock is not None:
                sock.close(0)
        self.dealer = self.sub = self.monitor = None
        self.connected = False
        self.accepted.clear()
        self.early = []

    # -- sockets -----------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _socket(self, kind: int, port: int) -> zmq.asyncio.Socket:
        owner = self.owner
        return client_socket(owner.ctx, kind, owner.public, owner.secret, owner.master_key or "",
                             tcp_endpoint(self.address.host, port), owner.max_size)

    async def _run(self) -> None:
        await self._resolve()
        self.dealer = self._socket(zmq.DEALER, self.address.port)
        self.monitor = self.dealer.get_monitor_socket(_MONITORED)
        self.sub = self._socket(zmq.SUB, self.address.publish_port)
        for loop in (self._dealer_loop(), self._monitor_loop(), self._hello_loop(), self._ping_loop(),
                     self._reachability_loop()):
            self._spawn(loop)
        self._sub_task = self._spawn(self._sub_loop())

    async def _resolve(self) -> None:
        """Wait until the master's name resolves (Salt: "Master hostname: 'salt' not found")."""
        delay, said = 1.0, False
        while True:
            why = await resolves(self.address.host, self.address.port)
            if why is None:
                if said:
                    log.warning("master hostname %r resolves now", self.address.host)
                return
            if not said:
                log.warning("Master hostname: '%s' not found or not responsive (%s); retrying, at most every %.0f s",
                            self.address.host, why, BACKOFF_MAX_SECONDS)
                said = True
                self.owner.announce_ready()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _reopen_sub(self) -> None:
        if self._sub_task is not None:
            self._sub_task.cancel()
            await asyncio.gather(self._sub_task, return_exceptions=True)
        if self.sub is not None:
            self.sub.close(0)
        self.sub = self._socket(zmq.SUB, self.address.publish_port)
        self._sub_task = self._spawn(self._sub_loop())

    def _hello(self) -> None:
        self.send({"cmd": "hello", "id": self.owner.id, "grains": self.owner.grains})

    # -- loops -------------------------------------------------------------------------------------
    async def _hello_loop(self) -> None:
        while True:
            if not self.accepted.is_set():
                self._hello()
            try:
                async with asyncio.timeout(self.hello_every):  # (not wait_for: see answers())
                    await self.accepted.wait()
            except asyncio.TimeoutError:
                continue
            await asyncio.sleep(self.hello_every)

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_every)
            if self.accepted.is_set():
                self.send({"cmd": "ping"})

    async def _monitor_loop(self) -> None:
        assert self.monitor is not None
        while True:
            event = await recv_monitor_message(self.monitor)
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self._said_unreachable:
                    log.warning("reached the master at %s again", self.address.where)
                else:
                    log.info("connected to the master%s", self.label)
                self.connected, self._said_unreachable = True, False
                self._said_key_unchecked = self._said_refused_key = False
                self._hello()
                self.owner.on_session(self)
            elif kind == zmq.EVENT_DISCONNECTED:
                if self.connected:  # once per lost connection, not at every failed attempt
                    log.info("lost the master%s; reconnecting", self.label)
                    self.connected = False
                    self._down_since = time.monotonic()
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                # a CURVE handshake fails this way when the server's key is not the one we hold
                if time.monotonic() - self._last_key_check >= KEY_CHECK_EVERY:
                    self._last_key_check = time.monotonic()
                    self._spawn(self.owner.check_key(self))
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and not self._said_refused_key:
                self._said_refused_key = True
                log.warning("the master at %s refuses this minion's key (rejected or denied: see saline-key -L on "
                            "the master); retrying", self.address.where)

    def key_unchecked(self, why: str, source: str) -> None:
        """The handshake fails and the master's served key cannot be fetched: say so once."""
        if not self._said_key_unchecked:
            self._said_key_unchecked = True
            log.warning("the encrypted handshake with the master at %s fails: its key may not be the trusted one "
                        "(%s), and it cannot be checked (%s); retrying", self.address.where, source, why)

    async def _reachability_loop(self) -> None:
        """Say once, at WARNING, why there is no connection, when there has been none for a while."""
        while True:
            await asyncio.sleep(1.0)
            if self.connected or self._said_unreachable:
                continue
            if time.monotonic() - self._down_since < UNREACHABLE_WARN_SECONDS:
                continue
            self._said_unreachable = True
            why = "no encrypted session (see the lines above)"
            try:
                async with asyncio.timeout(3.0):
                    _reader, writer = await asyncio.open_connection(self.address.host, self.address.port)
                writer.close()
            except asyncio.TimeoutError:
                why = "no answer"
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
            log.warning("cannot reach the master at %s for %.0f s: %s; retrying", self.address.where,
                        time.monotonic() - self._down_since, why)

    async def _dealer_loop(self) -> None:
        assert self.dealer is not None
        owner = self.owner
        while True:
            data = await self.dealer.recv()
            self.last_heard = time.monotonic()
            try:
                message = decode(data, owner.max_size)
            except FrameError as exc:
                log.warning("ignored a bad frame from the master%s: %s", self.label, exc)
                continue
            cmd = message["cmd"]
            if cmd == "ack":
                owner.on_ack(self, str(message.get("jid")))
            elif cmd == "pong":
                self.last_pong = time.time()
            elif cmd == "welcome":
                if not self.accepted.is_set():
                    if self.state in ("pending", "rejected", "not_accepted"):
                        # ZeroMQ gives up on a publish socket refused while the key was pending,
                        # rejected or revoked (ZAP's 400 is final for libzmq).
                        await self._reopen_sub()
                    self.state = "accepted"
                    self.accepted.set()
                    owner.on_session(self)
                    early, self.early = self.early, []
                    for publish in early:
                        owner.on_publish(self, publish)
            elif cmd == "pending":
                if self.state != "pending":
                    log.warning("this minion's key is pending on the master%s; waiting for saline-key -a %s",
                                self.label, owner.id)
                self.state = "pending"
            elif cmd in ("rejected", "not_accepted"):
                if self.accepted.is_set() or self.state != cmd:
                    log.error("the master%s %s this minion's key", self.label,
                              "rejected" if cmd == "rejected" else "does not accept")
                self.state = cmd
                self.accepted.clear()
            elif cmd == "refused":
                owner.on_refused(self, message)

    async def _sub_loop(self) -> None:
        assert self.sub is not None
        owner = self.owner
        while True:
            data = await self.sub.recv()
            try:
                publish = decode(data, owner.max_size)
            except FrameError as exc:
                log.warning("ignored a bad publish: %s", exc)
                continue
            if publish["cmd"] != "publish" or not isinstance(publish.get("jid"), str) or not isinstance(publish.get("fun"), str):
                continue
            if not self.accepted.is_set():
                # No session yet: the master's welcome may simply be on its way (the publish socket
                # can be faster), so the job waits for it; a minion refused by the master runs none.
                if len(self.early) < EARLY_JOBS_MAX:
                    self.early.append(publish)
                continue
            owner.on_publish(self, publish)
