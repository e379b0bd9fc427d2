"""The minion: connects to the master, matches published targets, runs jobs, spools returns.

Two CURVE sockets to the master: a SUB socket receives published jobs, a DEALER socket says hello
(id and grains), sends returns and pings. A return is written to the spool before it is sent and
removed only when the master acknowledges it; whatever is still in the spool is sent again after
a reconnect and every ``spool_resend_seconds``. ZeroMQ reconnects by itself after a master
restart; a socket monitor tells the minion to say hello again and flush its spool at once.

Before any of that the minion needs the master's public key (:mod:`saline.minion.master_key`:
given, kept, or fetched on first contact and pinned by ``master_finger``). What keeps it from its
master is said once, at WARNING, and waited out with a back-off: a master name that does not
resolve, an address that does not answer, a master whose key is not the trusted one. Two things
stop the minion for good, with one ERROR line and exit status 77: a master presenting another
key than the one it trusts (never re-trusted silently), and a master refusing it because its key
is accepted under another id (the identity is the key; such a minion runs no job).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from saline.config import returner_names
from saline.minion.executor import Executor
from saline.minion.scheduler import local_loops
from saline.minion.master_key import MasterKeyError, changed_message, check_finger, configured_key, keep
from saline.minion.spool import Spool
from saline.targeting import TargetError, compile_target
from saline.transport import bootstrap
from saline.transport.framing import FrameError, decode, encode
from saline.transport.keys import ensure_keypair, fingerprint
from saline.transport.zeromq import client_socket, tcp_endpoint

log = logging.getLogger(__name__)


#: exit status of a minion that refused its master, or was refused by it (sysexits' EX_NOPERM)
EXIT_REFUSED = 77
#: without a connection for this long, the minion says once why (at WARNING)
UNREACHABLE_WARN_SECONDS = 5.0
#: the longest wait between two attempts at resolving the master's name or fetching its key
BACKOFF_MAX_SECONDS = 30.0
#: publishes kept while the master's welcome is on its way
EARLY_JOBS_MAX = 1000
#: a failed handshake makes the minion compare the master's served key at most this often
KEY_CHECK_EVERY = 10.0

_MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
              | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class MinionError(Exception):
    """A minion that cannot start; one line naming the cause."""


class _Stopped(Exception):
    """The minion was asked to stop while waiting for its master."""


class Minion:
    def __init__(self, opts: dict[str, Any], *, ctx: zmq.asyncio.Context | None = None,
                 spool: Spool | None = None, grains: dict[str, Any] | None = None,
                 functions: dict[str, Any] | None = None,
                 pool: concurrent.futures.ThreadPoolExecutor | None = None) -> None:
        from saline.modules.grains import core_grains
        from saline.modules.loader import load_functions

        self.opts = opts
        self.id: str = opts["id"]
        self.public, self.secret = ensure_keypair(opts["pki_dir"], "minion")
        try:
            self.master_key, self.key_source = configured_key(opts)
        except MasterKeyError as exc:
            raise MinionError(str(exc)) from None
        self.grains = grains if grains is not None else core_grains(opts)
        self.functions = functions if functions is not None else load_functions(opts)
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.asyncio.Context()
        self.spool = spool or Spool(Path(opts["cachedir"]) / "spool.db")
        self.pool = pool or concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="job")
        self.executor = Executor(opts, self.grains, self.functions, self.pool)
        self.max_size = int(opts.get("max_frame_size") or 16 * 1024 * 1024)
        self.state = "connecting"
        self.jobs_run = 0
        self._stop = asyncio.Event()
        self._accepted = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._last_pong = 0.0
        self.delivery: Any = None
        self.exit_code = 0
        self.ready: Any = None  # called once running (saline-minion -d waits for it)
        self._early: list[dict[str, Any]] = []  # publishes received before the master's welcome
        self._connected = False
        self._down_since = time.monotonic()
        self._said_unreachable = False
        self._said_key_unchecked = False
        self._last_key_check = 0.0
        self._said_refused_key = False

    # -- sockets ---------------------------------------------------------------------------------
    def _endpoint(self, port: int) -> str:
        return tcp_endpoint(self.opts["master"], port)

    def _open_dealer(self) -> None:
        self.dealer = client_socket(self.ctx, zmq.DEALER, self.public, self.secret, self.master_key,
                                    self._endpoint(self.opts["master_port"]), self.max_size)
        self.monitor = self.dealer.get_monitor_socket(_MONITORED)

    def _open_sub(self) -> None:
        self.sub = client_socket(self.ctx, zmq.SUB, self.public, self.secret, self.master_key,
                                 self._endpoint(self.opts["publish_port"]), self.max_size)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.dealer.send(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug("master not reachable; %s kept for later", message.get("cmd"))

    # -- lifecycle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def _fatal(self, message: str) -> None:
        """Stop for good, with one line and a non-zero exit status."""
        if not self.exit_code:
            log.error("%s", message)
            self.exit_code = EXIT_REFUSED
        self._early = []
        self._stop.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless the minion is stopped meanwhile (then _Stopped)."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            return
        raise _Stopped

    def _where(self, port_key: str = "master_port") -> str:
        return f"{self.opts['master']}:{self.opts[port_key]}"

    async def _resolve_master(self) -> None:
        """Wait until the master's name resolves (Salt: "Master hostname: 'salt' not found")."""
        import socket

        host, delay, said = self.opts["master"], 1.0, False
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.getaddrinfo(host, self.opts["master_port"], type=socket.SOCK_STREAM)
                if said:
                    log.warning("master hostname %r resolves now", host)
                return
            except (socket.gaierror, UnicodeError) as exc:
                if not said:
                    log.warning("Master hostname: '%s' not found or not responsive (%s); retrying, at most every "
                                "%.0f s", host, getattr(exc, "strerror", None) or exc, BACKOFF_MAX_SECONDS)
                    said = True
                    self._announce_ready()
            await self._pause(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _first_contact(self) -> None:
        """No trusted key yet: take the master's on first use (and keep it), unless it is not the
        one ``master_finger`` pins."""
        port = int(self.opts.get("master_pub_port") or 4507)
        delay, said = 1.0, False
        while True:
            try:
                key = await bootstrap.fetch(self.opts["master"], port)
                break
            except bootstrap.BootstrapError as exc:
                if not said:
                    log.warning("cannot fetch the master's public key: %s; retrying, at most every %.0f s (or copy the "
                                "master's master.pub to %s, or set master_pub)", exc, BACKOFF_MAX_SECONDS, self.key_source)
                    said = True
                    self._announce_ready()
            await self._pause(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        try:
            check_finger(self.opts, key, f"served on {self.opts['master']}:{port}")
        except MasterKeyError as exc:
            self._fatal(str(exc))
            raise _Stopped from None
        path = keep(self.opts, key)
        self.master_key, self.key_source = key, str(path)
        pinned = "matches master_finger" if self.opts.get("master_finger") else \
            "pin it with master_finger, or compare it with saline-key -F master on the master"
        log.warning("trusting the master's public key on first use: fingerprint %s, kept in %s (%s)",
                    fingerprint(key), path, pinned)

    def _announce_ready(self) -> None:
        """Tell ``saline-minion -d`` that the minion runs: once it has a trusted key, or once it has
        said (on the terminal too, until then) what keeps it waiting for its master."""
        ready, self.ready = self.ready, None
        if ready is not None:
            ready()

    async def run(self) -> None:
        try:
            await self._resolve_master()
            if self.master_key is None:
                await self._first_contact()
        except _Stopped:
            self._close_local()
            return
        self._announce_ready()
        self._open_dealer()
        self._open_sub()
        loops = [self._dealer_loop(), self._monitor_loop(), self._hello_loop(), self._resend_loop(), self._ping_loop(),
                 self._reachability_loop()]
        tasks = [asyncio.create_task(c) for c in loops]
        tasks += [asyncio.create_task(c) for c in local_loops(self)]  # schedule: and beacons:
        self._sub_task = asyncio.create_task(self._sub_loop())
        try:
            await self._stop.wait()
        finally:
            tasks.append(self._sub_task)
            for task in tasks + list(self._tasks):
                task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            self.dealer.disable_monitor()
            for sock in (self.monitor, self.dealer, self.sub):
                sock.close(0)
            self._close_local()

    def _close_local(self) -> None:
        if self.delivery is not None:
            self.delivery.stop()
        if self._own_ctx:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.spool.close()
            self.ctx.term()

    def _hello(self) -> None:
        self._send({"cmd": "hello", "id": self.id, "grains": self.grains})

    async def _hello_loop(self) -> None:
        wait = float(self.opts.get("acceptance_wait_time") or 10)
        while True:
            if not self._accepted.is_set():
                self._hello()
            try:
                await asyncio.wait_for(self._accepted.wait(), wait)
            except asyncio.TimeoutError:
                continue
            await asyncio.sleep(wait)

    async def _monitor_loop(self) -> None:
        while True:
            event = await recv_monitor_message(self.monitor)
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if self._said_unreachable:
                    log.warning("reached the master at %s again", self._where())
                else:
                    log.info("connected to the master")
                self._connected, self._said_unreachable = True, False
                self._said_key_unchecked = self._said_refused_key = False
                self._hello()
                self._flush_spool(0.0)
            elif kind == zmq.EVENT_DISCONNECTED:
                if self._connected:  # once per lost connection, not at every failed attempt
                    log.info("lost the master; reconnecting")
                    self._connected = False
                    self._down_since = time.monotonic()
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                # a CURVE handshake fails this way when the server's key is not the one we hold
                if time.monotonic() - self._last_key_check >= KEY_CHECK_EVERY:
                    self._last_key_check = time.monotonic()
                    self._spawn(self._check_master_key())
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and not self._said_refused_key:
                self._said_refused_key = True
                log.warning("the master at %s refuses this minion's key (rejected or denied: see saline-key -L on "
                            "the master); retrying", self._where())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_master_key(self) -> None:
        """The handshake failed: compare the key the master serves with the trusted one."""
        port = int(self.opts.get("master_pub_port") or 4507)
        try:
            served = await bootstrap.fetch(self.opts["master"], port, timeout=3.0)
        except bootstrap.BootstrapError as exc:
            if not self._said_key_unchecked:
                self._said_key_unchecked = True
                log.warning("the encrypted handshake with the master at %s fails: its key may not be the trusted one "
                            "(%s), and it cannot be checked (%s); retrying", self._where(), self.key_source, exc)
            return
        if served != self.master_key:
            self._fatal(changed_message(self.master_key or "", self.key_source, served, self._where()))

    async def _reachability_loop(self) -> None:
        """Say once, at WARNING, why there is no connection, when there has been none for a while."""
        while True:
            await asyncio.sleep(1.0)
            if self._connected or self._said_unreachable:
                continue
            if time.monotonic() - self._down_since < UNREACHABLE_WARN_SECONDS:
                continue
            self._said_unreachable = True
            why = "no encrypted session (see the lines above)"
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.opts["master"], self.opts["master_port"]), 3.0)
                writer.close()
            except asyncio.TimeoutError:
                why = "no answer"
            except OSError as exc:
                why = os.strerror(exc.errno) if exc.errno else str(exc)
            log.warning("cannot reach the master at %s for %.0f s: %s; retrying", self._where(),
                        time.monotonic() - self._down_since, why)

    async def _ping_loop(self) -> None:
        interval = float(self.opts.get("ping_interval") or 10)
        while True:
            await asyncio.sleep(interval)
            if self._accepted.is_set():
                self._send({"cmd": "ping"})

    async def _resend_loop(self) -> None:
        every = float(self.opts.get("spool_resend_seconds") or 5)
        while True:
            await asyncio.sleep(every)
            if self._accepted.is_set():
                self._flush_spool(every)

    def _flush_spool(self, older_than: float) -> None:
        for _jid, ret in self.spool.due(self.id, older_than):
            self._send({"cmd": "_return", "load": ret})

    async def _dealer_loop(self) -> None:
        while True:
            data = await self.dealer.recv()
            try:
                message = decode(data, self.max_size)
            except FrameError as exc:
                log.warning("ignored a bad frame from the master: %s", exc)
                continue
            cmd = message["cmd"]
            if cmd == "ack":
                self.spool.ack(self.id, str(message.get("jid")))
            elif cmd == "welcome":
                if not self._accepted.is_set():
                    if self.state in ("pending", "rejected", "not_accepted"):
                        # ZeroMQ gives up on a publish socket refused while the key was pending,
                        # rejected or revoked (ZAP's 400 is final for libzmq).
                        await self._reopen_sub()
                    self.state = "accepted"
                    self._accepted.set()
                    self._flush_spool(0.0)
                    early, self._early = self._early, []
                    for publish in early:
                        self._start_job(publish)
            elif cmd == "pending":
                if self.state != "pending":
                    log.warning("this minion's key is pending on the master; waiting for saline-key -a %s", self.id)
                self.state = "pending"
            elif cmd in ("rejected", "not_accepted"):
                if self._accepted.is_set() or self.state != cmd:
                    log.error("the master %s this minion's key", "rejected" if cmd == "rejected" else "does not accept")
                self.state = cmd
                self._accepted.clear()
            elif cmd == "refused" and message.get("reason") == "id does not match the key" and "jid" not in message:
                accepted_as = message.get("accepted_as") or "another minion"
                self._fatal(f"the master refused this minion: its key is accepted as {accepted_as}, but this minion's "
                            f"id is {self.id}; set id: {accepted_as}, or give this minion its own key "
                            f"(remove {self.opts['pki_dir']}/minion.key and minion.pub) and accept it")
            elif cmd == "refused":
                log.warning("the master refused a message: %s", message.get("reason"))
                if message.get("jid") and message.get("reason") in ("not targeted", "id does not match the key"):
                    self.spool.ack(self.id, str(message["jid"]))
            elif cmd == "pong":
                self._last_pong = time.time()

    async def _reopen_sub(self) -> None:
        self._sub_task.cancel()
        await asyncio.gather(self._sub_task, return_exceptions=True)
        self.sub.close(0)
        self._open_sub()
        self._sub_task = asyncio.create_task(self._sub_loop())

    async def _sub_loop(self) -> None:
        while True:
            data = await self.sub.recv()
            try:
                publish = decode(data, self.max_size)
            except FrameError as exc:
                log.warning("ignored a bad publish: %s", exc)
                continue
            if publish["cmd"] != "publish" or not isinstance(publish.get("jid"), str) or not isinstance(publish.get("fun"), str):
                continue
            if not self._accepted.is_set():
                # No session yet: the master's welcome may simply be on its way (the publish socket
                # can be faster), so the job waits for it; a minion refused by the master runs none.
                if len(self._early) < EARLY_JOBS_MAX:
                    self._early.append(publish)
                continue
            self._start_job(publish)

    def _start_job(self, publish: dict[str, Any]) -> None:
        if self._targets_me(publish):
            self._spawn(self._run_job(publish))

    def _targets_me(self, publish: dict[str, Any]) -> bool:
        try:
            matcher = compile_target(publish.get("tgt", ""), str(publish.get("tgt_type") or "glob"))
            return matcher.matches(self.id, self.grains)
        except TargetError as exc:
            log.warning("ignored job %s with a bad target: %s", publish.get("jid"), exc)
            return False

    async def _run_job(self, publish: dict[str, Any]) -> None:
        ret = await self.executor.run(publish)
        self.jobs_run += 1
        if publish["fun"].startswith("saltutil.sync") and ret.get("retcode") == 0:
            from saline.modules.loader import load_functions

            self.functions = self.executor.functions = load_functions(self.opts)
        names = returner_names(publish.get("ret")) + returner_names(self.opts.get("return"))
        if names:
            self._return_locally(list(dict.fromkeys(names)), publish, ret)
        if not self.opts.get("pub_ret", True):
            return
        await asyncio.get_running_loop().run_in_executor(None, self.spool.put, self.id, ret["jid"], ret)
        self._send({"cmd": "_return", "load": ret})

    def _return_locally(self, names: list[str], publish: dict[str, Any], ret: dict[str, Any]) -> None:
        """Minion-side returners (``returners_on_minion`` on the master, or ``return:`` here):
        through the minion's own durable outbox, so a database that is down loses nothing."""
        from saline.config import ConfigError

        try:
            if self.delivery is None:
                from saline.master.delivery import Delivery
                from saline.master.outbox import SqliteOutbox

                self.delivery = Delivery(self.opts, SqliteOutbox(Path(self.opts["cachedir"]) / "outbox.db"))
                self.delivery.start()
            items = self.delivery.items_for_return(names, ret, publish.get("ret_config"), publish.get("ret_kwargs"))
            self.delivery.submit(items)
        except ConfigError as exc:
            log.error("job %s: not sent to returners %s: %s", ret["jid"], ",".join(names), exc)
        except Exception as exc:  # the outbox could not store it: say so, the master still gets the return
            log.error("job %s: minion-side returners failed: %s", ret["jid"], exc)
