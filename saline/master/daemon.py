"""The master: publishes jobs, collects returns, feeds the outbox, emits events, serves the CLI.

One asyncio loop owns the sockets. Returns are handled in groups: every message already waiting
on the return socket is read, the accepted returns are written to the outbox in one transaction
(group commit), and only then are the minions acknowledged — so an acknowledged return is never
lost, and a return the master could not store stays in the minion's spool.

The publish socket is an XPUB: ZeroMQ runs the ZAP check only when a subscriber connects, so when
an accepted key is deleted or rejected the master unbinds and binds the socket again, which drops
every subscriber; the accepted ones reconnect and pass ZAP again, the revoked one is refused.
Every subscription reaches the master with the subscriber's key (``User-Id``), so it knows who
listened before and holds the jobs published meanwhile until those minions are back (at most
``PUB_REBIND_HOLD`` seconds): a revocation delays publishes a little and loses none.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from saline.config import ConfigError, returner_names
from saline.events import EventBus, job_new_tag, job_ret_tag, stamp
from saline.jid import gen_jid, is_jid
from saline.master.delivery import Delivery
from saline.master.outbox import Item, Outbox, OutboxError
from saline.master.scheduled import minion_event, run_schedule, store_scheduled
from saline.master.state import MasterState
from saline.targeting import TargetError, expected_minions
from saline.transport.framing import FrameError, decode, encode
from saline.transport.keys import ACCEPTED, DENIED, PENDING, REJECTED, KeyStore, ensure_keypair, valid_id
from saline.transport.zeromq import PUB_DOMAIN, RET_DOMAIN, ZapHandler, server_socket, tcp_endpoint

log = logging.getLogger(__name__)

GROUP_MAX = 2000  # messages handled per group commit
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
#: after re-binding the publish socket, jobs wait at most this long for the listening minions
PUB_REBIND_HOLD = 2.0
#: after a start, jobs wait at most this long for the accepted minions to subscribe again (their
#: ZeroMQ reconnect interval backs off to 2 s, plus up to 0.2 s of jitter, while the master is down)
PUB_START_HOLD = 3.0
#: how often the master looks for revoked keys (the latency of a revocation on the publish port)
KEY_CHECK_INTERVAL = 0.25
#: while the outbox cannot be written, the error is logged at most this often (with a count)
STORE_ERROR_EVERY = 30.0


def _retcode(value: Any) -> int:
    if isinstance(value, dict):  # multi-function jobs
        return max((_retcode(v) for v in value.values()), default=0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class PublishError(Exception):
    """A publish request that cannot be carried out; one line for the CLI."""


class Master:
    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.cachedir = Path(opts["cachedir"])
        self.cachedir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.cachedir, 0o700)
        self.keys = KeyStore(opts["pki_dir"])
        self.public_key, self.secret_key = ensure_keypair(opts["pki_dir"], "master")
        self.state = MasterState(self.cachedir / "master.db")
        processes = bool(opts.get("returner_processes", True))
        self.outbox = Outbox(self.cachedir / "outbox.db", shared=processes)
        self.delivery = Delivery(opts, self.outbox, processes=processes)
        self.events = EventBus()
        self.max_size = int(opts["max_frame_size"])
        self.job_cache = opts.get("master_job_cache") or "saline_cache"
        self.stats = {"refused": 0, "bad_frames": 0, "forged": 0, "untargeted": 0, "duplicates": 0,
                      "pub_rebinds": 0, "pub_rebind_ms": 0.0, "pub_held": 0, "store_failures": 0,
                      "groups": 0, "grouped_messages": 0, "published": 0, "returns": 0}
        self._store_failing_since: float | None = None  # when the outbox began refusing returns
        self._store_logged = (0.0, 0)                    # (when the last error line was, returns refused since)
        self._subscribers: dict[str, float] = {}  # key -> when it subscribed to the publish socket
        self._held: list[bytes] | None = None      # publishes waiting while the socket is re-bound
        self._holds = 0                            # how many reasons to hold publishes there are
        self._accepted_keys: set[str] = set()
        self._stop = asyncio.Event()
        self.ctx: zmq.asyncio.Context | None = None
        self._returners: dict[Any, list[str]] = {}
        self._check_returner_config()

    def _check_returner_config(self) -> None:
        """Refuse to start with an unknown or misconfigured returner (one line naming it)."""
        from saline.returners import registry
        from saline.returners.options import resolve

        registry.load_dirs(list(self.opts.get("returner_dirs") or []))
        names = [self.job_cache, *returner_names(self.opts.get("return")),
                 *returner_names(self.opts.get("ext_job_cache")), *returner_names(self.opts.get("event_return"))]
        for name in dict.fromkeys(names):
            cls = registry.get_class(name)
            resolve(cls, self.opts)
        cache_cls = registry.get_class(self.job_cache)
        if not cache_cls.has_read_side():
            raise ConfigError(f"master_job_cache: returner {self.job_cache} has no read side and cannot be the job cache")

    # -- lifecycle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.zap = ZapHandler(self.ctx, self.keys, open_mode=bool(self.opts.get("open_mode")),
                              on_refused=self._on_refused)
        iface = self.opts["interface"]
        self.pub = server_socket(self.ctx, zmq.XPUB, self.secret_key, PUB_DOMAIN,
                                 tcp_endpoint(iface, self.opts["publish_port"]), self.max_size)
        self._pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._accepted_keys = self._accepted_key_set()
        self._hold()  # released by _startup_hold once the minions are back
        self.router = server_socket(self.ctx, zmq.ROUTER, self.secret_key, RET_DOMAIN,
                                    tcp_endpoint(iface, self.opts["ret_port"]), self.max_size)
        from saline.master.metrics import serve as serve_metrics

        self.metrics = serve_metrics(self)  # the /metrics listener, when metrics_port is set (before the
        # local socket: a master that cannot listen there stops before it looks started)
        from saline.master.localapi import LocalAPI

        self.local = LocalAPI(self)
        await self.local.start()
        self.delivery.start()
        tasks = [asyncio.create_task(self.zap.serve(), name="zap"),
                 asyncio.create_task(self._return_loop(), name="returns"),
                 asyncio.create_task(self._subscription_loop(), name="subscriptions"),
                 asyncio.create_task(self._startup_hold(), name="startup-hold"),
                 asyncio.create_task(self._maintenance(), name="maintenance")]
        tasks.append(asyncio.create_task(run_schedule(self), name="schedule"))  # the master's schedule:
        log.info("master %s listening on %s (publish %s, return %s)", self.opts["id"], iface,
                 self.opts["publish_port"], self.opts["ret_port"])
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.local.stop()
            if self.metrics is not None:
                self.metrics.close()
            self.delivery.stop()
            self.pub.close(0)
            self.router.close(0)
            self.zap.close()
            self.ctx.term()
            self.outbox.close()
            self.state.close()

    def _on_refused(self, domain: str, key: str) -> None:
        self.stats["refused"] += 1

    # -- publishing ------------------------------------------------------------------------------
    def expected_minions(self, tgt: Any, tgt_type: str) -> list[str]:
        """Accepted minions the target reaches, from their last grains (unknown grains: included)."""
        self.keys.refresh()
        known = {mid: self.state.grains.get(mid) for mid in self.keys.ids(ACCEPTED)}
        return expected_minions(tgt, tgt_type, known, nodegroups=self.opts.get("nodegroups") or {})

    def publish(self, request: dict[str, Any]) -> dict[str, Any]:
        """Publish a job; returns ``{"jid", "minions"}``. Raises PublishError with one line."""
        fun = request.get("fun")
        if not isinstance(fun, str) or not fun:
            raise PublishError("no function given")
        tgt, tgt_type = request.get("tgt", "*"), request.get("tgt_type") or "glob"
        try:
            minions = self.expected_minions(tgt, tgt_type)
        except TargetError as exc:
            raise PublishError(f"bad target: {exc}") from None
        names = self._job_returners(request.get("ret"))
        jid = request.get("jid") if is_jid(request.get("jid")) else gen_jid(bool(self.opts.get("unique_jid")))
        load = {
            "cmd": "publish", "jid": jid, "fun": fun, "arg": list(request.get("arg") or []),
            "tgt": tgt, "tgt_type": tgt_type, "ret": ",".join(returner_names(request.get("ret"))),
            "user": str(request.get("user") or "root"), "minions": minions,
            "kwargs": {k: request[k] for k in ("ret_config", "ret_kwargs", "metadata", "show_timeout")
                       if request.get(k) is not None},
        }
        if request.get("metadata"):
            load["metadata"] = request["metadata"]
        # The job cache, the returners and the event bus get the load with the secret options of
        # --return_kwargs masked; only master.db keeps them, to deliver the returns with them.
        shown = self._masked_load(load, names)
        try:
            items = self.delivery.items_for_load(names, jid, shown, minions)
            items += self._event_items(self.events.fire(job_new_tag(jid), {**shown, "minions": minions}))
            self.delivery.submit(items)
        except ConfigError as exc:
            raise PublishError(str(exc)) from None
        except OutboxError as exc:
            raise PublishError(f"cannot store the job: {exc}") from None
        self.state.add_job(jid, load, minions, float(request.get("timeout") or self.opts["timeout"]))
        if tgt_type == "nodegroup" or (tgt_type == "compound" and "N@" in str(tgt)):
            # Nodegroups live in the master's config: minions get the list they expand to.
            tgt, tgt_type = minions, "list"
        wire = {"cmd": "publish", "jid": jid, "fun": fun, "arg": load["arg"], "tgt": tgt, "tgt_type": tgt_type,
                "user": load["user"], "ret": load["ret"] if self.opts.get("returners_on_minion") else "",
                "job_timeout": request.get("job_timeout"), "ret_config": request.get("ret_config"),
                "ret_kwargs": request.get("ret_kwargs"), "metadata": request.get("metadata")}
        self._send_publish(encode({k: v for k, v in wire.items() if v not in (None, "")}))
        self.stats["published"] += 1
        log.info("published %s %s to %s (%d minions expected)", jid, fun, tgt, len(minions))
        return {"jid": jid, "minions": minions}

    def _masked_load(self, load: dict[str, Any], names: list[str]) -> dict[str, Any]:
        from saline.returners.options import MASK

        kwargs = load["kwargs"].get("ret_kwargs")
        if not kwargs:
            return load
        if isinstance(kwargs, str):  # JSON text from an API client: read it to mask what is secret
            import json

            try:
                kwargs = json.loads(kwargs)
            except ValueError:
                kwargs = None
        if isinstance(kwargs, dict):
            secret: set[str] = set()
            for name in names:
                try:
                    cls = self.delivery._class(name)
                except ConfigError:
                    continue
                secret.update(k for o in cls.options if o.secret for k in (o.name, o.suffix))
            shown_kwargs: Any = {k: (MASK if k in secret and v not in (None, "") else v) for k, v in kwargs.items()}
        else:
            shown_kwargs = MASK
        return {**load, "kwargs": {**load["kwargs"], "ret_kwargs": shown_kwargs}}

    def _send_publish(self, data: bytes) -> None:
        if self._held is not None:  # the socket is being re-bound: the job waits for the minions
            self._held.append(data)
            self.stats["pub_held"] += 1
            return
        self.pub.send(data)

    # -- who listens on the publish socket -------------------------------------------------------
    async def _subscription_loop(self) -> None:
        """Read the subscriptions (XPUB_VERBOSE): each carries the subscriber's key."""
        while True:
            frame = await self.pub.recv(copy=False)
            if frame.bytes[:1] != b"\x01":
                continue  # an unsubscription (a peer left): libzmq makes those without a key
            try:
                key = frame.get("User-Id")
            except zmq.ZMQError:
                continue
            if key:
                self._subscribers[key] = time.monotonic()

    def _hold(self) -> None:
        self._holds += 1
        if self._held is None:
            self._held = []

    def _release(self) -> int:
        """End one hold; when it was the last, send what was held. How many were sent."""
        self._holds -= 1
        if self._holds > 0 or self._held is None:
            return 0
        held, self._held = self._held, None
        for data in held:
            self.pub.send(data)
        return len(held)

    async def _startup_hold(self) -> None:
        """Jobs published just after a (re)start wait for the accepted minions to subscribe again,
        at most PUB_START_HOLD seconds, instead of reaching no one: a publish is not queued for a
        minion that is not connected, and after a restart each needs up to ~2 s to reconnect."""
        started = time.monotonic()
        awaited = set() if self.opts.get("open_mode") else set(self._accepted_keys)
        try:
            while time.monotonic() - started < PUB_START_HOLD:
                awaited &= self._accepted_keys  # a key revoked meanwhile is not waited for
                if awaited <= self._subscribers.keys():
                    break
                await asyncio.sleep(0.005)
        finally:
            sent = self._release()
        back = len(awaited & self._subscribers.keys())
        if awaited:
            log.info("%d of %d accepted minions subscribed %.0f ms after the start; %d job(s) held meanwhile", back,
                     len(awaited), (time.monotonic() - started) * 1000, sent)

    def _accepted_key_set(self) -> set[str]:
        keys = (self.keys.accepted_key(mid) for mid in self.keys.ids(ACCEPTED))
        return {k for k in keys if k}

    async def _check_revoked(self) -> None:
        """Drop every subscriber when an accepted key was deleted or rejected (see the docstring)."""
        self.keys.refresh()
        current = self._accepted_key_set()
        revoked = self._accepted_keys - current
        self._accepted_keys = current
        if revoked and not self.opts.get("open_mode"):
            await self._rebind_pub(len(revoked), current)

    async def _rebind_pub(self, n_revoked: int, accepted: set[str]) -> None:
        started = time.monotonic()
        recent = time.time() - 120  # a minion not heard of for that long is not waited for
        awaited = set()
        for key in self._subscribers:
            info = self.keys.by_key(key)
            if key in accepted and info is not None and self.state.last_seen.get(info.minion_id, 0) >= recent:
                awaited.add(key)
        self._subscribers = {}
        self._hold()
        try:
            self.pub.unbind(self._pub_endpoint)
            while True:
                try:
                    self.pub.bind(self._pub_endpoint)
                    break
                except zmq.ZMQError as exc:  # the old listener closes in libzmq's I/O thread
                    if exc.errno != zmq.EADDRINUSE or time.monotonic() - started > 10:
                        raise
                    await asyncio.sleep(0.005)
            deadline = started + PUB_REBIND_HOLD
            while not awaited <= self._subscribers.keys() and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
        except zmq.ZMQError as exc:
            log.error("cannot re-bind the publish socket %s: %s", self._pub_endpoint, exc)
        finally:
            held = self._release()
        back = len(awaited & self._subscribers.keys())
        took = (time.monotonic() - started) * 1000
        self.stats["pub_rebinds"] += 1
        self.stats["pub_rebind_ms"] = round(took, 1)
        log.info("%d key(s) revoked: publish socket re-bound; %d of %d minions back in %.0f ms, %d job(s) held",
                 n_revoked, back, len(awaited), took, held)

    def _job_returners(self, ret: Any) -> list[str]:
        """Where a job's load and returns go: the job cache, ext_job_cache, ``return:``, ``--return``."""
        if not isinstance(ret, (str, type(None))):
            return self._returners_for(ret)
        found = self._returners.get(ret)
        if found is None:
            found = self._returners[ret] = self._returners_for(ret)
        return list(found)

    def _returners_for(self, ret: Any) -> list[str]:
        names = [self.job_cache, *returner_names(self.opts.get("ext_job_cache")),
                 *returner_names(self.opts.get("return"))]
        if not self.opts.get("returners_on_minion"):
            names += returner_names(ret)
        return list(dict.fromkeys(names))

    def _event_items(self, event: dict[str, Any]) -> list[Item]:
        return self.delivery.items_for_event(event["tag"], event["data"])

    # -- the return socket -----------------------------------------------------------------------
    async def _return_loop(self) -> None:
        router = self.router
        # What is already queued is read (and the acks sent) through a plain synchronous view of
        # the same socket: no future and no loop callback per message. Only an empty socket is awaited.
        self._router_sync = sync = zmq.Socket.shadow(router.underlying)
        while True:
            group = [await router.recv_multipart(copy=False)]
            while len(group) < GROUP_MAX:
                try:
                    frames = [sync.recv(zmq.NOBLOCK, copy=False)]
                except zmq.Again:
                    break
                while frames[-1].more:  # the rest of a message is there as soon as its first frame is
                    frames.append(sync.recv(copy=False))
                group.append(frames)
            self.stats["groups"] += 1
            self.stats["grouped_messages"] += len(group)
            try:
                self._handle_group(group)
            except Exception:  # a bug must not take the return socket down
                log.exception("error while handling %d messages", len(group))

    def _handle_group(self, group: list[list[zmq.Frame]]) -> None:
        self.keys.refresh()
        replies: list[tuple[bytes, Any]] = []  # a reply is a message, or one already encoded
        accepted: list[tuple[bytes, dict[str, Any]]] = []
        for frames in group:
            if len(frames) != 2:
                self.stats["bad_frames"] += 1
                continue
            routing, payload = frames[0].bytes, frames[1]
            key = payload.get("User-Id") if not self.opts.get("open_mode") else None
            try:
                message = decode(payload.bytes, self.max_size)
            except FrameError as exc:
                self.stats["bad_frames"] += 1
                log.warning("refused a frame from key %s: %s", (key or "?")[:8], exc)
                continue
            reply = self._handle_message(routing, key, message, accepted)
            if reply is not None:
                replies.append((routing, reply))
        if accepted:
            replies += self._store_returns(accepted)
        out = getattr(self, "_router_sync", None) or self.router
        for routing, reply in replies:
            try:
                # two sends with plain int flags: send_multipart combines enum flags per frame, a
                # tenth of the cost of an ack
                out.send(routing, _MORE_NOBLOCK)
                out.send(reply if isinstance(reply, bytes) else encode(reply), _NOBLOCK)
            except zmq.Again:
                log.debug("could not reply to a minion (its queue is full)")

    def _identify(self, key: str | None, message: dict[str, Any]) -> tuple[str | None, str | None]:
        """(state, minion id) of the peer, from its CURVE key (never from the payload)."""
        if self.opts.get("open_mode"):
            mid = message.get("id")
            return (ACCEPTED, mid) if valid_id(mid) else (None, None)
        info = self.keys.by_key(key) if key else None
        return (info.state, info.minion_id) if info else (None, None)

    def _handle_message(self, routing: bytes, key: str | None, message: dict[str, Any],
                        accepted: list[tuple[bytes, dict[str, Any]]]) -> dict[str, Any] | None:
        cmd = message["cmd"]
        state, mid = self._identify(key, message)
        if cmd == "hello":
            return self._hello(key, state, mid, message)
        if state != ACCEPTED or mid is None:
            self.stats["refused"] += 1
            return {"cmd": "not_accepted"}
        if cmd == "ping":
            self.state.last_seen[mid] = time.time()
            return {"cmd": "pong"}
        if cmd == "_return":
            load = message.get("load")
            if not isinstance(load, dict) or not is_jid(load.get("jid")) or not isinstance(load.get("fun"), (str, list)):
                self.stats["bad_frames"] += 1
                return {"cmd": "refused", "jid": str(message.get("jid", "")), "reason": "malformed return"}
            if load.get("id", mid) != mid:
                self.stats["forged"] += 1
                log.warning("minion %s sent a return claiming to be %r; refused", mid, load.get("id"))
                return {"cmd": "refused", "jid": load["jid"], "reason": "id does not match the key"}
            accepted.append((routing, {**load, "id": mid}))
            return None
        if cmd == "_minion_event":  # beacon events (saline/master/scheduled.py)
            return minion_event(self, mid, message)
        self.stats["bad_frames"] += 1
        return {"cmd": "refused", "reason": f"unknown command {cmd[:40]!r}"}

    def _hello(self, key: str | None, state: str | None, mid: str | None, message: dict[str, Any]) -> dict[str, Any]:
        claimed = message.get("id")
        grains = message.get("grains") if isinstance(message.get("grains"), dict) else None
        if not valid_id(claimed):
            return {"cmd": "refused", "reason": "invalid minion id"}
        if state == ACCEPTED:
            if mid != claimed:
                self.stats["forged"] += 1
                log.warning("key of minion %s says hello as %s; refused", mid, claimed)
                return {"cmd": "refused", "reason": "id does not match the key"}
            self.state.saw_minion(mid, grains)
            self._fire_and_queue(f"salt/minion/{mid}/start", {"id": mid, "cmd": "_minion_event"})
            self._fire_and_queue("salt/auth", {"id": mid, "act": "accept", "result": True, "pub": key})
            return {"cmd": "welcome", "master_id": self.opts["id"]}
        if state in (REJECTED, DENIED):
            return {"cmd": "rejected"}
        if key is None:
            return {"cmd": "refused", "reason": "no key"}
        known = self.keys.accepted_key(claimed)
        if known is not None and known != key:
            # A known id with a new key: Salt's "denied" (a stolen id or a rebuilt minion).
            self.keys.add(DENIED, claimed, key)
            log.warning("minion %s presented a different key than the accepted one; denied", claimed)
            self._fire_and_queue("salt/auth", {"id": claimed, "act": "denied", "result": False, "pub": key})
            return {"cmd": "rejected"}
        if self.opts.get("auto_accept"):
            self.keys.delete(claimed)
            self.keys.add(ACCEPTED, claimed, key)
            self.state.saw_minion(claimed, grains)
            self._fire_and_queue("salt/key", {"id": claimed, "act": "accept", "result": True})
            return {"cmd": "welcome", "master_id": self.opts["id"]}
        if self.keys.key_of(PENDING, claimed) != key:
            self.keys.add(PENDING, claimed, key)
            log.info("new minion key pending: %s", claimed)
            self._fire_and_queue("salt/auth", {"id": claimed, "act": "pend", "result": True, "pub": key})
        return {"cmd": "pending"}

    def _fire_and_queue(self, tag: str, data: dict[str, Any]) -> None:
        items = self._event_items(self.events.fire(tag, data))
        if items:
            try:
                self.delivery.submit(items)
            except OutboxError as exc:
                log.error("event %s not queued for event returners: %s", tag, exc)

    def _store_returns(self, accepted: list[tuple[bytes, dict[str, Any]]]) -> list[tuple[bytes, Any]]:
        """Write accepted returns durably, then build their acks (group commit)."""
        replies: list[tuple[bytes, Any]] = []
        acks: list[tuple[bytes, bytes]] = []
        ack_of: dict[str, bytes] = {}  # a group holds many returns of the same few jobs: encode each ack once
        items: list[Item] = []
        fresh: list[tuple[str, str, int]] = []
        to_fire: list[tuple[str, dict[str, Any]]] = []
        seen: set[tuple[str, str]] = set()
        received = stamp()  # one group is handled within milliseconds: one stamp for all
        for routing, load in accepted:
            jid, mid = load["jid"], load["id"]
            if "schedule_route" in load:  # a minion's own scheduled job (saline/master/scheduled.py)
                reply = store_scheduled(self, load, received)
                if reply is not None:
                    replies.append((routing, reply))
                continue
            job = self.state.job(jid)
            if job is None or mid not in job[0]:
                self.stats["untargeted"] += 1
                log.warning("minion %s returned for job %s it was not targeted by; refused", mid, jid)
                replies.append((routing, {"cmd": "refused", "jid": jid, "reason": "not targeted"}))
                continue
            if mid in job[1] or (jid, mid) in seen:
                self.stats["duplicates"] += 1
                replies.append((routing, {"cmd": "ack", "jid": jid}))
                continue
            seen.add((jid, mid))
            job_load = self.state.job_load(jid) or {}  # in memory for recent jobs
            kwargs = job_load.get("kwargs") or {}
            ret = {"cmd": "_return", **load, "_stamp": received}
            names = self._job_returners(job_load.get("ret"))
            if not self.opts.get("job_cache", True):  # Salt's job_cache: False keeps loads, not returns
                names = [n for n in names if n != self.job_cache]
            items += self.delivery.items_for_return(names, ret, kwargs.get("ret_config"), kwargs.get("ret_kwargs"))
            items += self.delivery.items_for_event(job_ret_tag(jid, mid), ret)
            to_fire.append((job_ret_tag(jid, mid), ret))
            fresh.append((jid, mid, _retcode(load.get("retcode"))))
            ack = ack_of.get(jid)
            if ack is None:
                ack = ack_of[jid] = encode({"cmd": "ack", "jid": jid})
            acks.append((routing, ack))
        if fresh:
            try:
                self.delivery.submit(items)
            except OutboxError as exc:
                # Not stored: no ack, so the minions keep these returns in their spools and resend.
                self._store_failed(len(fresh), exc)
                return replies
            if self._store_failing_since is not None:
                log.warning("returns are stored again, after %.0f s of refusals (%d returns refused, resent by "
                            "the minions)", time.monotonic() - self._store_failing_since, self.stats["store_failures"])
                self._store_failing_since = None
            self.state.record_returns(fresh)
            self.stats["returns"] += len(fresh)
            for tag, data in to_fire:  # only once stored, so no one sees a return that could be lost
                self.events.fire(tag, data)
        return replies + acks

    def _store_failed(self, n: int, exc: OutboxError) -> None:
        """One error line when the outbox starts refusing, then one every STORE_ERROR_EVERY seconds:
        every minion resends every few seconds, and a full disk must not fill the log too."""
        now = time.monotonic()
        self.stats["store_failures"] += n
        last, since_last = self._store_logged
        since_last += n
        if self._store_failing_since is None or now - last >= STORE_ERROR_EVERY:
            self._store_failing_since = self._store_failing_since or now
            log.error("cannot store %d returns, minions will resend: %s", since_last, exc)
            self._store_logged = (now, 0)
        else:
            self._store_logged = (last, since_last)

    # -- housekeeping ----------------------------------------------------------------------------
    async def _maintenance(self) -> None:
        interval = float(self.opts.get("loop_interval") or 60)
        last_clean = 0.0
        while True:
            await asyncio.sleep(KEY_CHECK_INTERVAL)
            self.delivery.revive()
            if self.keys.refresh():
                self.events.fire("salt/key", {"act": "refresh", "listing": self.keys.listing()})
            try:
                await self._check_revoked()
            except Exception as exc:  # the next tick tries again; the loop must go on
                log.error("checking for revoked keys failed: %s", exc)
            now = time.time()
            if now - last_clean >= interval:
                last_clean = now
                await asyncio.get_running_loop().run_in_executor(None, self.clean_old_jobs)

    def clean_old_jobs(self) -> None:
        keep = int(self.opts.get("keep_jobs_seconds") or 0)
        if keep <= 0:
            return
        from saline.returners import registry

        self.state.forget_before(time.time() - keep)
        try:
            cache = registry.create(self.job_cache, self.opts)
            try:
                cache.clean_old_jobs()
            finally:
                cache.close()
        except Exception as exc:
            log.warning("clean_old_jobs on %s failed: %s", self.job_cache, str(exc).splitlines()[0] if str(exc) else exc)

    def job_done(self, jid: str) -> bool:
        job = self.state.job(jid)
        return job is not None and job[0] <= job[1]

    def matching_ids(self, pattern: str) -> list[str]:
        return [m for m in self.keys.ids(ACCEPTED) if fnmatch.fnmatch(m, pattern)]
