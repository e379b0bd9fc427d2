"""The minion: connects to the master, matches published targets, runs jobs, spools returns.

Two CURVE sockets to the master: a SUB socket receives published jobs, a DEALER socket says hello
(id and grains), sends returns and pings. A return is written to the spool before it is sent and
removed only when the master acknowledges it; whatever is still in the spool is sent again after
a reconnect and every ``spool_resend_seconds``. ZeroMQ reconnects by itself after a master
restart; a socket monitor tells the minion to say hello again and flush its spool at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from saline.config import returner_names
from saline.minion.executor import Executor
from saline.minion.scheduler import local_loops
from saline.minion.spool import Spool
from saline.targeting import TargetError, compile_target
from saline.transport.framing import FrameError, decode, encode
from saline.transport.keys import ensure_keypair
from saline.transport.zeromq import client_socket, tcp_endpoint

log = logging.getLogger(__name__)


class MinionError(Exception):
    """A minion that cannot start; one line naming the cause."""


def master_public_key(opts: dict[str, Any]) -> str:
    """The master's CURVE public key: ``master_pub`` (a key or a file) or ``minion_master.pub``."""
    value = opts.get("master_pub")
    if value and len(value.strip()) == 40 and not Path(value).exists():
        return value.strip()
    path = Path(value) if value else Path(opts["pki_dir"]) / "minion_master.pub"
    try:
        key = path.read_text().strip()
    except OSError:
        raise MinionError(f"the master's public key is not known: copy the master's pki_dir/master.pub to {path} "
                          "(or set master_pub)") from None
    if len(key) != 40:
        raise MinionError(f"{path} does not hold a master public key (40 Z85 characters)")
    return key


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
        self.master_key = master_public_key(opts)
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

    # -- sockets ---------------------------------------------------------------------------------
    def _endpoint(self, port: int) -> str:
        return tcp_endpoint(self.opts["master"], port)

    def _open_dealer(self) -> None:
        self.dealer = client_socket(self.ctx, zmq.DEALER, self.public, self.secret, self.master_key,
                                    self._endpoint(self.opts["master_port"]), self.max_size)
        self.monitor = self.dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)

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

    async def run(self) -> None:
        self._open_dealer()
        self._open_sub()
        loops = [self._dealer_loop(), self._monitor_loop(), self._hello_loop(), self._resend_loop(), self._ping_loop()]
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
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                log.info("connected to the master")
                self._hello()
                self._flush_spool(0.0)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                log.info("lost the master; reconnecting")

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
            elif cmd == "pending":
                if self.state != "pending":
                    log.warning("this minion's key is pending on the master; waiting for saline-key -a %s", self.id)
                self.state = "pending"
            elif cmd in ("rejected", "not_accepted"):
                if self._accepted.is_set() or self.state != cmd:
                    log.error("the master %s this minion's key", "rejected" if cmd == "rejected" else "does not accept")
                self.state = cmd
                self._accepted.clear()
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
            if not self._targets_me(publish):
                continue
            task = asyncio.create_task(self._run_job(publish))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
                from saline.master.outbox import Outbox

                self.delivery = Delivery(self.opts, Outbox(Path(self.opts["cachedir"]) / "outbox.db"))
                self.delivery.start()
            items = self.delivery.items_for_return(names, ret, publish.get("ret_config"), publish.get("ret_kwargs"))
            self.delivery.submit(items)
        except ConfigError as exc:
            log.error("job %s: not sent to returners %s: %s", ret["jid"], ",".join(names), exc)
        except Exception as exc:  # the outbox could not store it: say so, the master still gets the return
            log.error("job %s: minion-side returners failed: %s", ret["jid"], exc)
