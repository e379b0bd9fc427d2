"""The minion: connects to its master (or masters), matches published targets, runs jobs, spools returns.

Each master is a :class:`~saline.minion.link.MasterLink`: a SUB socket receives published jobs, a
DEALER socket says hello (id and grains), sends returns and pings. A return is written to the
spool before it is sent and removed only when a master acknowledges it; whatever is still in the
spool is sent again after a reconnect and every ``spool_resend_seconds``. ZeroMQ reconnects by
itself after a master restart; a socket monitor tells the link to say hello again and the minion
to flush its spool at once.

With a list of masters (Salt's multi-master; they share one key pair) the minion either connects
to all of them (``master_type: str``, Salt's "hot" masters) or to one at a time
(``master_type: failover``):

* hot: a job arrives once per master (the masters relay jobs to each other) and runs once, the
  first copy wins; its return goes to the master it came from first, or, when that one is not
  healthy (accepted, connected, heard from within ``master_alive_interval``), to the first
  healthy master of the list; a spooled return follows the same rule at every resend.
* failover: the first master of the list (shuffled once with ``random_master``) that answers;
  when it has been silent for ``master_alive_interval`` seconds (it is pinged three times per
  interval) the minion moves to the next one, and with ``master_failback`` it goes back to the
  first one as soon as it answers again. Spooled returns go to whichever master is current.

A master that answers "not targeted" for a return it does not know keeps the return in the
spool for another master (the one it came from may come back); it is dropped once the master it
came from, or every master, has refused it.

Before any of that the minion needs the master's public key (:mod:`saline.minion.master_key`:
given, kept, or fetched on first contact from the first master that serves it, and pinned by
``master_finger``). What keeps it from its master is said once, at WARNING, and waited out with a
back-off: a master name that does not resolve, an address that does not answer, a master whose
key is not the trusted one. Two things stop the minion for good, with one ERROR line and exit
status 77: a master presenting another key than the one it trusts (never re-trusted silently;
with several masters, such a master is refused and the others used, and the minion stops only
when every master is refused), and a master refusing it because its key is accepted under
another id (the identity is the key; such a minion runs no job).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from saline.config import returner_names
from saline.minion.executor import Executor
from saline.minion.link import (BACKOFF_MAX_SECONDS, MasterAddress, MasterLink, MasterListError, RecentJobs, answers,
                                fetch_first_key, master_addresses, resolves)
from saline.minion.master_key import MasterKeyError, changed_message, check_finger, configured_key, keep
from saline.minion.scheduler import local_loops
from saline.minion.spool import Spool
from saline.targeting import TargetError, compile_target
from saline.transport import bootstrap
from saline.transport.keys import ensure_keypair, fingerprint

log = logging.getLogger(__name__)


#: exit status of a minion that refused its master, or was refused by it (sysexits' EX_NOPERM)
EXIT_REFUSED = 77
#: with master_alive_interval 0 (never declared dead once it answered), how long a failover
#: minion waits for a master's first answer before it tries the next one
FIRST_ANSWER_WAIT = 30.0


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
        try:
            self.masters: list[MasterAddress] = master_addresses(opts)
        except MasterListError as exc:
            raise MinionError(str(exc)) from None
        if len(self.masters) == 1:
            self.mode = "single"
        else:
            self.mode = "failover" if opts.get("master_type") == "failover" else "hot"
            if opts.get("random_master"):
                random.shuffle(self.masters)
        self.alive_interval = float(opts.get("master_alive_interval") or 0) if self.mode != "single" else 0.0
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
        self.jobs_run = 0
        self.links: list[MasterLink] = []  # open: the one master, all of them (hot), or the current one (failover)
        self.switches = 0  # failover: how many times the minion moved to another master
        self._recent = RecentJobs()  # several masters: jobs already started, and where each came from
        self._refusals: dict[str, set[MasterAddress]] = {}  # jid -> masters that do not know its job
        self._bad_masters: set[MasterAddress] = set()  # masters presenting another key: never used
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.delivery: Any = None
        self.exit_code = 0
        self.ready: Any = None  # called once running (saline-minion -d waits for it)

    @property
    def state(self) -> str:
        """``accepted`` when a master has welcomed this minion, else the first master's answer."""
        states = [link.state for link in self.links]
        return "accepted" if "accepted" in states else (states[0] if states else "connecting")

    # -- lifecycle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def _fatal(self, message: str) -> None:
        """Stop for good, with one line and a non-zero exit status."""
        if not self.exit_code:
            log.error("%s", message)
            self.exit_code = EXIT_REFUSED
        for link in self.links:
            link.early = []
        self._stop.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless the minion is stopped meanwhile (then _Stopped)."""
        try:
            async with asyncio.timeout(seconds):  # (not wait_for: see saline.minion.link.answers)
                await self._stop.wait()
        except asyncio.TimeoutError:
            return
        raise _Stopped

    async def _resolve_master(self) -> None:
        """Wait until the master's name resolves (Salt: "Master hostname: 'salt' not found")."""
        address = self.masters[0]
        delay, said = 1.0, False
        while True:
            why = await resolves(address.host, address.port)
            if why is None:
                if said:
                    log.warning("master hostname %r resolves now", address.host)
                return
            if not said:
                log.warning("Master hostname: '%s' not found or not responsive (%s); retrying, at most every "
                            "%.0f s", address.host, why, BACKOFF_MAX_SECONDS)
                said = True
                self._announce_ready()
            await self._pause(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _first_contact(self) -> None:
        """No trusted key yet: take the master's on first use (and keep it), unless it is not the
        one ``master_finger`` pins. With several masters, the first that serves it."""
        delay, said = 1.0, False
        while True:
            try:
                key, address = await fetch_first_key(self.masters)
                break
            except bootstrap.BootstrapError as exc:
                if not said:
                    log.warning("cannot fetch the master's public key: %s; retrying, at most every %.0f s (or copy the "
                                "master's master.pub to %s, or set master_pub)", exc, BACKOFF_MAX_SECONDS, self.key_source)
                    said = True
                    self._announce_ready()
            await self._pause(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        host = f"[{address.host}]" if ":" in address.host else address.host
        try:
            check_finger(self.opts, key, f"served on {host}:{address.pub_port}")
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

    announce_ready = _announce_ready  # what a MasterLink calls

    async def run(self) -> None:
        try:
            if self.mode == "single":
                await self._resolve_master()
            if self.master_key is None:
                await self._first_contact()
        except _Stopped:
            self._close_local()
            return
        self._announce_ready()
        loops = [self._resend_loop()]
        if self.mode == "failover":
            loops.append(self._failover_loop())
        else:
            for address in self.masters:
                self._open_link(address)
        tasks = [asyncio.create_task(c) for c in loops]
        tasks += [asyncio.create_task(c) for c in local_loops(self)]  # schedule: and beacons:
        try:
            await self._stop.wait()
        finally:
            for task in tasks + list(self._tasks):
                task.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            for link in list(self.links):
                await link.close()
            self.links = []
            self._close_local()

    def _close_local(self) -> None:
        if self.delivery is not None:
            self.delivery.stop()
        if self._own_ctx:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.spool.close()
            self.ctx.term()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- masters ---------------------------------------------------------------------------------
    def _open_link(self, address: MasterAddress) -> MasterLink:
        link = MasterLink(self, address, named=self.mode != "single", alive_interval=self.alive_interval)
        self.links.append(link)
        link.start()
        return link

    async def _close_link(self, link: MasterLink) -> None:
        if link in self.links:
            self.links.remove(link)
        await link.close()

    async def _failover_loop(self) -> None:
        """``master_type: failover``: one master at a time, the next one when it goes silent."""
        order, i = self.masters, 0
        failback = bool(self.opts.get("master_failback"))
        failback_every = float(self.opts.get("master_failback_interval") or 0) or self.alive_interval or 30.0
        unanswered, pause = 0, 1.0  # masters in a row that never answered; the back-off after a whole round
        while True:
            while order[i] in self._bad_masters:
                i = (i + 1) % len(order)
            if unanswered >= len(order):  # no master answered in a whole round: wait a little longer each time
                await asyncio.sleep(pause)
                unanswered, pause = 0, min(pause * 2, BACKOFF_MAX_SECONDS)
            address = order[i]
            why_not = await resolves(address.host, address.port)
            if why_not is not None:  # no use waiting for a name that does not resolve (Salt issue 57660)
                nxt = self._next_usable(i)
                log.warning("master %s does not resolve (%s); switching to %s", address.where, why_not,
                            order[nxt].where)
                unanswered += 1
                i = nxt
                continue
            link = self._open_link(address)
            why, nxt = await self._until_switch(link, i, failback, failback_every)
            names = (link.address.where, order[nxt].where)
            if why == "failback":
                log.warning("master %s answers again; failing back to it from %s", names[1], names[0])
            elif why == "refused":
                log.warning("master %s is refused (its key is not the trusted one); switching to %s", *names)
            else:
                log.warning("master %s did not answer for %.0f s; switching to %s", names[0], link.silent_for(),
                            names[1])
            if link.last_heard:
                unanswered, pause = 0, 1.0
            else:
                unanswered += 1
            self.switches += 1
            await self._close_link(link)
            i = nxt

    def _next_usable(self, i: int) -> int:
        order = self.masters
        for step in range(1, len(order) + 1):
            j = (i + step) % len(order)
            if order[j] not in self._bad_masters:
                return j
        return i

    async def _until_switch(self, link: MasterLink, i: int, failback: bool, failback_every: float) -> tuple[str, int]:
        """Watch the current master; (why, index of the next master) when it is time to move."""
        check_every = min(0.5, self.alive_interval / 4) if self.alive_interval > 0 else 0.5
        first = self.masters[0]
        last_probe = time.monotonic()
        while True:
            await asyncio.sleep(check_every)
            if link.refused:
                return "refused", self._next_usable(i)
            if self.alive_interval > 0:
                limit = self.alive_interval
            else:  # no liveness check: only a master that never answered is left
                limit = FIRST_ANSWER_WAIT if link.last_heard == 0.0 else float("inf")
            if link.silent_for() >= limit:
                return "silent", self._next_usable(i)
            if failback and i != 0 and first not in self._bad_masters \
                    and time.monotonic() - last_probe >= failback_every:
                last_probe = time.monotonic()
                if await answers(first.host, first.port):
                    return "failback", 0

    async def check_key(self, link: MasterLink) -> None:
        """The handshake failed: compare the key the master serves with the trusted one."""
        address = link.address
        try:
            served = await bootstrap.fetch(address.host, address.pub_port, timeout=3.0)
        except bootstrap.BootstrapError as exc:
            link.key_unchecked(str(exc), self.key_source)
            return
        if served == self.master_key:
            return
        message = changed_message(self.master_key or "", self.key_source, served, address.where)
        if self.mode == "single":
            self._fatal(message)
            return
        self._bad_masters.add(address)
        link.refused = True
        if all(m in self._bad_masters for m in self.masters):
            self._fatal(message)
            return
        log.error("%s; this master is not used (the others are)", message)
        if self.mode == "hot":
            self._spawn(self._close_link(link))

    # -- what the links report -------------------------------------------------------------------
    def on_session(self, link: MasterLink) -> None:
        """A master connected or welcomed this minion: what waits in the spool goes now."""
        self._flush_spool(0.0)

    def on_ack(self, link: MasterLink, jid: str) -> None:
        self.spool.ack(self.id, jid)
        self._refusals.pop(jid, None)

    def on_refused(self, link: MasterLink, message: dict[str, Any]) -> None:
        reason, jid = message.get("reason"), message.get("jid")
        if reason == "id does not match the key" and "jid" not in message:
            accepted_as = message.get("accepted_as") or "another minion"
            self._fatal(f"the master refused this minion: its key is accepted as {accepted_as}, but this minion's "
                        f"id is {self.id}; set id: {accepted_as}, or give this minion its own key "
                        f"(remove {self.opts['pki_dir']}/minion.key and minion.pub) and accept it")
            return
        if jid and reason == "not targeted" and self.mode != "single" and self._recent.origin(str(jid)) is not link:
            # This master does not know the job; the one it came from (or another) may.
            refused = self._refusals.setdefault(str(jid), set())
            refused.add(link.address)
            if not all(m in refused for m in self.masters):
                log.info("the master%s does not know job %s; its return waits for another master", link.label, jid)
                return
            self._refusals.pop(str(jid), None)
        if jid and str(reason).startswith("too large"):
            # no master of this cluster can store it: kept, it would be refused at every resend
            log.error("the master%s refused the return of job %s, dropped: %s", link.label, jid, reason)
            self.spool.ack(self.id, str(jid))
            return
        log.warning("the master%s refused a message: %s", link.label, reason)
        if jid and reason in ("not targeted", "id does not match the key"):
            self.spool.ack(self.id, str(jid))

    def on_publish(self, link: MasterLink, publish: dict[str, Any]) -> None:
        if not self._targets_me(publish):
            return
        if self.mode != "single" and not self._recent.first(publish["jid"], link):
            log.debug("job %s from the master%s already started; not run twice", publish["jid"], link.label)
            return
        self._spawn(self._run_job(publish))

    # -- sending ---------------------------------------------------------------------------------
    def _route(self, jid: str | None) -> MasterLink | None:
        """The master a message (a return of job ``jid``) goes to now."""
        links = self.links
        if self.mode != "hot":
            link = links[0] if links else None
            if link is not None and jid is not None and link.address in self._refusals.get(jid, ()):
                return None  # it does not know the job: the return waits for another master
            return link
        refused = self._refusals.get(jid, ()) if jid is not None else ()
        origin = self._recent.origin(jid) if jid is not None else None
        if origin is not None and origin in links and origin.healthy() and origin.address not in refused:
            return origin
        for link in links:
            if link.healthy() and link.address not in refused:
                return link
        return None

    def _send(self, message: dict[str, Any]) -> None:
        load = message.get("load")
        jid = str(load.get("jid")) if message.get("cmd") == "_return" and isinstance(load, dict) else None
        link = self._route(jid)
        if link is not None:
            link.send(message)
        else:
            log.debug("no master to send %s to now; kept for later", message.get("cmd"))

    async def _resend_loop(self) -> None:
        every = float(self.opts.get("spool_resend_seconds") or 5)
        while True:
            await asyncio.sleep(every)
            if any(link.accepted.is_set() for link in self.links):
                self._flush_spool(every)

    def _flush_spool(self, older_than: float) -> None:
        for _jid, ret in self.spool.due(self.id, older_than):
            self._send({"cmd": "_return", "load": ret})

    # -- jobs ------------------------------------------------------------------------------------
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
