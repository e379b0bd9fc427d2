"""The outbox as a NATS JetStream stream, shared by every master of a cluster.

Layout (names from :class:`saline.cluster.config.ClusterConfig`):

* Records go into the stream ``SALINE_<cluster>``, replicated (``nats_replicas``, R3 on a
  three-node cluster), file storage, ``keep_jobs`` as its age limit, one message per record:
  ``saline.<cluster>.rec.ret.<jid>.<minion>``, ``...rec.load.<jid>``, ``...rec.event``; the body
  is the payload (MessagePack); headers say the route (``Saline-Route``, an id whose returner list
  is in the KV bucket ``saline_<cluster>_routes``), the master that stored it (``Saline-Origin``),
  and a ``Nats-Msg-Id`` (``ret/<jid>/<minion>/<route>``): a return resent by a minion to another
  master within JetStream's duplicate window is stored once.
* Each returner is a durable pull consumer ``deliver_<returner>`` on the stream, created before
  the first record routed to it is published (so it sees it), shared by however many workers run
  for that returner, anywhere. A worker fetches a batch, skips (acks) what is not routed to its
  returner, delivers the rest, acks what the backend committed, naks what failed with the
  back-off delay, and moves what kept failing for ``returner_dead_after_seconds`` (counted from
  when the record was stored) to the dead-letter stream ``SALINE_<cluster>_DEAD``
  (``saline.<cluster>.dead.<returner>``) before terminating it; ``replay`` republishes those.
* ``put`` publishes a group asynchronously and waits once for all acknowledgements: a return is
  acknowledged to its minion only after the stream acknowledged its record. A group not fully
  acknowledged within ``PUT_TIMEOUT`` (NATS down, a leader election) raises OutboxError: the master
  does not acknowledge, the minions keep the returns in their spools and send them again later,
  and the duplicate window makes the resend of a record that was stored after all harmless.
* Counters a consumer does not keep (delivered, buried, last error and success) are kept per
  worker in the KV bucket ``saline_<cluster>_stats`` and summed by ``counts``. A returner's
  ``pending`` is what its consumer has not settled yet, records not routed to it included (the
  consumer cannot tell them apart before a worker looks).

Delivery is at least once: a worker that dies before acknowledging leaves its batch to another
after ``ack_wait``; the returners tolerate a record twice (they de-duplicate, or say they may not).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from typing import Any, Sequence

from saline import recordlog
from saline.cluster.bridge import NatsBridge
from saline.cluster.config import MAX_RECORD, ClusterConfig, ClusterError, escape_token
from saline.master.outbox.base import (Burial, Outbox, OutboxError, Record, RecordTooLarge, Retry, Route, Row,
                                       one_line, route_key)

log = logging.getLogger(__name__)

#: how long ``put`` waits for the stream's acknowledgements of a group
PUT_TIMEOUT = 3.0
#: room kept within the servers' max_payload for a record's subject and headers (ids, route)
HEADER_ROOM = 4096
#: how long a worker's ``take`` waits for a first record when there is none
TAKE_WAIT = 1.0
#: ... and for more, filling a batch
FILL_WAIT = 0.02
#: a fetched record not settled within this long is sent again (to another worker, say):
#: ``nats_ack_wait`` (a batch that takes longer tells the stream it is still at work)
ACK_WAIT = 60.0
#: worker counters are written to the stats bucket at most this often (0: at every settle)
STATS_EVERY = 0.0
#: the end of a replayed dead letter's subject: take() counts it as a record that may be stored
#: already (a minion named so only costs its returns a duplicate check)
REPLAYED = ".replayed"


def consumer_name(returner: str) -> str:
    return "deliver_" + "".join(c if c.isalnum() or c in "_-" else f"_{ord(c):02x}" for c in returner)


class JetStreamOutbox(Outbox):
    """See the module docstring."""

    def __init__(self, config: ClusterConfig, bridge: NatsBridge, origin: str, serves: str | None = None,
                 keep_seconds: float = 0, batch_size: int = 4000, ack_wait: float = ACK_WAIT) -> None:
        self.config = config
        self.bridge = bridge
        self.origin = origin
        self.serves = serves
        self.keep_seconds = keep_seconds
        self.batch_size = batch_size
        self.ack_wait = ack_wait
        self.path = f"nats://{config.stream}"  # named in messages, as the SQLite outbox names its file
        self._routes: dict[str, Route] = {}       # route id -> route
        self._route_of: dict[int, tuple[Route, str, Route, bool]] = {}  # id(route) -> (route, rid, kept, served)
        self._consumers: set[str] = set()
        self._subs: dict[str, Any] = {}
        self._taken: dict[str, dict[int, Any]] = {}  # returner -> seq -> fetched message, until settled
        self._worker_id = uuid.uuid4().hex[:12]
        self._figures: dict[str, dict[str, Any]] = {}
        self._figures_dirty: set[str] = set()
        self._figures_written = 0.0
        self._closed = False
        self._set_up()

    def _set_up(self) -> None:
        """Make or update the streams and buckets, waiting for a cluster still forming."""
        try:
            self.bridge.set_up(self._setup, f"outbox {self.path}", self.config.setup_timeout)
        except ClusterError as exc:
            raise OutboxError(f"outbox {self.path}: cannot set up the streams for cluster "
                              f"{self.config.cluster_id}: {exc}") from None

    # -- set-up ----------------------------------------------------------------------------------
    async def _setup(self) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        js = self.bridge.js
        c = self.config
        records = c.records_stream(self.keep_seconds)
        dead = dict(name=c.dead_stream, subjects=[c.dead_subject], num_replicas=c.replicas,
                    storage=api.StorageType.FILE, max_msg_size=MAX_RECORD)
        for params in (records, dead):
            try:
                await js.stream_info(params["name"])
                await js.update_stream(**{k: v for k, v in params.items() if v is not None})
            except NotFoundError:
                await js.add_stream(**{k: v for k, v in params.items() if v is not None})
        self._routes_kv = await self._bucket("routes")
        self._stats_kv = await self._bucket("stats")
        self._keepalive_task = asyncio.create_task(self._keepalive())

    async def _keepalive(self) -> None:
        """A batch still being delivered is not handed to another worker: its records are
        reported in progress, every third of the ack wait, until they are settled."""
        while True:
            await asyncio.sleep(max(1.0, self.ack_wait / 3))
            for held in list(self._taken.values()):
                for msg in list(held.values()):
                    try:
                        await msg.in_progress()
                    except Exception as exc:  # the connection is back soon, or the record comes back
                        log.debug("outbox %s: in progress: %s", self.path, one_line(exc))
                        break

    async def _bucket(self, what: str) -> Any:
        from nats.js.errors import BucketNotFoundError

        js = self.bridge.js
        name = self.config.bucket(what)
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            return await js.create_key_value(bucket=name, replicas=self.config.replicas, history=1)

    # -- routes ----------------------------------------------------------------------------------
    def _route(self, route: Route) -> tuple[str, Route, bool]:
        """(route id, the route without the served returner, whether it had it); a new route is
        stored in the routes bucket, and a consumer made for each new returner, before any record
        names it."""
        hit = self._route_of.get(id(route))
        if hit is not None and hit[0] is route:
            return hit[1], hit[2], hit[3]
        kept = tuple(e for e in route if e[0] != self.serves)
        served = len(kept) != len(route)
        rid = hashlib.sha256(route_key(kept).encode()).hexdigest()[:16] if kept else ""
        if kept and rid not in self._routes:
            self.bridge.call_connected(self._register(rid, kept), timeout=15)
        if len(self._route_of) > 10_000:
            self._route_of.clear()
        self._route_of[id(route)] = (route, rid, kept, served)
        return rid, kept, served

    async def _register(self, rid: str, route: Route) -> None:
        spec = recordlog.pack([[n, rc, dict(kw) if kw else None] for n, rc, kw in route])
        await self._routes_kv.put(rid, spec)
        for name, _rc, _kw in route:
            await self._ensure_consumer(name)
        self._routes[rid] = route

    async def _ensure_consumer(self, returner: str) -> None:
        from nats.js import api
        from nats.js.errors import NotFoundError

        if returner in self._consumers:
            return
        js = self.bridge.js
        name = consumer_name(returner)
        try:
            await js.consumer_info(self.config.stream, name)
        except NotFoundError:
            # From the next record on, given as a sequence: "new" would count from when the
            # consumer's own leader is elected, after the call returns, and skip what came meanwhile
            state = (await js.stream_info(self.config.stream)).state
            await js.add_consumer(self.config.stream, durable_name=name,
                                  deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=int(state.last_seq or 0) + 1,
                                  ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
                                  max_ack_pending=max(4 * self.batch_size, 20_000), max_waiting=512,
                                  description=f"saline returner {returner}")
        self._consumers.add(returner)

    async def _route_for(self, rid: str) -> Route:
        if not rid:
            return ()  # kept for the served job cache only: for no returner to deliver
        route = self._routes.get(rid)
        if route is None:
            from nats.js.errors import KeyNotFoundError

            try:
                entry = await self._routes_kv.get(rid)
            except KeyNotFoundError:
                return ()
            route = tuple((n, rc, kw) for n, rc, kw in recordlog.unpack(entry.value)) if entry.value else ()
            self._routes[rid] = route
        return route

    # -- the queue -------------------------------------------------------------------------------
    def _subject(self, rec: Record) -> str:
        p = self.config.prefix
        if rec.kind == "ret":
            return f"{p}.rec.ret.{escape_token(str(rec.jid))}.{escape_token(str(rec.mid))}"
        if rec.kind == "load":
            return f"{p}.rec.load.{escape_token(str(rec.jid))}"
        return f"{p}.rec.event"

    def max_record(self) -> int:
        """The largest record body the servers take: their ``max_payload`` (and the stream's
        ``max_msg_size``), less room for the headers."""
        nc = self.bridge.nc
        payload = int(getattr(nc, "max_payload", 0) or 0) if nc is not None else 0
        return min(MAX_RECORD, payload or MAX_RECORD) - HEADER_ROOM

    def put(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if not self.bridge.connected.is_set():
            raise OutboxError(f"outbox {self.path}: cannot write items: not connected to NATS")
        batch = []
        limit = self.max_record()
        too_large: list[tuple[int, int]] = []
        try:
            for index, rec in enumerate(records):
                rid, kept, served = self._route(rec.route)
                if not kept and not served:
                    continue  # nobody needs it
                try:
                    body = recordlog.pack(rec.payload)
                except Exception as exc:
                    raise OutboxError(f"outbox {self.path}: cannot encode an item: {one_line(exc)}") from None
                if len(body) > limit:
                    too_large.append((index, len(body)))
                    continue
                headers = {"Saline-Route": rid, "Saline-Origin": self.origin}
                if served:
                    headers["Saline-Cached"] = "1"  # part of the job cache (Salt's job_cache: False leaves it out)
                if rec.kind == "ret":
                    headers["Nats-Msg-Id"] = f"ret/{rec.jid}/{rec.mid}/{rid}"
                elif rec.kind == "load":
                    headers["Nats-Msg-Id"] = f"load/{rec.jid}/{rid}"
                if rec.fun:
                    headers["Saline-Fun"] = str(rec.fun)
                batch.append((self._subject(rec), body, headers))
        except OutboxError:
            raise
        except (TimeoutError, OSError) as exc:
            raise OutboxError(f"outbox {self.path}: cannot write items: {one_line(exc)}") from None
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot write items: {one_line(exc)}") from None
        if too_large:  # refused before anything is sent: the caller puts the others again
            raise RecordTooLarge([i for i, _ in too_large], [n for _, n in too_large], limit,
                                 "the NATS servers' max_payload")
        if not batch:
            return
        try:
            self.bridge.call(self._publish(batch), timeout=PUT_TIMEOUT + 2)
        except OutboxError:
            raise
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot write items: {one_line(exc)}") from None

    async def _publish(self, batch: list[tuple[str, bytes, dict[str, str]]]) -> None:
        sent: list[tuple[str, bytes, dict[str, str]]] = []
        ids: set[str] = set()
        for message in batch:
            msg_id = message[2].get("Nats-Msg-Id")
            if msg_id is not None:
                if msg_id in ids:
                    continue  # the stream would refuse the second, and its ack would never come
                ids.add(msg_id)
            sent.append(message)
        futures = await self._send(sent)
        pending = [f for f in futures if f.cancelled()]
        failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
        if pending or failed:
            why = one_line(failed[0].exception()) if failed else f"no acknowledgement within {PUT_TIMEOUT:g} s"
            raise OutboxError(f"outbox {self.path}: cannot write items: {len(pending) + len(failed)} of "
                              f"{len(batch)} not stored ({why})")
        duplicates = [(msg, f.result()) for msg, f in zip(sent, futures) if f.result().duplicate]
        if duplicates:
            await self._check_duplicates(duplicates)

    async def _send(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> list[asyncio.Future]:
        """Publish ``messages`` asynchronously and wait at most PUT_TIMEOUT for their acks; one
        not acknowledged by then is cancelled (freeing its slot: the minion resends, and the
        message id makes a late store harmless)."""
        js = self.bridge.js
        futures: list[asyncio.Future] = []
        try:
            for subject, body, headers in messages:
                futures.append(await js.publish_async(subject, body, headers=headers, stream=self.config.stream))
            if futures:
                await asyncio.wait(futures, timeout=PUT_TIMEOUT)
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()
        return futures

    async def _check_duplicates(self, duplicates: list[tuple[tuple[str, bytes, dict[str, str]], Any]]) -> None:
        """A write the stream calls a duplicate (a copy resent after a lost acknowledgement) is
        acknowledged only when the stream holds the first one: a message id left from a write
        that a leader change dropped is answered "duplicate" too, with nothing stored. Such a
        record is stored again under a new id."""
        import nats.js.errors

        js = self.bridge.js
        missing = []
        for (subject, body, headers), ack in duplicates:
            msg_id = headers["Nats-Msg-Id"]
            held = False
            # the first copy (at the sequence the stream names), or one stored again earlier under a
            # new id (the last message of the record's subject)
            for where in ([{"seq": ack.seq}] if ack.seq else []) + [{"subject": subject}]:
                try:
                    found = await js.get_msg(self.config.stream, **where)
                except nats.js.errors.NotFoundError:
                    continue
                stored_id = (found.headers or {}).get("Nats-Msg-Id") or ""
                if stored_id == msg_id or stored_id.startswith(msg_id + "/"):
                    held = True
                    break
            if not held:
                missing.append((subject, body, {**headers, "Nats-Msg-Id": f"{msg_id}/{uuid.uuid4().hex[:8]}"}))
        if not missing:
            return
        log.warning("NATS: the stream answered %d write(s) as duplicates of messages it does not hold (their ids were "
                    "left from writes lost in a leader change); stored again under new ids", len(missing))
        futures = await self._send(missing)
        if any(f.cancelled() or f.exception() is not None for f in futures):
            raise OutboxError(f"outbox {self.path}: cannot write items: {len(missing)} not stored again after the "
                              f"stream called them duplicates of messages it does not hold")

    def _sub(self, returner: str) -> Any:
        sub = self._subs.get(returner)
        if sub is None:
            async def bind() -> Any:
                await self._ensure_consumer(returner)
                return await self.bridge.js.pull_subscribe_bind(consumer=consumer_name(returner),
                                                                stream=self.config.stream)
            sub = self._subs[returner] = self.bridge.call(bind(), timeout=15)
        return sub

    def take(self, returner: str, limit: int, after: int | None = None) -> list[Row]:
        try:
            if after is None:
                self._let_go(returner)
            sub = self._sub(returner)
            wait = TAKE_WAIT if after is None else FILL_WAIT
            return self.bridge.call(self._take(returner, sub, int(limit), wait), timeout=wait + 30)
        except OutboxError:
            raise
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot read: {one_line(exc)}") from None

    def _let_go(self, returner: str) -> None:
        """Records an earlier batch took and never settled (its worker gave up on it when a take
        or settle failed) are no longer reported in progress, and go back to the stream: at once
        when the nak reaches it, after the ack wait otherwise. Kept alive, they would never be
        delivered."""
        left = self._taken.pop(returner, None)
        if not left:
            return
        log.info("outbox %s: %d record(s) of an unsettled batch for %s go back to the stream", self.path,
                 len(left), returner)

        async def give_back() -> None:
            await self._give_back(left.values())
            await self.bridge.sent()
        try:
            self.bridge.call(give_back(), timeout=5)
        except Exception as exc:  # they come back after the ack wait
            log.debug("outbox %s: nak: %s", self.path, one_line(exc))

    async def _give_back(self, msgs: Any) -> None:
        """Nak ``msgs``: the stream sends them again at once. The first that fails ends it (the
        connection is gone): the rest come back after the ack wait."""
        for msg in msgs:
            try:
                await msg.nak()
            except Exception as exc:
                log.debug("outbox %s: nak: %s", self.path, one_line(exc))
                return

    async def _take(self, returner: str, sub: Any, limit: int, wait: float) -> list[Row]:
        import nats.errors

        try:
            msgs = await sub.fetch(limit, timeout=wait)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        rows: list[Row] = []
        held: dict[int, Any] = {}
        skipped = []
        try:
            for msg in msgs:
                headers = msg.headers or {}
                route = await self._route_for(headers.get("Saline-Route", ""))
                entry = next((e for e in route if e[0] == returner), None)
                if entry is None:
                    skipped.append(msg)  # not routed here: done with it at once
                    continue
                meta = msg.metadata
                seq = meta.sequence.stream
                stored = meta.timestamp.timestamp() if meta.timestamp else time.time()
                kind = msg.subject.split(".")[3] if msg.subject.count(".") >= 3 else "event"
                tries = max(0, int(meta.num_delivered) - 1)
                held[seq] = msg
                rows.append(Row(seq, returner, kind, recordlog.unpack(msg.data), entry[1],
                                dict(entry[2]) if entry[2] else None, stored, tries, time.time(),
                                stored if tries else None, None, tries > 0 or msg.subject.endswith(REPLAYED)))
        except BaseException:
            # the routes bucket unreadable, say: the whole fetch goes back, none of it half-taken
            await self._give_back(msgs)
            raise
        self._taken.setdefault(returner, {}).update(held)
        for msg in skipped:
            await msg.ack()
        return rows

    def settle(self, returner: str, taken: Sequence[Row], done: Sequence[int] = (),
               retries: Sequence[Retry] = (), burials: Sequence[Burial] = ()) -> None:
        try:
            self.bridge.call(self._settle(returner, list(taken), list(done), list(retries), list(burials)), timeout=60)
        except OutboxError:
            raise
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot settle deliveries: {one_line(exc)}") from None
        self._flush_figures()

    async def _settle(self, returner: str, taken: list[Row], done: list[int], retries: list[Retry],
                      burials: list[Burial]) -> None:
        held = self._taken.get(returner, {})
        now = time.time()
        figures = self._figures.setdefault(returner, {"delivered": 0, "buried": 0, "last_error": None,
                                                      "last_error_time": None, "last_success_time": None})
        settled: set[int] = set()
        for seq in done:
            msg = held.pop(seq, None)
            if msg is not None:
                await msg.ack()
                settled.add(seq)
        if done:
            figures["delivered"] += len(done)
            figures["last_success_time"] = now
        for retry in retries:
            for seq in retry.seqs:
                msg = held.pop(seq, None)
                if msg is not None:
                    await msg.nak(delay=max(0.0, retry.delay))
                    settled.add(seq)
            figures["last_error"], figures["last_error_time"] = retry.error, now
        by_seq = {r.seq: r for r in taken}
        for burial in burials:
            for seq in burial.seqs:
                msg = held.pop(seq, None)
                row = by_seq.get(seq)
                if msg is None or row is None:
                    continue
                await self._bury(returner, row, msg, burial.error, now)
                settled.add(seq)
                figures["buried"] += 1
            figures["last_error"], figures["last_error_time"] = burial.error, now
        for row in taken:  # not tried (a stop in the middle of a batch): back at once
            msg = held.pop(row.seq, None)
            if msg is not None and row.seq not in settled:
                await msg.nak()
        await self.bridge.sent()
        self._figures_dirty.add(returner)

    async def _bury(self, returner: str, row: Row, msg: Any, error: str, now: float) -> None:
        letter = {"seq": row.seq, "returner": returner, "kind": row.kind, "payload": row.payload,
                  "ret_config": row.ret_config, "ret_kwargs": row.ret_kwargs, "enqueued": row.enqueued,
                  "attempts": row.attempts + 1, "first_failure": row.first_failure or now, "last_error": error,
                  "died": now}
        subject = f"{self.config.prefix}.dead.{consumer_name(returner)}"
        await self.bridge.js.publish(subject, recordlog.pack(letter), stream=self.config.dead_stream,
                                     headers={"Nats-Msg-Id": f"dead/{returner}/{row.seq}"})
        await msg.term()

    def _flush_figures(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._figures_dirty or (not force and now - self._figures_written < STATS_EVERY):
            return
        self._figures_written = now
        dirty, self._figures_dirty = self._figures_dirty, set()

        async def write() -> None:
            for name in dirty:
                await self._stats_kv.put(f"{consumer_name(name)}.{self._worker_id}",
                                         recordlog.pack(self._figures[name]))
        try:
            self.bridge.call(write(), timeout=10)
        except Exception as exc:  # figures only: the next settle writes them again
            self._figures_dirty |= dirty
            log.debug("outbox %s: figures not written: %s", self.path, one_line(exc))

    # -- state -----------------------------------------------------------------------------------
    def next_due(self, returner: str) -> float | None:
        return time.time()  # ``take`` itself waits for records (a long poll), here or on any machine

    def has_pending(self, returner: str | None = None) -> bool:
        counts = self.counts()
        return any(c["pending"] for name, c in counts.items() if returner in (None, name))

    def counts(self) -> dict[str, dict[str, Any]]:
        try:
            return self.bridge.call(self._counts(), timeout=30)
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot read: {one_line(exc)}") from None

    async def _counts(self) -> dict[str, dict[str, Any]]:
        from nats.js.errors import NoKeysError

        js = self.bridge.js
        out: dict[str, dict[str, Any]] = {}
        prefix = "deliver_"
        for info in await js.consumers_info(self.config.stream):
            cname = info.name or ""
            if not cname.startswith(prefix):
                continue
            name = (info.config.description or "").removeprefix("saline returner ") or cname[len(prefix):]
            pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            oldest = None
            if pending and info.ack_floor is not None:
                try:
                    first = await js.get_msg(self.config.stream, seq=int(info.ack_floor.stream_seq or 0) + 1)
                    oldest = first.time.timestamp() if getattr(first, "time", None) else None
                except Exception:  # the record may be gone (its age limit): no age to show
                    oldest = None
            out[name] = {"pending": pending, "retrying": int(info.num_redelivered or 0), "dead": 0, "delivered": 0,
                         "buried": 0, "last_error": None, "last_error_time": None, "last_success_time": None,
                         "oldest_enqueued": oldest}
        try:
            keys = await self._stats_kv.keys()
        except NoKeysError:
            keys = []
        for key in keys:
            token = key.rsplit(".", 1)[0]
            entry = await self._stats_kv.get(key)
            if entry.value is None:
                continue
            f = recordlog.unpack(entry.value)
            name = next((n for n in out if consumer_name(n) == token), None)
            if name is None:
                continue
            c = out[name]
            c["delivered"] += int(f.get("delivered") or 0)
            c["buried"] += int(f.get("buried") or 0)
            for t, v in (("last_error_time", "last_error"), ("last_success_time", None)):
                if f.get(t) and (c[t] is None or f[t] > c[t]):
                    c[t] = f[t]
                    if v:
                        c[v] = f.get(v)
        try:
            info = await js.stream_info(self.config.dead_stream, subjects_filter=f"{self.config.prefix}.dead.>")
            for subject, n in (info.state.subjects or {}).items():
                token = subject.rsplit(".", 1)[-1]
                name = next((n2 for n2 in out if consumer_name(n2) == token), None)
                if name is not None:
                    out[name]["dead"] = int(n)
        except Exception as exc:
            log.debug("outbox %s: dead letter counts: %s", self.path, one_line(exc))
        return out

    def replay(self, returner: str) -> int:
        try:
            return self.bridge.call(self._replay(returner), timeout=300)
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot replay dead letters: {one_line(exc)}") from None

    async def _letters(self, returner: str, limit: int | None) -> list[tuple[int, dict[str, Any]]]:
        from nats.js.errors import NotFoundError

        js = self.bridge.js
        subject = f"{self.config.prefix}.dead.{consumer_name(returner)}"
        out: list[tuple[int, dict[str, Any]]] = []
        seq = 1
        while limit is None or len(out) < limit:
            try:
                msg = await js.get_msg(self.config.dead_stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            out.append((msg.seq, recordlog.unpack(msg.data)))
            seq = msg.seq + 1
        return out

    async def _replay(self, returner: str) -> int:
        letters = await self._letters(returner, None)
        if not letters:
            return 0
        for _seq, letter in letters:
            route: Route = ((returner, letter.get("ret_config"), letter.get("ret_kwargs")),)
            rid, kept, _served = await asyncio.get_running_loop().run_in_executor(None, self._route, route)
            kind = letter.get("kind") or "event"
            payload = letter.get("payload")
            subject = f"{self.config.prefix}.rec.{kind if kind in ('ret', 'load') else 'event'}{REPLAYED}"
            await self.bridge.js.publish(subject, recordlog.pack(payload), stream=self.config.stream,
                                         headers={"Saline-Route": rid, "Saline-Origin": self.origin})
        last = letters[-1][0]
        await self.bridge.js.purge_stream(self.config.dead_stream,
                                          subject=f"{self.config.prefix}.dead.{consumer_name(returner)}", seq=last + 1)
        return len(letters)

    def dead_letters(self, returner: str, limit: int = 100) -> list[dict[str, Any]]:
        try:
            return [letter for _seq, letter in self.bridge.call(self._letters(returner, int(limit)), timeout=60)]
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot read dead letters: {one_line(exc)}") from None

    @property
    def keeps_returns(self) -> bool:
        """Every record stays in the stream for keep_jobs (its age limit)."""
        return True

    def returned(self, jid: str) -> set[str]:
        """The minions whose return of ``jid`` is in the stream."""
        from saline.cluster.config import unescape_token

        async def look() -> set[str]:
            subject = f"{self.config.prefix}.rec.ret.{escape_token(jid)}.*"
            info = await self.bridge.js.stream_info(self.config.stream, subjects_filter=subject)
            return {unescape_token(s.rsplit(".", 1)[-1]) for s in (info.state.subjects or {})}

        try:
            return self.bridge.call_connected(look(), timeout=10)
        except Exception as exc:
            raise OutboxError(f"outbox {self.path}: cannot read: {one_line(exc)}") from None

    def prune(self, keep_seconds: float) -> int:
        """Nothing to do: the stream's age limit (``keep_jobs``) drops old records by itself."""
        return 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task = getattr(self, "_keepalive_task", None)
        if task is not None:
            self.bridge.loop.call_soon_threadsafe(task.cancel)
        try:
            self._flush_figures(force=True)
        except Exception as exc:
            log.debug("outbox %s: closing: %s", self.path, one_line(exc))
