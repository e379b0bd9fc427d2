"""The master: publishes jobs, collects returns, feeds the outbox, emits events, serves the CLI.

One asyncio loop owns the sockets. Returns are handled in groups: every message already waiting
on the return socket is read, the accepted returns are written to the outbox in one transaction
(group commit), and only then are the minions acknowledged — so an acknowledged return is never
lost, and a return the master could not store stays in the minion's spool.

The publish socket and who listens on it are :mod:`saline.master.publisher`'s business: it knows
which minions are connected right now, and holds jobs for a few seconds after a start, a
revocation or an acceptance until the minions concerned are subscribed, so none is lost.

Who may talk at all is decided per message from the peer's CURVE key (never from the payload): an
unknown key may only say hello (and file a pending key, within :mod:`saline.master.admission`'s
limits); a key whose hello names another minion's id gets no session.
The master's public key is also served, and nothing else, on ``master_pub_port``
(:mod:`saline.transport.bootstrap`), so a new minion can trust it on first use.
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

from saline import recordlog
from saline.cluster.config import ClusterError, unescape_token
from saline.cluster.config import from_opts as cluster_from_opts
from saline.cluster.link import ClusterLink
from saline.config import ConfigError, returner_names
from saline.events import EventBus, job_new_tag, job_ret_tag, stamp
from saline.jid import gen_jid, is_jid
from saline.master.admission import PendingGate
from saline.master.delivery import Delivery
from saline.master.errors import PublishError
from saline.master.outbox import OutboxError, Record, RecordTooLarge, kwargs_key, open_outbox
from saline.master.publisher import ACCEPT_HOLD, START_HOLD, Publisher
from saline.master.scheduled import minion_event, run_schedule, store_scheduled
from saline.master.state import MasterState
from saline.targeting import TargetError, expected_minions, named_ids
from saline.transport import bootstrap
from saline.transport.framing import FrameError, decode, encode
from saline.transport.keys import ACCEPTED, DENIED, PENDING, REJECTED, KeyStore, ensure_keypair, valid_id
from saline.transport.zeromq import PUB_DOMAIN, RET_DOMAIN, ZapHandler, server_socket, tcp_endpoint

log = logging.getLogger(__name__)

GROUP_MAX = 2000  # messages handled per group commit
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
#: the C extension's send, under pyzmq's Python ``Socket.send`` (which only adds draft sockets'
#: routing_id and group): an ack's two sends cost a third less
_raw_send = zmq.backend.Socket.send
#: how often the master looks for revoked keys (the latency of a revocation on the publish port)
KEY_CHECK_INTERVAL = 0.25
#: job routes remembered, at most
ROUTES_REMEMBERED = 10_000
#: connections whose CURVE key is remembered by their routing id, at most
KEYS_BY_ROUTING_MAX = 200_000
#: while the outbox cannot be written, the error is logged at most this often (with a count)
STORE_ERROR_EVERY = 30.0


def _unpacked(body: bytes) -> Any:
    """A record another master stored, or None when it cannot be read."""
    try:
        return recordlog.unpack(body)
    except Exception:
        return None


def _retcode(value: Any) -> int:
    if isinstance(value, dict):  # multi-function jobs
        return max((_retcode(v) for v in value.values()), default=0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


#: what a job's returners are given: [(names, ret_config, ret_kwargs)]
Routes = list[tuple[list[str], str | None, Any]]


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
        self.job_cache = opts.get("master_job_cache") or "saline_cache"
        try:
            self.cluster_config = cluster_from_opts(opts)
        except ClusterError as exc:
            raise ConfigError(str(exc)) from None
        self.cluster: ClusterLink | None = None
        self.key_sync: Any = None
        served = self._served_cache()
        # the job cache read in place needs the file open to other connections (the runners')
        try:
            self.outbox = open_outbox(opts, master=True, serves=served, shared=processes or served is not None)
        except ClusterError as exc:
            raise OutboxError(str(exc)) from None
        if self.outbox.keeps_returns and opts.get("job_cache", True):
            # each return written once: where it is stored, which also says it was (a copy resent
            # by a minion whose ack was lost is recognised from there after a restart)
            self.state.returned_from = self.outbox.returned
        self.delivery = Delivery(opts, self.outbox, processes=processes,
                                 workers=self.cluster_config is None or bool(opts.get("master_delivers", True)))
        self.events = EventBus()
        self.max_size = int(opts["max_frame_size"])
        self.stats = {"refused": 0, "bad_frames": 0, "forged": 0, "id_mismatch": 0, "pending_refused": 0,
                      "untargeted": 0, "duplicates": 0, "too_large": 0,
                      "pub_rebinds": 0, "pub_rebind_ms": 0.0, "pub_held": 0, "store_failures": 0,
                      "groups": 0, "grouped_messages": 0, "published": 0, "returns": 0}
        self._store_failing_since: float | None = None  # when the outbox began refusing returns
        self._store_logged = (0.0, 0)                    # (when the last error line was, returns refused since)
        self.publisher: Publisher | None = None
        self._accepted_keys: set[str] = set()
        self._mismatched: set[str] = set()  # keys whose hello named another minion (logged once each)
        self.gate = PendingGate(int(opts.get("max_pending_keys") or 0), float(opts.get("pending_hellos_per_second") or 0))
        # pending keys that said hello: key -> (routing id, claimed id, grains), told at once when accepted
        self._pending_hellos: dict[str, tuple[bytes, str, dict | None]] = {}
        self._background: set[asyncio.Task] = set()
        self.ready: Any = None  # called once the sockets are bound (saline-master -d waits for it)
        self.bootstrap_server: Any = None
        self._stop = asyncio.Event()
        self.ctx: zmq.asyncio.Context | None = None
        self._routes: dict[tuple[Any, str, str, bool], Routes] = {}
        self._keys_by_routing: dict[bytes, str] = {}
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
        if self.job_cache == "nats" and self.cluster_config is None:
            raise ConfigError("master_job_cache: nats is a cluster's job cache: set nats_servers and cluster_id")
        if not cache_cls.has_read_side():
            raise ConfigError(f"master_job_cache: returner {self.job_cache} has no read side and cannot be the job cache")
        from saline.returners.checks import unknown_returner_keys

        for line in unknown_returner_keys(self.opts):
            log.warning("%s: %s", self.opts.get("config_dir") or "config", line)

    # -- lifecycle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.zap = ZapHandler(self.ctx, self.keys, open_mode=bool(self.opts.get("open_mode")),
                              on_refused=self._on_refused)
        iface = self.opts["interface"]
        pub = self._bind(zmq.XPUB, PUB_DOMAIN, "publish_port")
        self.publisher = Publisher(pub, self._key_owner, self.stats)
        self._accepted_keys = self._accepted_key_set()
        self.publisher.hold()  # released by _startup_hold once the minions are back
        self.router = self._bind(zmq.ROUTER, RET_DOMAIN, "ret_port")
        if self.opts.get("serve_master_pub", True):
            port = int(self.opts["master_pub_port"])
            try:
                self.bootstrap_server = await bootstrap.serve(iface, port, self.public_key)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot serve the master's public key on {iface}:{port} "
                              f"(master_pub_port; serve_master_pub: False turns it off): {exc.strerror}") from None
        from saline.master.metrics import serve as serve_metrics

        self.metrics = serve_metrics(self)  # the /metrics listener, when metrics_port is set (before the
        # local socket: a master that cannot listen there stops before it looks started)
        from saline.master.localapi import LocalAPI

        self.local = LocalAPI(self)
        await self.local.start()
        if self.cluster_config is not None:
            self._join_cluster()
        self.delivery.start()
        tasks = [asyncio.create_task(self.zap.serve(), name="zap"),
                 asyncio.create_task(self._return_loop(), name="returns"),
                 asyncio.create_task(self.publisher.subscriptions(), name="subscriptions"),
                 asyncio.create_task(self.publisher.disconnections(), name="disconnections"),
                 asyncio.create_task(self._startup_hold(), name="startup-hold"),
                 asyncio.create_task(self._maintenance(), name="maintenance")]
        tasks.append(asyncio.create_task(run_schedule(self), name="schedule"))  # the master's schedule:
        log.info("master %s listening on %s (publish %s, return %s)", self.opts["id"], iface,
                 self.opts["publish_port"], self.opts["ret_port"])
        if self.ready is not None:
            self.ready()
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
            if self.key_sync is not None:
                self.key_sync.stop()
            if self.cluster is not None:
                self.cluster.stop()
            if self.bootstrap_server is not None:
                self.bootstrap_server.close()
            self.publisher.close()
            self.router.close(0)
            self.zap.close()
            self.ctx.term()
            self.outbox.close()
            self.state.close()

    # -- the cluster ---------------------------------------------------------------------------------
    def _join_cluster(self) -> None:
        """Share jobs, presence and live returns with the other masters (saline.cluster.link)."""
        from saline.cluster.bridge import shared

        assert self.cluster_config is not None
        self.cluster = ClusterLink(shared(self.cluster_config), self.cluster_config, str(self.opts["id"]),
                                   asyncio.get_running_loop(), self._relayed_job, self._remote_record,
                                   lambda: self.publisher.connected_ids() if self.publisher else set(),
                                   float(self.opts.get("keep_jobs_seconds") or 0))
        try:
            self.cluster.start()
        except Exception as exc:
            raise OSError(0, f"cannot join cluster {self.cluster_config.cluster_id}: {exc}") from None
        from saline.cluster.keys import KeySync

        # every master's key folders in step (a NATS outage leaves the local keys working)
        self.key_sync = KeySync(shared(self.cluster_config), self.cluster_config, self.opts["pki_dir"],
                                str(self.opts["id"]))
        self.key_sync.start()
        log.info("master %s joined cluster %s on %s", self.opts["id"], self.cluster_config.cluster_id,
                 ", ".join(self.cluster_config.servers))

    def _relayed_job(self, job: dict[str, Any]) -> None:
        """A job another master published: known here, and sent to the minions connected here."""
        jid, load, minions = job.get("jid"), job.get("load"), job.get("minions")
        if not is_jid(jid) or not isinstance(load, dict) or not isinstance(minions, list):
            log.warning("cluster: a job announcement without jid, load or minions ignored")
            return
        if self.state.job(jid) is None:
            self.state.add_job(jid, load, minions, float(job.get("timeout") or self.opts["timeout"]))
        shown = job.get("shown") if isinstance(job.get("shown"), dict) else {}
        self.events.fire(job_new_tag(jid), {**shown, "minions": minions})
        wire = job.get("wire")
        if isinstance(wire, bytes) and self.publisher is not None:
            self.publisher.send(wire)

    def _remote_record(self, kind: str, subject: str, headers: dict[str, str], body: bytes) -> None:
        """A record another master stored: its returns and events fire here too (for the CLI and
        ``state.event`` on this master); nothing is stored again. A record is unpacked only when
        someone here listens for it: every master sees every record of the cluster."""
        if kind == "ret":
            parts = subject.split(".")
            if len(parts) != 6:  # saline.<cluster>.rec.ret.<jid>.<minion>
                return
            jid, mid = unescape_token(parts[4]), unescape_token(parts[5])
            self.state.note_returned(jid, mid)
            tag = job_ret_tag(jid, mid)
            if self.events.wants(tag):
                payload = _unpacked(body)
                if isinstance(payload, dict):
                    self.events.fire(tag, payload)
        elif kind == "event" and self.events.listened:
            payload = _unpacked(body)
            if isinstance(payload, dict) and isinstance(payload.get("tag"), str):
                data = payload.get("data")
                self.events.fire(payload["tag"], data if isinstance(data, dict) else {"data": data})

    def _cluster_job(self, jid: str) -> tuple[set[str], set[str]] | None:
        """A job this master did not hear of (published elsewhere while it was restarting), or
        None; ConnectionError when the cluster cannot be asked now."""
        if self.cluster is None:
            return None
        job = self.cluster.find_job(jid)
        if not job or not isinstance(job.get("minions"), list) or not isinstance(job.get("load"), dict):
            return None
        self.state.add_job(jid, job["load"], job["minions"], float(job.get("timeout") or self.opts["timeout"]))
        return self.state.job(jid)

    def _served_cache(self) -> str | None:
        """The job cache that is the outbox's own store, so the outbox keeps its records in place
        with nothing to deliver: in a cluster ``nats`` (the stream), else ``saline_cache`` when it
        keeps its records in the outbox's file (its default ``database``)."""
        if self.cluster_config is not None:
            return "nats" if self.job_cache == "nats" else None
        if self.job_cache != "saline_cache":
            return None
        from saline.returners.options import lookup

        custom = lookup(self.opts, "saline_cache.database")
        if isinstance(custom, str) and Path(custom).resolve() != (self.cachedir / "outbox.db").resolve():
            return None
        return "saline_cache"

    def _bind(self, kind: int, domain: str, port_option: str) -> zmq.asyncio.Socket:
        endpoint = tcp_endpoint(self.opts["interface"], self.opts[port_option])
        try:
            return server_socket(self.ctx, kind, self.secret_key, domain, endpoint, self.max_size)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot listen on {endpoint} ({port_option}): {exc.strerror}") from None

    def _on_refused(self, domain: str, key: str) -> None:
        self.stats["refused"] += 1

    def _key_owner(self, key: str) -> str | None:
        info = self.keys.by_key(key)
        return info.minion_id if info is not None and info.state == ACCEPTED else None

    def connected_minions(self) -> set[str]:
        """Accepted minions with a connection to the publish port right now (of any master of the
        cluster, in a cluster)."""
        here = self.publisher.connected_ids() if self.publisher is not None else set()
        return here | self.cluster.connected_anywhere() if self.cluster is not None else here

    # -- publishing ------------------------------------------------------------------------------
    def expected_minions(self, tgt: Any, tgt_type: str) -> list[str]:
        """Accepted minions the target reaches, from their last grains (unknown grains: included)."""
        self.keys.refresh()
        return expected_minions(tgt, tgt_type, self.keys.ids(ACCEPTED), grains=self.state.grains,
                                nodegroups=self.opts.get("nodegroups") or {})

    def publish(self, request: dict[str, Any]) -> dict[str, Any]:
        """Publish a job; returns ``{"jid", "minions", "missing", "not_connected"}``: the minions
        expected, the ids the target names that are not accepted minions (Salt's "missing"), and
        the expected minions with no connection now (they cannot receive it). Raises PublishError
        with one line, before anything is sent."""
        fun = request.get("fun")
        if not isinstance(fun, str) or not fun:
            raise PublishError("no function given")
        tgt, tgt_type = request.get("tgt", "*"), request.get("tgt_type") or "glob"
        try:
            minions = self.expected_minions(tgt, tgt_type)
            named = named_ids(tgt, tgt_type)
            missing = sorted(set(named) - set(self.keys.ids(ACCEPTED))) if named else []
            if self.publisher is not None:
                self._welcome_accepted()  # a key accepted a moment ago: the job waits for that minion
        except TargetError as exc:
            raise PublishError(f"bad target: {exc}") from None
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
        if not minions and not self.opts.get("open_mode"):
            return {"jid": jid, "minions": [], "missing": missing, "not_connected": []}
        # The job cache, the returners and the event bus get the load with the secret options of
        # --return_kwargs masked; only master.db keeps them, to deliver the returns with them.
        try:
            routes = self._job_routes(request.get("ret"), request.get("ret_config"), request.get("ret_kwargs"))
            shown = self._masked_load(load, [n for names, _rc, _kw in routes for n in names])
            items: list[Record] = []
            for names, ret_config, ret_kwargs in routes:  # also checks each returner's options
                items += self.delivery.items_for_load(names, jid, shown, minions, ret_config, ret_kwargs)
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
        # read before sending: a minion that subscribes from now on cannot get this job
        holding = self.publisher is None or self.publisher.holding
        connected = self.connected_minions()
        data = encode({k: v for k, v in wire.items() if v not in (None, "")})
        if self.cluster is not None:  # the other masters send it to the minions connected to them
            try:
                # the load as master.db keeps it (secret --return_kwargs included: the other masters
                # deliver the returns that reach them with them), and as the event bus may show it
                self.cluster.announce_job(jid, load, shown, minions,
                                          float(request.get("timeout") or self.opts["timeout"]), data)
            except Exception as exc:
                raise PublishError(f"cannot share the job with the cluster: {exc}") from None
        self.publisher_send(data)
        self.stats["published"] += 1
        log.info("published %s %s to %s (%d minions expected)", jid, fun, tgt, len(minions))
        # while publishes are held (a start, a re-bind), who is connected is not known yet
        not_connected = [] if holding else [m for m in minions if m not in connected]  # (minions are sorted)
        return {"jid": jid, "minions": minions, "missing": missing, "not_connected": not_connected}

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

    def publisher_send(self, data: bytes) -> None:
        if self.publisher is not None:
            self.publisher.send(data)

    # -- who listens on the publish socket -------------------------------------------------------
    async def _startup_hold(self) -> None:
        """Jobs published just after a (re)start wait for the accepted minions to subscribe again,
        at most START_HOLD seconds, instead of reaching no one: a publish is not queued for a
        minion that is not connected, and after a restart each needs up to ~2 s to reconnect."""
        started = time.monotonic()
        pub = self.publisher
        awaited = set() if self.opts.get("open_mode") else set(self._accepted_keys)
        try:
            while time.monotonic() - started < START_HOLD:
                awaited &= self._accepted_keys  # a key revoked meanwhile is not waited for
                if awaited <= pub.subscribers.keys():
                    break
                await asyncio.sleep(0.005)
        finally:
            sent = pub.release()
        back = len(awaited & pub.subscribers.keys())
        if awaited:
            log.info("%d of %d accepted minions subscribed %.0f ms after the start; %d job(s) held meanwhile", back,
                     len(awaited), (time.monotonic() - started) * 1000, sent)

    def _accepted_key_set(self) -> set[str]:
        keys = (self.keys.accepted_key(mid) for mid in self.keys.ids(ACCEPTED))
        return {k for k in keys if k}

    async def _check_revoked(self) -> None:
        """Drop every subscriber when an accepted key was deleted or rejected
        (see :mod:`saline.master.publisher`)."""
        self.keys.refresh()
        current = self._accepted_key_set()
        revoked = self._accepted_keys - current
        self._accepted_keys = current
        if not revoked or self.opts.get("open_mode"):
            return
        recent = time.time() - 120  # a minion not heard of for that long is not waited for

        def comes_back(key: str) -> bool:
            info = self.keys.by_key(key)
            return key in current and info is not None and self.state.last_seen.get(info.minion_id, 0) >= recent

        back, awaited, held, took = await self.publisher.rebind(comes_back)
        log.info("%d key(s) revoked: publish socket re-bound; %d of %d minions back in %.0f ms, %d job(s) held",
                 len(revoked), back, awaited, took, held)

    def _welcome_accepted(self) -> None:
        """Tell each pending minion whose key was accepted since its hello, at once (instead of at
        its next hello, up to ``acceptance_wait_time`` later), and hold publishes until it has
        subscribed, so the first job sent after ``saline-key -a`` reaches it."""
        if not self._pending_hellos:
            return
        welcomed = []
        for key, (routing, claimed, grains) in list(self._pending_hellos.items()):
            info = self.keys.by_key(key)
            if info is None or info.state == PENDING:
                if info is None:
                    del self._pending_hellos[key]  # deleted: the minion's next hello files it again
                continue
            del self._pending_hellos[key]
            if info.state == ACCEPTED and info.minion_id == claimed:
                self._reply(routing, self._accept_hello(key, claimed, grains))
                welcomed.append(key)
            elif info.state in (REJECTED, DENIED):
                self._reply(routing, {"cmd": "rejected"})
        if welcomed:
            self._accepted_keys = self._accepted_key_set()
            self.publisher.hold()  # now, so that a job published next waits for them
            task = asyncio.create_task(self._hold_for_new(welcomed))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _hold_for_new(self, keys: list[str]) -> None:
        try:
            await self.publisher.wait_for(set(keys), ACCEPT_HOLD)
        finally:
            sent = self.publisher.release()
        back = len(set(keys) & self.publisher.subscribers.keys())
        log.info("%d newly accepted minion(s) told at once; %d subscribed, %d job(s) held meanwhile",
                 len(keys), back, sent)

    def _reply(self, routing: bytes, message: dict[str, Any]) -> None:
        try:
            self.router.send_multipart([routing, encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError:
            log.debug("could not reply to a minion (gone, or its queue is full)")

    def _job_routes(self, ret: Any, ret_config: str | None = None, ret_kwargs: Any = None,
                    returns: bool = False) -> Routes:
        """Where a job's load and (``returns``) its returns go, and with which options: the job
        cache, ``ext_job_cache`` and ``return:`` with their own options; the job's ``--return``
        returners with its ``--return_config``/``--return_kwargs`` (Salt's #43451: those never
        reach the job cache, and every write of a ``--return`` returner uses them). With Salt's
        ``job_cache: False`` the job cache keeps loads but not returns."""
        key = (ret if isinstance(ret, (str, type(None))) else ",".join(returner_names(ret)),
               ret_config or "", kwargs_key(ret_kwargs) if isinstance(ret_kwargs, dict) else str(ret_kwargs or ""),
               returns)
        found = self._routes.get(key)
        if found is None:
            if len(self._routes) > ROUTES_REMEMBERED:  # many jobs with their own --return_kwargs
                self._routes.clear()
            found = self._routes[key] = self._make_routes(ret, ret_config, ret_kwargs, returns)
        return found

    def _make_routes(self, ret: Any, ret_config: str | None, ret_kwargs: Any, returns: bool) -> Routes:
        own = [self.job_cache, *returner_names(self.opts.get("ext_job_cache"))]
        if returns and not self.opts.get("job_cache", True):
            own = own[1:]
        configured = returner_names(self.opts.get("return"))
        named = [] if self.opts.get("returners_on_minion") else returner_names(ret)
        if not ret_config and not ret_kwargs:
            return [(list(dict.fromkeys(own + configured + named)), None, None)]
        plain = list(dict.fromkeys(own + [n for n in configured if n not in named]))
        routes: Routes = [(plain, None, None)]
        if named:
            routes.append((named, ret_config or None, ret_kwargs or None))
        return routes

    def _event_items(self, event: dict[str, Any]) -> list[Record]:
        return self.delivery.items_for_event(event["tag"], event["data"])

    # -- the return socket -----------------------------------------------------------------------
    async def _return_loop(self) -> None:
        router = self.router
        # What is already queued is read (and the acks sent) through a plain synchronous view of
        # the same socket: no future and no loop callback per message. Only an empty socket is awaited.
        self._router_sync = sync = zmq.Socket.shadow(router.underlying)
        while True:
            first = await router.recv_multipart(copy=False)
            group: list[list[Any]] = [[first[0].bytes, *first[1:]]]
            while len(group) < GROUP_MAX:
                try:
                    # the routing id as plain bytes (a Frame object costs more than the copy); the
                    # payload as a Frame: it says whether more frames follow, and its peer's key
                    frames: list[Any] = [sync.recv(_NOBLOCK)]
                except zmq.Again:
                    break
                # the rest of a message is there as soon as its first frame is
                frames.append(sync.recv(0, copy=False))
                while frames[-1].more:
                    frames.append(sync.recv(0, copy=False))
                group.append(frames)
            self.stats["groups"] += 1
            self.stats["grouped_messages"] += len(group)
            try:
                self._handle_group(group)
            except Exception:  # a bug must not take the return socket down
                log.exception("error while handling %d messages", len(group))

    def _handle_group(self, group: list[list[Any]]) -> None:
        """``group``: messages as received, each its routing id (bytes) and its frames."""
        self.keys.refresh()
        replies: list[tuple[bytes, Any]] = []  # a reply is a message, or one already encoded
        accepted: list[tuple[bytes, dict[str, Any]]] = []
        open_mode = bool(self.opts.get("open_mode"))
        keys_by_routing = self._keys_by_routing
        for frames in group:
            if len(frames) != 2:
                self.stats["bad_frames"] += 1
                continue
            routing, payload = frames[0], frames[1]
            if open_mode:
                key = None
            else:
                # a routing id libzmq made (it starts with a zero byte; a peer may not choose one)
                # names one connection for the socket's life, and a connection keeps its CURVE key:
                # the frame is asked once per connection
                key = keys_by_routing.get(routing)
                if key is None:
                    key = payload.get("User-Id")
                    if routing[:1] == b"\x00":
                        if len(keys_by_routing) >= KEYS_BY_ROUTING_MAX:
                            keys_by_routing.clear()
                        keys_by_routing[routing] = key
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
                _raw_send(out, routing, _MORE_NOBLOCK)
                _raw_send(out, reply if isinstance(reply, bytes) else encode(reply), _NOBLOCK)
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
            return self._hello(routing, key, state, mid, message)
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
            load["id"] = mid  # set in place (the decoded frame is this group's own): where it was, or last
            accepted.append((routing, load))
            return None
        if cmd == "_minion_event":  # beacon events (saline/master/scheduled.py)
            return minion_event(self, mid, message)
        self.stats["bad_frames"] += 1
        return {"cmd": "refused", "reason": f"unknown command {cmd[:40]!r}"}

    def _hello(self, routing: bytes, key: str | None, state: str | None, mid: str | None,
               message: dict[str, Any]) -> dict[str, Any]:
        claimed = message.get("id")
        grains = message.get("grains") if isinstance(message.get("grains"), dict) else None
        if not valid_id(claimed):
            return {"cmd": "refused", "reason": "invalid minion id"}
        if state == ACCEPTED:
            if mid != claimed:
                # The identity is the key: a process holding minion A's key but calling itself B
                # gets no session. It is told why and stops without running a job (a minion runs
                # none before the master's welcome). It cannot be kept off the publish port: that
                # would shut out A too, which holds the same key.
                self.stats["forged"] += 1
                self.stats["id_mismatch"] += 1
                if key is not None and key not in self._mismatched:
                    self._mismatched.add(key)
                    log.warning("a minion with the key accepted for %s says hello as %s: refused (no session; "
                                "it runs no job and stops)", mid, claimed)
                return {"cmd": "refused", "reason": "id does not match the key", "accepted_as": mid}
            return self._accept_hello(key, mid, grains)
        if state in (REJECTED, DENIED):
            return {"cmd": "rejected"}
        if key is None:
            return {"cmd": "refused", "reason": "no key"}
        known = self.keys.accepted_key(claimed)
        if known is not None and known != key:
            # A known id with a new key: Salt's "denied" (a stolen id or a rebuilt minion).
            if self.keys.key_of(DENIED, claimed) != key:
                if not self._admit_new_key():
                    return {"cmd": "pending"}
                self.keys.add(DENIED, claimed, key)
                log.warning("minion %s presented a different key than the accepted one; denied", claimed)
                self._fire_and_queue("salt/auth", {"id": claimed, "act": "denied", "result": False, "pub": key})
            return {"cmd": "rejected"}
        if self.opts.get("auto_accept"):
            self.keys.delete(claimed)
            self.keys.add(ACCEPTED, claimed, key)
            self._fire_and_queue("salt/key", {"id": claimed, "act": "accept", "result": True})
            return self._accept_hello(key, claimed, grains)
        if self.keys.key_of(PENDING, claimed) != key:
            if not self._admit_new_key():
                return {"cmd": "pending"}
            self.keys.add(PENDING, claimed, key)
            log.info("new minion key pending: %s", claimed)
            self._fire_and_queue("salt/auth", {"id": claimed, "act": "pend", "result": True, "pub": key})
        if key in self._pending_hellos or len(self._pending_hellos) < self.gate.max_pending:
            self._pending_hellos[key] = (routing, claimed, grains)
        return {"cmd": "pending"}

    def _accept_hello(self, key: str | None, mid: str, grains: dict | None) -> dict[str, Any]:
        self.state.saw_minion(mid, grains)
        self._fire_and_queue(f"salt/minion/{mid}/start", {"id": mid, "cmd": "_minion_event"})
        self._fire_and_queue("salt/auth", {"id": mid, "act": "accept", "result": True, "pub": key})
        return {"cmd": "welcome", "master_id": self.opts["id"]}

    def _admit_new_key(self) -> bool:
        """Whether an unknown key may write one more pending or denied entry (see admission)."""
        waiting = len(self.keys.ids(PENDING)) + len(self.keys.ids(DENIED))
        if self.gate.admit(waiting):
            return True
        self.stats["pending_refused"] += 1
        return False

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
        items: list[Record] = []
        owners: list[int] = []  # for each record, the return (its index in fresh) it belongs to
        fresh: list[tuple[str, str, int]] = []
        to_fire: list[tuple[str, dict[str, Any]]] = []
        seen: dict[tuple[str, str], int] = {}  # (jid, minion) -> its index in fresh
        copies: list[tuple[int, bytes]] = []   # (index in fresh of the first copy, routing) of later copies
        received = stamp()  # one group is handled within milliseconds: one stamp for all
        # a group holds many returns of the same few jobs: each job's state, routes and ack once
        jobs: dict[str, tuple[Any, Routes, bytes]] = {}
        for routing, load in accepted:
            jid, mid = load["jid"], load["id"]
            if "schedule_route" in load:  # a minion's own scheduled job (saline/master/scheduled.py)
                reply = store_scheduled(self, load, received)
                if reply is not None:
                    replies.append((routing, reply))
                continue
            known = jobs.get(jid)
            if known is None:
                try:
                    job = self.state.job(jid)
                    if job is None and self.cluster is not None:
                        job = self._cluster_job(jid)
                except (OutboxError, ConnectionError) as exc:
                    # Whether the job is known cannot be told now: no answer (not "not targeted",
                    # which makes the minion drop the return), so the minion resends it later
                    self._store_failed(1, exc)
                    continue
                routes: Routes = []
                if job is not None:
                    job_load = self.state.job_load(jid) or {}  # in memory for recent jobs
                    kwargs = job_load.get("kwargs") or {}
                    routes = self._job_routes(job_load.get("ret"), kwargs.get("ret_config"),
                                              kwargs.get("ret_kwargs"), returns=True)
                known = jobs[jid] = (job, routes, encode({"cmd": "ack", "jid": jid}))
            job, routes, ack = known
            if job is None or mid not in job[0]:
                self.stats["untargeted"] += 1
                log.warning("minion %s returned for job %s it was not targeted by; refused", mid, jid)
                replies.append((routing, {"cmd": "refused", "jid": jid, "reason": "not targeted"}))
                continue
            if mid in job[1]:  # stored already: the ack was lost, or the minion resent too early
                self.stats["duplicates"] += 1
                replies.append((routing, {"cmd": "ack", "jid": jid}))
                continue
            first = seen.get((jid, mid))
            if first is not None:
                # A copy resent while the first one waits in this group (a slow store): acked only
                # if the first one is stored, or the minion would drop a return never kept
                self.stats["duplicates"] += 1
                copies.append((first, routing))
                continue
            seen[(jid, mid)] = len(fresh)
            ret = {"cmd": "_return", **load, "_stamp": received}
            tag = job_ret_tag(jid, mid)
            made = self.delivery.records_for_return(routes, ret)
            made += self.delivery.items_for_event(tag, ret)
            items += made
            owners += [len(fresh)] * len(made)
            to_fire.append((tag, ret))
            fresh.append((jid, mid, _retcode(load.get("retcode"))))
            acks.append((routing, ack))
        if fresh:
            try:
                dropped = self._submit_returns(items, owners, fresh, acks, replies)
            except OutboxError as exc:
                # Not stored: no ack, so the minions keep these returns in their spools and resend.
                self._store_failed(len(fresh), exc)
                return replies
            copy_acks = [(routing, acks[first][1]) for first, routing in copies if first not in dropped]
            if dropped:
                fresh, acks, to_fire = ([x for i, x in enumerate(seq) if i not in dropped]
                                        for seq in (fresh, acks, to_fire))
            acks += copy_acks
            if self._store_failing_since is not None:
                log.warning("returns are stored again, after %.0f s of refusals (%d returns refused, resent by "
                            "the minions)", time.monotonic() - self._store_failing_since, self.stats["store_failures"])
                self._store_failing_since = None
            self.state.record_returns(fresh)
            self.stats["returns"] += len(fresh)
            for tag, data in to_fire:  # only once stored, so no one sees a return that could be lost
                self.events.fire(tag, data)
        return replies + acks

    def _submit_returns(self, items: list[Record], owners: list[int], fresh: list[tuple[str, str, int]],
                        acks: list[tuple[bytes, bytes]], replies: list[tuple[bytes, Any]]) -> set[int]:
        """Store the records of a group of returns; a return too large for the outbox ever to
        store is refused to its minion (which drops it, saying why) and the others are stored.
        The returns refused (their indexes in ``fresh``)."""
        dropped: set[int] = set()
        while len(dropped) < len(fresh):
            kept = [i for i, owner in enumerate(owners) if owner not in dropped]
            try:
                self.delivery.submit([items[i] for i in kept])
                return dropped
            except RecordTooLarge as exc:
                refused = {owners[kept[i]]: exc.why(n) for n, i in enumerate(exc.indexes)}
                for owner, size in refused.items():
                    jid, mid, _rc = fresh[owner]
                    why = f"too large: {size}"
                    log.error("return of job %s from %s refused, %s", jid, mid, why)
                    self.stats["too_large"] += 1
                    replies.append((acks[owner][0], {"cmd": "refused", "jid": jid, "reason": why}))
                    dropped.add(owner)
        return dropped

    def _store_failed(self, n: int, exc: Exception) -> None:
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
            if self.cluster is not None and self.publisher is not None:
                self.cluster.refresh_local(self.publisher.connected_ids())
            if self.keys.refresh():
                self.events.fire("salt/key", {"act": "refresh", "listing": self.keys.listing()})
            try:
                await self._check_revoked()
                self._welcome_accepted()
            except Exception as exc:  # the next tick tries again; the loop must go on
                log.error("checking for revoked or accepted keys failed: %s", exc)
            now = time.time()
            if now - last_clean >= interval:
                last_clean = now
                await asyncio.get_running_loop().run_in_executor(None, self.clean_old_jobs)

    def clean_old_jobs(self) -> None:
        """What every returner has delivered leaves the outbox; jobs older than ``keep_jobs`` leave
        the master's state and the job cache."""
        keep = int(self.opts.get("keep_jobs_seconds") or 0)
        try:
            self.outbox.prune(keep)
        except OutboxError as exc:
            log.warning("pruning the outbox failed: %s", exc)
        if keep <= 0:
            return
        from saline.returners import registry

        self.state.forget_before(time.time() - keep)
        if self.outbox.serves == self.job_cache:
            return  # the job cache is the outbox's own file: pruned above
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
